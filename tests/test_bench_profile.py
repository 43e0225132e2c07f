"""The profiler script's count of ops that do work (its CPU proxy for kernel launches)."""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from ebmm_rl.bench.profile import count_ops


def test_count_ops_counts_each_op_that_does_work_once_and_no_views():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        y = layer(x)  # linear -> addmm (with a transpose view of the weight): one op
        y = y.reshape(3, 2).t().unsqueeze(0)  # views only
        torch.tanh(y * 2)  # two ops
    assert count_ops(prof) == 3
