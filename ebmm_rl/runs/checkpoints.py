"""Exact, atomic SB3 checkpoints of a run: ``checkpoints/model_<steps>_steps.zip``, found again on resume.

A checkpoint at step N holds the whole training state after the update on the rollout that ended at step N: SB3's model
file (policy, optimiser, the schedules' progress, the last observations, the episode statistics) and, as one more member
of the same zip, what SB3 leaves out (:class:`TrainingState`): the random generators of torch, numpy and ``random``,
every training env's own state (its generator, the episode under way, its wrappers' buffers; :class:`ResumableEnv`),
the state of the VecEnv wrappers around them (:data:`WRAPPER_ATTRIBUTES`: ``VecMonitor``'s running episodes,
``VecNormalize``'s running statistics, :class:`~ebmm_rl.sb3.window.VecEpisodicWindow`'s windows), a recurrent policy's
last hidden state, gSDE's exploration noise and the logger's values not yet written.

Why at a rollout's start: SB3 (and sb3-contrib) collect a rollout, then update on it. Between the update and the next
rollout's first step nothing draws a random number or steps an env, so the state there is complete without a rollout
buffer. :class:`CheckpointCallback` captures it at every rollout start and writes it when due; a run stopped mid-rollout
is rewound to that capture (the policy changes only in the update) and saved from there. A resumed run restores all of
it and replays what follows: on the CPU it ends bit for bit where the run would have ended uninterrupted. gSDE
(``use_sde``) draws its noise just before a rollout starts: a resumed run's first rollout puts back the noise and the
random generators of the captured start over the ones it has just drawn.
"""

from __future__ import annotations

import copy
import json
import pickle
import random
import re
import sys
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gymnasium
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor, VecNormalize

from ebmm_rl.runs.atomic import write_atomically, write_text_atomically
from ebmm_rl.sb3.callbacks import next_multiple
from ebmm_rl.sb3.window import VecEpisodicWindow

CHECKPOINT_PATTERN = re.compile(r"^model_(\d+)_steps\.zip$")
SB3_DATA_MEMBER = "data"
"""The member of an SB3 model zip that holds its settings (and every other SB3 save has)."""
TRAINING_STATE_MEMBER = "training_state.pkl"
"""The zip member holding the :class:`TrainingState` (SB3's loader reads only its own members)."""
ALGORITHM_ATTRIBUTES = (
    "num_timesteps",
    "_last_obs",
    "_last_episode_starts",
    "_last_original_obs",
    "ep_info_buffer",
    "ep_success_buffer",
    "_episode_num",
    "_current_progress_remaining",
    "_n_updates",
    "_last_lstm_states",  # sb3-contrib's recurrent algorithms; their own save leaves it out
)
"""Attributes of an SB3 algorithm that change while it collects a rollout."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong with it."""


class ResumableEnv(gymnasium.Wrapper):
    """An env whose exact state a checkpoint can hold: :meth:`snapshot` pickles the env it wraps (its random generator,
    the episode under way, every wrapper's buffers) and :meth:`restore_snapshot` puts such a copy in its place. SB3's
    VecEnvs reach both through ``env_method``, in this process or in ``SubprocVecEnv`` workers."""

    def snapshot(self) -> bytes:
        """The wrapped env, pickled."""
        return pickle.dumps(self.env)

    def restore_snapshot(self, snapshot: bytes) -> None:
        """Continue from a :meth:`snapshot`."""
        self.env = pickle.loads(snapshot)


