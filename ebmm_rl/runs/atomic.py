"""Atomic file writes: readers (and a resumed run) see the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` through a temporary file beside it, flushed to disk, and ``os.replace``.

    A process killed during the write leaves the destination as it was (and at worst the temporary file); the flush
    to disk before the rename keeps a machine that loses power from exposing a renamed but empty file.

    :param path: the destination.
    :param write: called with the temporary path (``.<name>.tmp``, so a writer that appends a missing suffix, as SB3's
        ``save`` appends ``.zip``, leaves it alone) and must write the whole file there.
    :return: the destination.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself
    finally:
        os.close(directory)
    return path


def replace_atomically(source: str | Path, destination: str | Path) -> Path:
    """Copy ``source`` to ``destination`` atomically.

    :return: the destination.
    """
    return write_atomically(destination, lambda temporary: shutil.copyfile(source, temporary))


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write a text file atomically (UTF-8).

    :return: the path.
    """
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
