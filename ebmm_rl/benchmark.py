"""Benchmark agents on memory tasks over seeds: ``python -m ebmm_rl.benchmark --agents ppo ppo_lstm --seeds 0 1 2``.

Every (agent, env, seed) is one training run (:mod:`ebmm_rl.runs.training`, in a worker process of its own; run
directories go to ``--run-dir``). From the runs' periodic evaluations it writes, into ``--out``:

- ``evaluations.csv``: agent, env, seed, timesteps, success_rate, mean_reward, fps, stage, one row per evaluation;
- ``summary.csv``: per agent and env, over seeds: final success rate and return (mean and std over seeds), steps until
  the env's score first reached its threshold (mean over the seeds that reached it, and how many did), steps from which
  it stayed at or above the threshold in every later evaluation (mean over the seeds that held it, and how many did),
  fps. The score is the success rate (``--threshold``) on envs that pay only on success (MiniGrid's), else the mean
  return (``--return-threshold``; the success rate is then empty);
- ``summary.json``: the same plus one entry per run (and the failed runs, if any);
- ``success_rate.png``: each env's score against environment steps, one panel per env, one line per agent (mean over
  seeds, shaded between the lowest and highest seed).

With a curriculum (:mod:`ebmm_rl.runs.curriculum`) the summary and the plot count only the evaluations of its last stage,
the env benchmarked, at the run's step counts; a run that never reached it counts as 0 success.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shlex
import signal
import sys
import traceback
from contextlib import AbstractContextManager
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ebmm_rl import envs
from ebmm_rl.agents import agent_names
from ebmm_rl.runs import arguments
from ebmm_rl.runs.directory import EVALUATIONS_FILE
from ebmm_rl.runs.interrupt import forward_stop_signals, stop_with_parent
from ebmm_rl.runs.training import TRAIN_PROGRAM, prepare_run, start_run, train_run

PROGRAM = "python -m ebmm_rl.benchmark"
EVALUATION_COLUMNS = ("agent", "env", "seed", "timesteps", "success_rate", "mean_reward", "fps", "stage")
SUMMARY_COLUMNS = (
    "agent",
    "env",
    "seeds",
    "final_success_rate",
    "final_success_rate_std",
    "final_mean_reward",
    "final_mean_reward_std",
    "score",
    "threshold",
    "steps_to_threshold",
    "seeds_reaching_threshold",
    "steps_to_hold",
    "seeds_holding_threshold",
    "fps",
)


@dataclass
class BenchmarkResult:
    """What :func:`main` returns.

    :param out: the output directory.
    :param runs: one summary per finished run (agent, env, seed, final metrics, steps to the threshold, fps, run_dir).
    :param summary: one row of :data:`SUMMARY_COLUMNS` per agent and env.
    :param failed: ``(agent, env, seed, traceback)`` of the runs that raised.
    """

    out: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[str, str, int, str]] = field(default_factory=list)


_STOPPING: Any = None
"""In a worker: the benchmark's event, set once it is asked to stop."""
_PARENT_PID: int | None = None
"""In a worker: the benchmark's process id."""


def _init_worker(stopping: Any, parent_pid: int) -> None:
    global _STOPPING, _PARENT_PID
    _STOPPING, _PARENT_PID = stopping, parent_pid
    stop_with_parent(parent_pid)


