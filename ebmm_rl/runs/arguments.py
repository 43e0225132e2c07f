"""Command-line values checked at the boundary: one-line errors that name the option, the value and what is expected,
with exit status 2, before anything is written. Shared by the training, evaluation and recall command lines (no
Stable-Baselines3 import here)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch

MAX_SEED = 2**31 - 1
"""Seeds go to numpy (below 2**32) after offsets such as the evaluation envs' (see ebmm_rl.runs.experiment)."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line, ``<prog>: error: <message>``, with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _number(kind: Callable[[str], float], check: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
        if not math.isfinite(value) or not check(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}")
        return value

    parse.__name__ = expected  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda value: value >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda value: value >= 0, "an integer >= 0 (0: off)")
seed = _number(int, lambda value: 0 <= value <= MAX_SEED, f"an integer in [0, {MAX_SEED}]")
positive_float = _number(float, lambda value: value > 0, "a number > 0")
non_negative_float = _number(float, lambda value: value >= 0, "a number >= 0")
fraction = _number(float, lambda value: 0 <= value <= 1, "a number in [0, 1]")


def check_device(device: str) -> str:
    """A torch device name this machine has.

    :param device: ``auto``, ``cpu``, ``cuda`` or ``cuda:<index>``.
    :return: the name.
    :raises ValueError: for a name torch does not know, or CUDA on a machine without it, saying what to use instead.
    """
    if device == "auto":
        return device
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device}: not a torch device; use auto, cpu or cuda") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu (or auto)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices")
    elif parsed.type != "cpu":
        raise ValueError(f"--device {device}: only cpu and cuda devices are supported; use auto, cpu or cuda")
    return device


def device(text: str) -> str:
    """argparse type of ``--device``: :func:`check_device`."""
    try:
        return check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).split(": ", 1)[1]) from None
