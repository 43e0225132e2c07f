"""One RL training run: start it in a new run directory, continue it from its latest checkpoint, train it.

A run directory ``<run-dir>/<env>__<agent>__<seed>__<time>/`` holds

- ``config.yml``: the resolved config (:mod:`ebmm_rl.runs.config`; ``--config`` accepts it to repeat the run);
- ``args.yml``: the run settings (agent, env, seed, device, evaluation and checkpoint frequencies);
- ``command.txt``: the command line (one line per start or resume); ``seed``: the seed;
- ``tensorboard_1/``: TensorBoard events (``train/``, ``rollout/``, ``eval/``, ``time/`` and the agent's ``memory/``);
- ``evaluations.csv``: the periodic evaluations (:data:`ebmm_rl.sb3.callbacks.EVALUATION_FIELDS`);
- ``checkpoints/model_<steps>_steps.zip``: written atomically every ``checkpoint_freq`` steps, on Ctrl-C and at the
  end; :func:`resume_run` continues from the latest one with the run's config;
- ``final_model.zip``: the trained model.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList, ProgressBarCallback

from ebmm_rl import envs
from ebmm_rl.agents import get_agent
from ebmm_rl.runs.atomic import replace_atomically
from ebmm_rl.runs.checkpoints import CheckpointCallback, latest_checkpoint, normalization_file
from ebmm_rl.runs.config import load_config, load_yaml, split_config, validate
from ebmm_rl.runs.directory import (
    ARGS_FILE,
    CHECKPOINT_DIR,
    COMMAND_FILE,
    CONFIG_FILE,
    EVALUATIONS_FILE,
    FINAL_MODEL,
    SEED_FILE,
    TENSORBOARD_NAME,
    new_run_dir,
)
from ebmm_rl.runs.experiment import EVAL_SEED_OFFSET, load_normalization, make_model, make_vec_env, model_file
from ebmm_rl.sb3.callbacks import SuccessEvalCallback
from ebmm_rl.sb3.exploration import NoveltyBonusSchedule, VecNoveltyBonus

TRAIN_PROGRAM = "python -m ebmm_rl.train"
"""The command that starts and resumes runs, for ``command.txt`` and the hint after an interruption."""

DEFAULTS: dict[str, Any] = {
    "env": "MiniGrid-Memory",
    "agent": "ppo_ebmm",
    "seed": 0,
    "device": "auto",
    "run_dir": "runs",
    "vec_env": "dummy",
    "init_from": None,
    "eval_freq": 20_000,
    "eval_episodes": 50,
    "eval_deterministic": False,
    "checkpoint_freq": 100_000,
}
SETTINGS = (
    "agent",
    "env",
    "seed",
    "device",
    "vec_env",
    "eval_freq",
    "eval_episodes",
    "eval_deterministic",
    "checkpoint_freq",
    "init_from",
)
"""Run settings saved in ``args.yml``."""
RESUME_KEEPS = ("env", "agent", "seed", "n_envs", "config", "set", "run_dir", "init_from")
"""Options a resumed run takes from the run it continues; giving them with ``--resume`` is an error."""


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_run` returns.

    :param run_dir: the run directory.
    :param model_path: the final model, or the checkpoint saved on interruption.
    :param num_timesteps: environment steps trained, in total over all resumes.
    :param success_rate: success rate of the final evaluation (``None`` if interrupted, ``nan`` on an env without
        success).
    :param mean_reward: mean return of the final evaluation (``None`` if interrupted).
    :param fps: environment steps per second since this start or resume (evaluations included).
    :param interrupted: whether training stopped on Ctrl-C (resume with ``--resume run_dir``).
    """

    run_dir: Path
    model_path: Path
    num_timesteps: int
    success_rate: float | None
    mean_reward: float | None
    fps: float
    interrupted: bool = False


