"""Meta-training of an EBMM: the paper's optimiser and gradient clipping around :meth:`EBMM.meta_loss`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
    reduce_gradients: Callable[[Iterable[torch.nn.Parameter]], None] | None = None,
) -> dict[str, float]:
    """One meta-gradient step through the unrolled write and read, clipped by global norm (the paper: 0.05).

    :param patterns: ``[batch, n, dim]``
    :param queries: ``[batch, n, dim]``
    :param reduce_gradients: called with the parameters after ``backward``, before clipping: data-parallel training
        averages the gradients over its processes there
    :return: ``{"loss": ..., "grad_norm": ...}`` (the norm before clipping)
    """
    optimizer.zero_grad(set_to_none=True)
    loss = memory.meta_loss(patterns, queries, write=write, mask=mask)
    loss.backward()
    if reduce_gradients is not None:
        reduce_gradients(memory.parameters())
    grad_norm = torch.nn.utils.clip_grad_norm_(memory.parameters(), max_grad_norm, error_if_nonfinite=True)
    optimizer.step()
    return {"loss": loss.item(), "grad_norm": grad_norm.item()}
