"""Where an agent's time goes on a device: torch.profiler over acting steps and over one rollout + update.

    python -m ebmm_rl.bench.profile --agent ppo_ebmm_recurrent --device cuda --out profile_recurrent.txt

Untrained agent on ``EBMM-MemoryDelay-v0`` (the :mod:`ebmm_rl.bench.recurrent` setup). Writes the profiler's tables (sorted by
self CPU time, the overhead-bound part of small-batch work) and the count of host-device synchronisations.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from torch.profiler import ProfilerActivity, profile

from ebmm_rl.bench.common import build_model, resolve_device, synchronize


def summarise(prof, title: str, seconds: float, row_limit: int) -> str:
    """A profile's header line (time, kernel launches, synchronisations, copies) and its table by self CPU time."""
    averages = prof.key_averages()
    syncs = sum(event.count for event in averages if event.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize"))
    copies = sum(event.count for event in averages if event.key.startswith("cudaMemcpy"))
    launches = sum(event.count for event in averages if event.key == "cudaLaunchKernel")
    header = f"== {title}: {seconds:.3f} s; kernel launches {launches}, synchronisations {syncs}, memcpy calls {copies}"
    return header + "\n" + averages.table(sort_by="self_cpu_time_total", row_limit=row_limit) + "\n"


def main(argv: list[str] | None = None) -> str:
    """Profile an agent; see ``python -m ebmm_rl.bench.profile --help``.

    :param argv: command-line arguments without the program name; ``None`` reads ``sys.argv``.
    :return: the report written to ``--out``.
    """
    parser = argparse.ArgumentParser(prog="python -m ebmm_rl.bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="ppo_ebmm_recurrent")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--acting-steps", type=int, default=50)
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--n-steps", type=int, default=64, help="rollout length of the profiled update")
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    report = []

    model, env = build_model(args.agent, 1, args.acting_steps + 20, device, [])
    try:
        obs, state, start = env.reset(), None, np.ones(1, dtype=bool)
        for _ in range(10):  # warm-up
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
            obs, _, start, _ = env.step(action)
        with profile(activities=activities) as prof:
            began = time.perf_counter()
            for _ in range(args.acting_steps):
                action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
                obs, _, start, _ = env.step(action)
            synchronize(device)
            seconds = time.perf_counter() - began
        report.append(summarise(prof, f"{args.agent}: {args.acting_steps} predict calls (1 env)", seconds, args.rows))
    finally:
        env.close()

    transitions = args.n_steps * args.n_envs
    model, env = build_model(args.agent, args.n_envs, 200, device, [f"n_steps={args.n_steps}", f"batch_size={transitions}"])
    try:
        model.learn(transitions)  # warm-up
        with profile(activities=activities) as prof:
            began = time.perf_counter()
            model.learn(transitions, reset_num_timesteps=False)
            synchronize(device)
            seconds = time.perf_counter() - began
        title = f"{args.agent}: one rollout of {transitions} transitions ({args.n_envs} envs) and its update"
        report.append(summarise(prof, title, seconds, args.rows))
    finally:
        env.close()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report))
    print("\n".join(line for line in "\n".join(report).splitlines() if line.startswith("==")))
    return "\n".join(report)


if __name__ == "__main__":
    main()