def start_run(
    options: Mapping[str, Any],
    command: str,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    timesteps: int | None = None,
    n_envs: int | None = None,
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Resolve the settings and config of a new run and write its directory.

    :param options: run settings (:data:`SETTINGS`) and ``run_dir``; missing or ``None`` ones take :data:`DEFAULTS`.
    :param command: the command line that started the run, for ``command.txt``.
    :param config_file: a YAML file over the agent's config (:func:`ebmm_rl.runs.config.load_config`).
    :param overrides: ``key=value`` config overrides.
    :param timesteps: ``n_timesteps`` over the config's.
    :param n_envs: ``n_envs`` over the config's.
    :return: the run directory, the settings and the resolved config.
    :raises ValueError: for an unknown agent, env id or config key, or a bad override (with suggestions).
    """
    settings = {key: DEFAULTS[key] if options.get(key) is None else options[key] for key in SETTINGS}
    settings["env"] = envs.resolve_env_id(settings["env"])
    agent = get_agent(settings["agent"])
    overrides = list(overrides)
    config = load_config(agent, settings["env"], config_file, overrides)
    for key, value in (("n_timesteps", timesteps), ("n_envs", n_envs)):
        if value is not None:
            config[key] = value
    validate(config, agent, "--timesteps/--n-envs")
    run_name = f"{settings['env']}__{agent.name}__{settings['seed']}"
    run_dir = new_run_dir(Path(options.get("run_dir") or DEFAULTS["run_dir"]), run_name)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / ARGS_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))
    (run_dir / SEED_FILE).write_text(f"{settings['seed']}\n")
    (run_dir / COMMAND_FILE).write_text(command + "\n")
    return run_dir, settings, config


def resume_run(
    run_dir: str | Path, command: str, changes: Mapping[str, Any] | None = None, timesteps: int | None = None
) -> tuple[Path, dict[str, Any], dict[str, Any], Path]:
    """Read a run's settings and config back, apply the changes given now, and find its latest checkpoint.

    :param run_dir: the run directory to continue.
    :param command: the command line that resumes it, appended to ``command.txt``.
    :param changes: run settings to change (e.g. ``eval_freq``); those of :data:`RESUME_KEEPS` cannot change.
    :param timesteps: a new total step budget.
    :return: the run directory, the settings, the config and the checkpoint to continue from.
    :raises ValueError: the directory is not a run, holds no checkpoint, or a change touches :data:`RESUME_KEEPS`.
    """
    changes = {key: value for key, value in (changes or {}).items() if value is not None}
    kept = [key for key in changes if key in RESUME_KEEPS]
    if kept:
        options = ", ".join("--" + key.replace("_", "-") for key in kept)
        raise ValueError(f"--resume keeps the run's env, agent, seed, config and directory; drop {options}.")
    run_dir = Path(run_dir)
    if not (run_dir / ARGS_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        raise ValueError(f"{run_dir} is not a run directory (it needs {ARGS_FILE} and {CONFIG_FILE}).")
    checkpoint = latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if checkpoint is None:
        raise ValueError(f"{run_dir / CHECKPOINT_DIR} holds no checkpoint to resume from; start a new run instead.")
    settings = load_yaml(run_dir / ARGS_FILE)
    settings.update({key: value for key, value in changes.items() if key in SETTINGS})
    config = load_yaml(run_dir / CONFIG_FILE)
    if timesteps is not None:
        config["n_timesteps"] = timesteps
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / ARGS_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))
    with open(run_dir / COMMAND_FILE, "a") as file:
        file.write(command + "\n")
    return run_dir, settings, config, checkpoint


def success_note(success_rate: float | None) -> str:
    """``"success 95.0%, "``, or nothing for an env without success (a ``nan`` rate)."""
    return "" if success_rate is None or np.isnan(success_rate) else f"success {success_rate:.1%}, "


def summary_line(agent: str, env_id: str, result: TrainResult, episodes: int) -> str:
    """The one line printed at the end of a run."""
    if result.interrupted:
        return (
            f"{agent} on {env_id}: interrupted at {result.num_timesteps} steps ({result.fps:.0f} fps); checkpoint saved to "
            f"{result.model_path}; continue with: {TRAIN_PROGRAM} --resume {shlex.quote(str(result.run_dir))}"
        )
    return (
        f"{agent} on {env_id}: {success_note(result.success_rate)}mean return {result.mean_reward:.3f} "
        f"({episodes} episodes) after {result.num_timesteps} steps, {result.fps:.0f} fps; model saved to {result.model_path}"
    )


def train_run(
    run_dir: Path,
    settings: dict[str, Any],
    config: dict[str, Any],
    checkpoint: Path | None = None,
    threads: int | None = None,
    progress_bar: bool = True,
) -> TrainResult:
    """Train a run written by :func:`start_run` (or continue one from :func:`resume_run`) and print its summary line.

    :param run_dir: the run directory.
    :param settings: the run settings (:data:`SETTINGS`).
    :param config: the resolved config.
    :param checkpoint: the checkpoint to continue from; ``None`` starts from scratch (or from ``init_from``).
    :param threads: torch CPU threads (``None``: torch's choice).
    :param progress_bar: show SB3's progress bar.
    :return: the run's :class:`TrainResult`; on Ctrl-C, a checkpoint is saved and ``interrupted`` is set.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    agent = get_agent(settings["agent"])
    env_id, seed = settings["env"], settings["seed"]
    run, algorithm_kwargs = split_config(config, agent)

    novelty_bonus = run.get("novelty_bonus") or 0.0
    env = make_vec_env(agent, env_id, config, run["n_envs"], seed, settings["vec_env"], novel_poses=novelty_bonus > 0)
    if novelty_bonus > 0:
        # Outside VecMonitor: the logged episode returns and every evaluation stay on the task's own reward.
        env = VecNoveltyBonus(env, novelty_bonus)
    eval_envs = min(run["n_envs"], settings["eval_episodes"])
    eval_env = make_vec_env(agent, env_id, config, eval_envs, seed + EVAL_SEED_OFFSET, training=False)
    model: BaseAlgorithm
    if checkpoint is None:
        model = make_model(agent, env, algorithm_kwargs, seed=seed, device=settings["device"], tensorboard_log=str(run_dir))
        if settings.get("init_from"):
            source = model_file(settings["init_from"])
            try:
                model.set_parameters(str(source), exact_match=True, device=model.device)
            except (RuntimeError, ValueError) as error:
                raise ValueError(
                    f"--init-from {source}: its weights do not fit this run's {agent.name} model ({error}); start from a "
                    "run of the same agent with the same policy_kwargs (the env's observation space must match too)"
                ) from None
            print(f"Initialised from {source}")
    else:
        load_normalization(env, checkpoint)
        model = agent.algorithm.load(checkpoint, env=env, device=settings["device"], tensorboard_log=str(run_dir))
        model.set_random_seed(seed + model.num_timesteps)  # new episodes, not a replay of the first ones
        print(f"Resuming {run_dir} from {checkpoint} at {model.num_timesteps} steps")

    checkpoints = CheckpointCallback(settings["checkpoint_freq"], run_dir / CHECKPOINT_DIR)
    evaluation = SuccessEvalCallback(
        eval_env,
        eval_freq=settings["eval_freq"],
        n_eval_episodes=settings["eval_episodes"],
        deterministic=settings["eval_deterministic"],
        log_path=run_dir / EVALUATIONS_FILE,
        success=envs.pays_on_success(env_id),
    )
    callbacks = [evaluation, checkpoints]  # a checkpoint at step N follows the evaluation at N
    if novelty_bonus > 0:
        callbacks.append(NoveltyBonusSchedule(env, novelty_bonus, run["novelty_bonus_steps"]))
    progress = ProgressBarCallback() if progress_bar else None
    if progress is not None:
        callbacks.append(progress)
    start_steps, start_time = model.num_timesteps, time.perf_counter()

    def fps() -> float:
        return (model.num_timesteps - start_steps) / max(time.perf_counter() - start_time, 1e-9)

    try:
        try:
            model.learn(
                max(run["n_timesteps"] - model.num_timesteps, 0),
                callback=CallbackList(callbacks),
                tb_log_name=TENSORBOARD_NAME,
                reset_num_timesteps=checkpoint is None,
            )
        except KeyboardInterrupt:
            if progress is not None and hasattr(progress, "pbar"):
                progress.pbar.close()
            result = TrainResult(run_dir, checkpoints.save(model), model.num_timesteps, None, None, fps(), interrupted=True)
        else:
            learn_fps = fps()
            saved = checkpoints.save(model)  # before the final evaluation, which a Ctrl-C may interrupt
            last = evaluation.last_result
            if last is None or last["timesteps"] != model.num_timesteps:
                last = evaluation.evaluate()
            replace_atomically(saved, run_dir / FINAL_MODEL)
            if normalization_file(saved).is_file():
                replace_atomically(normalization_file(saved), normalization_file(run_dir / FINAL_MODEL))
            result = TrainResult(
                run_dir, run_dir / FINAL_MODEL, model.num_timesteps, last["success_rate"], last["mean_reward"], learn_fps
            )
    finally:
        # After Ctrl-C, SubprocVecEnv workers have stopped too and their pipes are closed.
        with contextlib.suppress(EOFError, ConnectionError):
            env.close()
        eval_env.close()
    print(summary_line(agent.name, env_id, result, settings["eval_episodes"]))
    return result
