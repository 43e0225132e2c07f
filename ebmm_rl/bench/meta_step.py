"""Meta-steps per second of the recall suite's EBMMs at this checkout against a reference commit, side by side.

    python -m ebmm_rl.bench.meta_step --reference main --rounds 5 --out results/bench_memory/meta_step.json

Each model is one of the recall suite's defaults (:data:`ebmm_rl.recall.models.DATASET_DEFAULTS`: 8 memories of 64
patterns, 5 write and 5 read steps, second order), with and without the gradient-norm term of the writing loss. The
reference commit's ``ebmm_rl`` is unpacked with ``git archive``; each round times a few :func:`meta_train_step` calls of
every model in a fresh process of the reference, then of this checkout, on the same random batch and one thread, so
that a machine shared with other jobs slows both alike. Reported: seconds per meta-step of each (median over rounds)
and the speed-up, reference time / this time, as the median and range of the per-round ratios.

With ``--compile`` this checkout's meta-loss is ``torch.compile``d (the reference's is not) and the first step's time,
compilation included, is reported too: torch caches compiled code on disk (``/tmp/torchinductor_$USER``), so a first
round may compile from scratch and later ones reuse it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = ("binary", "digits")


def model_kwargs(dataset: str, gradient_penalty: bool) -> dict:
    """The EBMM the recall suite trains on ``dataset`` by default: ``{"energy_kwargs", "kwargs"}`` of
    :func:`ebmm_rl.recall.models.build_model`, and the pattern box as ``projection``."""
    import torch

    from ebmm_rl.recall.models import DATASET_DEFAULTS, Task, model_spec
    from ebmm_rl.recall.train import TRAIN_DEFAULTS

    defaults = DATASET_DEFAULTS[dataset]
    if dataset == "binary":
        task = Task("binary", None, None, defaults["corruption"], defaults["corrupt_bits"], None)
    else:  # only the image size matters to the model; the values of the images do not change its cost
        size = defaults["image_size"]
        task = Task(dataset, torch.zeros(1, size * size), (1, size, size), defaults["corruption"], None, size // 2)
    config = {**TRAIN_DEFAULTS, **defaults, "dataset": dataset, "gradient_penalty": gradient_penalty}
    spec = model_spec(task, config)
    if spec["energy"] != "mlp":
        raise ValueError(f"the {dataset} default uses the {spec['energy']} energy; this benchmark times MLP energies")
    return {"energy_kwargs": spec["energy_kwargs"], "kwargs": spec["kwargs"], "n_stored": config["n_stored"]}


def time_meta_steps(job: dict) -> dict[str, float | list[float]]:
    """Seconds of each of ``job["steps"]`` meta-steps after one warm-up step, and of the warm-up step itself (run in
    the process of one checkout: it imports only the memory core). With ``job["compile"]`` the meta-loss is
    ``torch.compile``d, and the warm-up step includes its compilation."""
    import time

    import torch

    from ebmm_rl.memory import EBMM, MLPEnergy, make_optimizer, meta_train_step

    torch.set_num_threads(1)
    torch.manual_seed(job["seed"])
    memory = EBMM(MLPEnergy(**job["energy_kwargs"]), **job["kwargs"])
    optimizer = make_optimizer(memory, lr=1e-3)
    shape = (job["batch"], job["n_stored"], job["energy_kwargs"]["dim"])
    low, high = job["kwargs"]["projection"]
    patterns = torch.where(torch.rand(shape) < 0.5, low, high)
    queries = torch.where(torch.rand(shape) < 0.5, patterns, (low + high) / 2)  # half the values erased
    # Only a compiled run passes meta_loss: a reference commit may predate the argument.
    options = {"meta_loss": torch.compile(memory.meta_loss)} if job["compile"] else {}
    times = []
    for _ in range(job["steps"] + 1):
        start = time.perf_counter()
        meta_train_step(memory, optimizer, patterns, queries, **options)
        times.append(time.perf_counter() - start)
    return {"warm_up_s": times[0], "step_s": times[1:]}


def unpack_reference(revision: str, repository: Path, into: Path) -> Path:
    """The ``ebmm_rl`` package of ``revision`` unpacked under ``into``; returns the folder to put on ``PYTHONPATH``."""
    archive = subprocess.run(
        ["git", "-C", str(repository), "archive", revision, "ebmm_rl"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_job(source: Path, job: dict) -> dict[str, float | list[float]]:
    """:func:`time_meta_steps` in a fresh process whose ``ebmm_rl`` is the package under ``source``."""
    package = source / "ebmm_rl"
    # An editable install's import hook would find this checkout's package before PYTHONPATH: load the package from
    # its folder explicitly, and run this file's function (the reference may predate it) with that package.
    code = (
        "import importlib.util, json, runpy, sys\n"
        f"spec = importlib.util.spec_from_file_location('ebmm_rl', {str(package / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(package)!r}])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['ebmm_rl'] = module\n"
        "spec.loader.exec_module(module)\n"
        f"assert module.memory.__file__.startswith({str(package)!r}), module.memory.__file__\n"
        f"print(json.dumps(runpy.run_path({str(Path(__file__))!r})['time_meta_steps']({job!r})))\n"
    )
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=environment, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    """Time the models at the reference and here; see ``python -m ebmm_rl.bench.meta_step --help``.

    :param argv: command-line arguments without the program name; ``None`` reads ``sys.argv``.
    :return: one row per model: seconds per meta-step of each checkout and the speed-up
    """
    parser = argparse.ArgumentParser(prog="python -m ebmm_rl.bench.meta_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="git revision to compare against (e.g. main or a hash)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="recall datasets' defaults")
    parser.add_argument(
        "--gradient-penalty", nargs="+", default=["off", "on"], choices=["off", "on"], help="writing loss variants"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating reference / this pairs per model")
    parser.add_argument("--steps", type=int, default=3, help="timed meta-steps per process")
    parser.add_argument("--batch", type=int, default=8, help="memories per meta-step (the recall default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile this checkout's meta-loss")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_meta_step.json"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be positive")
    this = Path(__file__).resolve().parents[2]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        reference = unpack_reference(args.reference, this, Path(folder))
        for dataset in args.models:
            for penalty in args.gradient_penalty:
                job = {**model_kwargs(dataset, penalty == "on"), "batch": args.batch, "steps": args.steps, "seed": 0}
                reference_times, this_times, warm_ups = [], [], []
                for _ in range(args.rounds):
                    reference_times.append(statistics.median(run_job(reference, {**job, "compile": False})["step_s"]))
                    measured = run_job(this, {**job, "compile": args.compile})
                    this_times.append(statistics.median(measured["step_s"]))
                    warm_ups.append(measured["warm_up_s"])
                ratios = [old / new for old, new in zip(reference_times, this_times, strict=True)]
                row = {
                    "model": dataset,
                    "gradient_penalty": penalty,
                    "reference_s": statistics.median(reference_times),
                    "this_s": statistics.median(this_times),
                    "speedup_median": statistics.median(ratios),
                    "speedup_min": min(ratios),
                    "speedup_max": max(ratios),
                    "ratios": ratios,
                    "compile": args.compile,
                    "this_first_step_s": warm_ups,
                }
                rows.append(row)
                print(
                    f"{dataset:>7} penalty {penalty:>3}: reference {row['reference_s'] * 1e3:7.1f} ms, this "
                    f"{row['this_s'] * 1e3:7.1f} ms per meta-step; speed-up {row['speedup_median']:.2f}x "
                    f"(range {row['speedup_min']:.2f}-{row['speedup_max']:.2f} over {args.rounds} rounds)"
                    + (f"; first compiled step {', '.join(f'{s:.0f}' for s in warm_ups)} s" if args.compile else ""),
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"reference": args.reference, "command": sys.argv, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
