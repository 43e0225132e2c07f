"""The EBMM memory in Stable-Baselines3: features extractor, recurrent policy, algorithms, objective and callbacks.

- :class:`~ebmm_rl.sb3.extractor.EBMMExtractor`: a features extractor, for any SB3 algorithm and observation space,
  that writes an episode window into a fresh memory at every step and reads it with queries from the current
  observation; :class:`~ebmm_rl.sb3.window.VecEpisodicWindow` puts the window into the observation;
- :class:`~ebmm_rl.sb3.recurrent.EBMMRecurrentPolicy`: sb3-contrib's recurrent policy whose state is an online memory;
- :func:`~ebmm_rl.sb3.memory_spec.build_memory`: both agents' memory from one specification (their ``memory`` argument);
- :class:`~ebmm_rl.sb3.algorithms.EBMMPPO`, :class:`~ebmm_rl.sb3.algorithms.EBMMRecurrentPPO`: PPO and RecurrentPPO
  with the memory's own objective (:mod:`ebmm_rl.sb3.objective`);
- :mod:`ebmm_rl.sb3.callbacks` (evaluation with a success rate), :mod:`ebmm_rl.sb3.exploration` (episodic novelty
  bonus).
"""

from ebmm_rl.sb3.algorithms import EBMMPPO, EBMMRecurrentPPO
from ebmm_rl.sb3.extractor import EBMMExtractor, MiniGridEncoder
from ebmm_rl.sb3.memory_spec import build_memory
from ebmm_rl.sb3.recurrent import EBMMRecurrentPolicy
from ebmm_rl.sb3.window import VecEpisodicWindow

__all__ = [
    "EBMMPPO",
    "EBMMExtractor",
    "EBMMRecurrentPPO",
    "EBMMRecurrentPolicy",
    "MiniGridEncoder",
    "VecEpisodicWindow",
    "build_memory",
]
