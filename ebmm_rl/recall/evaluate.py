"""Evaluate memories on a recall dataset's test split: write ``n`` stored patterns into each of many random memories,
read corrupted versions of them, and report the error (the task's metric, per pattern) against the memory size.

Every model sees the same memories and queries. Models: trained checkpoints (``--checkpoints``, EBMM or memnet runs of
``train``) and baselines that need no training (``--baselines``: Hopfield networks with the Hebb, Storkey and
pseudo-inverse rules on two-valued data, and the modern Hopfield network). Writes to a new folder
``runs/recall_evaluate__<dataset>__<time>/``, or to ``--out`` (which must be empty unless ``--overwrite``):

- ``results.csv`` / ``results.json``: per model and ``n``: memory size, mean error and its 5th/95th percentiles over
  the ``--batches`` memories (the paper's error bars over 1000 batches); the JSON also holds the settings;
- ``distortion_vs_memory.png``: error against memory size (at ``--plot-n`` stored patterns);
- ``error_vs_n.png``: error against the number of stored patterns, when several are evaluated (binary: Table 1);
- ``retrievals.png`` (images): stored, query and retrieved images of one memory, per model.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from tqdm import tqdm

from ebmm_rl.recall.baselines import RecallMemory
from ebmm_rl.recall.models import (
    BASELINE_LABELS,
    BASELINES,
    DATASETS,
    Task,
    UsageError,
    applicable_baselines,
    build_baseline,
    check_choice,
    load_model,
    load_task,
    recall_view,
)
from ebmm_rl.runs import arguments
from ebmm_rl.runs.directory import new_run_dir

PROGRAM = "python -m ebmm_rl.recall evaluate"
DEFAULT_OUT_PARENT = "runs"
"""Where an evaluation without ``--out`` writes, each to a new folder: results are never overwritten by default."""
BINARY_N_STORED = (16, 32, 48, 64, 96)
"""Table 1's numbers of stored strings."""
IMAGE_N_STORED = (64,)
"""The paper's batches of 64 images."""
FIELDS = (
    "dataset",
    "model",
    "label",
    "n_stored",
    "memory_size",
    "metric",
    "mean",
    "p5",
    "p95",
    "batches",
    "corruption",
    "unstored_mean",
)
"""Columns of results.csv. ``unstored_mean``: the mean error of queries made from patterns of the same split that the
memory did NOT store (see :func:`evaluate_unstored`); a memory retrieves what it stored, so this error should be far
above ``mean``. Where the two are close, the model is completing queries from what it learned about the data, not
recalling them. Empty where the split is too small to draw ``2 n`` distinct patterns."""
GRID_IMAGES = 8
LINE_STYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Entry:
    """A model under evaluation.

    :param label: its name in the results (unique)
    :param kind: "ebmm", "memnet" or a baseline name; plots join the points of one kind
    :param memory: the memory
    :param device: where its patterns and queries go (trained models: ``--device``; baselines: the CPU)
    """

    label: str
    kind: str
    memory: RecallMemory
    device: str = "cpu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``evaluate``."""
    parser.add_argument("--dataset", required=True, help="binary, digits, omniglot or cifar10")
    parser.add_argument(
        "--checkpoints",
        nargs="+",
        default=[],
        metavar="RUN",
        help="run directories (or checkpoint.pt files) of `train`: EBMM or memnet models of this dataset",
    )
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=None,
        metavar="NAME",
        help=f"of {', '.join(BASELINES)} (default: all that apply; Hopfield rules need two-valued data); "
        "give the option without names for none",
    )
    parser.add_argument(
        "--n-stored",
        type=arguments.positive_int,
        nargs="+",
        help="patterns stored per memory (default: binary 16 32 48 64 96, images 64)",
    )
    parser.add_argument(
        "--batches", type=arguments.positive_int, default=1000, help="random memories per n (default 1000, the paper's)"
    )
    parser.add_argument("--chunk", type=arguments.positive_int, default=50, help="memories evaluated at once (default 50)")
    parser.add_argument("--corruption", help="binary: erase (default), resample or flip; images: occlude")
    parser.add_argument(
        "--corrupt-bits", type=arguments.non_negative_int, help="corrupted bits of a binary query (default 64 of 128)"
    )
    parser.add_argument("--block", type=arguments.positive_int, help="side of the occluded square (default image size // 2)")
    parser.add_argument(
        "--image-size", type=arguments.positive_int, help="image side (default: that of the checkpoints, else 8 / 32)"
    )
    parser.add_argument(
        "--hopfield-sweeps", type=arguments.positive_int, default=10, help="maximum sweeps of a Hopfield read (default 10)"
    )
    parser.add_argument(
        "--modern-beta", type=arguments.positive_float, default=1.0, help="modern Hopfield inverse temperature (default 1)"
    )
    parser.add_argument(
        "--plot-n", type=arguments.positive_int, help="n of the distortion-vs-memory plot (default 64, else the largest)"
    )
    parser.add_argument("--seed", type=arguments.seed, default=0, help="seed of the test memories and queries (default 0)")
    parser.add_argument("--data-root", help="directory of the Omniglot/CIFAR-10 archives (default ~/.cache/ebmm_rl)")
    parser.add_argument(
        "--device", default="cpu", type=arguments.device, help="torch device of the trained models (default cpu)"
    )
    parser.add_argument(
        "--out",
        help=f"output directory (default: a new {DEFAULT_OUT_PARENT}/recall_evaluate__<dataset>__<time>); an existing "
        "one must be empty unless --overwrite",
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out, replacing its results")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    """Evaluate the models the parsed options ask for and write the results; returns the result rows."""
    dataset = check_choice(args.dataset, DATASETS, "dataset")
    if args.out is not None and Path(args.out).exists() and not args.overwrite:
        if not Path(args.out).is_dir() or any(Path(args.out).iterdir()):
            raise UsageError(
                f"--out {args.out} is not empty: pass --overwrite to replace its results, or leave --out out to write to "
                "a new folder"
            )
    trained = []
    for path in args.checkpoints:
        model, config = load_model(path)
        if config["dataset"] != dataset:
            raise UsageError(f"{path} was trained on {config['dataset']}, not {dataset}; use --dataset {config['dataset']}")
        trained.append((model, config))
    image_sizes = {config.get("image_size") for _, config in trained}
    image_size = args.image_size or (image_sizes.pop() if len(image_sizes) == 1 else None)
    task = load_task(dataset, "test", image_size, args.corruption, args.corrupt_bits, args.block, args.data_root)
    entries = [_trained_entry(model.to(args.device), config, task, args.device) for model, config in trained]
    for name in applicable_baselines(task) if args.baselines is None else args.baselines:
        baseline = build_baseline(name, task, sweeps=args.hopfield_sweeps, beta=args.modern_beta)
        entries.append(Entry(BASELINE_LABELS[name], name, baseline))
    if not entries:
        raise UsageError("nothing to evaluate: give --checkpoints and/or --baselines")
    entries = _unique_labels(entries)
    n_stored = args.n_stored or (BINARY_N_STORED if task.images is None else IMAGE_N_STORED)

    started = time.perf_counter()
    errors = evaluate(task, entries, n_stored, args.batches, args.chunk, args.seed, not args.no_progress)
    unstored = evaluate_unstored(task, entries, n_stored, args.batches, args.chunk, args.seed)
    if args.out is None:
        out = new_run_dir(Path(DEFAULT_OUT_PARENT), f"recall_evaluate__{dataset}")
    else:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "dataset": dataset,
            "model": entry.kind,
            "label": entry.label,
            "n_stored": n,
            "memory_size": entry.memory.memory_size(n),
            "metric": task.metric,
            "mean": values.mean().item(),
            "p5": values.quantile(0.05).item(),
            "p95": values.quantile(0.95).item(),
            "batches": len(values),
            "corruption": _corruption_name(task),
            "unstored_mean": unstored[entry, n].mean().item() if (entry, n) in unstored else None,
        }
        for (entry, n), values in errors.items()
    ]
    with open(out / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    settings = {key: value for key, value in vars(args).items() if key != "command"}
    settings.update(n_stored=list(n_stored), corruption=_corruption_name(task), image_shape=task.image_shape)
    summary = {"command": shlex.join([*shlex.split(PROGRAM), *argv]), "settings": settings, "results": rows}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    plot_n = args.plot_n or (64 if 64 in n_stored else max(n_stored))
    plot_memory(rows, plot_n, task, out / "distortion_vs_memory.png")
    if len(n_stored) > 1:
        plot_n_stored(rows, task, out / "error_vs_n.png")
    if task.images is not None:
        plot_retrievals(task, entries, plot_n, args.seed, out / "retrievals.png")
    print(
        f"evaluated {len(entries)} models on {dataset} ({args.batches} memories per n) in "
        f"{time.perf_counter() - started:.0f} s; results in {out}"
    )
    _print_table(rows, task.metric)
    return rows


def evaluate(
    task: Task,
    entries: list[Entry],
    n_stored: tuple[int, ...] | list[int],
    batches: int,
    chunk: int,
    seed: int,
    progress: bool = False,
) -> dict[tuple[Entry, int], torch.Tensor]:
    """Per-memory errors of every model: the same ``batches`` random memories of ``n`` patterns and the same queries
    for every model.

    :return: ``{(entry, n): errors [batches]}``, each the mean error over a memory's patterns
    """
    generator = torch.Generator().manual_seed(seed)
    errors: dict[tuple[Entry, int], list[torch.Tensor]] = {(entry, n): [] for n in n_stored for entry in entries}
    steps = [(n, min(chunk, batches - done)) for n in n_stored for done in range(0, batches, chunk)]
    with torch.no_grad():
        for n, size in tqdm(steps, disable=not progress, desc="evaluate"):
            patterns = task.sample(size, n, generator)  # [size, n, dim]
            queries = task.corrupt(patterns, generator)
            for entry in entries:
                retrieved = _retrieve(entry, patterns, queries)
                errors[entry, n].append(task.error(retrieved, patterns))
    return {key: torch.cat(values) for key, values in errors.items()}


def evaluate_unstored(
    task: Task, entries: list[Entry], n_stored: tuple[int, ...] | list[int], batches: int, chunk: int, seed: int
) -> dict[tuple[Entry, int], torch.Tensor]:
    """The control of :func:`evaluate`: per memory, ``2 n`` distinct patterns are drawn, the first ``n`` are stored
    and corrupted versions of the other ``n`` are the queries, scored against those unstored originals. A memory should
    fail here; a model that completes queries from its slow weights alone scores as well as on stored patterns.

    Memories and queries come from their own generator (``seed + 1``), so :func:`evaluate`'s draws stay the same.

    :return: ``{(entry, n): errors [batches]}`` for every ``n`` whose ``2 n`` distinct patterns the split holds
    """
    generator = torch.Generator().manual_seed(seed + 1)
    available = n_stored if task.images is None else [n for n in n_stored if 2 * n <= task.images.shape[0]]
    errors: dict[tuple[Entry, int], list[torch.Tensor]] = {(entry, n): [] for n in available for entry in entries}
    with torch.no_grad():
        for n in available:
            for done in range(0, batches, chunk):
                drawn = task.sample(min(chunk, batches - done), 2 * n, generator)  # [size, 2n, dim], distinct per memory
                stored, unstored = drawn[:, :n], drawn[:, n:]
                queries = task.corrupt(unstored, generator)
                for entry in entries:
                    errors[entry, n].append(task.error(_retrieve(entry, stored, queries), unstored))
    return {key: torch.cat(values) for key, values in errors.items()}


# ---------------------------------------------------------------------------------------------- plots
def plot_memory(rows: list[dict[str, Any]], n: int, task: Task, path: Path) -> None:
    """Error (mean, 5th-95th percentile bars) against memory size at ``n`` stored patterns, a line per model kind."""
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for kind in dict.fromkeys(row["model"] for row in rows):
        points = sorted((row for row in rows if row["model"] == kind and row["n_stored"] == n), key=lambda r: r["memory_size"])
        if points:
            _errorbar(axes, [p["memory_size"] for p in points], points, points[0]["label"] if len(points) == 1 else kind)
    axes.set_xscale("log")
    # Label the evaluated sizes themselves (a log axis' own labels collide between powers of ten), skipping sizes
    # within 15% of the previous label (e.g. MemNet's 256 beside EBMM's 258).
    ticks: list[int] = []
    for size in sorted({row["memory_size"] for row in rows if row["n_stored"] == n}):
        if not ticks or size > 1.15 * ticks[-1]:
            ticks.append(size)
    axes.set_xticks(ticks, [f"{size:,}" for size in ticks])
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("memory size (floats)")
    axes.set_ylabel(task.metric.replace("_", " "))
    axes.set_title(f"{task.dataset}: {n} patterns stored, {_corruption_name(task)}")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_n_stored(rows: list[dict[str, Any]], task: Task, path: Path) -> None:
    """Error against the number of stored patterns, a line per model (binary strings: the paper's Table 1)."""
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for label in dict.fromkeys(row["label"] for row in rows):
        points = sorted((row for row in rows if row["label"] == label), key=lambda r: r["n_stored"])
        _errorbar(axes, [p["n_stored"] for p in points], points, label)
    axes.set_xlabel("patterns stored")
    axes.set_ylabel(task.metric.replace("_", " "))
    axes.set_title(f"{task.dataset}: {_corruption_name(task)}")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_retrievals(task: Task, entries: list[Entry], n: int, seed: int, path: Path) -> None:
    """Stored, query and each model's retrieved images of the first ``GRID_IMAGES`` patterns of one memory."""
    generator = torch.Generator().manual_seed(seed)
    patterns = task.sample(1, n, generator)  # [1, n, dim]
    queries = task.corrupt(patterns, generator)
    shown = min(GRID_IMAGES, n)
    with torch.no_grad():
        rows = [("stored", patterns), ("query", queries)]
        rows += [(entry.label, _retrieve(entry, patterns, queries)) for entry in entries]
    figure = Figure(figsize=(1.2 * shown + 1.5, 1.2 * len(rows)))
    axes = figure.subplots(len(rows), shown, squeeze=False)
    for row, (name, images) in enumerate(rows):
        for column in range(shown):
            image = images[0, column].clamp(0, 1).reshape(task.image_shape).permute(1, 2, 0).numpy()  # [H, W, C]
            axis = axes[row, column]
            axis.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# ---------------------------------------------------------------------------------------------- internals
def _trained_entry(model: torch.nn.Module, config: dict[str, Any], task: Task, device: str) -> Entry:
    view = recall_view(model, config.get("write", "batch"))
    if view.dim != task.dim:
        raise UsageError(f"a model of {view.dim}-value patterns cannot read {task.dim}-value ones; check --image-size")
    name = "EBMM" if config["model"] == "ebmm" else "MemNet"
    augmented = ", augmented" if config.get("augment") else ""
    random_memories = f", {config['random_memories']:g} random" if config.get("random_memories") else ""
    label = f"{name} (m={view.memory_size(config['n_stored'])}{augmented}{random_memories})"
    return Entry(label, config["model"], view, device)


def _unique_labels(entries: list[Entry]) -> list[Entry]:
    seen: dict[str, int] = {}
    unique = []
    for entry in entries:
        seen[entry.label] = seen.get(entry.label, 0) + 1
        label = entry.label if seen[entry.label] == 1 else f"{entry.label} #{seen[entry.label]}"
        unique.append(Entry(label, entry.kind, entry.memory, entry.device))
    return unique


def _retrieve(entry: Entry, patterns: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """What a model reads back for ``queries`` after storing ``patterns``, on the CPU."""
    patterns, queries = patterns.to(entry.device), queries.to(entry.device)
    return entry.memory.read(entry.memory.write(patterns), queries).cpu()


def _corruption_name(task: Task) -> str:
    if task.images is None:
        return f"{task.corruption} {task.corrupt_bits} of {task.dim} bits"
    return f"occlude {task.block}x{task.block}"


def _errorbar(axes: Any, x: list[float], points: list[dict[str, Any]], label: str) -> None:
    """Means joined by a line, with a bar from the 5th to the 95th percentile (which need not contain the mean)."""
    # The colour cycle has 10 colours: each further round of models gets another line style and marker.
    cycle = len(axes.get_lines()) // 10 % len(LINE_STYLES)
    (line,) = axes.plot(x, [p["mean"] for p in points], marker="os^D"[cycle], linestyle=LINE_STYLES[cycle], label=label)
    axes.vlines(x, [p["p5"] for p in points], [p["p95"] for p in points], color=line.get_color(), alpha=0.5)


def _print_table(rows: list[dict[str, Any]], metric: str) -> None:
    n_values = sorted({row["n_stored"] for row in rows})
    labels = list(dict.fromkeys(row["label"] for row in rows))
    cells = {(row["label"], row["n_stored"]): row for row in rows}
    width = max(len(label) for label in labels) + 2
    print(f"{metric} (mean) by patterns stored; (querying unstored patterns)".ljust(width))
    print("".ljust(width) + "".join(f"{n:>20}" for n in n_values))
    for label in labels:
        print(label.ljust(width) + "".join(_cell(cells[label, n]) for n in n_values))


def _cell(row: dict[str, Any]) -> str:
    unstored = "" if row["unstored_mean"] is None else f" ({row['unstored_mean']:.3f})"
    return f"{row['mean']:.3f}{unstored}".rjust(20)
