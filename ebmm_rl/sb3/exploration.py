"""An episodic exploration bonus for the training envs: a reward for each pose (position and direction) that is new
in the episode, decaying linearly to 0 so that the policy ends up trained on the task's own reward.

Why: in ``MiniGrid-Memory-v0`` the agent starts facing away from the cue. PPO first learns to walk straight to the
choice (success 0.5 whatever it remembers), its entropy collapses, and it never turns back to look. A bonus for new
poses pays for turning back early in training (results/benchmark_minigrid_memory_curriculum/from_scratch/).

The envs report new poses (:class:`ebmm_rl.envs.NovelPoses`, ``info["novel_pose"]``); :class:`VecNoveltyBonus` sits outside
SB3's ``VecMonitor``, so ``rollout/ep_rew_mean`` and every evaluation stay on the task's reward; and
:class:`NoveltyBonusSchedule` sets the bonus from the global step count, so a resumed run continues the decay.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn


class VecNoveltyBonus(VecEnvWrapper):
    """Add ``bonus`` to the reward of each env whose step reached a new pose (``info["novel_pose"]``).

    :param venv: vectorised envs made with ``novel_poses=True`` (:func:`ebmm_rl.envs.make_env`), usually a ``VecMonitor``.
    :param bonus: reward per new pose; :class:`NoveltyBonusSchedule` changes it during training.
    """

    def __init__(self, venv: VecEnv, bonus: float) -> None:
        super().__init__(venv)
        self.bonus = float(bonus)

    def reset(self) -> np.ndarray | dict[str, np.ndarray]:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        try:
            novel = np.array([info["novel_pose"] for info in infos], dtype=np.float32)
        except KeyError:
            raise KeyError(
                "VecNoveltyBonus found no 'novel_pose' in the step infos; make the envs with ebmm_rl.envs.make_env(..., "
                "novel_poses=True)."
            ) from None
        return observations, rewards + self.bonus * novel, dones, infos


class NoveltyBonusSchedule(BaseCallback):
    """Decay a :class:`VecNoveltyBonus` linearly from ``initial`` at step ``start`` to 0 at ``start + decay_steps``
    (and 0 after).

    Set at the start of each rollout from ``model.num_timesteps``; logged as ``rollout/novelty_bonus``.

    :param bonus_env: the wrapper whose ``bonus`` is set.
    :param initial: the bonus per new pose at step ``start``, >= 0.
    :param decay_steps: environment steps over which it decays to 0, > 0.
    :param start: the step the decay starts from (a curriculum stage's first step).
    """

    def __init__(self, bonus_env: VecNoveltyBonus, initial: float, decay_steps: int, start: int = 0) -> None:
        super().__init__()
        if initial < 0 or decay_steps <= 0:
            raise ValueError(
                f"novelty_bonus must be >= 0 and novelty_bonus_steps > 0, got {initial} and {decay_steps}; e.g. "
                "--set novelty_bonus=0.01 --set novelty_bonus_steps=2400000"
            )
        self.bonus_env = bonus_env
        self.initial = float(initial)
        self.decay_steps = int(decay_steps)
        self.start = int(start)

    def bonus_at(self, num_timesteps: int) -> float:
        return self.initial * max(0.0, 1.0 - (num_timesteps - self.start) / self.decay_steps)

    def _on_rollout_start(self) -> None:
        self.bonus_env.bonus = self.bonus_at(self.num_timesteps)
        self.logger.record("rollout/novelty_bonus", self.bonus_env.bonus)

    def _on_step(self) -> bool:
        return True
