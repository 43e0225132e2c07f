"""Hyperparameter search over an agent's config with Optuna, the way rl-baselines3-zoo tunes SB3 agents.

A trial samples PPO's settings and, for the EBMM agents, the memory's (:data:`MEMORY_KEYS`), trains
``seeds_per_trial`` runs with them, one seed after another (:mod:`ebmm_rl.runs.training`: normal run directories,
evaluated every ``timesteps / n_evaluations`` steps with greedy actions), reports each evaluation to Optuna, and is
pruned when Optuna's median pruner says so. Its value is the area under its learning curves: the mean over its runs of
the mean of each run's evaluations of success rate (or mean return), so a config that learns early and holds scores
above one that gets there late or falls back, and one lucky seed does not make a config. A study may also bound the
cost: with ``min_fps`` a trial whose runs train fewer steps per second of CPU time than that is infeasible (Optuna's
constrained TPE) and never the best; CPU time, unlike wall time, does not depend on what else the machine runs. Trials live
in an Optuna storage: SQLite by default, or any RDB URL, so several processes or machines can work on one study at once.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from ebmm_rl.runs.training import prepare_run, start_run, train_run

METRICS = ("success_rate", "mean_reward")

MEMORY_KEYS = {
    "ppo_ebmm": "policy_kwargs.features_extractor_kwargs.memory",
    "ppo_ebmm_recurrent": "policy_kwargs.memory",
}
"""Where each EBMM agent's config holds its memory's specification (the same keys for both)."""

SQLITE_TIMEOUT_S = 60
"""How long a process waits for another's write to the SQLite file before failing."""


def sample_ppo(trial: optuna.Trial, n_envs: int) -> dict[str, Any]:
    """PPO's (and RecurrentPPO's) settings: rl-zoo3's search space, with the minibatch size drawn as a divisor of the
    rollout so that every draw is valid.

    :param trial: the trial.
    :param n_envs: the run's parallel envs (a rollout holds ``n_steps * n_envs`` transitions).
    :return: config overrides, dotted key to value.
    """
    n_steps = trial.suggest_categorical("n_steps", [32, 64, 128, 256])
    minibatches = trial.suggest_categorical("minibatches", [1, 2, 4, 8])
    return {
        "n_steps": n_steps,
        "batch_size": max(n_steps * n_envs // minibatches, 1),
        "n_epochs": trial.suggest_categorical("n_epochs", [1, 4, 8, 10]),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "ent_coef": trial.suggest_float("ent_coef", 1e-6, 0.05, log=True),
        "gamma": trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995]),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.95, 0.99]),
        "clip_range": trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3]),
        "target_kl": trial.suggest_categorical("target_kl", [0.01, 0.02, 0.05, 0.1]),
    }


def sample_memory(trial: optuna.Trial) -> dict[str, Any]:
    """The memory's size and its write and read: what sets an EBMM agent's speed and what it can hold.

    :param trial: the trial.
    :return: the memory specification's keys and values.
    """
    return {
        "pattern_dim": trial.suggest_categorical("pattern_dim", [8, 16, 32]),
        "hidden": trial.suggest_categorical("hidden", [16, 32, 64]),
        "fast_units": trial.suggest_categorical("fast_units", [8, 16, 32]),
        "write_steps": trial.suggest_int("write_steps", 1, 3),
        "read_steps": trial.suggest_int("read_steps", 1, 3),
        "grad_mode": trial.suggest_categorical("grad_mode", ["first_order", "second_order"]),
    }


def sample_overrides(trial: optuna.Trial, agent: str, config: dict[str, Any]) -> dict[str, Any]:
    """Every setting a trial of ``agent`` samples.

    :param config: the resolved config the samples go over (its ``n_envs`` is the run's).
    :return: config overrides, dotted key to value.
    """
    overrides = sample_ppo(trial, config["n_envs"])
    if agent in MEMORY_KEYS:
        memory = sample_memory(trial)
        overrides |= {f"{MEMORY_KEYS[agent]}.{key}": value for key, value in memory.items()}
        extractor = config.get("policy_kwargs", {}).get("features_extractor_kwargs") or {}
        if agent == "ppo_ebmm" and extractor.get("pattern_layer") is False:
            # The encoder's features are the patterns (no pattern layer): the pattern size sampled is their size.
            overrides["policy_kwargs.features_extractor_kwargs.encoder_kwargs.features_dim"] = memory["pattern_dim"]
    return overrides


class TrialStopped(Exception):
    """A signal stopped a trial's run (saved and resumable like any run); Optuna marks the trial failed.

    :param exit_code: the run's exit code (130 after SIGINT, 143 after SIGTERM).
    """

    def __init__(self, exit_code: int):
        super().__init__(f"stopped by a signal (exit code {exit_code})")
        self.exit_code = exit_code


