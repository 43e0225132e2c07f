"""Where an agent's time goes on a device: torch.profiler over acting steps, over one rollout + update, over the
update alone and over one step of the agent's memory core.

    python -m ebmm_rl.bench.profile --agent ppo_ebmm_recurrent --device cuda --out profile_recurrent.txt

Untrained agent on ``EBMM-MemoryDelay-v0`` (the :mod:`ebmm_rl.bench.recurrent` setup). Writes the profiler's tables (sorted by
self CPU time, the overhead-bound part of small-batch work), the count of host-device synchronisations and copies,
and the number of ops that do work, per ``predict`` and per training minibatch: on a GPU each launches at least one
kernel, so a CPU machine counts them as well (:func:`count_ops`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from ebmm_rl.bench.common import build_model, resolve_device, synchronize
from ebmm_rl.memory import EBMM

NO_WORK_OPS = frozenset(
    f"aten::{name}"
    for name in (
        "view", "_unsafe_view", "as_strided", "reshape", "_reshape_alias", "expand", "expand_as", "transpose", "t",
        "permute", "slice", "select", "unsqueeze", "squeeze", "detach", "alias", "unbind", "split", "split_with_sizes",
        "chunk", "narrow", "lift_fresh", "empty", "empty_strided", "empty_like", "resize_", "set_", "_local_scalar_dense",
    )
)  # fmt: skip
"""Ops that only make views, allocate, or read a value back: no kernel of their own."""


def count_ops(prof) -> int:
    """Ops that do work as dispatched from Python or by autograd's backward: aten ops called by no other aten op (a
    composite such as ``linear`` counts once, not as the ``t`` and ``addmm`` it calls), less :data:`NO_WORK_OPS`. On a
    GPU each is a kernel launch or more, so the count is a device-free proxy for kernel launches."""
    count = 0
    for event in prof.events():
        if event.name.startswith("aten::") and event.name not in NO_WORK_OPS:
            parent = event.cpu_parent
            count += parent is None or not parent.name.startswith("aten::")
    return count


def summarise(prof, title: str, seconds: float, row_limit: int, calls: int, per: str) -> str:
    """A profile's header line (time, ops that do work and kernel launches per call, synchronisations, copies) and
    its table by self CPU time."""
    averages = prof.key_averages()
    syncs = sum(event.count for event in averages if event.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize"))
    copies = sum(event.count for event in averages if event.key.startswith("cudaMemcpy"))
    launches = sum(event.count for event in averages if event.key == "cudaLaunchKernel")
    header = (
        f"== {title}: {seconds:.3f} s; per {per}: {count_ops(prof) / calls:.0f} ops, {launches / calls:.0f} kernel "
        f"launches; in all: synchronisations {syncs}, memcpy calls {copies}"
    )
    return header + "\n" + averages.table(sort_by="self_cpu_time_total", row_limit=row_limit) + "\n"


def profile_memory_step(memory: EBMM, activities: list, device: torch.device, steps: int, row_limit: int) -> str:
    """The memory core's share of acting: one streaming write and one read of one memory, as the agent's cell does."""
    pattern = torch.rand(1, memory.dim, device=device) * 2 - 1  # [1, dim]
    with torch.no_grad():
        state = memory.write_step(memory.init_state(1), pattern)  # warm-up
        with profile(activities=activities) as prof:
            began = time.perf_counter()
            for _ in range(steps):
                state = memory.write_step(state, pattern)
                memory.read(state, pattern[:, None])
            synchronize(device)
            seconds = time.perf_counter() - began
    title = f"memory core: {steps} streaming writes and reads of one memory ({memory.memory_size} floats)"
    return summarise(prof, title, seconds, row_limit, steps, "write and read")


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
        title = f"{args.agent}: {args.acting_steps} predict calls (1 env)"
        report.append(summarise(prof, title, seconds, args.rows, args.acting_steps, "predict"))
        memories = [module for module in model.policy.modules() if isinstance(module, EBMM)]
        if memories:
            report.append(profile_memory_step(memories[0], activities, device, args.acting_steps, args.rows))
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
        report.append(summarise(prof, title, seconds, args.rows, 1, "rollout and update"))
        # The update alone, on the rollout just collected; the optimiser steps it makes are its minibatches.
        with profile(activities=activities) as prof:
            began = time.perf_counter()
            model.train()
            synchronize(device)
            seconds = time.perf_counter() - began
        minibatches = sum(event.count for event in prof.key_averages() if event.key.startswith("Optimizer.step#"))
        title = f"{args.agent}: one update, {minibatches} minibatches of {transitions} transitions"
        report.append(summarise(prof, title, seconds, args.rows, max(minibatches, 1), "minibatch"))
    finally:
        env.close()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report))
    print("\n".join(line for line in "\n".join(report).splitlines() if line.startswith("==")))
    return "\n".join(report)


if __name__ == "__main__":
    main()
