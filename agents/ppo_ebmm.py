"""``ppo_ebmm``: PPO whose features come from an EBMM episodic memory (:class:`ebmm_rl.extractor.EBMMExtractor`).

The env is wrapped with an :class:`envs.EpisodicWindow` of the episode's last ``window`` observations; at every step the
extractor writes them into a fresh EBMM per environment and reads it with queries from the current observation.
:class:`EBMMPPO` adds the memory's own reconstruction objective to PPO's update.
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3 import PPO

from agents import Agent
from ebmm_rl.extractor import EBMMExtractor


class EBMMPPO(PPO):
    """PPO whose policy holds an :class:`~ebmm_rl.extractor.EBMMExtractor`, with the memory's own objective added.

    After PPO's update on each rollout, one epoch of minibatches of the rollout's observations trains the memory on
    its reconstruction objective (:meth:`EBMMExtractor.memory_loss`), scaled by ``memory_loss_weight``, with the
    policy's optimiser and gradient clipping. The RL loss already trains the memory end to end through the read and
    the write; this objective keeps it an associative memory. Logged under ``memory/``.

    :param memory_loss_weight: weight of the memory objective; 0 turns it off
    """

    def __init__(self, *args, memory_loss_weight: float = 1.0, **kwargs) -> None:
        if memory_loss_weight < 0:
            raise ValueError(f"memory_loss_weight must be >= 0, got {memory_loss_weight}")
        self.memory_loss_weight = memory_loss_weight
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy.features_extractor, EBMMExtractor):
            raise ValueError(
                "EBMMPPO needs policy_kwargs=dict(features_extractor_class=EBMMExtractor, ...); got "
                f"{type(self.policy.features_extractor).__name__}"
            )

    def train(self) -> None:
        super().train()
        extractor = self.policy.features_extractor
        memory = extractor.memory
        losses = []
        if self.memory_loss_weight > 0:
            self.policy.set_training_mode(True)
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                loss = extractor.memory_loss(rollout_data.observations)
                self.policy.optimizer.zero_grad()
                (self.memory_loss_weight * loss).backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                losses.append(loss.item())
            self.logger.record("memory/reconstruction_loss", float(np.mean(losses)))
        for key, value in memory.parameter_summary().items():
            self.logger.record(f"memory/{key}", value)


AGENT = Agent(
    name="ppo_ebmm",
    algorithm=EBMMPPO,
    policy="MultiInputPolicy",
    description="PPO with an EBMM episodic memory of the episode's last `window` observations",
    window=16,
)
