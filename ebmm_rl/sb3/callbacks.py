"""SB3 callbacks: periodic evaluation with a success rate.

Callbacks here trigger on the global step count (``model.num_timesteps`` crossing a multiple of their frequency), not
on calls since ``learn()`` started, so a resumed run keeps the schedule of the run it continues.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

EVALUATION_FIELDS = ("timesteps", "success_rate", "mean_reward", "std_reward", "mean_ep_length", "fps", "time_elapsed")
"""Columns of the evaluation CSV written by :class:`SuccessEvalCallback`."""


def next_multiple(num_timesteps: int, frequency: int) -> int:
    """The first multiple of ``frequency`` above ``num_timesteps``: when a step-count schedule fires next."""
    return (num_timesteps // frequency + 1) * frequency


class SuccessEvalCallback(BaseCallback):
    """Evaluate the policy every ``eval_freq`` environment steps on separate envs and log the success rate.

    Success is an episode return > 0 (MiniGrid pays ``1 - 0.9 * steps / max_steps`` on success and 0 otherwise); on an
    env without success (``success=False``: CartPole, Pendulum...) the success rate is ``nan`` and not logged. Logs
    ``eval/success_rate``, ``eval/mean_reward``, ``eval/std_reward`` and ``eval/mean_ep_length``, and appends a
    row of :data:`EVALUATION_FIELDS` to ``log_path``. Recurrent policies get their state and episode starts (through
    :func:`stable_baselines3.common.evaluation.evaluate_policy`).

    :param eval_env: the evaluation envs, wrapped in ``VecMonitor`` so returns are whole-episode returns.
    :param eval_freq: environment steps (all training envs together) between evaluations; 0 disables periodic ones
        (:meth:`evaluate` still works).
    :param n_eval_episodes: episodes per evaluation.
    :param deterministic: act greedily instead of sampling.
    :param log_path: the CSV file; rows after the model's current step (left by an interrupted run) are dropped
        when training starts.
    :param success: whether a return > 0 is a success (:func:`ebmm_rl.envs.pays_on_success`).
    :param verbose: 1 to print each evaluation.
    """

    def __init__(
        self,
        eval_env: VecEnv,
        eval_freq: int,
        n_eval_episodes: int,
        deterministic: bool = False,
        log_path: str | Path | None = None,
        success: bool = True,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.deterministic = deterministic
        self.log_path = None if log_path is None else Path(log_path)
        self.success = success
        self.last_result: dict[str, float] | None = None
        self._next_eval = 0

    def _init_callback(self) -> None:
        if self.eval_freq > 0:
            self._next_eval = next_multiple(self.model.num_timesteps, self.eval_freq)
        if self.log_path is not None and self.log_path.is_file():
            with open(self.log_path, newline="") as file:
                rows = [row for row in csv.DictReader(file) if int(row["timesteps"]) <= self.model.num_timesteps]
            self._write_rows(rows, mode="w")

    def _write_rows(self, rows: list[dict[str, Any]], mode: str) -> None:
        assert self.log_path is not None
        new_file = mode == "w" or not self.log_path.is_file()
        with open(self.log_path, "w" if new_file else "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=EVALUATION_FIELDS)
            if new_file:
                writer.writeheader()
            writer.writerows(rows)

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps >= self._next_eval:
            self.evaluate()
            self._next_eval = next_multiple(self.num_timesteps, self.eval_freq)
        return True

    def evaluate(self) -> dict[str, float]:
        """Run one evaluation now, log it and append it to the CSV.

        :return: a row of :data:`EVALUATION_FIELDS`.
        """
        if self.model.get_vec_normalize_env() is not None:  # as SB3's EvalCallback: the wrappers may differ otherwise
            sync_envs_normalization(self.model.get_env(), self.eval_env)
        returns, lengths = evaluate_policy(
            self.model,
            self.eval_env,
            n_eval_episodes=self.n_eval_episodes,
            deterministic=self.deterministic,
            return_episode_rewards=True,
        )
        returns = np.asarray(returns, dtype=np.float64)
        elapsed = max((time.time_ns() - self.model.start_time) / 1e9, 1e-9)
        result = {
            "timesteps": self.model.num_timesteps,
            "success_rate": float(np.mean(returns > 0)) if self.success else float("nan"),
            "mean_reward": float(np.mean(returns)),
            "std_reward": float(np.std(returns)),
            "mean_ep_length": float(np.mean(lengths)),
            "fps": (self.model.num_timesteps - self.model._num_timesteps_at_start) / elapsed,
            "time_elapsed": elapsed,
        }
        for key in ("success_rate", "mean_reward", "std_reward", "mean_ep_length")[0 if self.success else 1 :]:
            self.logger.record(f"eval/{key}", result[key])
        self.logger.record("time/total_timesteps", self.model.num_timesteps, exclude="tensorboard")
        self.logger.dump(self.model.num_timesteps)
        if self.log_path is not None:
            self._write_rows([result], mode="a")
        if self.verbose >= 1:
            print(
                f"Eval at {result['timesteps']} steps: "
                + (f"success {result['success_rate']:.1%}, " if self.success else "")
                + f"mean return {result['mean_reward']:.3f} over {len(returns)} episodes"
            )
        self.last_result = result
        return result
