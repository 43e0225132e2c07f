"""``ppo_lstm``: recurrent PPO with an LSTM policy (sb3-contrib ``RecurrentPPO``; Hochreiter & Schmidhuber, 1997).

The memory baseline: the LSTM state (hidden size from ``policy_kwargs.lstm_hidden_size`` in ``configs/ppo_lstm.yml``)
is reset at every episode start.
"""

from sb3_contrib import RecurrentPPO

from ebmm_rl.agents import Agent

AGENT = Agent(
    name="ppo_lstm",
    algorithm=RecurrentPPO,
    policy=None,
    description="recurrent PPO with an LSTM (sb3-contrib RecurrentPPO)",
)
