"""Cost of memory agents: time per ``predict`` along one long episode, and training throughput.

Run ``python -m ebmm_rl.bench.recurrent --device auto``. For each agent (default ``ppo_ebmm_recurrent``, ``ppo_lstm``
and the window agent ``ppo_ebmm``) it

- plays one episode of ``EBMM-MemoryDelay-v0`` with a hallway of ``--episode-steps`` cells, one ``model.predict`` per
  step with the recurrent state carried, and times every call: ``acting.csv`` has the median time over the steps
  around each of ``--probe-steps`` (e.g. step 10 and step 1,000), and ``ratio`` = last probe / first probe;
- trains for ``--train-steps`` environment steps with the agent's config for that env (``--n-envs`` envs) and
  reports environment steps per second of ``learn`` (rollouts and updates, no evaluation): ``training.csv``.

Untrained policies are timed: the cost of a step does not depend on the weights' values. A PNG plots the time per
``predict`` against the episode step.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ebmm_rl.agents import agent_names, get_agent
from ebmm_rl.bench.common import build_model, resolve_device, synchronize

DEFAULT_AGENTS = ("ppo_ebmm_recurrent", "ppo_lstm", "ppo_ebmm")
ACTING_FIELDS = ("device", "agent", "probe_step", "median_predict_s", "ratio_to_first_probe", "memory_floats_per_env")
TRAINING_FIELDS = ("device", "agent", "n_envs", "train_steps", "seconds", "fps")


def memory_floats(model) -> int:
    """Floats of recurrent state the agent carries per environment (0 for a stateless policy)."""
    policy = model.policy
    if hasattr(policy, "memory_size"):
        return policy.memory_size
    if hasattr(policy, "lstm_actor"):
        layers, hidden = policy.lstm_actor.num_layers, policy.lstm_actor.hidden_size
        return 2 * layers * hidden * (2 if policy.lstm_critic is not None else 1)
    return 0


def time_acting(agent_name: str, episode_steps: int, device: torch.device, overrides: list[str]) -> tuple[list[float], int]:
    """Seconds per ``predict`` call at each step of one episode whose hallway has ``episode_steps`` cells."""
    model, env = build_model(agent_name, 1, episode_steps, device, overrides)
    try:
        obs = env.reset()
        state, episode_start = None, np.ones(1, dtype=bool)
        times = []
        for _ in range(episode_steps):
            synchronize(device)
            start = time.perf_counter()
            action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=True)
            synchronize(device)
            times.append(time.perf_counter() - start)
            obs, _, done, _ = env.step(action)
            episode_start = done
            if done[0]:
                raise RuntimeError(f"the episode ended after {len(times)} steps; the hallway should hold {episode_steps}")
        return times, memory_floats(model)
    finally:
        env.close()


def time_training(agent_name: str, n_envs: int, train_steps: int, device: torch.device, overrides: list[str]) -> float:
    """Seconds of ``learn(train_steps)`` after one warm-up rollout and update."""
    model, env = build_model(agent_name, n_envs, 200, device, overrides)
    try:
        warmup = model.n_steps * n_envs
        model.learn(warmup)
        start = time.perf_counter()
        model.learn(train_steps, reset_num_timesteps=False)
        return time.perf_counter() - start
    finally:
        env.close()


def probe_medians(times: list[float], probes: list[int], half_width: int = 5) -> list[float]:
    """Median time over the steps ``probe - half_width .. probe + half_width`` (1-based steps) for each probe."""
    medians = []
    for probe in probes:
        if not 1 <= probe <= len(times):
            raise ValueError(f"probe step {probe} is outside the episode's {len(times)} steps; raise --episode-steps")
        window = times[max(0, probe - 1 - half_width) : probe + half_width]
        medians.append(statistics.median(window))
    return medians


def plot(per_agent: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for name, times in per_agent.items():
        steps = np.arange(1, len(times) + 1)
        smoothed = np.convolve(np.asarray(times) * 1e3, np.ones(21) / 21, mode="same")
        axis.plot(steps[10:-10], smoothed[10:-10], label=name)
    axis.set_xlabel("episode step")
    axis.set_ylabel("ms per predict (running mean over 21 steps)")
    axis.set_ylim(bottom=0)
    axis.set_title("Acting cost along one episode (1 env)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ebmm_rl.bench.recurrent", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", nargs="+", default=list(DEFAULT_AGENTS), help=f"of {', '.join(agent_names())}")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--episode-steps", type=int, default=1010, help="length of the timed episode")
    parser.add_argument("--probe-steps", type=int, nargs="+", default=[10, 1000], help="steps to compare")
    parser.add_argument("--train-steps", type=int, default=16384, help="environment steps of the timed training")
    parser.add_argument("--n-envs", type=int, default=16, help="envs while training (the delay configs' 16)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, every agent"
    )
    parser.add_argument("--out", default="runs/bench_recurrent", help="output folder (default runs/bench_recurrent)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in args.agents:
        get_agent(name)  # unknown names fail here, with a suggestion, before any timing
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    acting_rows, training_rows, per_agent = [], [], {}
    for name in args.agents:
        times, floats = time_acting(name, args.episode_steps, device, args.overrides)
        per_agent[name] = times
        medians = probe_medians(times, args.probe_steps)
        for probe, median in zip(args.probe_steps, medians, strict=True):
            acting_rows.append(
                {
                    "device": device.type,
                    "agent": name,
                    "probe_step": probe,
                    "median_predict_s": f"{median:.6f}",
                    "ratio_to_first_probe": f"{median / medians[0]:.3f}",
                    "memory_floats_per_env": floats,
                }
            )
        print(f"{name}: " + ", ".join(f"step {p}: {m * 1e3:.2f} ms" for p, m in zip(args.probe_steps, medians, strict=True)))
        if args.train_steps > 0:
            seconds = time_training(name, args.n_envs, args.train_steps, device, args.overrides)
            fps = args.train_steps / seconds
            training_rows.append(
                {
                    "device": device.type,
                    "agent": name,
                    "n_envs": args.n_envs,
                    "train_steps": args.train_steps,
                    "seconds": f"{seconds:.2f}",
                    "fps": f"{fps:.1f}",
                }
            )
            print(f"{name}: training {fps:.0f} env steps/s")
    outputs = (("acting.csv", ACTING_FIELDS, acting_rows), ("training.csv", TRAINING_FIELDS, training_rows))
    for filename, fields, rows in outputs:
        if rows:
            with (out / filename).open("w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
    plot(per_agent, out / "acting.png")
    print(f"{platform.node()} torch {torch.__version__}: results in {out}/", file=sys.stderr)
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
