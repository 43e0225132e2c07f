"""``ppo_ebmm_recurrent``: recurrent PPO whose state is an online EBMM (:class:`ebmm_rl.recurrent.EBMMRecurrentPolicy`).

Each environment's memory is written once per step (the streaming write) and read at every step, with no window and
no horizon: the fast weights are the recurrent state, reset to the learned theta_bar at episode start.
:class:`EBMMRecurrentPPO` adds the memory's own reconstruction objective to RecurrentPPO's update.
"""

from __future__ import annotations

import numpy as np
import torch
from sb3_contrib import RecurrentPPO

from agents import Agent
from ebmm_rl.recurrent import EBMMRecurrentPolicy


class EBMMRecurrentPPO(RecurrentPPO):
    """sb3-contrib's RecurrentPPO with an :class:`~ebmm_rl.recurrent.EBMMRecurrentPolicy`, plus the memory's objective.

    After RecurrentPPO's update on each rollout, one pass over the rollout's sequences (split at episode starts, as
    RecurrentPPO splits them) trains the memory on its reconstruction objective
    (:meth:`EBMMRecurrentPolicy.memory_loss`), scaled by ``memory_loss_weight``, with the policy's optimiser and
    gradient clipping. Logged under ``memory/``.

    :param memory_loss_weight: weight of the memory objective; 0 turns it off
    """

    def __init__(self, *args, memory_loss_weight: float = 1.0, **kwargs) -> None:
        if memory_loss_weight < 0:
            raise ValueError(f"memory_loss_weight must be >= 0, got {memory_loss_weight}")
        self.memory_loss_weight = memory_loss_weight
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, EBMMRecurrentPolicy):
            raise ValueError(
                f"EBMMRecurrentPPO needs policy=EBMMRecurrentPolicy (ebmm_rl.recurrent), got {type(self.policy).__name__}"
            )

    def train(self) -> None:
        super().train()
        policy = self.policy
        if self.memory_loss_weight > 0:
            policy.set_training_mode(True)
            losses = []
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                n_seq = rollout_data.lstm_states.pi[0].shape[1]
                loss = policy.memory_loss(rollout_data.observations, rollout_data.mask, n_seq)
                policy.optimizer.zero_grad()
                (self.memory_loss_weight * loss).backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), self.max_grad_norm)
                policy.optimizer.step()
                losses.append(loss.item())
            self.logger.record("memory/reconstruction_loss", float(np.mean(losses)))
        for key, value in policy.memory.parameter_summary().items():
            self.logger.record(f"memory/{key}", value)
        # Mean absolute offset of the fast weights from theta_bar after the rollout (the half held in the hidden tensor).
        self.logger.record("memory/fast_weight_offset", self._last_lstm_states.pi[0].abs().mean().item())


AGENT = Agent(
    name="ppo_ebmm_recurrent",
    algorithm=EBMMRecurrentPPO,
    policy="ebmm_rl.recurrent.EBMMRecurrentPolicy",
    description="recurrent PPO whose state is an online EBMM, written once per step (no window, no horizon)",
)
