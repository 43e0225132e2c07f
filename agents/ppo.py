"""``ppo``: memoryless PPO (Schulman et al., 2017) on the current observation only.

On the Memory tasks it can only guess once the cue is out of view: about 50% success where no cell shows both the cue
and a choice object.
"""

from stable_baselines3 import PPO

from ebmm_rl.agents import Agent

AGENT = Agent(
    name="ppo",
    algorithm=PPO,
    policy=None,
    description="memoryless PPO on the current observation",
)
