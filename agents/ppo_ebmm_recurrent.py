"""``ppo_ebmm_recurrent``: recurrent PPO whose state is an online EBMM (:class:`ebmm_rl.recurrent.EBMMRecurrentPolicy`).

Each environment's memory is written once per step (the streaming write) and read at every step, with no window and
no horizon: the fast weights are the recurrent state, reset to the learned theta_bar at episode start.
:class:`EBMMRecurrentPPO` adds the memory's own reconstruction objective to RecurrentPPO's update.
"""

from __future__ import annotations

from sb3_contrib import RecurrentPPO
from torch import Tensor

from agents import Agent
from ebmm_rl.memory import EBMM
from ebmm_rl.objective import MemoryObjectiveMixin
from ebmm_rl.recurrent import EBMMRecurrentPolicy


class EBMMRecurrentPPO(MemoryObjectiveMixin, RecurrentPPO):
    """sb3-contrib's RecurrentPPO with an :class:`~ebmm_rl.recurrent.EBMMRecurrentPolicy`, plus the memory's objective
    (:meth:`EBMMRecurrentPolicy.memory_loss` on the rollout's sequences, split at episode starts as RecurrentPPO splits
    them) after each update; see :class:`~ebmm_rl.objective.MemoryObjectiveMixin`.

    :param memory_loss_weight: weight of the memory objective; 0 turns it off
    :param memory_loss_batches: minibatches of each rollout the memory objective trains on (None: all)
    """

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, EBMMRecurrentPolicy):
            raise ValueError(
                f"EBMMRecurrentPPO needs policy=EBMMRecurrentPolicy (ebmm_rl.recurrent), got {type(self.policy).__name__}"
            )

    @property
    def memory(self) -> EBMM:
        return self.policy.memory

    def memory_loss(self, rollout_data) -> Tensor:
        n_seq = rollout_data.lstm_states.pi[0].shape[1]
        return self.policy.memory_loss(rollout_data.observations, rollout_data.mask, n_seq)

    def train(self) -> None:
        super().train()
        # Mean absolute offset of the fast weights from theta_bar after the rollout (the half held in the hidden tensor).
        self.logger.record("memory/fast_weight_offset", self._last_lstm_states.pi[0].abs().mean().item())


AGENT = Agent(
    name="ppo_ebmm_recurrent",
    algorithm=EBMMRecurrentPPO,
    policy="ebmm_rl.recurrent.EBMMRecurrentPolicy",
    description="recurrent PPO whose state is an online EBMM, written once per step (no window, no horizon)",
)
