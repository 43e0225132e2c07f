"""Hyperparameter search: a study shared by worker processes through SQLite, pruning, and the best config."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from ebmm_rl import train, tune  # noqa: E402
from ebmm_rl.runs import tuning  # noqa: E402
from ebmm_rl.agents import get_agent  # noqa: E402
from ebmm_rl.runs.config import load_config  # noqa: E402
from ebmm_rl.runs.checkpoints import read_training_state  # noqa: E402
from ebmm_rl.runs.training import prepare_run, start_run  # noqa: E402
from test_resume import child_pids  # noqa: E402


def config_of(agent: str, env: str, n_envs: int) -> dict:
    return {**load_config(get_agent(agent), env), "n_envs": n_envs}


TINY = ["--agent", "ppo", "--env", "EBMM-MemoryShort", "--timesteps", "64", "--n-envs", "2", "--eval-episodes", "2"]
TINY += ["--set", "n_epochs=1", "--set", "policy_kwargs.net_arch=[8]", "--n-startup-trials", "1"]


def test_two_workers_share_one_sqlite_study_and_write_the_best_config(tmp_path):
    study = tune.main([*TINY, "--trials", "2", "--workers", "2", "--n-evaluations", "2", "--run-dir", str(tmp_path)])
    assert (tmp_path / "EBMM-MemoryShort-v0__ppo.db").is_file()
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2 and len(study.trials) == 2
    assert len({run for trial in trials for run in trial.user_attrs["run_dirs"]}) == 2  # one run directory each
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
    study.optimize(tuning.objective(search, config_of("ppo", "EBMM-MemoryShort-v0", n_envs=2)), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # pruned at its first evaluation
    with open(f"{trial.user_attrs['run_dirs'][0]}/evaluations.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == 1


def test_a_trial_trains_its_seeds_in_turn_and_scores_the_area_under_their_learning_curves(tmp_path, monkeypatch):
    search = tuning.Search("ppo", "EBMM-MemoryShort-v0", 64, 2, 1, 10, "success_rate", str(tmp_path), n_envs=2)
    search = tuning.Search(**{**search.__dict__, "overrides": ("n_epochs=1",), "seeds_per_trial": 2, "min_fps": 1e9})
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(tuning.objective(search, config_of("ppo", "EBMM-MemoryShort-v0", n_envs=2)), n_trials=2)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        runs = trial.user_attrs["run_dirs"]
        seeds = [int((tmp_path / run / "seed").read_text()) for run in runs]
        assert seeds == [10 + 2 * trial.number, 11 + 2 * trial.number]  # disjoint seeds across trials
        assert trial.user_attrs["cpu_fps"] > 0 and trial.user_attrs["fps"] > 0
        # Slower than --min-fps: infeasible for Optuna's constrained sampling (feasible when <= 0).
        assert trial.constraints == {"cpu_fps": pytest.approx(1e9 - trial.user_attrs["cpu_fps"])}
        rows = [list(csv.DictReader(open(tmp_path / run / "evaluations.csv", newline=""))) for run in runs]
        rows = [[row for row in run_rows if int(row["timesteps"]) <= 64] for run_rows in rows]  # past it: a whole rollout
        assert [len(run_rows) for run_rows in rows] == [2, 2]
        area = sum(sum(float(row["success_rate"]) for row in run_rows) / 2 for run_rows in rows) / 2
        assert trial.value == pytest.approx(area)
        # Each run's evaluations are steps of their own: run i's k-th is step 2 * i + k.
        expected = {2 * i + k + 1: float(rows[i][k]["success_rate"]) for i in range(2) for k in range(2)}
        assert trial.intermediate_values == pytest.approx(expected)
    assert len(study.trials) == 2


def test_the_value_is_the_mean_over_runs_of_each_runs_mean_evaluation_within_the_budget():
    trial = optuna.create_study(direction="maximize").ask()
    reporter = tuning.TrialReporter(trial, "success_rate", n_evaluations=2, timesteps=100)
    for run in ([0.0, 1.0, 1.0], [0.5, 0.5]):  # the first run's third evaluation is past its budget
        reporter.start_run()
        for k, value in enumerate(run):
            assert reporter({"timesteps": 50 * (k + 1), "success_rate": value})
    assert reporter.learning_curve_area() == pytest.approx((0.5 + 0.5) / 2)
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 0.0, 2: 1.0, 3: 0.5, 4: 0.5}


def test_min_fps_makes_slower_trials_infeasible_and_never_the_best():
    study = optuna.create_study(direction="maximize")
    fast_poor, slow_good = (
        optuna.trial.create_trial(value=value, user_attrs={"cpu_fps": fps, "config": {"n_steps": n_steps}})
        for value, fps, n_steps in [(0.2, 500.0, 32), (0.9, 100.0, 64)]
    )
    study.add_trials([fast_poor, slow_good])
    assert tuning.best_trial(study).value == 0.9
    assert tuning.best_trial(study, min_fps=200).value == 0.2
    with pytest.raises(ValueError, match="no completed trial trains at --min-fps 1000 or faster"):
        tuning.best_trial(study, min_fps=1000)


@pytest.mark.parametrize("agent", ["ppo", "ppo_lstm", *tuning.MEMORY_KEYS])
def test_every_sample_builds_a_model(agent, tmp_path):
    config = config_of(agent, "EBMM-MemoryTMaze-v0", n_envs=2)
    for seed in range(3):
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        sampled = tuning.sample_overrides(trial, agent, config)
        overrides = [f"{key}={value}" for key, value in sampled.items()]
        options = {"agent": agent, "env": "EBMM-MemoryTMaze", "run_dir": str(tmp_path)}
        spec = start_run(options, "test", overrides=overrides, n_envs=2)
        assert spec.config["batch_size"] <= spec.config["n_steps"] * 2
        prepare_run(spec).close()  # builds the envs and the model: the sampled sizes fit together


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads worker processes from /proc")
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_the_study_resumably_and_leaves_no_worker(workers, tmp_path):
    command = [sys.executable, "-m", "ebmm_rl.tune", *TINY, "--timesteps", "1000000", "--n-evaluations", "1000"]
    command += ["--trials", "4", "--workers", str(workers), "--run-dir", str(tmp_path)]
    study = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("trials/*/config.yml"))) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the trials' runs are training
        children = child_pids(study.pid)
        study.send_signal(signal.SIGTERM)
        _, stderr = study.communicate(timeout=120)
    finally:
        study.kill()
    assert study.returncode == 143, stderr
    assert "the same command continues it" in stderr and "Traceback" not in stderr
    runs = list(tmp_path.glob("trials/*/checkpoints"))
    assert len(runs) == workers  # no trial started after the signal
    for checkpoints in runs:  # each stopped run saved its state, as train does
        assert read_training_state(max(checkpoints.glob("*.zip"))).num_timesteps > 0
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in children), "a worker outlived the study"


def test_a_process_joining_a_study_with_the_same_seed_draws_other_settings(tmp_path):
    study_args = dict(
        name="joined", storage=f"sqlite:///{tmp_path}/joined.db", seed=0, n_startup_trials=5, n_warmup_evaluations=1
    )
    first = tuning.load_study(**study_args)
    trial = first.ask()
    drawn = trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
    first.tell(trial, 0.5)
    joined = tuning.load_study(**study_args)  # a second command with the same --seed, or the first one started again
    assert joined.ask().suggest_float("learning_rate", 1e-5, 1e-2, log=True) != drawn


def test_a_process_joining_a_study_stops_once_the_study_holds_its_trials(tmp_path):
    study_args = dict(
        name="joined", storage=f"sqlite:///{tmp_path}/joined.db", seed=0, n_startup_trials=1, n_warmup_evaluations=1
    )
    study = tuning.load_study(**study_args)
    study.add_trial(optuna.trial.create_trial(value=0.5))  # another process's finished trial
    search = tuning.Search("ppo", "EBMM-MemoryShort-v0", 64, 1, 1, 0, "success_rate", str(tmp_path), n_envs=2)
    search = tuning.Search(**{**search.__dict__, "overrides": ("n_epochs=1",)})
    config = config_of("ppo", "EBMM-MemoryShort-v0", n_envs=2)
    assert tune._optimize(search, config, study_args, trials=3, worker=0, target=2) == 0
    assert tuning.finished_trials(tuning.load_study(**study_args)) == 2  # one more, not three
