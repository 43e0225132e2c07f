"""``ppo_ebmm``: PPO whose features come from an EBMM episodic memory (:class:`ebmm_rl.sb3.extractor.EBMMExtractor`).

The envs are wrapped in a :class:`ebmm_rl.sb3.VecEpisodicWindow` of the episode's last ``window`` observations; at every
step the extractor writes them into a fresh EBMM per environment and reads it with queries from the current observation.
Any env: the extractor encodes observations with SB3's own extractor for the space unless the config names another.
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
