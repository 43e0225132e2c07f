"""Cost of the EBMM memory core: time of writes and reads, with and without the meta-gradient, and peak memory.

Run ``python -m ebmm_rl.bench.memory --device auto``. For every number of stored patterns ``n`` and number of
memories ``batch`` it measures, on one fresh process per configuration (so peak memory is that configuration's own):

- ``write``: one batch write of ``n`` patterns, acting (no graph);
- ``read``: one read of ``n`` queries, acting;
- ``stream_write``: streaming write of the ``n`` patterns one at a time, acting (``per_pattern_s`` = cost per pattern);
- ``meta_batch`` / ``meta_stream``: ``meta_loss`` forward + backward through the unrolled write and read (second order).

Results go to a CSV (one row per configuration and operation) and a PNG of time against ``n``.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ebmm_rl.bench.common import resolve_device, synchronize
from ebmm_rl.memory import EBMM, MLPEnergy, flip_bits

OPERATIONS = ("write", "read", "stream_write", "meta_batch", "meta_stream")
FIELDS = (
    "device",
    "batch",
    "n",
    "dim",
    "memory_size",
    "operation",
    "mean_s",
    "std_s",
    "per_pattern_s",
    "peak_memory_mb",
)


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up: allocator, kernels, lazy initialisation
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux: the whole process's peak, torch and Python included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(config: dict) -> list[dict]:
    """Time every operation for one ``(batch, n)``; runs in its own process."""
    torch.manual_seed(0)
    torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    batch, n, dim = config["batch"], config["n"], config["dim"]
    energy = MLPEnergy(dim, hidden=config["hidden"], fast_units=config["fast_units"], hops=config["hops"])
    memory = EBMM(energy, write_steps=config["write_steps"], read_steps=config["read_steps"], projection=(-1, 1))
    memory = memory.to(device)
    patterns = (torch.randint(0, 2, (batch, n, dim), device=device) * 2 - 1).float()
    queries = flip_bits(patterns, dim // 4)

    def acting_write() -> object:
        with torch.no_grad():
            return memory.write(memory.init_state(batch), patterns)

    written = acting_write()

    def acting_read() -> object:
        with torch.no_grad():
            return memory.read(written, queries)

    def acting_stream() -> object:
        with torch.no_grad():
            return memory.write_stream(memory.init_state(batch), patterns)

    def meta(write: str) -> Callable[[], object]:
        def step() -> None:
            memory.zero_grad(set_to_none=True)
            memory.meta_loss(patterns, queries, write=write).backward()

        return step

    operations = {
        "write": acting_write,
        "read": acting_read,
        "stream_write": acting_stream,
        "meta_batch": meta("batch"),
        "meta_stream": meta("stream"),
    }
    rows = []
    for name in config["operations"]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = _time(operations[name], device, config["repeats"])
        mean = statistics.fmean(times)
        rows.append(
            {
                "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                "batch": batch,
                "n": n,
                "dim": dim,
                "memory_size": memory.memory_size,
                "operation": name,
                "mean_s": mean,
                "std_s": statistics.pstdev(times),
                "per_pattern_s": mean / n if name in ("stream_write", "meta_stream") else "",
                "peak_memory_mb": _peak_memory_mb(device),
            }
        )
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    operations = sorted({row["operation"] for row in rows}, key=OPERATIONS.index)
    figure, axes = plt.subplots(1, len(operations), figsize=(3.2 * len(operations), 3.2), squeeze=False)
    for axis, operation in zip(axes[0], operations, strict=True):
        for batch in sorted({row["batch"] for row in rows}):
            selected = [row for row in rows if row["operation"] == operation and row["batch"] == batch]
            points = sorted((row["n"], row["mean_s"]) for row in selected)
            axis.loglog(*zip(*points, strict=True), marker="o", label=f"batch {batch}")
        axis.set_title(operation)
        axis.set_xlabel("patterns n")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("seconds")
    axes[0][0].legend()
    figure.suptitle(f"EBMM cost on {rows[0]['device']} (memory {rows[0]['memory_size']} floats)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def scaling_summary(rows: list[dict]) -> list[str]:
    """Log-log slopes of time against n (at the largest batch) and against batch (at the largest n)."""
    import math

    lines = []
    for operation in sorted({row["operation"] for row in rows}, key=OPERATIONS.index):
        ops = [row for row in rows if row["operation"] == operation]
        slopes = []
        for key, other in (("n", "batch"), ("batch", "n")):
            fixed = max(row[other] for row in ops)
            points = sorted((row[key], row["mean_s"]) for row in ops if row[other] == fixed)
            if len(points) >= 2:
                (x0, y0), (x1, y1) = points[0], points[-1]
                slopes.append(f"time ~ {key}^{math.log(y1 / y0) / math.log(x1 / x0):.2f} ({other}={fixed})")
        lines.append(f"{operation:>13}: " + ", ".join(slopes))
    return lines


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m ebmm_rl.bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--n", type=int, nargs="+", default=[16, 64, 256], help="numbers of stored patterns")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64], help="numbers of memories")
    parser.add_argument("--operations", nargs="+", default=list(OPERATIONS), choices=OPERATIONS)
    parser.add_argument("--dim", type=int, default=128, help="pattern size")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--fast-units", type=int, default=32, help="memory size = fast_units * (hidden + 1)")
    parser.add_argument("--hops", type=int, default=3)
    parser.add_argument("--write-steps", type=int, default=5)
    parser.add_argument("--read-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument(
        "--meta-max-patterns",
        type=int,
        default=4096,
        help="skip the meta-gradient operations where batch * n exceeds this (on a CPU, batch 64 x n 256 needs ~20 GB)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench_memory.csv"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if min(args.n + args.batch) < 1 or args.repeats < 1:
        parser.error("--n, --batch and --repeats must be positive")

    configs = [
        {
            "device": str(device),
            "batch": batch,
            "n": n,
            "dim": args.dim,
            "hidden": args.hidden,
            "fast_units": args.fast_units,
            "hops": args.hops,
            "write_steps": args.write_steps,
            "read_steps": args.read_steps,
            "repeats": args.repeats,
            "threads": args.threads,
            "operations": [
                operation
                for operation in args.operations
                if not (operation.startswith("meta") and batch * n > args.meta_max_patterns)
            ],
        }
        for batch in args.batch
        for n in args.n
    ]
    rows: list[dict] = []
    context = multiprocessing.get_context("spawn")
    print(f"EBMM memory benchmark on {device} ({platform.processor() or platform.machine()}, {args.threads} threads)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        csv.DictWriter(handle, fieldnames=FIELDS).writeheader()
    for config in configs:
        with context.Pool(1) as pool:
            result = pool.apply(measure, (config,))
        rows.extend(result)
        with args.out.open("a", newline="") as handle:  # row by row: an interrupted run keeps what it measured
            csv.DictWriter(handle, fieldnames=FIELDS).writerows(result)
        for row in result:
            print(
                f"batch {row['batch']:>3} n {row['n']:>4} {row['operation']:>13}: {row['mean_s'] * 1e3:9.2f} ms"
                f"  peak {row['peak_memory_mb']:8.1f} MB",
                flush=True,
            )
    plot(rows, args.out.with_suffix(".png"))
    print("\n".join(scaling_summary(rows)))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
