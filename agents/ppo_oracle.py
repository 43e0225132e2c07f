"""``ppo_oracle``: memoryless PPO told the cue's identity by :class:`ebmm_rl.envs.CueOracle` once the cue has been in view.

An upper bound for the benchmarks (perfect memory of the one fact that matters), not an agent to deploy.
"""

from stable_baselines3 import PPO

from ebmm_rl.agents import Agent

AGENT = Agent(
    name="ppo_oracle",
    algorithm=PPO,
    policy="MultiInputPolicy",
    description="PPO told the cue by ebmm_rl.envs.CueOracle (upper bound; benchmarks only)",
    oracle=True,
)
