"""``ppo_ebmm``: PPO whose features come from an EBMM episodic memory (:class:`ebmm_rl.extractor.EBMMExtractor`).

The env is wrapped with an :class:`envs.EpisodicWindow` of the episode's last ``window`` observations; at every step the
extractor writes them into a fresh EBMM per environment and reads it with queries from the current observation.
:class:`EBMMPPO` adds the memory's own reconstruction objective to PPO's update.
"""

from __future__ import annotations

from stable_baselines3 import PPO
from torch import Tensor

from agents import Agent
from ebmm_rl.extractor import EBMMExtractor
from ebmm_rl.memory import EBMM
from ebmm_rl.objective import MemoryObjectiveMixin


class EBMMPPO(MemoryObjectiveMixin, PPO):
    """PPO whose policy holds an :class:`~ebmm_rl.extractor.EBMMExtractor`, with the memory's own objective
    (:meth:`EBMMExtractor.memory_loss` on the rollout's windows) added after each update; see
    :class:`~ebmm_rl.objective.MemoryObjectiveMixin`.

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


AGENT = Agent(
    name="ppo_ebmm",
    algorithm=EBMMPPO,
    policy="MultiInputPolicy",
    description="PPO with an EBMM episodic memory of the episode's last `window` observations",
    window=16,
)
