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
- ``best_model.zip``: the model of the best evaluation (success rate, then mean return) of the stage reached, written
  atomically when an evaluation beats it (SB3's ``EvalCallback`` convention), and ``best_model.json``, that evaluation
  and its stage (so a resumed run keeps the model even when it drops the evaluation);
- ``final_model.zip``: the trained model.

A config with a ``curriculum`` trains the one model through its stages in this one directory
(:mod:`ebmm_rl.runs.curriculum`): step counts are the run's, each evaluation row and ``rollout/stage`` say the stage, and
the last line names the stage reached.

Nothing can fail for bad input once a directory is written: :func:`start_run` and :func:`resume_run` check every
setting and config value, and :func:`prepare_run` builds the envs and the model (or loads the newest readable
checkpoint, naming any it skips) before :func:`train_run` creates the directory or changes anything in it. A resumed
run drops the evaluations and TensorBoard events written after its checkpoint, so each is written once.
"""

from __future__ import annotations

import contextlib
import csv
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import VecEnv

from ebmm_rl import envs
from ebmm_rl.agents import Agent, get_agent
from ebmm_rl.runs.arguments import MAX_SEED, check_device
from ebmm_rl.runs.atomic import replace_atomically, write_text_atomically
from ebmm_rl.runs.checkpoints import (
    BestModel,
    CheckpointCallback,
    CheckpointError,
    TrainingState,
    checkpoint_steps,
    list_checkpoints,
    load_checkpoint,
    load_first_readable,
    normalization_file,
    read_training_state,
)
from ebmm_rl.runs.config import check_arguments, load_config, load_yaml, split_config, validate
from ebmm_rl.runs.curriculum import (
    Stage,
    StageAdvance,
    StageGate,
    StagePosition,
    apply_stage,
    check_spaces,
    stage_end,
    stages,
)
from ebmm_rl.runs.directory import (
    ARGS_FILE,
    BEST_MODEL,
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
from ebmm_rl.runs.experiment import (
    EVAL_SEED_OFFSET,
    default_policy,
    load_normalization,
    make_model,
    make_vec_env,
    model_candidates,
    observation_space,
)
from ebmm_rl.runs.interrupt import StopOnRequest, stop_on_signals
from ebmm_rl.sb3.callbacks import EvaluationInterrupted, SuccessEvalCallback, TrainingProgress
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
    :param env: the training envs of the stage (with the novelty bonus, if any).
    :param eval_env: the evaluation envs of the stage.
    :param stages: the run's stages (:func:`ebmm_rl.runs.curriculum.stages`; one without a curriculum).
    :param position: the stage the run is in (a resumed run's, from its checkpoint).
    :param checkpoint: the checkpoint a resumed run continues from.
    :param resume_state: that checkpoint's training state (``None`` for a new run or a checkpoint from before exact
        resume).
    """

    spec: RunSpec
    agent: Agent
    model: BaseAlgorithm
    env: VecEnv
    eval_env: VecEnv
    stages: list[Stage]
    position: StagePosition
    checkpoint: Path | None = None
    resume_state: TrainingState | None = None

    @property
    def stage(self) -> Stage:
        """The stage the run is in."""
        return self.stages[self.position.index]

    @property
    def stage_end(self) -> int:
        """The step the current stage ends at, at the latest."""
        return stage_end(self.stage, self.position.start, self.spec.config["n_timesteps"])

    def describe_stage(self) -> str:
        """``stage 2 of 2 (memory, MiniGrid-Memory-v0)``; empty without a curriculum."""
        return self.stage.describe(len(self.stages))

    def advance(self) -> None:
        """Go on to the next stage at the model's step: its envs (with the ``VecNormalize`` statistics so far, if the run
        normalises), its settings (:func:`ebmm_rl.runs.curriculum.apply_stage`) and fresh episode statistics."""
        previous = self.model.get_vec_normalize_env()
        self.close()
        # In place: the checkpoints and the gate read this position.
        self.position.index, self.position.start, self.position.held = self.position.index + 1, self.model.num_timesteps, 0
        self.env, self.eval_env = _make_envs(self.agent, self.spec.settings, self.stage)
        self.model.set_env(self.env)  # the next learn() resets the new envs
        current = self.model.get_vec_normalize_env()
        if previous is not None and current is not None:  # the policy has learned on inputs scaled by these statistics
            current.obs_rms, current.ret_rms = previous.obs_rms, previous.ret_rms
        self.model.ep_info_buffer.clear()
        self.model.ep_success_buffer.clear()
        apply_stage(self.model, self.stage, self.agent, self.position.start, self.stage_end)

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
    :param success_rate: success rate of the final evaluation (``None`` if stopped, ``nan`` on an env without
        success).
    :param mean_reward: mean return of the final evaluation (``None`` if stopped).
    :param fps: environment steps per second since this start or resume (evaluations included).
    :param interrupted: whether a signal stopped the run (resume with ``--resume run_dir``).
    :param exit_code: 0, or 128 + the signal's number (130 after SIGINT, 143 after SIGTERM), as a shell reports a
        process the signal ended.
    :param stage: the curriculum stage reached (``stage 2 of 2 (memory, MiniGrid-Memory-v0)``; empty without one).
    :param best_model_path: the model of the stage's best evaluation, if one was made.
    """

    run_dir: Path
    model_path: Path | None
    num_timesteps: int
    success_rate: float | None
    mean_reward: float | None
    fps: float
    interrupted: bool = False
    exit_code: int = 0
    stage: str = ""
    best_model_path: Path | None = None


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

    :param options: run settings (:data:`SETTINGS`) and ``run_dir``; missing or ``None`` ones take the config's
        ``eval_deterministic`` where it has one, else :data:`DEFAULTS`.
    :param command: the command line that starts the run, for ``command.txt``.
    :param config_file: a YAML file over the agent's config (:func:`ebmm_rl.runs.config.load_config`).
    :param overrides: ``key=value`` config overrides.
    :param timesteps: ``n_timesteps`` over the config's.
    :param n_envs: ``n_envs`` over the config's.
    :return: the new run's spec.
    :raises ValueError: for an unknown agent, env id or config key, a bad override, a value its consumer does not
        accept or a curriculum whose stages do not fit one model (one line, with suggestions).
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
    if options.get("eval_deterministic") is None and "eval_deterministic" in config:  # the option wins over the config
        settings["eval_deterministic"] = config["eval_deterministic"]
        check_settings(settings)
    policy = None
    if not config.get("policy"):  # the algorithm's policy for the env's observation space, as make_model picks it
        try:
            policy = default_policy(agent.algorithm, observation_space(agent, settings["env"], config))
        except TypeError as error:  # gymnasium.make passes env_kwargs on to the env's constructor
            raise _bad_env_kwargs(config, settings["env"], error) from None
    check_arguments(config, agent, "--set " + " ".join(overrides) if overrides else "config", policy)
    run_stages = stages(config, settings["env"], agent)
    if run_stages[0].name is not None:
        check_spaces(run_stages, agent)
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


def success_note(success_rate: float | None) -> str:
    """``"success 95.0%, "``, or nothing for an env without success (a ``nan`` rate)."""
    return "" if success_rate is None or np.isnan(success_rate) else f"success {success_rate:.1%}, "


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _bad_env_kwargs(config: Mapping[str, Any], env_id: str, error: TypeError) -> ValueError:
    return ValueError(f"env_kwargs {config.get('env_kwargs', {})!r} do not fit {env_id}: {_one_line(error)}")


def _make_envs(agent: Agent, settings: Mapping[str, Any], stage: Stage) -> tuple[VecEnv, VecEnv]:
    """A stage's training envs (with its novelty bonus, if any) and evaluation envs."""
    config, seed = stage.config, settings["seed"]
    n_envs = config["n_envs"]
    novelty_bonus = config.get("novelty_bonus") or 0.0
    try:
        env: VecEnv = make_vec_env(
            agent, stage.env_id, config, n_envs, seed, settings["vec_env"], novel_poses=novelty_bonus > 0
        )
    except TypeError as error:  # gymnasium.make passes env_kwargs on to the env's constructor
        raise _bad_env_kwargs(config, stage.env_id, error) from None
    if novelty_bonus > 0:
        # Outside VecMonitor: the logged episode returns and every evaluation stay on the task's own reward.
        env = VecNoveltyBonus(env, novelty_bonus)
    eval_envs = min(n_envs, settings["eval_episodes"])
    eval_env = make_vec_env(agent, stage.env_id, config, eval_envs, seed + EVAL_SEED_OFFSET, training=False)
    return env, eval_env


def prepare_run(spec: RunSpec, threads: int | None = None) -> PreparedRun:
    """Build a run's envs and model, or load the newest readable checkpoint of a run to resume; nothing is written.

    A resumed run builds the envs of the curriculum stage its checkpoint is in.

    :param spec: the run (:func:`start_run` or :func:`resume_run`).
    :param threads: torch CPU threads (``None``: torch's choice).
    :return: the prepared run; :func:`train_run` trains it.
    :raises ValueError: if the config does not fit the env or the algorithm, or no checkpoint can be loaded (naming each
        file and its problem).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    settings, config = spec.settings, spec.config
    agent = get_agent(settings["agent"])
    run_stages = stages(config, settings["env"], agent)  # checked by start_run
    seed, device = settings["seed"], settings["device"]
    if spec.run_dir is None:
        position = StagePosition()
        stage = run_stages[0]
        env, eval_env = _make_envs(agent, settings, stage)
        try:
            _, algorithm_kwargs = split_config(stage.config, agent)
            try:
                model = make_model(agent, env, algorithm_kwargs, seed=seed, device=device)
            except (ValueError, TypeError, AssertionError) as error:
                raise ValueError(
                    f"the config does not fit {agent.name} ({agent.algorithm.__name__}): {_one_line(error)}"
                ) from None
            if settings.get("init_from"):
                _initialise_from(model, agent, settings["init_from"])
        except BaseException:
            env.close()
            eval_env.close()
            raise
        prepared = PreparedRun(spec, agent, model, env, eval_env, run_stages, position)
    else:
        prepared = _load_resumed(spec, agent, run_stages)
    if run_stages[0].name is not None:
        apply_stage(prepared.model, prepared.stage, agent, prepared.position.start, prepared.stage_end)
    return prepared


def _load_resumed(spec: RunSpec, agent: Agent, run_stages: list[Stage]) -> PreparedRun:
    """Load the newest readable checkpoint of a run with the envs of the stage it was saved in."""
    assert spec.run_dir is not None
    run_dir = spec.run_dir

    def load(path: Path) -> PreparedRun:
        state = read_training_state(path)
        position = StagePosition.from_dict(None if state is None else state.stage)
        if position.index >= len(run_stages):
            raise CheckpointError(f"{path} is in stage {position.index + 1}; the run's config has {len(run_stages)}")
        env, eval_env = _make_envs(agent, spec.settings, run_stages[position.index])
        try:
            if state is None:  # an exact checkpoint's state holds the statistics as they were at its rollout's start
                load_normalization(env, path)
            model, state = load_checkpoint(
                agent.algorithm, path, env, device=spec.settings["device"], tensorboard_log=str(run_dir)
            )
        except BaseException:
            env.close()
            eval_env.close()
            raise
        return PreparedRun(spec, agent, model, env, eval_env, run_stages, position, path, state)

    prepared, checkpoint = load_first_readable(list_checkpoints(run_dir / CHECKPOINT_DIR), load)
    if prepared.resume_state is None:
        print(f"{checkpoint} predates exact checkpoints: its envs start new episodes", file=sys.stderr)
        # new episodes, not a replay of the first ones
        prepared.model.set_random_seed(spec.settings["seed"] + prepared.model.num_timesteps)
    return prepared


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
    where = f" in {prepared.describe_stage()}" if prepared.describe_stage() else ""
    print(f"Resuming {run_dir} from {prepared.checkpoint} at {prepared.model.num_timesteps} steps{where}")
    if spec.config_changed:
        write_text_atomically(run_dir / CONFIG_FILE, yaml.safe_dump(spec.config, sort_keys=False))
    write_text_atomically(run_dir / ARGS_FILE, yaml.safe_dump(spec.settings, sort_keys=False))
    with open(run_dir / COMMAND_FILE, "a") as file:
        file.write(spec.command + "\n")
    for folder in run_dir.glob(f"{TENSORBOARD_NAME}_*"):
        drop_events_after(folder, prepared.model.num_timesteps)
    return run_dir


def _finish(
    run_dir: Path, saved: Path, evaluation: SuccessEvalCallback, learn_fps: float, stage: str, best: BestModel
) -> TrainResult | None:
    """The final evaluation (unless the last periodic one was at the final step) and the final model; ``None`` if a
    signal interrupted the evaluation (the checkpoint is saved: a resume redoes it)."""
    model = evaluation.model
    last = evaluation.last_result
    if last is None or last["timesteps"] != model.num_timesteps:
        bound = evaluation.max_episode_steps()
        cost = f" of up to {bound:,} steps each" if bound is not None else ""
        print(f"Final evaluation: {evaluation.n_eval_episodes} episodes{cost} (--eval-episodes sets how many)", flush=True)
        try:
            last = evaluation.evaluate()
        except EvaluationInterrupted:
            return None
    replace_atomically(saved, run_dir / FINAL_MODEL)
    if normalization_file(saved).is_file():
        replace_atomically(normalization_file(saved), normalization_file(run_dir / FINAL_MODEL))
    return TrainResult(
        run_dir,
        run_dir / FINAL_MODEL,
        model.num_timesteps,
        last["success_rate"],
        last["mean_reward"],
        learn_fps,
        stage=stage,
        best_model_path=best.path if best.path.is_file() else None,
    )


def summary_line(agent: str, env_id: str, result: TrainResult, episodes: int) -> str:
    """The one line printed at the end of a run (with a curriculum, the stage reached: its env is the one evaluated)."""
    run = f"{agent} on {env_id}" + (f" (curriculum: reached {result.stage})" if result.stage else "")
    if result.interrupted:
        saved = (
            f"saved the state after the update at {result.num_timesteps} steps to {result.model_path}"
            if result.model_path is not None
            else "no checkpoint yet"
        )
        return (
            f"{run}: stopped ({result.fps:.0f} fps); {saved}; continue with: {TRAIN_PROGRAM} --resume "
            f"{shlex.quote(str(result.run_dir))}"
        )
    best = f", the best evaluation's to {result.best_model_path}" if result.best_model_path is not None else ""
    return (
        f"{run}: {success_note(result.success_rate)}mean return {result.mean_reward:.3f} ({episodes} episodes) after "
        f"{result.num_timesteps} steps, {result.fps:.0f} fps; model saved to {result.model_path}{best}"
    )


def _stage_rows(run_dir: Path, position: StagePosition, num_timesteps: int) -> list[dict[str, float]]:
    """The evaluations of the current stage up to a step (those a resumed run keeps)."""
    path = run_dir / EVALUATIONS_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    return [
        {key: float(value) for key, value in row.items() if value not in ("", None)}
        for row in rows
        if int(row["timesteps"]) <= num_timesteps and int(row.get("stage") or 1) == position.index + 1
    ]


class EndRun(Exception):
    """An ``on_evaluation`` handler ended the run at an evaluation (e.g. a hyperparameter search pruning a trial)."""


def train_run(
    prepared: PreparedRun,
    progress_bar: bool = True,
    on_evaluation: Callable[[dict[str, float]], bool] | None = None,
) -> TrainResult:
    """Train a prepared run through its stages and print its summary line: a new run's directory is written first, a
    resumed run's files are brought to its checkpoint's step.

    SIGINT or SIGTERM stops the run at its next environment step and saves the state at the start of its rollout
    (exact; see :mod:`ebmm_rl.runs.checkpoints`); an evaluation under way is abandoned, and redone on resume.

    :param prepared: the run (:func:`prepare_run`).
    :param progress_bar: show progress: a bar on a terminal, else a line a minute (and for long evaluations).
    :param on_evaluation: called with each periodic evaluation's row (:data:`~ebmm_rl.sb3.callbacks.EVALUATION_FIELDS`);
        returning False ends the run there, as a finished run (a hyperparameter search prunes a trial this way).
    :return: the run's :class:`TrainResult`.
    """
    spec, model = prepared.spec, prepared.model
    settings, config = spec.settings, spec.config
    run_dir = _write_new_run(spec, model) if spec.run_dir is None else _record_resume(prepared)
    n_timesteps = config["n_timesteps"]
    start_steps, start_time = model.num_timesteps, time.perf_counter()

    def fps() -> float:
        return (model.num_timesteps - start_steps) / max(time.perf_counter() - start_time, 1e-9)

    rows = _stage_rows(run_dir, prepared.position, model.num_timesteps)
    best = BestModel(run_dir / BEST_MODEL, rows, stage=prepared.position.index + 1)
    with stop_on_signals() as stop:
        checkpoints = CheckpointCallback(
            settings["checkpoint_freq"], run_dir / CHECKPOINT_DIR, prepared.resume_state, prepared.position.as_dict
        )
        stopper = StopOnRequest(stop)
        progress = TrainingProgress(n_timesteps, fps, prepared.describe_stage) if progress_bar else None

        def stopped(path: Path | None, steps: int) -> TrainResult:
            if progress is not None:
                progress.close()
            return TrainResult(
                run_dir,
                path,
                steps,
                None,
                None,
                fps(),
                interrupted=True,
                exit_code=stop.exit_code or 130,
                stage=prepared.describe_stage(),
            )

        first_learn = spec.run_dir is None
        ended = False
        try:
            while True:
                stage, position = prepared.stage, prepared.position
                last_stage = position.index == len(prepared.stages) - 1
                gate = StageGate(stage, position)

                def after_evaluation(row: dict[str, float], gate: StageGate = gate) -> None:
                    best.offer(model, row)
                    gate.record(row["success_rate"])
                    if on_evaluation is not None and on_evaluation(row) is False:
                        raise EndRun

                evaluation = SuccessEvalCallback(
                    prepared.eval_env,
                    eval_freq=settings["eval_freq"],
                    n_eval_episodes=settings["eval_episodes"],
                    deterministic=settings["eval_deterministic"],
                    log_path=run_dir / EVALUATIONS_FILE,
                    success=envs.pays_on_success(stage.env_id),
                    seed=settings["seed"] + EVAL_SEED_OFFSET,
                    stop_requested=stop,
                    stage=position.index + 1,
                    after_evaluation=after_evaluation,
                    progress=progress_bar,
                )
                # The gate first: when it ends a stage at a rollout's start, no other callback has seen that start.
                callbacks: list[BaseCallback] = [gate, evaluation, checkpoints, stopper]
                if isinstance(prepared.env, VecNoveltyBonus):
                    bonus_steps = stage.config["novelty_bonus_steps"]
                    callbacks.append(NoveltyBonusSchedule(prepared.env, prepared.env.bonus, bonus_steps, position.start))
                if progress is not None:
                    callbacks.append(progress)
                try:
                    model.learn(
                        max(prepared.stage_end - model.num_timesteps, 0),
                        callback=CallbackList(callbacks),
                        tb_log_name=TENSORBOARD_NAME,
                        reset_num_timesteps=first_learn,  # later stages and resumed runs continue the count and curves
                    )
                except StageAdvance:
                    if last_stage:
                        print(
                            f"Ending at {model.num_timesteps:,} steps: {stage.evaluations} evaluations in a row reached "
                            f"{stage.success_rate:g}, the last stage's advance",
                            flush=True,
                        )
                except EndRun:
                    ended = True
                except (EOFError, ConnectionError):
                    if not stop():  # SubprocVecEnv workers ended by the same signal; otherwise a real failure
                        raise
                    stopper.stopped = True
                first_learn = False
                if stopper.stopped:  # mid-rollout: the policy is still that of the rollout's start
                    with stop.save_before_stopping():
                        saved = checkpoints.save_rollout_start()
                    result = stopped(saved, checkpoints.rollout_start.num_timesteps)
                    break
                if last_stage or model.num_timesteps >= n_timesteps or ended:
                    learn_fps = fps()
                    saved = checkpoints.save_now()  # before the final evaluation, which a signal may interrupt
                    if progress is not None:
                        progress.close()
                    result = _finish(run_dir, saved, evaluation, learn_fps, prepared.describe_stage(), best) or stopped(
                        saved, model.num_timesteps
                    )
                    break
                if stop():  # between two stages: save at the end of this one; a resume goes on to the next
                    with stop.save_before_stopping():
                        saved = checkpoints.save_now()
                    result = stopped(saved, model.num_timesteps)
                    break
                # The next learn() keeps this logger (SB3 makes a new one otherwise), with the last update's values.
                model.set_logger(model.logger)
                prepared.advance()
                best.reset(stage=prepared.position.index + 1)
                print(f"Advancing at {model.num_timesteps:,} steps to {prepared.describe_stage()}", flush=True)
        except KeyboardInterrupt:  # a second signal: keep what is on disk
            found = list_checkpoints(run_dir / CHECKPOINT_DIR)
            result = stopped(found[0] if found else None, checkpoint_steps(found[0]) if found else 0)
        finally:
            prepared.close()
    print(summary_line(prepared.agent.name, settings["env"], result, settings["eval_episodes"]))
    return result