class _QuietStop(logging.Filter):
    """Optuna logs a failed trial with its traceback; a trial a signal stopped gets the one line, not the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrialStopped):
            record.exc_info = None
        return True


logging.getLogger("optuna.study._optimize").addFilter(_QuietStop())


class TrialReporter:
    """Reports each evaluation of a trial's runs to Optuna and ends the run when the trial should be pruned (the
    ``on_evaluation`` handler of :func:`~ebmm_rl.runs.training.train_run`). The ``k``-th evaluation of the trial's
    ``i``-th run is step ``i * n_evaluations + k``, so the pruner compares trials at the same seed and evaluation.
    Evaluations past the trial's budget (a run ends at a whole rollout, which can overshoot it) are not reported.

    :param trial: the trial.
    :param metric: the evaluation's value to report (:data:`METRICS`).
    :param n_evaluations: evaluations per run.
    :param timesteps: the budget of a run.
    """

    def __init__(self, trial: optuna.Trial, metric: str, n_evaluations: int, timesteps: int):
        self.trial = trial
        self.metric = metric
        self.n_evaluations = n_evaluations
        self.timesteps = timesteps
        self.runs: list[list[float]] = []
        self.pruned = False

    def start_run(self) -> None:
        """The trial's next run begins."""
        self.runs.append([])

    def __call__(self, row: dict[str, float]) -> bool:
        values = self.runs[-1]
        if row["timesteps"] > self.timesteps or len(values) == self.n_evaluations:
            return True
        values.append(row[self.metric])
        self.trial.report(values[-1], (len(self.runs) - 1) * self.n_evaluations + len(values))
        if self.trial.should_prune():
            self.pruned = True
            return False
        return True

    @property
    def evaluations(self) -> int:
        """Evaluations reported so far, over all runs."""
        return sum(map(len, self.runs))

    def learning_curve_area(self) -> float:
        """The trial's value: the mean over its runs of the mean of each run's evaluations (``nan`` if a run has none)."""
        return float(sum(sum(values) / len(values) if values else math.nan for values in self.runs) / len(self.runs))


