"""Meta-training of an EBMM: the paper's optimiser and gradient clipping around :meth:`EBMM.meta_loss`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ebmm_rl.memory.ebmm import EBMM


def make_optimizer(memory: EBMM, lr: float = 5e-5, weight_decay: float = 1e-6) -> torch.optim.AdamW:
    """AdamW over every meta-learned parameter (the paper: lr 5e-5, weight decay 1e-6)."""
    return torch.optim.AdamW(memory.parameters(), lr=lr, weight_decay=weight_decay)


def meta_train_step(
    memory: EBMM,
    optimizer: torch.optim.Optimizer,
    patterns: Tensor,
    queries: Tensor,
    write: Literal["batch", "stream"] = "batch",
    mask: Tensor | None = None,
    max_grad_norm: float = 0.05,
    chunk: int | None = None,
    reduce_gradients: Callable[[Iterable[torch.nn.Parameter]], None] | None = None,
    meta_loss: Callable[..., Tensor] | None = None,
) -> dict[str, float]:
    """One meta-gradient step through the unrolled write and read, clipped by global norm (the paper: 0.05).

    The second-order graph of the unrolled write and read grows with the number of memories; ``chunk`` bounds it by
    differentiating ``chunk`` memories at a time and summing their gradients, each chunk's loss weighted by its share
    of the scored queries. The step is the same (to float rounding) at any ``chunk``; its peak memory is that of one
    chunk, and its time on a device that computes memories in parallel grows as chunks get smaller.

    :param patterns: ``[batch, n, dim]``
    :param queries: ``[batch, m, dim]``
    :param mask: ``[batch, n]`` bool, True for the patterns that are written (and scored when ``m == n``)
    :param chunk: memories differentiated at once (default: all of them)
    :param reduce_gradients: called with the parameters after the backward passes, before clipping: data-parallel
        training averages the gradients over its processes there
    :param meta_loss: the loss to differentiate, called like ``memory.meta_loss`` (its default); pass
        ``torch.compile(memory.meta_loss)`` to fuse the many small ops of the unrolled write and read: the same loss and
        gradients, after a compilation of a few minutes
    :return: ``{"loss": ..., "grad_norm": ...}`` (the loss of the whole batch, the norm before clipping)
    """
    batch = patterns.shape[0]
    chunk = batch if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of memories, got {chunk}")
    scored = queries.new_full((batch,), float(queries.shape[1]))  # [batch] scored queries per memory
    if mask is not None and queries.shape[1] == patterns.shape[1]:
        scored = mask.sum(dim=1).to(scored)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for start in range(0, batch, chunk):
        part = slice(start, start + chunk)
        share = scored[part].sum() / scored.sum().clamp(min=1)  # meta_loss is a mean over the chunk's scored queries
        loss = (meta_loss or memory.meta_loss)(
            patterns[part], queries[part], write=write, mask=None if mask is None else mask[part]
        )
        (loss * share).backward()
        total += (loss * share).item()
    if reduce_gradients is not None:
        reduce_gradients(memory.parameters())
    grad_norm = torch.nn.utils.clip_grad_norm_(memory.parameters(), max_grad_norm, error_if_nonfinite=True)
    optimizer.step()
    return {"loss": total, "grad_norm": grad_norm.item()}


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    """Peak memory of this process so far, in MiB: on CUDA what torch allocated on ``device``
    (``torch.cuda.max_memory_allocated``, reset by ``torch.cuda.reset_peak_memory_stats``); elsewhere the peak
    resident set size, which counts the interpreter, torch and loaded data as well and never goes down. On Linux that
    is ``VmHWM`` of ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` would count the parent's resident set at the
    time it started this process (it survives ``execve``), e.g. a test runner's. Elsewhere ``ru_maxrss``; NaN where
    neither exists (Windows without CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere
