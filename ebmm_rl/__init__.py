"""ebmm-rl: Energy-Based Memory Models (Bartunov et al., ICLR 2020) as an online episodic memory for RL agents."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ebmm_rl.memory import EBMM, ConvEnergy, EBMMCell, MemoryState, MLPEnergy

if TYPE_CHECKING:
    from ebmm_rl.sb3.extractor import EBMMExtractor
    from ebmm_rl.sb3.recurrent import EBMMRecurrentPolicy
    from ebmm_rl.sb3.window import VecEpisodicWindow

__version__ = "0.1.0"

__all__ = [
    "EBMM",
    "ConvEnergy",
    "EBMMCell",
    "EBMMExtractor",
    "EBMMRecurrentPolicy",
    "MLPEnergy",
    "MemoryState",
    "VecEpisodicWindow",
    "__version__",
]


def __getattr__(name: str) -> object:
    # Imported on first use so that the pure-torch memory core loads without Stable-Baselines3 and gymnasium.
    if name == "EBMMExtractor":
        from ebmm_rl.sb3.extractor import EBMMExtractor

        return EBMMExtractor
    if name == "EBMMRecurrentPolicy":
        from ebmm_rl.sb3.recurrent import EBMMRecurrentPolicy

        return EBMMRecurrentPolicy
    if name == "VecEpisodicWindow":
        from ebmm_rl.sb3.window import VecEpisodicWindow

        return VecEpisodicWindow
    raise AttributeError(f"module 'ebmm_rl' has no attribute {name!r}")
