"""One RL training run: resolve it (a new run or one to resume), prepare it (envs and model, a checkpoint loaded), then
train it.

A run directory ``<run-dir>/<env>__<agent>__<seed>__<time>/`` holds

- ``config.yml``: the resolved config (:mod:`ebmm_rl.runs.config`; ``--config`` accepts it to repeat the run);
- ``args.yml``: the run settings (agent, env, seed, device, evaluation and checkpoint frequencies);
- ``command.txt``: the command line (one line per start or resume); ``seed``: the seed;
- ``tensorboard_1/``: TensorBoard events (``train/``, ``rollout/``, ``eval/``, ``time/`` and the agent's ``memory/``);
- ``evaluations.csv``: the periodic evaluations (:data:`ebmm_rl.sb3.callbacks.EVALUATION_FIELDS`);
- ``checkpoints/model_<steps>_steps.zip``: exact checkpoints (:mod:`ebmm_rl.runs.checkpoints`), written atomically
  at the first rollout start after every ``checkpoint_freq`` steps, when the run is stopped (SIGINT or SIGTERM) and
  at the end;
- ``final_model.zip``: the trained model.

Nothing can fail for bad input once a directory is written: :func:`start_run` and :func:`resume_run` check every
setting and config value, and :func:`prepare_run` builds the envs and the model (or loads the newest readable
checkpoint, naming any it skips) before :func:`train_run` creates the directory or changes anything in it. A resumed
run drops the evaluations and TensorBoard events written after its checkpoint, so each is written once.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ProgressBarCallback
from stable_baselines3.common.vec_env import VecEnv

from ebmm_rl import envs
from ebmm_rl.agents import Agent, get_agent
from ebmm_rl.runs.arguments import MAX_SEED, check_device
from ebmm_rl.runs.atomic import replace_atomically, write_text_atomically
from ebmm_rl.runs.checkpoints import (
    CheckpointCallback,
    TrainingState,
    checkpoint_steps,
    list_checkpoints,
    load_checkpoint,
    load_first_readable,
)
from ebmm_rl.runs.config import check_arguments, load_config, load_yaml, split_config, validate
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
from ebmm_rl.runs.events import drop_events_after
from ebmm_rl.runs.experiment import EVAL_SEED_OFFSET, make_vec_env, model_candidates
from ebmm_rl.runs.interrupt import StopOnRequest, stop_on_signals
from ebmm_rl.sb3.callbacks import EvaluationInterrupted, SuccessEvalCallback
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
VEC_ENVS = ("dummy", "subproc")


@dataclass(frozen=True)
class RunSpec:
    """A run resolved from its options, nothing written yet: a new run (``run_dir`` is ``None``; its directory is made
    under ``parent`` once the model is built) or a run to resume.

    :param settings: the run settings (:data:`SETTINGS`).
    :param config: the resolved config.
    :param command: the command line, for ``command.txt``.
    :param parent: where a new run's directory goes.
    :param run_dir: the run to resume.
    :param config_changed: a resume changes ``config.yml`` (a new ``n_timesteps``).
    """

    settings: dict[str, Any]
    config: dict[str, Any]
    command: str
    parent: Path | None = None
    run_dir: Path | None = None
    config_changed: bool = False


@dataclass
class PreparedRun:
    """A run ready to train: its envs and model built, or its checkpoint loaded (see :func:`prepare_run`).

    :param spec: the run.
    :param agent: its agent.
    :param model: the model.
    :param env: the training envs (with the novelty bonus, if any).
    :param eval_env: the evaluation envs.
    :param checkpoint: the checkpoint a resumed run continues from.
    :param resume_state: that checkpoint's training state (``None`` for a new run or a checkpoint from before exact
        resume).
    """

    spec: RunSpec
    agent: Agent
    model: BaseAlgorithm
    env: VecEnv
    eval_env: VecEnv
    checkpoint: Path | None = None
    resume_state: TrainingState | None = None

    def close(self) -> None:
        """Close the envs."""
        # After a signal, SubprocVecEnv workers may have stopped too, their pipes closed.
        with contextlib.suppress(EOFError, ConnectionError):
            self.env.close()
        self.eval_env.close()


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_run` returns.

    :param run_dir: the run directory.
    :param model_path: the final model, or the checkpoint saved when the run was stopped.
    :param num_timesteps: environment steps trained, in total over all resumes (those of the saved state).
    :param success_rate: success rate of the final evaluation (``None`` if stopped).
    :param mean_reward: mean return of the final evaluation (``None`` if stopped).
    :param fps: environment steps per second since this start or resume (evaluations included).
    :param interrupted: whether a signal stopped the run (resume with ``--resume run_dir``).
    :param exit_code: 0, or 128 + the signal's number (130 after SIGINT, 143 after SIGTERM), as a shell reports a
        process the signal ended.
    """

    run_dir: Path
    model_path: Path | None
    num_timesteps: int
    success_rate: float | None
    mean_reward: float | None
    fps: float
    interrupted: bool = False
    exit_code: int = 0


