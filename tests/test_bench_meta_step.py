"""The meta-step benchmark times a checkout's memory core in a process of its own package."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ebmm_rl.bench.meta_step import run_job, time_meta_steps, unpack_reference

TINY_JOB = {
    "energy_kwargs": {"dim": 8, "hidden": 8, "fast_units": 2, "hops": 1, "hop_dim": 8},
    "kwargs": {"write_steps": 1, "read_steps": 1, "projection": (-1.0, 1.0), "gradient_penalty": False},
    "n_stored": 3,
    "batch": 2,
    "steps": 2,
    "seed": 0,
    "compile": False,
}


def test_time_meta_steps_times_each_step_after_a_warm_up():
    measured = time_meta_steps(TINY_JOB)
    assert len(measured["step_s"]) == 2 and min(measured["step_s"]) > 0 and measured["warm_up_s"] > 0


def test_reference_runs_its_own_package(tmp_path):
    repository = Path(__file__).resolve().parents[1]
    if subprocess.run(["git", "-C", str(repository), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    reference = unpack_reference("HEAD", repository, tmp_path)
    assert (reference / "ebmm_rl" / "memory" / "ebmm.py").is_file()
    # run_job asserts in the child that the memory core came from the unpacked package, not this checkout's.
    assert len(run_job(reference, TINY_JOB)["step_s"]) == 2
