"""Peak memory and meta-steps per second of every recall dataset's default configuration, and what chunking the
meta-gradient costs: one fresh process per configuration (``ru_maxrss`` is a process's peak), each training for a
few meta-steps with ``python -m ebmm_rl.recall train`` and reporting its own peak and speed in its last line.

    OMP_NUM_THREADS=1 python -m ebmm_rl.bench.recall_memory --omniglot-root ../shared/data/omniglot \
        --out results/recall_peak_memory/peak_memory.csv

CIFAR-10 cannot be downloaded on machines without internet: its configuration then runs on a stand-in archive of the
official layout and size (50,000 random 32x32 colour training images; the loader's md5 check is told its checksum),
which costs what the real one does: the model, the batch and the loaded split have the same shapes.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SUMMARY = re.compile(r"step (\d+)/\d+.* ([\d.]+) steps/s(?: \(([\d.]+) s per meta-step\))?; done; peak memory ([\d.]+) GiB")
FIELDS = ("configuration", "arguments", "meta_steps", "seconds_per_meta_step", "peak_memory_gib", "wall_seconds")


def configurations(omniglot_root: str) -> list[tuple[str, list[str], int]]:
    """``(name, train arguments, meta-steps)``: the defaults of each dataset, then the costs of chunking."""
    omniglot = ["--dataset", "omniglot", "--omniglot-split", "small", "--data-root", omniglot_root]
    conv_small = [*omniglot, "--n-stored", "16"]
    return [
        ("binary default", ["--dataset", "binary"], 5),
        ("binary default, --memory-chunk 1", ["--dataset", "binary", "--memory-chunk", "1"], 5),
        ("digits default", ["--dataset", "digits"], 5),
        ("digits default, --memory-chunk 1", ["--dataset", "digits", "--memory-chunk", "1"], 5),
        ("omniglot default (conv, 4,616 floats, chunks of 1 memory)", omniglot, 1),
        ("cifar10 default (conv, 4,616 floats, chunks of 1 memory; stand-in data)", ["--dataset", "cifar10"], 1),
        ("omniglot conv, 16 images per memory, --memory-chunk 1", [*conv_small, "--memory-chunk", "1"], 1),
        ("omniglot conv, 16 images per memory, --memory-chunk 2", [*conv_small, "--memory-chunk", "2"], 1),
        ("omniglot conv, 16 images per memory, --memory-chunk 4", [*conv_small, "--memory-chunk", "4"], 1),
        ("omniglot mlp, 9,159 floats (recall_omniglot/)",
         [*omniglot, "--energy", "mlp", "--hidden", "128", "--hop-dim", "128", "--memory-sizes", "9159",
          "--no-gradient-penalty"], 5),
    ]  # fmt: skip


def write_cifar10_stand_in(root: Path) -> str:
    """``cifar-10-python.tar.gz`` of random images in the official layout and size under ``root``; returns its md5."""
    import numpy as np

    from ebmm_rl.recall.datasets import CIFAR10_ARCHIVE, CIFAR10_BATCHES, file_md5

    rng = np.random.default_rng(0)
    with tarfile.open(root / CIFAR10_ARCHIVE.filename, "w:gz", compresslevel=1) as archive:
        for name in (*CIFAR10_BATCHES["train"], *CIFAR10_BATCHES["test"]):
            batch = {b"data": rng.integers(0, 256, size=(10_000, 3072), dtype=np.uint8), b"labels": [0] * 10_000}
            payload = pickle.dumps(batch, protocol=4)
            member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            member.size = len(payload)
            archive.addfile(member, io.BytesIO(payload))
    return file_md5(root / CIFAR10_ARCHIVE.filename)


def train_with_stand_in(md5: str, argv: list[str]) -> None:
    """``recall train`` in this process, the loader told the stand-in archive's md5."""
    from ebmm_rl.recall import datasets
    from ebmm_rl.recall.cli import main

    datasets.CIFAR10_ARCHIVE = datasets.CIFAR10_ARCHIVE._replace(md5=md5)
    main(argv)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ebmm_rl.bench.recall_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--omniglot-root", required=True, help="folder of images_background_small1/2.zip")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write")
    parser.add_argument("--only", nargs="+", help="configurations whose name starts with one of these")
    parser.add_argument("--stand-in", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # internal: md5, then argv
    args = parser.parse_args()
    if args.stand_in:
        train_with_stand_in(args.stand_in[0], args.stand_in[1:])
        return
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        cifar_md5 = None
        for name, arguments, steps in configurations(args.omniglot_root):
            if args.only and not any(name.startswith(prefix) for prefix in args.only):
                continue
            argv = ["train", *arguments, "--steps", str(steps), "--run-dir", str(scratch / "runs"), "--no-progress",
                    "--no-tensorboard"]  # fmt: skip
            if "cifar10" in arguments:
                cifar_md5 = cifar_md5 or write_cifar10_stand_in(scratch)
                command = [sys.executable, __file__, "--omniglot-root", "", "--out", "", "--stand-in", cifar_md5,
                           *argv, "--data-root", str(scratch)]  # fmt: skip
            else:
                command = [sys.executable, "-m", "ebmm_rl.recall", *argv]
            started = time.perf_counter()
            finished = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            wall = time.perf_counter() - started
            match = SUMMARY.search(finished.stdout)
            if finished.returncode != 0 or match is None:
                raise RuntimeError(f"{name} failed:\n{finished.stdout}\n{finished.stderr}")
            step, peak = int(match[1]), float(match[4])
            seconds = float(match[3]) if match[3] else 1 / float(match[2])
            row = (name, " ".join(arguments), step, round(seconds, 3), peak, round(wall, 1))
            rows.append(dict(zip(FIELDS, row, strict=True)))
            print(f"{name}: {seconds:.3g} s per meta-step, peak {peak:.2f} GiB ({wall:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