@dataclass(frozen=True)
class Search:
    """What every trial of a study shares.

    :param agent: the agent.
    :param env: the env id.
    :param timesteps: environment steps per trial.
    :param n_evaluations: evaluations per trial (pruning happens at these).
    :param eval_episodes: episodes per evaluation.
    :param seed: trial ``k`` trains with seeds ``seed + k * seeds_per_trial`` to ``seed + (k + 1) * seeds_per_trial - 1``.
    :param metric: the evaluation value whose learning-curve area a trial maximises (:data:`METRICS`).
    :param run_dir: parent of the trials' run directories.
    :param device: torch device.
    :param threads: torch threads per trial.
    :param n_envs: parallel envs per trial (``None``: the config's).
    :param overrides: fixed ``key=value`` config overrides under every trial's samples.
    :param seeds_per_trial: runs per trial, one seed each.
    :param min_fps: a trial whose runs train fewer environment steps per second of the process's CPU time than this
        (over all its runs, setup and evaluations included) is infeasible (``None``: no bound).
    """

    agent: str
    env: str
    timesteps: int
    n_evaluations: int
    eval_episodes: int
    seed: int
    metric: str
    run_dir: str
    device: str = "cpu"
    threads: int = 1
    n_envs: int | None = None
    overrides: tuple[str, ...] = ()
    seeds_per_trial: int = 1
    min_fps: float | None = None

    def options(self, trial_number: int, run: int) -> dict[str, Any]:
        """The run settings of one trial's ``run``-th run."""
        return {
            "agent": self.agent,
            "env": self.env,
            "seed": self.seed + trial_number * self.seeds_per_trial + run,
            "device": self.device,
            "run_dir": self.run_dir,
            "eval_freq": max(self.timesteps // self.n_evaluations, 1),
            "eval_episodes": self.eval_episodes,
            "eval_deterministic": True,
            "checkpoint_freq": 0,
        }


def objective(search: Search, config: dict[str, Any]) -> Callable[[optuna.Trial], float]:
    """The function Optuna maximises: train one trial's runs, one seed after another, and return the area under their
    learning curves (:meth:`TrialReporter.learning_curve_area`).

    :param search: the study's settings.
    :param config: the resolved config the trials' samples go over, with the runs' ``n_envs``.
    :raises optuna.TrialPruned: when the pruner stopped a run.
    """

    def run_trial(trial: optuna.Trial) -> float:
        sampled = sample_overrides(trial, search.agent, config)
        overrides = [*search.overrides, *(f"{key}={json.dumps(value)}" for key, value in sampled.items())]
        reporter = TrialReporter(trial, search.metric, search.n_evaluations, search.timesteps)
        run_dirs, fps, steps, cpu_seconds = [], [], 0, 0.0
        for run in range(search.seeds_per_trial):
            options = search.options(trial.number, run)
            flags = [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
            flags += [f"--timesteps={search.timesteps}", *(f"--set={item}" for item in overrides)]
            command = shlex.join(["python", "-m", "ebmm_rl.train", *flags])
            spec = start_run(options, command, overrides=overrides, timesteps=search.timesteps, n_envs=search.n_envs)
            reporter.start_run()
            cpu_start = time.process_time()
            result = train_run(prepare_run(spec, threads=search.threads), progress_bar=False, on_evaluation=reporter)
            cpu_seconds += time.process_time() - cpu_start
            steps += result.num_timesteps
            run_dirs.append(str(result.run_dir))
            fps.append(result.fps)
            trial.set_user_attr("run_dirs", run_dirs)
            trial.set_user_attr("fps", sum(fps) / len(fps))
            trial.set_user_attr("cpu_fps", steps / cpu_seconds)
            trial.set_user_attr("config", spec.config)
            if result.interrupted:
                raise TrialStopped(result.exit_code)
            if reporter.pruned:
                break
        bound_cost(trial, search.min_fps, steps / cpu_seconds)
        if reporter.pruned:
            raise optuna.TrialPruned(f"pruned after {reporter.evaluations} evaluations")
        value = reporter.learning_curve_area()
        if not math.isfinite(value):
            raise optuna.TrialPruned("a run made no evaluation")
        return value

    return run_trial


def bound_cost(trial: optuna.Trial, min_fps: float | None, cpu_fps: float) -> None:
    """Mark a trial infeasible for Optuna's constrained sampling when it trains fewer than ``min_fps`` steps per CPU
    second (its constraint ``min_fps - cpu_fps`` is then above 0); nothing without a bound."""
    if min_fps is not None:
        trial.set_constraint("cpu_fps", min_fps - cpu_fps)


def storage_for(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage: an RDB URL (``sqlite:///file.db``, ``postgresql://...``), with SQLite waiting for other
    processes' writes instead of failing at once."""
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


JOIN_SEED_STRIDE = 10_007
"""How far apart the sampler seeds of processes that meet a study at different sizes are (more than any worker count)."""


def load_study(name: str, storage: str, seed: int, n_startup_trials: int, n_warmup_evaluations: int) -> optuna.Study:
    """Create the study, or join it if it exists: TPE sampling, median pruning (rl-zoo3's defaults).

    :param name: the study's name in the storage.
    :param storage: the storage URL.
    :param seed: the sampler's seed (each worker process of one command adds its own offset). A process that finds
        trials in the study (another command's, or this command's before it was stopped and started again) seeds its
        sampler with ``seed + JOIN_SEED_STRIDE * trials``: with the same seed it would draw the settings the study
        began with again.
    :param n_startup_trials: trials sampled at random and never pruned before TPE and the pruner start.
    :param n_warmup_evaluations: evaluations of a trial before it can be pruned.
    """

    def sampler(sampler_seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(n_startup_trials=n_startup_trials, seed=sampler_seed)

    study = optuna.create_study(
        study_name=name,
        storage=storage_for(storage),
        sampler=sampler(seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_evaluations),
        direction="maximize",
        load_if_exists=True,
    )
    trials = len(study.get_trials(deepcopy=False))
    if trials:
        study.sampler = sampler(seed + JOIN_SEED_STRIDE * trials)
    return study


FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
"""The trials that count towards a study's size (a failed or running one does not)."""


def finished_trials(study: optuna.Study) -> int:
    """Trials that completed or were pruned (:data:`FINISHED_STATES`)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def best_trial(study: optuna.Study, min_fps: float | None = None) -> optuna.trial.FrozenTrial:
    """The completed trial of highest value among those at ``min_fps`` steps per CPU second or more.

    :raises ValueError: if no trial has completed, or none is fast enough.
    """
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise ValueError(f"study {study.study_name!r} has no completed trial yet")
    feasible = [trial for trial in completed if min_fps is None or trial.user_attrs.get("cpu_fps", 0.0) >= min_fps]
    if not feasible:
        fastest = max(trial.user_attrs.get("cpu_fps", 0.0) for trial in completed)
        raise ValueError(
            f"no completed trial trains at --min-fps {min_fps:g} or faster (fastest: {fastest:.0f} steps per CPU second)"
        )
    return max(feasible, key=lambda trial: trial.value)
