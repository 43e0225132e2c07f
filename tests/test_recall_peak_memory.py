"""What a recall training costs: the peak memory and meta-steps per second it reports, and chunks of memories."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ebmm_rl.memory import peak_memory_mb
from ebmm_rl.recall.cli import main
from ebmm_rl.recall.train import CONV_MEMORY_CHUNK, default_memory_chunk

SMALL = ["--dataset", "binary", "--hidden", "64", "--hop-dim", "64", "--hops", "1", "--memory-sizes", "2080",
         "--write-steps", "3", "--read-steps", "3"]  # fmt: skip
"""8 memories of 64 strings, second order: the meta-gradient's graph is a visible part of the process's peak."""
SMALL_PEAK_GIB = 0.75
"""This configuration peaked at 0.41 GiB (torch and the interpreter about 0.35) on the development machine."""
SUMMARY = re.compile(r"([\d.]+) steps/s(?: \(([\d.]+) s per meta-step\))?; done; peak memory ([\d.]+) GiB")


def test_a_small_configuration_stays_within_its_peak_memory(tmp_path):
    """In a fresh process, so that the peak is this run's alone (and not the test runner's, which is larger)."""
    command = [sys.executable, "-m", "ebmm_rl.recall", "train", *SMALL, "--steps", "1", "--run-dir", str(tmp_path),
               "--no-progress", "--no-tensorboard"]  # fmt: skip
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False
    )
    assert finished.returncode == 0, finished.stderr
    speed, _, peak = SUMMARY.search(finished.stdout).groups()
    assert float(speed) > 0, finished.stdout
    peak = float(peak)
    assert 0.1 < peak < SMALL_PEAK_GIB, f"peak memory {peak} GiB, bound {SMALL_PEAK_GIB} GiB"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the inherited peak is Linux's ru_maxrss behaviour")
def test_a_started_process_reports_its_own_peak_not_its_parents():
    held = bytearray(768 * 2**20)
    held[:: 2**12] = b"\x01" * len(held[:: 2**12])  # touch every page: resident
    parent = peak_memory_mb()
    probe = "from ebmm_rl.memory import peak_memory_mb; print(peak_memory_mb())"
    child = float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
    del held
    assert parent > 768 and child < parent - 512, (parent, child)


def test_peak_memory_and_speed_are_logged_and_chunks_take_the_same_steps(tmp_path, capsys):
    common = ["train", *SMALL, "--n-stored", "4", "--steps", "2", "--log-every", "1", "--no-progress"]
    (whole,) = main([*common, "--run-dir", str(tmp_path / "whole")])
    assert SUMMARY.search(capsys.readouterr().out)
    events = EventAccumulator(str(whole.run_dir / "tensorboard")).Reload()
    assert {"time/steps_per_second", "time/peak_memory_mb"} <= set(events.Tags()["scalars"])
    assert all(event.value > 50 for event in events.Scalars("time/peak_memory_mb"))  # MiB; torch alone is more
    (chunked,) = main([*common, "--memory-chunk", "3", "--run-dir", str(tmp_path / "chunked")])
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-5)  # 8 memories as chunks of 3, 3 and 2
    with pytest.raises(SystemExit):
        main([*common, "--memory-chunk", "0", "--run-dir", str(tmp_path / "none")])
    assert "--memory-chunk: '0' is not an integer >= 1" in capsys.readouterr().err


def test_the_conv_energy_is_meta_trained_a_memory_at_a_time_by_default():
    assert default_memory_chunk({"model": "ebmm", "energy": "conv"}) == CONV_MEMORY_CHUNK == 1
    assert default_memory_chunk({"model": "ebmm", "energy": "mlp"}) is None
    assert default_memory_chunk({"model": "memnet"}) is None
