"""``ppo_ebmm``: PPO whose features come from an EBMM episodic memory (:class:`ebmm_rl.sb3.extractor.EBMMExtractor`).

The env is wrapped with an :class:`ebmm_rl.envs.EpisodicWindow` of the episode's last ``window`` observations; at every
step the extractor writes them into a fresh EBMM per environment and reads it with queries from the current observation.
:class:`ebmm_rl.sb3.algorithms.EBMMPPO` adds the memory's own reconstruction objective to PPO's update.
"""

from ebmm_rl.agents import Agent
from ebmm_rl.sb3.algorithms import EBMMPPO

AGENT = Agent(
    name="ppo_ebmm",
    algorithm=EBMMPPO,
    policy="MultiInputPolicy",
    description="PPO with an EBMM episodic memory of the episode's last `window` observations",
    window=16,
)