def _train_in_worker(
    options: dict[str, Any],
    config_file: str | None,
    overrides: list[str],
    timesteps: int | None,
    n_envs: int | None,
    threads: int,
) -> dict[str, Any] | None:
    """One training run (:func:`ebmm_rl.runs.training.train_run`) in a worker process; ``None`` if the benchmark was
    stopped before it began (the executor hands a worker its next run before the current one ends, beyond ``cancel``)."""
    if _STOPPING is not None and _STOPPING.is_set():
        return None
    argv = [f"--{key.replace('_', '-')}={value}" for key, value in options.items() if value not in (None, False)]
    argv = [option.removesuffix("=True") for option in argv]
    argv += [f"--config={config_file}"] * (config_file is not None)
    argv += [f"--timesteps={timesteps}"] * (timesteps is not None) + [f"--n-envs={n_envs}"] * (n_envs is not None)
    argv += [f"--set={item}" for item in overrides] + [f"--threads={threads}", "--no-progress"]
    command = shlex.join([*shlex.split(TRAIN_PROGRAM), *argv])
    spec = start_run(options, command, config_file, overrides, timesteps, n_envs)
    prepared = prepare_run(spec, threads=threads)
    result = train_run(prepared, progress_bar=False)
    if os.getppid() != _PARENT_PID:
        # The benchmark ended, and its end stopped the run (stop_with_parent): no one reads the result or sends another
        # run, and waiting on the executor's queue would keep this process alive.
        os._exit(128 + signal.SIGTERM)
    stages = len(prepared.stages)
    return {"run_dir": str(result.run_dir), "fps": result.fps, "interrupted": result.interrupted, "stages": stages}


def stop_workers_on_signals(
    pool: ProcessPoolExecutor, futures: dict[Future, Any], stopping: Any
) -> AbstractContextManager[list[signal.Signals]]:
    """On SIGTERM or SIGINT, cancel the runs not yet started and stop the running ones the way ``train`` stops
    (each saves its state and can be resumed), rather than leave the workers training on without the benchmark
    (:func:`~ebmm_rl.runs.interrupt.forward_stop_signals`).

    :param stopping: the workers' event (:func:`_init_worker`): set, a worker starts no other run.
    :return: the context manager, yielding the signals received.
    """

    def cancel_the_rest() -> None:
        stopping.set()
        for future in futures:
            future.cancel()

    return forward_stop_signals(
        lambda: [process.pid for process in list(pool._processes.values())],  # the executor keeps no public list
        "stopping the running runs (each saves its state); the rest are cancelled",
        cancel_the_rest,
    )


