"""The EBMM memory core: pure torch, no SB3 or gymnasium."""

from ebmm_rl.memory.corruption import add_noise, block_occlude, flip_bits
from ebmm_rl.memory.ebmm import EBMM, GRAD_MODES, MemoryState
from ebmm_rl.memory.recurrent import EBMMCell
from ebmm_rl.memory.energy import ConvEnergy, EnergyNet, FastLayer, GatedHops, IndexedPatterns, MLPEnergy
from ebmm_rl.memory.training import make_optimizer, meta_train_step, peak_memory_mb

__all__ = [
    "EBMM",
    "GRAD_MODES",
    "ConvEnergy",
    "EBMMCell",
    "EnergyNet",
    "FastLayer",
    "GatedHops",
    "IndexedPatterns",
    "MLPEnergy",
    "MemoryState",
    "add_noise",
    "block_occlude",
    "flip_bits",
    "make_optimizer",
    "meta_train_step",
    "peak_memory_mb",
]