def _map_tensors(value: Any, function: Any) -> Any:
    """Apply ``function`` to every tensor in nested tuples (named or not), lists and dicts."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map_tensors(item, function) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(item, function) for item in value)
    if isinstance(value, dict):
        return {key: _map_tensors(item, function) for key, item in value.items()}
    return value


WRAPPER_ATTRIBUTES: dict[type[VecEnvWrapper], tuple[str, ...]] = {
    VecMonitor: ("episode_returns", "episode_lengths", "episode_count"),
    VecNormalize: ("obs_rms", "ret_rms", "returns", "old_obs", "old_reward"),
    VecEpisodicWindow: ("_windows",),
}
"""The VecEnv wrappers that keep state between steps, and the attributes that hold it."""
SDE_NOISE_ATTRIBUTES = ("exploration_mat", "exploration_matrices")
"""gSDE's noise, drawn at a rollout's start (``policy.action_dist``, SB3's ``StateDependentNoiseDistribution``)."""


def _stateful_wrappers(env: VecEnv) -> dict[str, VecEnvWrapper]:
    """The wrappers of :data:`WRAPPER_ATTRIBUTES` around the envs, by class name."""
    found = {}
    while isinstance(env, VecEnvWrapper):
        if type(env) in WRAPPER_ATTRIBUTES:
            found[type(env).__name__] = env
        env = env.venv
    return found


@dataclass
class TrainingState:
    """What an SB3 model file leaves out of a training run's state at a rollout's start (see the module docstring).

    :param num_timesteps: the step it was captured at.
    :param algorithm: copies of the model's :data:`ALGORITHM_ATTRIBUTES` (tensors on the CPU).
    :param random: the states of torch's (CPU and CUDA), numpy's and Python's global random generators.
    :param envs: each training env's :meth:`ResumableEnv.snapshot`.
    :param monitor: ``VecMonitor``'s running episode returns, lengths and count (checkpoints from before ``wrappers``).
    :param logger: the logger's values recorded and not yet written (e.g. ``train/`` of the last update).
    :param stage: where the run is in its curriculum (:meth:`ebmm_rl.runs.curriculum.StagePosition.as_dict`); ``None``
        in checkpoints from before curricula.
    :param wrappers: per stateful VecEnv wrapper around the envs (by class name), copies of its
        :data:`WRAPPER_ATTRIBUTES`; ``None`` in checkpoints from before it.
    :param sde_noise: gSDE's noise of the rollout (:data:`SDE_NOISE_ATTRIBUTES`), ``None`` without ``use_sde``.
    """

    num_timesteps: int
    algorithm: dict[str, Any]
    random: dict[str, Any]
    envs: list[bytes]
    monitor: dict[str, Any]
    logger: dict[str, dict[str, Any]]
    stage: dict[str, int] | None = None
    wrappers: dict[str, dict[str, Any]] | None = None
    sde_noise: dict[str, torch.Tensor] | None = None

    @classmethod
    def capture(cls, model: BaseAlgorithm, stage: dict[str, int] | None = None) -> TrainingState:
        """The state of a model's training now (between an update and the next rollout's first step).

        :param model: the model.
        :param stage: the run's curriculum position, kept as is.
        """
        env = model.get_env()
        algorithm = {name: copy.deepcopy(getattr(model, name)) for name in ALGORITHM_ATTRIBUTES if hasattr(model, name)}
        algorithm = _map_tensors(algorithm, lambda tensor: tensor.detach().cpu().clone())
        wrappers = {
            name: {attribute: copy.deepcopy(getattr(wrapper, attribute)) for attribute in WRAPPER_ATTRIBUTES[type(wrapper)]}
            for name, wrapper in _stateful_wrappers(env).items()
        }
        logger = getattr(model, "_logger", None)
        sde_noise = None
        if getattr(model, "use_sde", False):
            distribution = model.policy.action_dist
            sde_noise = {name: getattr(distribution, name).detach().cpu().clone() for name in SDE_NOISE_ATTRIBUTES}
        return cls(
            num_timesteps=model.num_timesteps,
            algorithm=algorithm,
            random={
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            envs=env.env_method("snapshot"),
            monitor=wrappers.get(VecMonitor.__name__, {}),
            logger={}
            if logger is None
            else {name: dict(getattr(logger, name)) for name in ("name_to_value", "name_to_count", "name_to_excluded")},
            stage=None if stage is None else dict(stage),
            wrappers=wrappers,
            sde_noise=sde_noise,
        )

    def rewind(self, model: BaseAlgorithm) -> None:
        """Put the model's own attributes back to this state (after a rollout stopped before its update)."""
        for name, value in self.algorithm.items():
            setattr(model, name, _map_tensors(copy.deepcopy(value), lambda tensor: tensor.to(model.device)))

    def restore(self, model: BaseAlgorithm) -> None:
        """Continue a model's training from this state: its attributes, the random generators, the training envs, the
        episode statistics and the logger's pending values.

        :raises CheckpointError: if the training envs are not those the state was captured from.
        """
        env = model.get_env()
        if len(self.envs) != env.num_envs:
            raise CheckpointError(f"the checkpoint holds {len(self.envs)} training envs, the run has {env.num_envs}")
        self.rewind(model)
        for index, snapshot in enumerate(self.envs):
            env.env_method("restore_snapshot", snapshot, indices=[index])
        saved = self.wrappers if self.wrappers is not None else {VecMonitor.__name__: self.monitor}
        for name, wrapper in _stateful_wrappers(env).items():
            for attribute, value in saved.get(name, {}).items():
                setattr(wrapper, attribute, copy.deepcopy(value))
        self.restore_random()
        for name, values in self.logger.items():
            getattr(model.logger, name).update(values)

    def restore_random(self) -> None:
        """Put the random generators back to this state."""
        torch.set_rng_state(self.random["torch"])
        if (
            self.random["cuda"] is not None
            and torch.cuda.is_available()
            and torch.cuda.device_count() == len(self.random["cuda"])
        ):
            torch.cuda.set_rng_state_all(self.random["cuda"])
        np.random.set_state(self.random["numpy"])
        random.setstate(self.random["python"])

    def restore_sde_noise(self, model: BaseAlgorithm) -> None:
        """At the first rollout start after :meth:`restore`: put back gSDE's noise of this state and the random
        generators as they were after drawing it (the rollout has just drawn new noise over them)."""
        if self.sde_noise is None:
            return
        distribution = model.policy.action_dist
        for name, tensor in self.sde_noise.items():
            setattr(distribution, name, tensor.to(model.device))
        self.restore_random()


def checkpoint_path(directory: str | Path, num_timesteps: int) -> Path:
    """Where the checkpoint at a step count lives: ``<directory>/model_<steps>_steps.zip``."""
    return Path(directory) / f"model_{num_timesteps}_steps.zip"


def normalization_file(model_path: str | Path) -> Path:
    """Where the ``VecNormalize`` statistics of a saved model are: ``<stem>_vecnormalize.pkl`` beside it."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}_vecnormalize.pkl")


def list_checkpoints(directory: str | Path) -> list[Path]:
    """The checkpoints in a directory, the one with the most steps first.

    :param directory: a ``checkpoints/`` directory (may be missing).
    """
    paths = [path for path in Path(directory).glob("model_*_steps.zip") if CHECKPOINT_PATTERN.match(path.name)]
    return sorted(paths, key=checkpoint_steps, reverse=True)


def checkpoint_steps(path: str | Path) -> int:
    """The step count in a checkpoint's name."""
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named like a checkpoint, model_<steps>_steps.zip")
    return int(match[1])


Loaded = TypeVar("Loaded")


def load_first_readable(candidates: list[Path], load: Callable[[Path], Loaded]) -> tuple[Loaded, Path]:
    """Load the first of ``candidates`` whose file is whole and loads, saying which were skipped and why.

    :param candidates: model files, the preferred first.
    :param load: loads one; a :class:`CheckpointError` from it skips the file, any other error is raised.
    :return: what ``load`` returned and the file.
    :raises CheckpointError: if none loads, naming each file and its problem.
    """
    problems = []
    for path in candidates:
        try:
            check_archive(path)
            return load(path), path
        except CheckpointError as error:
            problems.append(str(error))
            print(f"Skipping {error}", file=sys.stderr)
    raise CheckpointError(f"no readable model: {'; '.join(problems) or 'no candidate'}")


def save_atomically(model: BaseAlgorithm, path: str | Path, state: TrainingState | None = None) -> Path:
    """Save a model (with its training state, if given, and its ``VecNormalize`` statistics, if any, next to it as
    ``<stem>_vecnormalize.pkl``) through a temporary file and ``os.replace``, so an interrupted save never leaves a
    truncated zip.

    :param model: the model.
    :param path: the destination, ending in ``.zip``.
    :param state: the training state the model is at (:meth:`TrainingState.capture`).
    :return: the path.
    """

    def write(temporary: Path) -> None:
        model.save(temporary)
        if state is not None:
            with zipfile.ZipFile(temporary, "a") as archive:
                archive.writestr(TRAINING_STATE_MEMBER, pickle.dumps(state))

    path = write_atomically(path, write)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        if state is not None and state.wrappers is not None and VecNormalize.__name__ in state.wrappers:
            # The statistics at the state's rollout start, not those of the steps taken since (a run stopped mid-rollout).
            at_state = VecNormalize.__new__(VecNormalize)
            at_state.__dict__.update({**vec_normalize.__dict__, **state.wrappers[VecNormalize.__name__]})
            vec_normalize = at_state
        write_atomically(normalization_file(path), vec_normalize.save)
    return path


def check_archive(path: str | Path) -> None:
    """Check that a model file is a whole SB3 zip whose members all pass their CRC check.

    :raises CheckpointError: naming the file and what is wrong.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            members = archive.namelist()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(f"{path} is unreadable ({type(error).__name__}: {error}); it may be truncated") from None
    if damaged is not None:
        raise CheckpointError(f"{path} is damaged: its member {damaged!r} fails its CRC check")
    if SB3_DATA_MEMBER not in members:
        # A truncated SB3 zip can still parse: as the zip of one of the torch files stored in it.
        raise CheckpointError(f"{path} is unreadable (no {SB3_DATA_MEMBER!r} member); it may be truncated")


def read_training_state(path: str | Path) -> TrainingState | None:
    """The :class:`TrainingState` of a checkpoint, without loading its model (``None`` if it predates exact resume).

    :raises CheckpointError: naming the file, if it cannot be read.
    """
    check_archive(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if TRAINING_STATE_MEMBER not in archive.namelist():
                return None
            return pickle.loads(archive.read(TRAINING_STATE_MEMBER))
    except Exception as error:  # whatever keeps the state from loading makes the checkpoint one to skip
        raise CheckpointError(f"{path} cannot be loaded ({type(error).__name__}: {' '.join(str(error).split())})") from error


def load_checkpoint(
    algorithm: type[BaseAlgorithm], path: str | Path, env: VecEnv, **kwargs: Any
) -> tuple[BaseAlgorithm, TrainingState | None]:
    """Load a checkpoint to continue training.

    :param algorithm: the model's class.
    :param path: the checkpoint.
    :param env: the training envs, made as the run made them.
    :param kwargs: more arguments of ``algorithm.load`` (``device``, ``tensorboard_log``).
    :return: the model and its :class:`TrainingState`; ``None`` for a checkpoint from before exact resume, whose
        envs then start new episodes.
    :raises CheckpointError: naming the file and the problem, for anything that keeps it from loading.
    """
    state = read_training_state(path)
    try:
        model = algorithm.load(path, env=env, force_reset=state is None, **kwargs)
    except Exception as error:  # whatever keeps a checkpoint from loading makes it one to skip
        message = " ".join(str(error).split())
        raise CheckpointError(f"{path} cannot be loaded ({type(error).__name__}: {message})") from error
    return model, state


class CheckpointCallback(BaseCallback):
    """Capture the training state at every rollout start and save it atomically, at the first rollout start at or
    after every ``save_freq`` environment steps, to ``<directory>/model_<steps>_steps.zip``.

    :param save_freq: environment steps (all envs together) between checkpoints; 0 disables periodic saves
        (:meth:`save_now` and :meth:`save_rollout_start` still work).
    :param directory: the checkpoint directory (created if missing).
    :param resume_state: a checkpoint's :class:`TrainingState`, restored when training starts.
    :param stage: returns the run's curriculum position, captured with the state.
    :param verbose: 1 to print each save.

    One callback serves a run's successive ``learn()`` calls (the stages of a curriculum): its schedule runs on.
    """

    def __init__(
        self,
        save_freq: int,
        directory: str | Path,
        resume_state: TrainingState | None = None,
        stage: Callable[[], dict[str, int]] | None = None,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.save_freq = save_freq
        self.directory = Path(directory)
        self.resume_state = resume_state
        self.stage = stage
        self.rollout_start: TrainingState | None = None
        self._restored: TrainingState | None = None
        self._next_save: int | None = None

    def _init_callback(self) -> None:
        if not self.model.get_env().has_attr("snapshot"):
            raise TypeError("CheckpointCallback needs every training env wrapped in ebmm_rl.runs.checkpoints.ResumableEnv")
        self.directory.mkdir(parents=True, exist_ok=True)

    def _on_training_start(self) -> None:
        self._restored = None
        if self.resume_state is not None:
            self.resume_state.restore(self.model)
            self._restored, self.resume_state = self.resume_state, None
        if self.save_freq > 0 and self._next_save is None:
            self._next_save = next_multiple(self.model.num_timesteps, self.save_freq)

    def _capture(self) -> TrainingState:
        return TrainingState.capture(self.model, None if self.stage is None else self.stage())

    def _on_rollout_start(self) -> None:
        if self._restored is not None:
            self._restored.restore_sde_noise(self.model)
            self._restored = None
        self.rollout_start = self._capture()
        if self.save_freq > 0 and self._next_save is not None and self.model.num_timesteps >= self._next_save:
            self.save_rollout_start()
            self._next_save = next_multiple(self.model.num_timesteps, self.save_freq)

    def _on_step(self) -> bool:
        return True

    def save_now(self) -> Path:
        """Save a checkpoint of the model as it is, between an update and the next rollout (e.g. when training ends)."""
        self.rollout_start = self._capture()
        return self.save_rollout_start()

    def save_rollout_start(self) -> Path:
        """Save the state captured at the start of the last rollout, rewinding the model's attributes to it (after a
        rollout stopped before its update, the policy and optimiser are still those of that start).

        :return: the checkpoint path.
        """
        if self.rollout_start is None:
            raise RuntimeError("no rollout has started yet, so there is no state to save")
        self.rollout_start.rewind(self.model)
        path = save_atomically(self.model, checkpoint_path(self.directory, self.model.num_timesteps), self.rollout_start)
        if self.verbose >= 1:
            print(f"Saved checkpoint {path}")
        return path


class BestModel:
    """Keep the model of a run's best evaluation at ``path`` (SB3's ``best_model.zip``), written atomically whenever an
    evaluation beats the best so far: a higher success rate, or the same (or none, on an env without success) and a
    higher mean return.

    Beside the model, ``<stem>.json`` records the evaluation that made it and its stage. A resumed run drops the
    evaluations made after its checkpoint, but the model one of them saved stays the one to beat, so resuming never
    replaces a better model with a worse one.

    :param path: the model file.
    :param rows: evaluations already made (a resumed run's, of its stage), whose best is the one to beat.
    :param stage: the curriculum stage (1-based) the evaluations are of.
    """

    def __init__(self, path: str | Path, rows: Iterable[dict[str, float]] = (), stage: int = 1) -> None:
        self.path = Path(path)
        self.record_path = self.path.with_suffix(".json")
        self.stage = stage
        self.best: tuple[float, float] | None = None
        for row in rows:
            self._beats(row)
        if self.path.is_file() and self.record_path.is_file():
            record = json.loads(self.record_path.read_text())
            if record.get("stage") == stage:
                self._beats(record["evaluation"])

    def _beats(self, row: dict[str, float]) -> bool:
        success = row["success_rate"]
        score = (0.0 if np.isnan(success) else success, row["mean_reward"])  # nan: an env without success, by return
        if self.best is not None and score <= self.best:
            return False
        self.best = score
        return True

    def offer(self, model: BaseAlgorithm, row: dict[str, float]) -> bool:
        """Save the model if its evaluation ``row`` beats the best so far.

        :return: whether it did.
        """
        if not self._beats(row):
            return False
        save_atomically(model, self.path)
        # After the model: a run killed between the two writes leaves a record of the model before, which the next
        # evaluations must beat anyway.
        record = {"stage": self.stage, "evaluation": {key: float(value) for key, value in row.items()}}
        write_text_atomically(self.record_path, json.dumps(record, indent=1))
        return True

    def reset(self, stage: int) -> None:
        """Forget the best (a new curriculum stage: its evaluations are on another task); the file stays until beaten.

        :param stage: the new stage (1-based).
        """
        self.best = None
        self.stage = stage