def check_settings(settings: Mapping[str, Any]) -> None:
    """Check run settings against what their consumers accept.

    :raises ValueError: one line naming the option, its value and what is expected.
    """
    get_agent(settings["agent"])
    envs.resolve_env_id(settings["env"])
    checks = (
        ("seed", lambda value: 0 <= value <= MAX_SEED, f"an integer in [0, {MAX_SEED}]"),
        ("eval_freq", lambda value: value >= 0, "an integer >= 0 (0: no periodic evaluation)"),
        ("eval_episodes", lambda value: value >= 1, "an integer >= 1"),
        ("checkpoint_freq", lambda value: value >= 0, "an integer >= 0 (0: checkpoints only when stopped and at the end)"),
    )
    for key, accepts, expected in checks:
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or not accepts(value):
            raise ValueError(f"--{key.replace('_', '-')} {value!r}: expected {expected}.")
    if settings["vec_env"] not in VEC_ENVS:
        raise ValueError(f"--vec-env {settings['vec_env']!r}: expected one of {', '.join(VEC_ENVS)}.")
    if not isinstance(settings["eval_deterministic"], bool):
        raise ValueError(f"eval_deterministic {settings['eval_deterministic']!r}: expected true or false.")
    check_device(settings["device"])
    if settings.get("init_from") and not model_candidates(settings["init_from"]):
        raise ValueError(f"--init-from {settings['init_from']}: no model there; give a run directory or a model .zip.")


def start_run(
    options: Mapping[str, Any],
    command: str,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    timesteps: int | None = None,
    n_envs: int | None = None,
) -> RunSpec:
    """Resolve and check the settings and config of a new run (nothing is written).

    :param options: run settings (:data:`SETTINGS`) and ``run_dir``; missing or ``None`` ones take :data:`DEFAULTS`.
    :param command: the command line that starts the run, for ``command.txt``.
    :param config_file: a YAML file over the agent's config (:func:`ebmm_rl.runs.config.load_config`).
    :param overrides: ``key=value`` config overrides.
    :param timesteps: ``n_timesteps`` over the config's.
    :param n_envs: ``n_envs`` over the config's.
    :return: the new run's spec.
    :raises ValueError: for an unknown agent, env id or config key, a bad override or a value its consumer does not
        accept (one line, with suggestions).
    """
    settings = {key: DEFAULTS[key] if options.get(key) is None else options[key] for key in SETTINGS}
    check_settings(settings)
    settings["env"] = envs.resolve_env_id(settings["env"])
    agent = get_agent(settings["agent"])
    overrides = list(overrides)
    config = load_config(agent, settings["env"], config_file, overrides)
    for key, value in (("n_timesteps", timesteps), ("n_envs", n_envs)):
        if value is not None:
            config[key] = value
    validate(config, agent, "--timesteps/--n-envs")
    check_arguments(config, agent, "--set " + " ".join(overrides) if overrides else "config")
    return RunSpec(settings, config, command, parent=Path(options.get("run_dir") or DEFAULTS["run_dir"]))


