"""Atomic file writes: readers (and a resumed run) see the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` through a temporary file beside it and ``os.replace``.

    :param path: the destination.
    :param write: called with the temporary path (``.<name>.tmp``, so a writer that appends a missing suffix, as SB3's
        ``save`` appends ``.zip``, leaves it alone) and must write the whole file there.
    :return: the destination.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)
    return path


def replace_atomically(source: str | Path, destination: str | Path) -> Path:
    """Copy ``source`` to ``destination`` atomically.

    :return: the destination.
    """
    return write_atomically(destination, lambda temporary: shutil.copyfile(source, temporary))
