"""Data-parallel meta-training under torchrun: two CPU processes (gloo) train what one process trains."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ebmm_rl.recall.cli import main
from ebmm_rl.recall.distributed import Workers
from ebmm_rl.recall.models import load_checkpoint

TINY = ["--dataset", "binary", "--batch-size", "4", "--n-stored", "4", "--memory-sizes", "264", "--write-steps", "2"]
TINY += ["--read-steps", "2", "--no-progress", "--no-tensorboard"]


def torchrun(processes: int, *argv: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, "-m", "ebmm_rl.recall", *argv], env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def only_checkpoint(parent):
    (path,) = parent.glob("*/checkpoint.pt")
    return load_checkpoint(path)


def assert_same_training(one, two):
    assert one["step"] == two["step"]
    for name, weight in one["model"].items():
        torch.testing.assert_close(two["model"][name], weight, rtol=1e-5, atol=1e-5, msg=name)
    for first, second in zip(one["optimizer"]["state"].values(), two["optimizer"]["state"].values(), strict=True):
        torch.testing.assert_close(second["exp_avg"], first["exp_avg"], rtol=1e-4, atol=1e-7)
    assert torch.equal(one["generator"], two["generator"])  # the same batches were drawn


def test_two_processes_train_what_one_process_trains(tmp_path):
    main(["train", *TINY, "--steps", "3", "--run-dir", str(tmp_path / "one")])
    torchrun(2, "train", *TINY, "--steps", "3", "--run-dir", str(tmp_path / "two"))
    one, two = only_checkpoint(tmp_path / "one"), only_checkpoint(tmp_path / "two")
    assert_same_training(one, two)
    # Not bit-equal: the gradients really were summed over two processes (in another order than one process sums them).
    assert any(not torch.equal(one["model"][name], weight) for name, weight in two["model"].items())

    # A run resumes under another process count: 2 steps on two processes, then a third on one.
    torchrun(2, "train", *TINY, "--steps", "2", "--run-dir", str(tmp_path / "resumed"))
    (run_dir,) = (tmp_path / "resumed").glob("recall__*")
    main(["train", "--resume", str(run_dir), "--steps", "3", "--no-progress"])
    assert_same_training(one, only_checkpoint(tmp_path / "resumed"))


def test_a_batch_that_does_not_split_is_refused():
    assert torch.equal(Workers(rank=1, world_size=2).shard(torch.arange(4)), torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        Workers(rank=0, world_size=3).shard(torch.arange(4))
