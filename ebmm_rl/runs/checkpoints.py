"""Atomic SB3 checkpoints of a run: ``checkpoints/model_<steps>_steps.zip``, found again on resume."""

from __future__ import annotations

import re
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from ebmm_rl.runs.atomic import write_atomically
from ebmm_rl.sb3.callbacks import next_multiple

CHECKPOINT_PATTERN = re.compile(r"^model_(\d+)_steps\.zip$")


def checkpoint_path(directory: str | Path, num_timesteps: int) -> Path:
    """Where the checkpoint at a step count lives: ``<directory>/model_<steps>_steps.zip``."""
    return Path(directory) / f"model_{num_timesteps}_steps.zip"


def normalization_file(model_path: str | Path) -> Path:
    """Where the ``VecNormalize`` statistics of a saved model are: ``<stem>_vecnormalize.pkl`` beside it."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}_vecnormalize.pkl")


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the most steps in a directory.

    :param directory: a ``checkpoints/`` directory (may be missing).
    :return: its path, or ``None`` if there is none.
    """
    matches = [(CHECKPOINT_PATTERN.match(path.name), path) for path in Path(directory).glob("model_*_steps.zip")]
    found = [(int(match[1]), path) for match, path in matches if match]
    return max(found)[1] if found else None


def save_atomically(model: BaseAlgorithm, path: str | Path) -> Path:
    """Save a model (and its ``VecNormalize`` statistics, if any, next to it as ``<stem>_vecnormalize.pkl``) through
    a temporary file and ``os.replace``, so an interrupted save never leaves a truncated zip.

    :param model: the model.
    :param path: the destination, ending in ``.zip``.
    :return: the path.
    """
    path = write_atomically(path, model.save)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        write_atomically(normalization_file(path), vec_normalize.save)
    return path


class CheckpointCallback(BaseCallback):
    """Save the model atomically every ``save_freq`` environment steps to ``<directory>/model_<steps>_steps.zip``.

    :param save_freq: environment steps (all envs together) between checkpoints; 0 disables periodic saves
        (:meth:`save` still works).
    :param directory: the checkpoint directory (created if missing).
    :param verbose: 1 to print each save.
    """

    def __init__(self, save_freq: int, directory: str | Path, verbose: int = 0):
        super().__init__(verbose)
        self.save_freq = save_freq
        self.directory = Path(directory)
        self._next_save = 0

    def _init_callback(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.save_freq > 0:
            self._next_save = next_multiple(self.model.num_timesteps, self.save_freq)

    def _on_step(self) -> bool:
        if self.save_freq > 0 and self.num_timesteps >= self._next_save:
            self.save()
            self._next_save = next_multiple(self.num_timesteps, self.save_freq)
        return True

    def save(self, model: BaseAlgorithm | None = None) -> Path:
        """Save a checkpoint now.

        :param model: the model; defaults to the one being trained.
        :return: the checkpoint path.
        """
        model = model or self.model
        self.directory.mkdir(parents=True, exist_ok=True)
        path = save_atomically(model, checkpoint_path(self.directory, model.num_timesteps))
        if self.verbose >= 1:
            print(f"Saved checkpoint {path}")
        return path
