"""Tables and plot of the MiniGrid-Memory curriculum runs, beside the from-scratch runs of benchmark_minigrid_memory_bonus.

Steps count both stages: a stage-2 evaluation at t steps is plotted at (stage-1 steps + t).
Usage: python results/benchmark_minigrid_memory_curriculum/collect.py
"""

import csv
from pathlib import Path

from ebmm_rl.benchmark import plot_success, steps_to_hold, steps_to_threshold

HERE = Path(__file__).parent
SCRATCH = HERE.parent / "benchmark_minigrid_memory_bonus"
ENV = "MiniGrid-Memory-v0"
# (label, seed, stage-1 evaluations, stage-2 evaluations): ppo_ebmm seeds 0 and 1 start from stage-1 seed 0's model,
# seeds 2 and 3 (run.sh as committed) from their own
CURRICULUM = [
    ("ppo_ebmm, curriculum", 0, "ppo_ebmm_seed0_stage1.csv", "ppo_ebmm_seed0_stage2.csv"),
    ("ppo_ebmm, curriculum", 1, "ppo_ebmm_seed0_stage1.csv", "ppo_ebmm_seed1_stage2.csv"),
    ("ppo_ebmm, curriculum, own stage 1", 2, "ppo_ebmm_seed2_stage1.csv", "ppo_ebmm_seed2_stage2.csv"),
    ("ppo_ebmm, curriculum, own stage 1", 3, "ppo_ebmm_seed3_stage1.csv", "ppo_ebmm_seed3_stage2.csv"),
    ("ppo_oracle, curriculum", 0, "ppo_oracle_seed0_stage1.csv", "ppo_oracle_seed0_stage2.csv"),
]


def read(path: Path) -> list[dict]:
    """A CSV's rows, numbers as floats (the agent and env columns stay strings)."""
    with open(path, newline="") as file:
        return [
            {key: value if key in ("agent", "env") else float(value) for key, value in row.items()}
            for row in csv.DictReader(file)
        ]


def evaluation(agent: str, seed: int, row: dict, step_offset: float = 0.0) -> dict:
    """One row of the benchmark's evaluations.csv layout, its steps moved by ``step_offset``."""
    return {
        "agent": agent,
        "env": ENV,
        "seed": seed,
        "timesteps": step_offset + row["timesteps"],
        "success_rate": row["success_rate"],
        "mean_reward": row["mean_reward"],
        "fps": row["fps"],
    }


rows = []
for label, seed, stage1, stage2 in CURRICULUM:
    offset = max(row["timesteps"] for row in read(HERE / stage1))
    rows += [evaluation(label, seed, row, offset) for row in read(HERE / stage2)]
for row in read(SCRATCH / "evaluations.csv"):
    rows.append(row | {"agent": f"{row['agent']}, from scratch"})
for seed in (0, 1):
    rows += [evaluation("ppo_ebmm, from scratch", seed, row) for row in read(SCRATCH / f"ppo_ebmm_seed{seed}_evaluations.csv")]

columns = ("agent", "env", "seed", "timesteps", "success_rate", "mean_reward", "fps")
with open(HERE / "evaluations.csv", "w", newline="") as file:
    writer = csv.DictWriter(file, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)

with open(HERE / "summary.csv", "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(
        ("agent", "seed", "final_step", "final_success_rate", "best_success_rate", "first_at_0.95", "held_0.95_from")
    )
    for agent, seed in sorted({(row["agent"], int(row["seed"])) for row in rows}):
        runs = sorted((row for row in rows if row["agent"] == agent and row["seed"] == seed), key=lambda r: r["timesteps"])
        writer.writerow(
            (
                agent,
                seed,
                int(runs[-1]["timesteps"]),
                runs[-1]["success_rate"],
                max(row["success_rate"] for row in runs),
                steps_to_threshold(runs, 0.95),
                steps_to_hold(runs, 0.95),
            )
        )
plot_success(rows, [ENV], 0.95, HERE / "success_rate.png")
print((HERE / "summary.csv").read_text())