def read_evaluations(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``evaluations.csv`` as numbers, in step order."""
    with open(Path(run_dir) / EVALUATIONS_FILE, newline="") as file:
        rows = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]
    return sorted(rows, key=lambda row: row["timesteps"])


def score_name(env_id: str) -> str:
    """What the benchmark scores an env by: ``success_rate`` where the return says success (MiniGrid's), else
    ``mean_reward``."""
    return "success_rate" if envs.pays_on_success(env_id) else "mean_reward"


def steps_to_threshold(rows: list[dict[str, float]], threshold: float | None, score: str = "success_rate") -> int | None:
    """Environment steps at the first evaluation whose ``score`` reached ``threshold``; ``None`` if none did."""
    if threshold is None:
        return None
    return next((int(row["timesteps"]) for row in rows if row[score] >= threshold), None)


def steps_to_hold(rows: list[dict[str, float]], threshold: float | None, score: str = "success_rate") -> int | None:
    """Environment steps at the first evaluation from which every evaluation's ``score``, to the last, reached
    ``threshold``; ``None`` if the last one did not."""
    held = None
    if threshold is None:
        return held
    for row in reversed(rows):
        if row[score] < threshold:
            break
        held = int(row["timesteps"])
    return held


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate per-run summaries over seeds, one row of :data:`SUMMARY_COLUMNS` per agent and env."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["agent"], run["env"]), []).append(run)
    summary = []
    for (agent, env_id), group in sorted(groups.items()):
        success = np.array([run["final_success_rate"] for run in group])
        reached = [run["steps_to_threshold"] for run in group if run["steps_to_threshold"] is not None]
        held = [run["steps_to_hold"] for run in group if run["steps_to_hold"] is not None]
        returns = np.array([run["final_mean_reward"] for run in group])
        summary.append(
            {
                "agent": agent,
                "env": env_id,
                "seeds": len(group),
                "final_success_rate": float(success.mean()),
                "final_success_rate_std": float(success.std()),
                "final_mean_reward": float(returns.mean()),
                "final_mean_reward_std": float(returns.std()),
                "score": group[0]["score"],
                "threshold": group[0]["threshold"],
                "steps_to_threshold": float(np.mean(reached)) if reached else None,
                "seeds_reaching_threshold": len(reached),
                "steps_to_hold": float(np.mean(held)) if held else None,
                "seeds_holding_threshold": len(held),
                "fps": float(np.mean([run["fps"] for run in group])),
            }
        )
    return summary


def plot_success(
    evaluations: list[dict[str, Any]], env_ids: list[str], thresholds: dict[str, float | None], path: str | Path
) -> Path:
    """Plot each env's score (:func:`score_name`) against environment steps: one panel per env, one line per agent
    (mean over seeds).

    Seeds are interpolated onto the union of their evaluation steps; the band spans the lowest and highest seed.

    :param evaluations: rows of :data:`EVALUATION_COLUMNS`.
    :param env_ids: the envs, one panel each, in this order.
    :param thresholds: per env, drawn as a dotted line (None: none).
    :param path: the PNG file.
    :return: the path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    figure, axes = plt.subplots(1, len(env_ids), figsize=(5.5 * len(env_ids), 4), squeeze=False)
    for axis, env_id in zip(axes[0], env_ids, strict=True):
        rows = [row for row in evaluations if row["env"] == env_id]
        score = score_name(env_id)
        for agent in sorted({row["agent"] for row in rows}):
            curves = {}
            for row in (row for row in rows if row["agent"] == agent):
                curves.setdefault(row["seed"], []).append((row["timesteps"], row[score]))
            steps = np.unique([step for curve in curves.values() for step, _ in curve])
            interpolated = np.array([np.interp(steps, *np.array(sorted(curve)).T) for curve in curves.values()])
            line = axis.plot(steps, interpolated.mean(axis=0), label=f"{agent} ({len(curves)} seeds)")[0]
            axis.fill_between(steps, interpolated.min(axis=0), interpolated.max(axis=0), color=line.get_color(), alpha=0.2)
        if thresholds.get(env_id) is not None:
            axis.axhline(thresholds[env_id], color="grey", linestyle=":", linewidth=1)
        if score == "success_rate":
            axis.set(ylabel="success rate", ylim=(-0.02, 1.02))
        else:
            axis.set(ylabel="mean return")
        axis.set(title=env_id, xlabel="environment steps")
        axis.xaxis.set_major_formatter(EngFormatter())  # 100k, 1M: full step counts run into each other
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def score_text(row: dict[str, float], score: str) -> str:
    """A run's final score, for the progress lines."""
    return f"success {row['success_rate']:.1%}" if score == "success_rate" else f"mean return {row['mean_reward']:.1f}"


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def build_parser() -> arguments.ArgumentParser:
    """The command-line parser."""
    parser = arguments.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--agents", nargs="+", default=agent_names(), help=f"agents (default: all of {', '.join(agent_names())})"
    )
    parser.add_argument("--envs", nargs="+", default=["EBMM-MemoryShort"], help="env ids/aliases (default EBMM-MemoryShort)")
    parser.add_argument("--seeds", nargs="+", type=arguments.seed, default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--timesteps", type=arguments.positive_int, help="steps per run (default: n_timesteps of each config)")
    parser.add_argument("--n-envs", type=arguments.positive_int, help="parallel envs per run (default: n_envs of each config)")
    parser.add_argument(
        "--workers", type=arguments.positive_int, help="runs in parallel, each in its own process (default: CPU count)"
    )
    parser.add_argument(
        "--eval-freq", type=arguments.non_negative_int, default=20_000, help="steps between evaluations (default 20000)"
    )
    parser.add_argument(
        "--eval-episodes", type=arguments.positive_int, default=50, help="episodes per evaluation (default 50)"
    )
    parser.add_argument(
        "--eval-deterministic",
        action="store_const",
        const=True,
        help="evaluate with greedy actions (default: the config's eval_deterministic, else sampled, as trained)",
    )
    parser.add_argument(
        "--threshold", type=arguments.fraction, default=0.95, help="success rate to count steps to (default 0.95)"
    )
    parser.add_argument(
        "--return-threshold",
        type=float,
        help="mean return to count steps to, on envs without success (CartPole, Pendulum...; default: none)",
    )
    parser.add_argument("--threads", type=arguments.positive_int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--device", default="cpu", type=arguments.device, help="torch device: auto, cpu or cuda (default cpu)")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file over each agent's configs/<agent>.yml for every run (flat, or keyed by env id; e.g. a tune "
        "study's <study>_best.yml)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    parser.add_argument("--out", default="results/benchmark", help="where the CSV, JSON and PNG go")
    parser.add_argument("--run-dir", default="runs/benchmark", help="parent of the run directories (default runs/benchmark)")
    return parser


def main(argv: list[str] | None = None) -> BenchmarkResult:
    """Run the benchmark; see ``python -m ebmm_rl.benchmark --help``.

    :param argv: command-line arguments without the program name; ``None`` reads ``sys.argv``.
    :return: the :class:`BenchmarkResult`.
    Bad input (an unknown agent, env id or config key, a value its consumer does not accept) exits with status 2 and a
    one-line message before any run starts.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        env_ids = list(dict.fromkeys(envs.resolve_env_id(name) for name in args.envs))
    except ValueError as error:
        parser.error(str(error))
    scores = {env_id: score_name(env_id) for env_id in env_ids}
    thresholds = {env_id: args.threshold if scores[env_id] == "success_rate" else args.return_threshold for env_id in env_ids}
    jobs = [(agent, env_id, seed) for agent in args.agents for env_id in env_ids for seed in args.seeds]
    cpus = os.cpu_count() or 1
    workers = min(args.workers or cpus, len(jobs))
    common = {
        "run_dir": args.run_dir,
        "device": args.device,
        "eval_freq": args.eval_freq,
        "eval_episodes": args.eval_episodes,
        "eval_deterministic": args.eval_deterministic,
    }

    for agent in args.agents:  # every run's settings and config checked now, not in a worker
        for env_id in env_ids:
            try:
                start_run(
                    {"agent": agent, "env": env_id, **common}, PROGRAM, args.config, args.set, args.timesteps, args.n_envs
                )
            except (ValueError, FileNotFoundError) as error:
                parser.error(str(error))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = BenchmarkResult(out)
    evaluations: list[dict[str, Any]] = []
    task_evaluations: list[dict[str, Any]] = []
    print(f"Benchmark: {len(jobs)} runs of {len(args.agents)} agents x {len(env_ids)} envs x {len(args.seeds)} seeds")
    # spawn: each worker starts clean (no inherited torch threads or open envs).
    interrupted: list[str] = []
    context = multiprocessing.get_context("spawn")
    stopping = context.Event()
    with ProcessPoolExecutor(workers, context, initializer=_init_worker, initargs=(stopping, os.getpid())) as pool:
        futures = {}
        for agent, env_id, seed in jobs:
            options = {"agent": agent, "env": env_id, "seed": seed, **common}
            future = pool.submit(_train_in_worker, options, args.config, args.set, args.timesteps, args.n_envs, args.threads)
            futures[future] = (agent, env_id, seed)
        with stop_workers_on_signals(pool, futures, stopping) as received:
            for done, future in enumerate(as_completed(futures), start=1):
                agent, env_id, seed = futures[future]
                if future.cancelled():
                    continue
                try:
                    outcome = future.result()
                    if outcome is None:  # not started
                        continue
                except Exception:
                    error = traceback.format_exc()
                    result.failed.append((agent, env_id, seed, error))
                    print(f"[{done}/{len(jobs)}] {agent} on {env_id}, seed {seed}: FAILED\n{error}", file=sys.stderr)
                    continue
                if outcome["interrupted"]:  # stopped by a signal: resumable, not a result
                    interrupted.append(outcome["run_dir"])
                    print(f"[{done}/{len(jobs)}] {agent} on {env_id}, seed {seed}: stopped in {outcome['run_dir']}")
                    continue
                every_row = read_evaluations(outcome["run_dir"])
                evaluations += [{"agent": agent, "env": env_id, "seed": seed, **row} for row in every_row]
                rows = [row for row in every_row if int(row.get("stage", 1)) == outcome["stages"]]  # on the env benchmarked
                task_evaluations += [{"agent": agent, "env": env_id, "seed": seed, **row} for row in rows]
                final = rows[-1] if rows else {**every_row[-1], "success_rate": 0.0, "mean_reward": 0.0}
                run = {
                    "agent": agent,
                    "env": env_id,
                    "seed": seed,
                    "timesteps": int(final["timesteps"]),
                    "final_success_rate": final["success_rate"],
                    "final_mean_reward": final["mean_reward"],
                    "score": scores[env_id],
                    "threshold": thresholds[env_id],
                    "steps_to_threshold": steps_to_threshold(rows, thresholds[env_id], scores[env_id]),
                    "steps_to_hold": steps_to_hold(rows, thresholds[env_id], scores[env_id]),
                    "fps": outcome["fps"],
                    "run_dir": outcome["run_dir"],
                }
                result.runs.append(run)
                print(f"[{done}/{len(jobs)}] {agent} on {env_id}, seed {seed}: {score_text(final, scores[env_id])}")

    evaluations.sort(key=lambda row: (row["agent"], row["env"], row["seed"], row["timesteps"]))
    for row in evaluations:
        row["timesteps"], row["stage"] = int(row["timesteps"]), int(row.get("stage", 1))
    result.runs.sort(key=lambda run: (run["agent"], run["env"], run["seed"]))
    result.summary = summarize(result.runs)
    _write_csv(out / "evaluations.csv", EVALUATION_COLUMNS, evaluations)
    _write_csv(out / "summary.csv", SUMMARY_COLUMNS, result.summary)
    failed = [{"agent": agent, "env": env_id, "seed": seed, "error": error} for agent, env_id, seed, error in result.failed]
    summary = {"thresholds": thresholds, "summary": result.summary, "runs": result.runs, "failed": failed}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if task_evaluations:
        plotted = [env_id for env_id in env_ids if any(row["env"] == env_id for row in task_evaluations)]
        task_evaluations.sort(key=lambda row: (row["agent"], row["env"], row["seed"], row["timesteps"]))
        plot_success(task_evaluations, plotted, thresholds, out / "success_rate.png")
    for row in result.summary:
        reached = f"{row['steps_to_threshold']:.0f} steps" if row["steps_to_threshold"] is not None else "never"
        held = f"from {row['steps_to_hold']:.0f} steps" if row["steps_to_hold"] is not None else "never"
        if row["score"] == "success_rate":
            final = f"success {row['final_success_rate']:.1%} ± {row['final_success_rate_std']:.1%}"
            target = f"{row['threshold']:.0%}"
        else:
            final = f"mean return {row['final_mean_reward']:.1f} ± {row['final_mean_reward_std']:.1f}"
            target = "no threshold" if row["threshold"] is None else f"{row['threshold']:g}"
        print(
            f"{row['agent']} on {row['env']}: {final} over {row['seeds']} seeds; {target} reached by "
            f"{row['seeds_reaching_threshold']} ({reached}), held by {row['seeds_holding_threshold']} ({held}); "
            f"{row['fps']:.0f} fps"
        )
    print(f"Results in {out}" + (f"; {len(result.failed)} runs FAILED" if result.failed else ""))
    if received:
        not_started = len(jobs) - len(result.runs) - len(result.failed) - len(interrupted)
        resume = "".join(f"\n  python -m ebmm_rl.train --resume {run_dir}" for run_dir in interrupted)
        print(
            f"{received[0].name}: the tables hold the finished runs only; {not_started} runs not started; "
            f"{len(interrupted)} stopped and saved, to resume with:{resume or ' (none)'}",
            file=sys.stderr,
        )
        sys.exit(128 + int(received[0]))
    return result


def cli() -> int:
    """Console-script entry point: exit status 1 if any run failed."""
    return 1 if main().failed else 0


if __name__ == "__main__":
    sys.exit(cli())
