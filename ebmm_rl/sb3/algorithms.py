"""The EBMM algorithms: SB3's PPO and sb3-contrib's RecurrentPPO with the memory's own objective added to their update."""

from __future__ import annotations

from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from torch import Tensor

from ebmm_rl.memory import EBMM
from ebmm_rl.sb3.extractor import EBMMExtractor
from ebmm_rl.sb3.objective import MemoryObjectiveMixin
from ebmm_rl.sb3.recurrent import EBMMRecurrentPolicy


class EBMMPPO(MemoryObjectiveMixin, PPO):
    """PPO whose policy holds an :class:`~ebmm_rl.sb3.extractor.EBMMExtractor`, with the memory's own objective
    (:meth:`EBMMExtractor.memory_loss` on the rollout's windows) added after each update; see
    :class:`~ebmm_rl.sb3.objective.MemoryObjectiveMixin`.

    :param memory_loss_weight: weight of the memory objective; 0 turns it off
    :param memory_loss_batches: minibatches of each rollout the memory objective trains on (None: all)
    """

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy.features_extractor, EBMMExtractor):
            raise ValueError(
                "EBMMPPO needs policy_kwargs=dict(features_extractor_class=EBMMExtractor, ...); got "
                f"{type(self.policy.features_extractor).__name__}"
            )

    @property
    def memory(self) -> EBMM:
        return self.policy.features_extractor.memory

    def memory_loss(self, rollout_data) -> Tensor:
        return self.policy.features_extractor.memory_loss(rollout_data.observations)


class EBMMRecurrentPPO(MemoryObjectiveMixin, RecurrentPPO):
    """sb3-contrib's RecurrentPPO with an :class:`~ebmm_rl.sb3.recurrent.EBMMRecurrentPolicy`, plus the memory's objective
    (:meth:`EBMMRecurrentPolicy.memory_loss` on the rollout's sequences, split at episode starts as RecurrentPPO splits
    them) after each update; see :class:`~ebmm_rl.sb3.objective.MemoryObjectiveMixin`.

    :param memory_loss_weight: weight of the memory objective; 0 turns it off
    :param memory_loss_batches: minibatches of each rollout the memory objective trains on (None: all)
    """

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, EBMMRecurrentPolicy):
            raise ValueError(
                f"EBMMRecurrentPPO needs policy=EBMMRecurrentPolicy (ebmm_rl.sb3.recurrent), got {type(self.policy).__name__}"
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
