"""Collect the CartPoleNoVel-v1 runs into evaluations.csv, summary.csv and success_rate.png (mean return).

The runs come from two benchmark invocations (see README.md), one of them stopped early, so this gathers their run
directories with ebmm_rl.benchmark's own functions. fps is the last evaluation's: environment steps per second of
wall time, evaluations included. Usage: python results/benchmark_novel/collect.py RUN_DIR...
"""

import csv
import sys
from pathlib import Path

from ebmm_rl import benchmark

ENV_ID = "CartPoleNoVel-v1"
THRESHOLD = 475.0
out = Path(__file__).parent
evaluations, runs = [], []
for run_dir in sorted(Path(path) for path in sys.argv[1:]):
    _env, agent, seed, _time = run_dir.name.split("__")
    rows = benchmark.read_evaluations(run_dir)
    evaluations += [
        {"agent": agent, "env": ENV_ID, "seed": int(seed), **row, "timesteps": int(row["timesteps"])} for row in rows
    ]
    final = rows[-1]
    runs.append({
        "agent": agent, "env": ENV_ID, "seed": int(seed), "timesteps": int(final["timesteps"]),
        "final_success_rate": final["success_rate"], "final_mean_reward": final["mean_reward"],
        "score": "mean_reward", "threshold": THRESHOLD,
        "steps_to_threshold": benchmark.steps_to_threshold(rows, THRESHOLD, "mean_reward"),
        "steps_to_hold": benchmark.steps_to_hold(rows, THRESHOLD, "mean_reward"), "fps": final["fps"],
    })  # fmt: skip
summary = benchmark.summarize(runs)
for name, columns, rows in (
    ("evaluations.csv", benchmark.EVALUATION_COLUMNS, evaluations),
    ("runs.csv", ("agent", "seed", "timesteps", "final_mean_reward", "steps_to_threshold", "fps"), runs),
    ("summary.csv", benchmark.SUMMARY_COLUMNS, summary),
):
    with open(out / name, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
benchmark.plot_success(evaluations, [ENV_ID], {ENV_ID: THRESHOLD}, out / "success_rate.png")
for row in summary:
    print(row)
