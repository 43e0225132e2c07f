"""The agents' acting/training cost benchmark runs and writes its CSVs and plot."""

from __future__ import annotations

import csv

import pytest

from ebmm_rl.bench.recurrent import main, probe_medians


def test_recurrent_benchmark_writes_csvs_and_plot(tmp_path):
    tiny = ["n_steps=16", "batch_size=32", "n_epochs=1", "policy_kwargs.net_arch=[16]"]
    argv = ["--agents", "ppo_ebmm_recurrent", "ppo_lstm", "--device", "cpu", "--episode-steps", "30"]
    argv += ["--probe-steps", "10", "25", "--train-steps", "64", "--n-envs", "2", "--out", str(tmp_path)]
    assert main(argv + [arg for override in tiny for arg in ("--set", override)]) == 0
    acting = list(csv.DictReader((tmp_path / "acting.csv").open()))
    assert [(row["agent"], int(row["probe_step"])) for row in acting] == [
        ("ppo_ebmm_recurrent", 10), ("ppo_ebmm_recurrent", 25), ("ppo_lstm", 10), ("ppo_lstm", 25)
    ]  # fmt: skip
    assert all(float(row["median_predict_s"]) > 0 for row in acting)
    assert {row["agent"]: int(row["memory_floats_per_env"]) for row in acting} == {
        "ppo_ebmm_recurrent": 528, "ppo_lstm": 4 * 64
    }  # fmt: skip
    training = list(csv.DictReader((tmp_path / "training.csv").open()))
    assert [row["agent"] for row in training] == ["ppo_ebmm_recurrent", "ppo_lstm"]
    assert all(float(row["fps"]) > 0 and int(row["train_steps"]) == 64 for row in training)
    assert (tmp_path / "acting.png").stat().st_size > 0


def test_probe_outside_the_episode_says_how_to_fix_it():
    assert probe_medians([1.0, 2.0, 3.0], [2]) == [2.0]
    with pytest.raises(ValueError, match="raise --episode-steps"):
        probe_medians([1.0, 2.0], [5])
