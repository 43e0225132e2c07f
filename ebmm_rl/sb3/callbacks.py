"""SB3 callbacks: periodic evaluation with a success rate, and progress that shows in a terminal and in a log.

Callbacks here trigger on the global step count (``model.num_timesteps`` crossing a multiple of their frequency), not
on calls since ``learn()`` started, so a resumed run keeps the schedule of the run it continues.

An evaluation is a function of the policy and the step count alone: its envs are seeded from the step count and it
draws from a copy of torch's random generator. So it leaves training as it would be without it (an evaluation
frequency changed on resume changes no training step), and an evaluation redone after an interruption gives the same
result.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization
from tqdm import tqdm

EVALUATION_FIELDS = (
    "timesteps",
    "success_rate",
    "mean_reward",
    "std_reward",
    "mean_ep_length",
    "fps",
    "time_elapsed",
    "stage",
)
"""Columns of the evaluation CSV written by :class:`SuccessEvalCallback` (``stage``: the curriculum stage, from 1)."""
PROGRESS_INTERVAL_S = 60.0
"""Seconds between progress lines when the output is not a terminal."""


class Progress:
    """Progress of long work: a tqdm bar on a terminal; elsewhere (a log file, a pipe) a line every ``interval`` seconds,
    so a log shows it too.

    :param total: the amount of work (steps, episodes).
    :param initial: the amount already done.
    :param unit: what is counted.
    :param line: builds a progress line from the amount done (when the output is not a terminal).
    :param interval: seconds between lines (default :data:`PROGRESS_INTERVAL_S`).
    :param stream: the output (default ``sys.stdout``).
    """

    def __init__(
        self,
        total: int,
        initial: int,
        unit: str,
        line: Callable[[int], str],
        interval: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = sys.stdout if stream is None else stream
        self.line = line
        self.interval = PROGRESS_INTERVAL_S if interval is None else interval
        self.last_line = time.perf_counter()
        terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=total, initial=initial, unit=unit, file=self.stream, leave=False) if terminal else None

    def update(self, done: int, description: str = "") -> None:
        """Show the amount done (a bar on a terminal, else a line once ``interval`` seconds have passed)."""
        if self.bar is not None:
            self.bar.set_description_str(description, refresh=False)
            self.bar.update(done - self.bar.n)
        elif time.perf_counter() - self.last_line >= self.interval:
            self.last_line = time.perf_counter()
            print(self.line(done), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TrainingProgress(BaseCallback):
    """Show a run's progress: steps of its total, the rate, the time left and what it trains on (a description).

    :param total_timesteps: the run's total steps.
    :param fps: the run's rate so far (steps per second since it started or resumed, evaluations included: the rate the
        run reports at its end).
    :param describe: what the run trains on now (e.g. its curriculum stage).
    :param interval: seconds between lines when the output is not a terminal (default :data:`PROGRESS_INTERVAL_S`).
    :param stream: the output (default ``sys.stdout``).
    """

    def __init__(
        self,
        total_timesteps: int,
        fps: Callable[[], float],
        describe: Callable[[], str] = str,
        interval: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        super().__init__()
        self.total_timesteps = total_timesteps
        self.fps = fps
        self.describe = describe
        self.interval = interval
        self.stream = stream
        self.progress: Progress | None = None

    def _line(self, done: int) -> str:
        fps = self.fps()
        left = (self.total_timesteps - done) / fps if fps > 0 else float("inf")
        where = f"; {self.describe()}" if self.describe() else ""
        return (
            f"{done:,} of {self.total_timesteps:,} steps ({done / self.total_timesteps:.1%}), {fps:.0f} fps, "
            f"{format_duration(left)} left{where}"
        )

    def _on_training_start(self) -> None:
        if self.progress is None:  # one bar for every learn() call of the run (the stages of a curriculum)
            self.progress = Progress(self.total_timesteps, self.num_timesteps, "steps", self._line, self.interval, self.stream)

    def _on_step(self) -> bool:
        assert self.progress is not None
        self.progress.update(self.num_timesteps, self.describe())
        return True

    def close(self) -> None:
        """Remove the bar (at the run's end)."""
        if self.progress is not None:
            self.progress.close()


def format_duration(seconds: float) -> str:
    """``1 h 05 min``, ``4 min 10 s`` or ``12 s``."""
    if seconds == float("inf"):
        return "unknown time"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def next_multiple(num_timesteps: int, frequency: int) -> int:
    """The first multiple of ``frequency`` above ``num_timesteps``: when a step-count schedule fires next."""
    return (num_timesteps // frequency + 1) * frequency


class EvaluationInterrupted(Exception):
    """An evaluation abandoned because the run was asked to stop."""


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
    :param seed: the evaluation at step N seeds its envs with ``seed + N``.
    :param stop_requested: called at every evaluation step; once it returns True the evaluation is abandoned (nothing
        logged or written) and training stops: a run that resumes redoes it.
    :param stage: the curriculum stage (from 1), written in each row.
    :param after_evaluation: called with each evaluation's row once it is logged and written (e.g. to keep the best
        model, as SB3's ``EvalCallback(callback_on_new_best=...)``, or to advance a curriculum).
    :param progress: show each evaluation's progress (:class:`Progress`; a line every ``PROGRESS_INTERVAL_S / 2``
        seconds when the output is not a terminal).
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
        seed: int = 0,
        stop_requested: Callable[[], bool] | None = None,
        stage: int = 1,
        after_evaluation: Callable[[dict[str, float]], None] | None = None,
        progress: bool = False,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if n_eval_episodes < 1:
            raise ValueError(f"n_eval_episodes must be >= 1, got {n_eval_episodes}")
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.deterministic = deterministic
        self.log_path = None if log_path is None else Path(log_path)
        self.success = success
        self.seed = seed
        self.stop_requested = stop_requested
        self.stage = stage
        self.after_evaluation = after_evaluation
        self.progress = progress
        self._evaluation_progress: Progress | None = None
        self.last_result: dict[str, float] | None = None
        self._next_eval = 0

    def _init_callback(self) -> None:
        if self.eval_freq > 0:
            self._next_eval = next_multiple(self.model.num_timesteps, self.eval_freq)
        if self.log_path is not None and self.log_path.is_file():
            with open(self.log_path, newline="") as file:
                rows = [row for row in csv.DictReader(file) if int(row["timesteps"]) <= self.model.num_timesteps]
            self._write_rows(rows, mode="w")
            if rows and int(rows[-1]["timesteps"]) == self.model.num_timesteps:  # done before the run stopped
                self.last_result = {key: float(value) for key, value in rows[-1].items() if value not in ("", None)}

    def _write_rows(self, rows: list[dict[str, Any]], mode: str) -> None:
        assert self.log_path is not None
        new_file = mode == "w" or not self.log_path.is_file()
        with open(self.log_path, "w" if new_file else "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=EVALUATION_FIELDS, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerows(rows)

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps >= self._next_eval:
            try:
                self.evaluate()
            except EvaluationInterrupted:
                return False
            self._next_eval = next_multiple(self.num_timesteps, self.eval_freq)
        return True

    def _check_stop(self, local_variables: dict[str, Any], global_variables: dict[str, Any]) -> None:
        if self.stop_requested is not None and self.stop_requested():
            raise EvaluationInterrupted
        if self._evaluation_progress is not None:
            done = int(np.sum(local_variables["episode_counts"]))
            self._evaluation_progress.update(done, f"evaluating at {self.model.num_timesteps:,} steps")

    def max_episode_steps(self) -> int | None:
        """The evaluation envs' episode limit (MiniGrid's ``max_steps``), if they have one."""
        for name in ("max_steps", "max_episode_steps"):
            try:
                return int(self.eval_env.get_attr(name, indices=[0])[0])
            except (AttributeError, TypeError, ValueError):
                continue
        return None

    def evaluate(self) -> dict[str, float]:
        """Run one evaluation now, log it and append it to the CSV.

        :return: a row of :data:`EVALUATION_FIELDS`.
        :raises EvaluationInterrupted: if ``stop_requested`` turned True during it.
        """
        if self.model.get_vec_normalize_env() is not None:  # as SB3's EvalCallback: the wrappers may differ otherwise
            sync_envs_normalization(self.model.get_env(), self.eval_env)
        self.eval_env.seed(self.seed + self.model.num_timesteps)
        if self.progress:
            started = time.perf_counter()
            self._evaluation_progress = Progress(
                self.n_eval_episodes,
                0,
                "episodes",
                lambda done: (
                    f"evaluating at {self.model.num_timesteps:,} steps: {done} of {self.n_eval_episodes} episodes "
                    f"in {format_duration(time.perf_counter() - started)}"
                ),
                interval=PROGRESS_INTERVAL_S / 2,
            )
        try:
            with torch.random.fork_rng(devices=[self.model.device] if self.model.device.type == "cuda" else []):
                returns, lengths = evaluate_policy(
                    self.model,
                    self.eval_env,
                    n_eval_episodes=self.n_eval_episodes,
                    deterministic=self.deterministic,
                    return_episode_rewards=True,
                    callback=self._check_stop,
                )
        finally:
            if self._evaluation_progress is not None:
                self._evaluation_progress.close()
                self._evaluation_progress = None
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
            "stage": self.stage,
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
        if self.after_evaluation is not None:
            self.after_evaluation(result)
        return result
