"""``ppo_ebmm_recurrent``: recurrent PPO whose state is an online EBMM (:class:`ebmm_rl.sb3.recurrent.EBMMRecurrentPolicy`).

Each environment's memory is written once per step (the streaming write) and read at every step, with no window and
no horizon: the fast weights are the recurrent state, reset to the learned theta_bar at episode start.
:class:`ebmm_rl.sb3.algorithms.EBMMRecurrentPPO` adds the memory's own reconstruction objective to RecurrentPPO's update.
"""

from ebmm_rl.agents import Agent
from ebmm_rl.sb3.algorithms import EBMMRecurrentPPO

AGENT = Agent(
    name="ppo_ebmm_recurrent",
    algorithm=EBMMRecurrentPPO,
    policy="ebmm_rl.sb3.recurrent.EBMMRecurrentPolicy",
    description="recurrent PPO whose state is an online EBMM, written once per step (no window, no horizon)",
)
