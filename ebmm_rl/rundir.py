"""Run directories shared by the command lines: ``<parent>/<name>__<time>/``, never reusing an existing one."""

from __future__ import annotations

import time
from pathlib import Path


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
