"""ebmm-rl: Energy-Based Memory Models (Bartunov et al., ICLR 2020) as an online episodic memory for RL agents."""

from ebmm_rl.memory import EBMM, ConvEnergy, MemoryState, MLPEnergy

__version__ = "0.1.0"

__all__ = ["EBMM", "ConvEnergy", "MLPEnergy", "MemoryState", "__version__"]
