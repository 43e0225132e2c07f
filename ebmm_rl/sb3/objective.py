"""The EBMM's own reconstruction objective added to an SB3 on-policy algorithm's update: :class:`MemoryObjectiveMixin`."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ebmm_rl.memory import EBMM


class MemoryObjectiveMixin:
    """Mixin for an on-policy algorithm (``class EBMMPPO(MemoryObjectiveMixin, PPO)``) whose policy holds an EBMM.

    After the algorithm's own update on each rollout, one pass over the rollout buffer's minibatches (or over the first
    ``memory_loss_batches`` of them, in the buffer's random order) trains the memory on its reconstruction objective
    (:meth:`memory_loss`, defined by the subclass), scaled by ``memory_loss_weight``, with the policy's optimiser and
    gradient clipping. The RL loss already trains the memory end to end through its reads and writes; this objective
    keeps it an associative memory. Logged under ``memory/``: the objective, the meta-learned step sizes, alpha, beta
    and momentum.

    :param memory_loss_weight: weight of the memory objective; 0 turns it off
    :param memory_loss_batches: minibatches of each rollout the memory objective trains on; None: all of them. Fewer
        make each update cheaper (the objective writes and reads every window of a minibatch again)
    """

    def __init__(
        self, *args: Any, memory_loss_weight: float = 1.0, memory_loss_batches: int | None = None, **kwargs: Any
    ) -> None:
        if memory_loss_weight < 0:
            raise ValueError(f"memory_loss_weight must be >= 0, got {memory_loss_weight}")
        if memory_loss_batches is not None and memory_loss_batches < 1:
            raise ValueError(
                f"memory_loss_batches must be >= 1 or None (every minibatch), got {memory_loss_batches}; "
                "turn the objective off with memory_loss_weight=0"
            )
        self.memory_loss_weight = memory_loss_weight
        self.memory_loss_batches = memory_loss_batches
        super().__init__(*args, **kwargs)

    @property
    def memory(self) -> EBMM:
        """The policy's EBMM."""
        raise NotImplementedError

    def memory_loss(self, rollout_data: Any) -> Tensor:
        """The memory objective on one minibatch of the rollout buffer."""
        raise NotImplementedError

    def train(self) -> None:
        super().train()
        if self.memory_loss_weight > 0:
            self.policy.set_training_mode(True)
            losses = []
            minibatches = itertools.islice(self.rollout_buffer.get(self.batch_size), self.memory_loss_batches)
            for rollout_data in minibatches:
                loss = self.memory_loss(rollout_data)
                self.policy.optimizer.zero_grad()
                (self.memory_loss_weight * loss).backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                losses.append(loss.item())
            self.logger.record("memory/reconstruction_loss", float(np.mean(losses)))
        for key, value in self.memory.parameter_summary().items():
            self.logger.record(f"memory/{key}", value)
