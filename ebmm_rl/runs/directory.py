"""Run directories: ``<parent>/<name>__<time>/``, never reusing an existing one, and what an RL run keeps there."""

from __future__ import annotations

import time
from pathlib import Path

CONFIG_FILE = "config.yml"
"""The resolved config (:mod:`ebmm_rl.runs.config`); ``--config`` accepts it to repeat the run."""
ARGS_FILE = "args.yml"
"""The run settings: agent, env, seed, device, evaluation and checkpoint frequencies."""
COMMAND_FILE = "command.txt"
"""The command line, one line per start or resume."""
SEED_FILE = "seed"
EVALUATIONS_FILE = "evaluations.csv"
"""The periodic evaluations (:data:`ebmm_rl.sb3.callbacks.EVALUATION_FIELDS`)."""
CHECKPOINT_DIR = "checkpoints"
FINAL_MODEL = "final_model.zip"
BEST_MODEL = "best_model.zip"
"""The model of the best evaluation of the stage reached (SB3's ``EvalCallback`` name)."""
TENSORBOARD_NAME = "tensorboard"


def new_run_dir(parent: Path, name: str) -> Path:
    """Create and return ``parent/<name>__<YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3``, ... if it already exists).

    :param parent: where run directories go
    :param name: the run's name without the time stamp
    """
    name = f"{name}__{time.strftime('%Y%m%d-%H%M%S')}"
    for attempt in range(1, 1000):
        run_dir = parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:
            continue
        return run_dir
    raise FileExistsError(f"Could not create a new run directory like {parent / name}; clean up {parent}.")