def resume_run(
    run_dir: str | Path, command: str, changes: Mapping[str, Any] | None = None, timesteps: int | None = None
) -> RunSpec:
    """Read a run's settings and config back and apply the changes given now (nothing is written).

    :param run_dir: the run directory to continue.
    :param command: the command line that resumes it, appended to ``command.txt`` once it has resumed.
    :param changes: run settings to change (e.g. ``eval_freq``); those of :data:`RESUME_KEEPS` cannot change.
    :param timesteps: a new total step budget.
    :return: the run's spec.
    :raises ValueError: the directory is not a run, holds no checkpoint, or a change touches :data:`RESUME_KEEPS` or
        is not accepted.
    """
    changes = {key: value for key, value in (changes or {}).items() if value is not None}
    kept = [key for key in changes if key in RESUME_KEEPS]
    if kept:
        options = ", ".join("--" + key.replace("_", "-") for key in kept)
        raise ValueError(f"--resume keeps the run's env, agent, seed, config and directory; drop {options}.")
    run_dir = Path(run_dir)
    if not (run_dir / ARGS_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        raise ValueError(f"{run_dir} is not a run directory (it needs {ARGS_FILE} and {CONFIG_FILE}).")
    if not list_checkpoints(run_dir / CHECKPOINT_DIR):
        raise ValueError(f"{run_dir / CHECKPOINT_DIR} holds no checkpoint to resume from; start a new run instead.")
    settings = {**DEFAULTS, **load_yaml(run_dir / ARGS_FILE)}
    settings = {key: settings[key] for key in SETTINGS}
    settings.update({key: value for key, value in changes.items() if key in SETTINGS})
    check_settings(settings)
    config = load_yaml(run_dir / CONFIG_FILE)
    if timesteps is not None:
        if timesteps < 1:
            raise ValueError(f"--timesteps {timesteps}: expected an integer >= 1.")
        config["n_timesteps"] = timesteps
    return RunSpec(settings, config, command, run_dir=run_dir, config_changed=timesteps is not None)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def prepare_run(spec: RunSpec, threads: int | None = None) -> PreparedRun:
    """Build a run's envs and model, or load the newest readable checkpoint of a run to resume; nothing is written.

    :param spec: the run (:func:`start_run` or :func:`resume_run`).
    :param threads: torch CPU threads (``None``: torch's choice).
    :return: the prepared run; :func:`train_run` trains it.
    :raises ValueError: if the config does not fit the env or the algorithm, or no checkpoint can be loaded (naming
        each file and its problem).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    settings, config = spec.settings, spec.config
    agent = get_agent(settings["agent"])
    env_id, seed = settings["env"], settings["seed"]
    run, algorithm_kwargs = split_config(config, agent)
    novelty_bonus = run.get("novelty_bonus") or 0.0
    try:
        env: VecEnv = make_vec_env(
            agent, env_id, config, run["n_envs"], seed, settings["vec_env"], novel_poses=novelty_bonus > 0
        )
    except TypeError as error:  # gymnasium.make passes env_kwargs on to the env's constructor
        raise ValueError(f"env_kwargs {config.get('env_kwargs', {})!r} do not fit {env_id}: {_one_line(error)}") from None
    if novelty_bonus > 0:
        # Outside VecMonitor: the logged episode returns and every evaluation stay on the task's own reward.
        env = VecNoveltyBonus(env, novelty_bonus)
    eval_env = make_vec_env(agent, env_id, config, min(run["n_envs"], settings["eval_episodes"]), seed + EVAL_SEED_OFFSET)
    device = settings["device"]
    try:
        if spec.run_dir is None:
            try:
                model = agent.algorithm(env=env, seed=seed, device=device, **algorithm_kwargs)
            except (ValueError, TypeError, AssertionError) as error:
                raise ValueError(
                    f"the config does not fit {agent.name} ({agent.algorithm.__name__}): {_one_line(error)}"
                ) from None
            if settings.get("init_from"):
                _initialise_from(model, agent, settings["init_from"])
            return PreparedRun(spec, agent, model, env, eval_env)
        (model, state), checkpoint = load_first_readable(
            list_checkpoints(spec.run_dir / CHECKPOINT_DIR),
            lambda path: load_checkpoint(agent.algorithm, path, env, device=device, tensorboard_log=str(spec.run_dir)),
        )
        if state is None:
            print(f"{checkpoint} predates exact checkpoints: its envs start new episodes", file=sys.stderr)
            model.set_random_seed(seed + model.num_timesteps)  # new episodes, not a replay of the first ones
        return PreparedRun(spec, agent, model, env, eval_env, checkpoint, state)
    except BaseException:
        env.close()
        eval_env.close()
        raise


def _initialise_from(model: BaseAlgorithm, agent: Agent, source: str | Path) -> None:
    def load(path: Path) -> Path:
        try:
            model.set_parameters(str(path), exact_match=True, device=model.device)
        except (RuntimeError, ValueError) as error:
            raise ValueError(
                f"--init-from {path}: its weights do not fit this run's {agent.name} model ({error}); start from a run of "
                "the same agent with the same policy_kwargs (the env's observation space must match too)"
            ) from None
        return path

    _, path = load_first_readable(model_candidates(source), load)
    print(f"Initialised from {path}")


def _write_new_run(spec: RunSpec, model: BaseAlgorithm) -> Path:
    settings = spec.settings
    assert spec.parent is not None
    run_dir = new_run_dir(spec.parent, f"{settings['env']}__{settings['agent']}__{settings['seed']}")
    write_text_atomically(run_dir / CONFIG_FILE, yaml.safe_dump(spec.config, sort_keys=False))
    write_text_atomically(run_dir / ARGS_FILE, yaml.safe_dump(settings, sort_keys=False))
    write_text_atomically(run_dir / SEED_FILE, f"{settings['seed']}\n")
    write_text_atomically(run_dir / COMMAND_FILE, spec.command + "\n")
    model.tensorboard_log = str(run_dir)
    return run_dir


def _record_resume(prepared: PreparedRun) -> Path:
    spec = prepared.spec
    run_dir = spec.run_dir
    assert run_dir is not None
    print(f"Resuming {run_dir} from {prepared.checkpoint} at {prepared.model.num_timesteps} steps")
    if spec.config_changed:
        write_text_atomically(run_dir / CONFIG_FILE, yaml.safe_dump(spec.config, sort_keys=False))
    write_text_atomically(run_dir / ARGS_FILE, yaml.safe_dump(spec.settings, sort_keys=False))
    with open(run_dir / COMMAND_FILE, "a") as file:
        file.write(spec.command + "\n")
    for folder in run_dir.glob(f"{TENSORBOARD_NAME}_*"):
        drop_events_after(folder, prepared.model.num_timesteps)
    return run_dir


def _finish(run_dir: Path, saved: Path, evaluation: SuccessEvalCallback, learn_fps: float) -> TrainResult | None:
    """The final evaluation (unless the last periodic one was at the final step) and the final model; ``None`` if a
    signal interrupted the evaluation (the checkpoint is saved: a resume redoes it)."""
    model = evaluation.model
    last = evaluation.last_result
    if last is None or last["timesteps"] != model.num_timesteps:
        try:
            last = evaluation.evaluate()
        except EvaluationInterrupted:
            return None
    replace_atomically(saved, run_dir / FINAL_MODEL)
    return TrainResult(
        run_dir, run_dir / FINAL_MODEL, model.num_timesteps, last["success_rate"], last["mean_reward"], learn_fps
    )


def summary_line(agent: str, env_id: str, result: TrainResult, episodes: int) -> str:
    """The one line printed at the end of a run."""
    if result.interrupted:
        saved = (
            f"saved the state after the update at {result.num_timesteps} steps to {result.model_path}"
            if result.model_path is not None
            else "no checkpoint yet"
        )
        return (
            f"{agent} on {env_id}: stopped ({result.fps:.0f} fps); {saved}; continue with: {TRAIN_PROGRAM} --resume "
            f"{shlex.quote(str(result.run_dir))}"
        )
    return (
        f"{agent} on {env_id}: success {result.success_rate:.1%}, mean return {result.mean_reward:.3f} "
        f"({episodes} episodes) after {result.num_timesteps} steps, {result.fps:.0f} fps; model saved to {result.model_path}"
    )


def train_run(
    prepared: PreparedRun, progress_bar: bool = True, callback_after_eval: BaseCallback | None = None
) -> TrainResult:
    """Train a prepared run and print its summary line: a new run's directory is written first, a resumed run's files
    are brought to its checkpoint's step.

    SIGINT or SIGTERM stops the run at its next environment step and saves the state at the start of its rollout
    (exact; see :mod:`ebmm_rl.runs.checkpoints`); an evaluation under way is abandoned, and redone on resume.

    :param prepared: the run (:func:`prepare_run`).
    :param progress_bar: show SB3's progress bar.
    :param callback_after_eval: called after each periodic evaluation (see
        :class:`~ebmm_rl.sb3.callbacks.SuccessEvalCallback`); returning False ends training early, as a finished run.
    :return: the run's :class:`TrainResult`.
    """
    spec, model = prepared.spec, prepared.model
    settings, config = spec.settings, spec.config
    run_dir = _write_new_run(spec, model) if spec.run_dir is None else _record_resume(prepared)
    run, _ = split_config(config, prepared.agent)
    start_steps, start_time = model.num_timesteps, time.perf_counter()

    def fps() -> float:
        return (model.num_timesteps - start_steps) / max(time.perf_counter() - start_time, 1e-9)

    with stop_on_signals() as stop:
        checkpoints = CheckpointCallback(settings["checkpoint_freq"], run_dir / CHECKPOINT_DIR, prepared.resume_state)
        evaluation = SuccessEvalCallback(
            prepared.eval_env,
            eval_freq=settings["eval_freq"],
            n_eval_episodes=settings["eval_episodes"],
            deterministic=settings["eval_deterministic"],
            log_path=run_dir / EVALUATIONS_FILE,
            seed=settings["seed"] + EVAL_SEED_OFFSET,
            stop_requested=stop,
            callback_after_eval=callback_after_eval,
        )
        stopper = StopOnRequest(stop)
        callbacks = [evaluation, checkpoints, stopper]
        if isinstance(prepared.env, VecNoveltyBonus):
            callbacks.append(NoveltyBonusSchedule(prepared.env, prepared.env.bonus, run["novelty_bonus_steps"]))
        progress = ProgressBarCallback() if progress_bar else None
        if progress is not None:
            callbacks.append(progress)

        def stopped(path: Path | None, steps: int) -> TrainResult:
            if progress is not None and hasattr(progress, "pbar"):
                progress.pbar.close()
            return TrainResult(run_dir, path, steps, None, None, fps(), interrupted=True, exit_code=stop.exit_code or 130)

        try:
            try:
                model.learn(
                    max(run["n_timesteps"] - model.num_timesteps, 0),
                    callback=CallbackList(callbacks),
                    tb_log_name=TENSORBOARD_NAME,
                    reset_num_timesteps=spec.run_dir is None,  # a resumed run continues its step count and curves
                )
            except (EOFError, ConnectionError):
                if not stop():  # SubprocVecEnv workers ended by the same signal; otherwise a real failure
                    raise
                stopper.stopped = True
            if stopper.stopped:  # mid-rollout: the policy is still that of the rollout's start
                result = stopped(checkpoints.save_rollout_start(), checkpoints.rollout_start.num_timesteps)
            else:
                learn_fps = fps()
                saved = checkpoints.save_now()  # before the final evaluation, which a signal may interrupt
                result = _finish(run_dir, saved, evaluation, learn_fps) or stopped(saved, model.num_timesteps)
        except KeyboardInterrupt:  # a second signal: keep what is on disk
            found = list_checkpoints(run_dir / CHECKPOINT_DIR)
            result = stopped(found[0] if found else None, checkpoint_steps(found[0]) if found else 0)
        finally:
            prepared.close()
    print(summary_line(prepared.agent.name, settings["env"], result, settings["eval_episodes"]))
    return result
