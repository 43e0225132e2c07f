"""``ppo_framestack``: PPO on the last 4 observations of the episode (frame stacking, Mnih et al., 2015).

The stack is :class:`ebmm_rl.sb3.VecEpisodicWindow` rather than SB3's ``VecFrameStack``: that cannot stack MiniGrid's
Discrete ``direction``, and the window also never mixes two episodes (padding and ``window_mask`` at the start). Set the
stack depth with the config key ``window``. It remembers the cue only while the cue is among the last ``window`` frames.
"""

from stable_baselines3 import PPO

from ebmm_rl.agents import Agent

AGENT = Agent(
    name="ppo_framestack",
    algorithm=PPO,
    policy="MultiInputPolicy",
    description="PPO on the last 4 observations (config key window)",
    window=4,
)
