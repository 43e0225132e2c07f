"""Hyperparameter search: a study shared by worker processes through SQLite, pruning, and the best config."""

from __future__ import annotations

import csv

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from ebmm_rl import train, tune  # noqa: E402
from ebmm_rl.runs import tuning  # noqa: E402
from ebmm_rl.runs.training import start_run  # noqa: E402

TINY = ["--agent", "ppo", "--env", "EBMM-MemoryShort", "--timesteps", "64", "--n-envs", "2", "--eval-episodes", "2"]
TINY += ["--set", "n_epochs=1", "--set", "policy_kwargs.net_arch=[8]", "--n-startup-trials", "1"]


def test_two_workers_share_one_sqlite_study_and_write_the_best_config(tmp_path):
    study = tune.main([*TINY, "--trials", "2", "--workers", "2", "--n-evaluations", "2", "--run-dir", str(tmp_path)])
    assert (tmp_path / "EBMM-MemoryShort-v0__ppo.db").is_file()
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2 and len(study.trials) == 2
    assert len({trial.user_attrs["run_dir"] for trial in trials}) == 2  # one run directory each
    with open(tmp_path / "EBMM-MemoryShort-v0__ppo_trials.csv", newline="") as file:
        assert [row["state"] for row in csv.DictReader(file)] == ["COMPLETE", "COMPLETE"]

    best = yaml.safe_load((tmp_path / "EBMM-MemoryShort-v0__ppo_best.yml").read_text())
    assert list(best) == ["EBMM-MemoryShort-v0"]
    assert best["EBMM-MemoryShort-v0"]["n_steps"] == study.best_trial.params["n_steps"]
    # Ready to use: the section is a config file the training CLI accepts.
    best_file = str(tmp_path / "EBMM-MemoryShort-v0__ppo_best.yml")
    again = ["--timesteps", "16", "--eval-episodes", "1", "--run-dir", str(tmp_path / "again"), "--no-progress"]
    run = train.main(["--env", "EBMM-MemoryShort", "--agent", "ppo", "--config", best_file, *again])
    assert yaml.safe_load((run.run_dir / "config.yml").read_text())["n_steps"] == study.best_trial.params["n_steps"]

    again = tune.main([*TINY, "--trials", "2", "--run-dir", str(tmp_path)])  # joins the study: nothing left to do
    assert len(again.trials) == 2


def test_a_pruned_trial_stops_its_run_at_the_evaluation(tmp_path):
    search = tuning.Search("ppo", "EBMM-MemoryShort-v0", 128, 4, 1, 0, "success_rate", str(tmp_path), n_envs=2)
    search = tuning.Search(**{**search.__dict__, "overrides": ("n_epochs=1",)})
    always = optuna.pruners.ThresholdPruner(lower=2.0)  # no success rate reaches 2: every reported trial is pruned
    study = optuna.create_study(direction="maximize", pruner=always, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(tuning.objective(search, n_envs=2), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # pruned at its first evaluation
    with open(f"{trial.user_attrs['run_dir']}/evaluations.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == 1


@pytest.mark.parametrize("agent", ["ppo", "ppo_lstm", *tuning.MEMORY_KEYS])
def test_every_sample_is_a_valid_config(agent):
    for seed in range(3):
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        sampled = tuning.sample_overrides(trial, agent, n_envs=8)
        overrides = [f"{key}={value}" for key, value in sampled.items()]
        spec = start_run({"agent": agent, "env": "EBMM-MemoryTMaze"}, "test", overrides=overrides, n_envs=8)
        assert spec.config["batch_size"] <= spec.config["n_steps"] * 8
