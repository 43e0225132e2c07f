"""The image-recall validation CLI (Bartunov et al., ICLR 2020, section 5): ``python -m ebmm_rl.recall``.

Meta-train an EBMM, or the MemoryNetwork baseline, on a dataset's train split, then evaluate it with the classical
baselines on the test split::

    python -m ebmm_rl.recall train --dataset binary --steps 2000
    python -m ebmm_rl.recall evaluate --dataset binary --checkpoints runs/recall__binary__ebmm__m8256__0__* --batches 1000

Datasets: binary (random 128-bit +-1 strings, 64 bits of a query corrupted), digits (scikit-learn's, 8x8),
omniglot and cifar10 (32x32, read from their official archives under ~/.cache/ebmm_rl). Image queries have a random
square of side image_size // 2 occluded. ``train --help`` and ``evaluate --help`` list the options.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ebmm_rl.recall import evaluate, train
from ebmm_rl.recall.models import UsageError
from ebmm_rl.runs.arguments import ArgumentParser

PROGRAM = "python -m ebmm_rl.recall"


def build_parser() -> ArgumentParser:
    """The parser of both commands (errors are one line, with exit status 2)."""
    parser = ArgumentParser(
        prog=PROGRAM,
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate}")
    for name, module in (("train", train), ("evaluate", evaluate)):
        summary = module.__doc__.split("\n\n")[0]
        command = commands.add_parser(
            name, help=summary.split(":")[0], description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> Any:
    """Run ``train`` or ``evaluate``; a usage mistake exits with status 2 and a one-line message saying how to fix it,
    before a run directory or an output folder is made.

    :param argv: the arguments (default ``sys.argv[1:]``)
    :return: ``train``: a list of :class:`ebmm_rl.recall.train.TrainResult`; ``evaluate``: the result rows
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    module = train if args.command == "train" else evaluate
    try:
        return module.run(args, argv[1:])
    except UsageError as error:
        parser.error(f"{args.command}: {error}")
