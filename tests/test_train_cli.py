"""The training, evaluation and benchmark CLIs, in-process with a tiny budget."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ebmm_rl import benchmark, evaluate, train
from ebmm_rl.runs.checkpoints import CheckpointCallback, latest_checkpoint
from ebmm_rl.runs.directory import ARGS_FILE

TINY = [
    "--env", "EBMM-MemoryShort",
    "--agent", "ppo",
    "--timesteps", "64",
    "--n-envs", "2",
    "--set", "n_steps=16",
    "--set", "batch_size=16",
    "--set", "n_epochs=1",
    "--set", "policy_kwargs.net_arch=[16]",
    "--eval-freq", "32",
    "--eval-episodes", "2",
    "--checkpoint-freq", "32",
    "--device", "cpu",
    "--no-progress",
]  # fmt: skip


def read_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    parent = tmp_path_factory.mktemp("runs")
    return train.main([*TINY, "--seed", "3", "--run-dir", str(parent)])


def test_train_writes_the_run_directory(trained_run, capsys):
    run_dir = trained_run.run_dir
    assert run_dir.name.startswith("EBMM-MemoryShort-v0__ppo__3__")
    assert trained_run.model_path == run_dir / "final_model.zip"
    assert trained_run.model_path.is_file()
    assert trained_run.num_timesteps == 64
    assert not trained_run.interrupted
    assert 0.0 <= trained_run.success_rate <= 1.0
    assert trained_run.fps > 0

    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert (config["n_steps"], config["n_timesteps"], config["n_envs"]) == (16, 64, 2)
    assert config["policy_kwargs"] == {"net_arch": [16], "optimizer_kwargs": {"eps": 1e-5, "fused": True}}
    settings = yaml.safe_load((run_dir / "args.yml").read_text())
    assert (settings["agent"], settings["env"], settings["seed"]) == ("ppo", "EBMM-MemoryShort-v0", 3)
    assert (run_dir / "seed").read_text().strip() == "3"
    command = (run_dir / "command.txt").read_text()
    assert command.startswith("python -m ebmm_rl.train --env EBMM-MemoryShort --agent ppo")
    assert "--set batch_size=16" in command

    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["model_32_steps.zip", "model_64_steps.zip"]
    assert list(run_dir.glob("tensorboard_1/events.out.tfevents.*"))
    rows = read_rows(run_dir / "evaluations.csv")
    assert [int(row["timesteps"]) for row in rows] == [32, 64]
    assert float(rows[-1]["success_rate"]) == trained_run.success_rate


def test_keyboard_interrupt_saves_a_checkpoint_and_resume_finishes(tmp_path, monkeypatch):
    save_checkpoint = CheckpointCallback._on_step

    def interrupt_after_first_checkpoint(self):
        if self.num_timesteps >= 32:
            save_checkpoint(self)
            raise KeyboardInterrupt
        return save_checkpoint(self)

    with monkeypatch.context() as patch:
        patch.setattr(CheckpointCallback, "_on_step", interrupt_after_first_checkpoint)
        interrupted = train.main([*TINY, "--run-dir", str(tmp_path)])
    run_dir = interrupted.run_dir
    assert interrupted.interrupted
    assert interrupted.num_timesteps == 32
    assert interrupted.model_path == run_dir / "checkpoints" / "model_32_steps.zip"
    assert latest_checkpoint(run_dir / "checkpoints") == interrupted.model_path
    assert not (run_dir / "final_model.zip").exists()
    assert not list(run_dir.glob("checkpoints/.*"))  # no temporary files left

    resumed = train.main(["--resume", str(run_dir), "--no-progress"])
    assert not resumed.interrupted
    assert resumed.run_dir == run_dir
    assert resumed.num_timesteps == 64
    assert (run_dir / "final_model.zip").is_file()
    assert [int(row["timesteps"]) for row in read_rows(run_dir / "evaluations.csv")] == [32, 64]
    assert [path.name for path in run_dir.glob("tensorboard_*")] == ["tensorboard_1"]  # one continued curve
    assert (run_dir / "command.txt").read_text().splitlines()[1] == f"python -m ebmm_rl.train --resume {run_dir} --no-progress"


def test_resume_keeps_the_run_settings(trained_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--resume", str(trained_run.run_dir), "--seed", "1"])
    assert "--resume keeps the run's env, agent, seed" in capsys.readouterr().err
    (tmp_path / "args.yml").write_text("agent: ppo\n")
    (tmp_path / "config.yml").write_text("n_envs: 2\n")
    with pytest.raises(SystemExit):
        train.main(["--resume", str(tmp_path)])
    assert "holds no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--agent", "ppo_lstn"], r"did you mean 'ppo_lstm'"),
        (["--env", "EBMM-MemoryShrt"], r"did you mean 'EBMM-MemoryShort'"),
        (["--set", "n_step=16"], r"unknown key 'n_step'.*Did you mean 'n_steps'"),
        (["--set", "n_steps"], r"Bad override 'n_steps': write key=value"),
    ],
)
def test_train_rejects_bad_arguments_before_creating_a_run(arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        train.main([*TINY, *arguments, "--run-dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_help_lists_the_agents(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "one of ppo, ppo_" in help_text
    assert "ppo_lstm" in help_text


def test_evaluate_reports_success_and_writes_a_gif(trained_run, tmp_path):
    gif = tmp_path / "episodes.gif"
    result = evaluate.main([str(trained_run.run_dir), "--episodes", "4", "--gif", str(gif), "--gif-episodes", "1"])
    assert result.episodes == 4
    assert result.model_path == trained_run.model_path
    assert result.env_id == "EBMM-MemoryShort-v0"
    assert 0.0 <= result.success_rate <= 1.0
    assert (result.mean_reward > 0) == (result.success_rate > 0)
    with Image.open(gif) as image:
        assert image.n_frames > evaluate.GIF_END_FRAMES


def test_benchmark_writes_csv_json_and_png(tmp_path):
    out = tmp_path / "out"
    result = benchmark.main(
        [
            "--agents", "ppo",
            "--envs", "EBMM-MemoryShort",
            "--seeds", "0",
            "--timesteps", "32",
            "--n-envs", "2",
            "--set", "n_steps=16",
            "--set", "batch_size=16",
            "--set", "n_epochs=1",
            "--eval-freq", "16",
            "--eval-episodes", "2",
            "--workers", "1",
            "--out", str(out),
            "--run-dir", str(tmp_path / "runs"),
        ]
    )  # fmt: skip
    assert not result.failed
    rows = read_rows(out / "evaluations.csv")
    assert list(rows[0]) == list(benchmark.EVALUATION_COLUMNS)
    assert [(row["agent"], row["env"], row["seed"], row["timesteps"]) for row in rows] == [
        ("ppo", "EBMM-MemoryShort-v0", "0", "16"),
        ("ppo", "EBMM-MemoryShort-v0", "0", "32"),
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["thresholds"] == {"EBMM-MemoryShort-v0": 0.95}
    assert summary["summary"][0]["agent"] == "ppo"
    assert summary["summary"][0]["seeds"] == 1
    assert summary["runs"][0]["timesteps"] == 32
    assert read_rows(out / "summary.csv")[0]["env"] == "EBMM-MemoryShort-v0"
    with Image.open(out / "success_rate.png") as image:
        assert image.format == "PNG"


def test_steps_to_threshold():
    rows = [{"timesteps": float(steps), "success_rate": rate} for steps, rate in ((10, 0.5), (20, 0.96), (30, 1.0))]
    assert benchmark.steps_to_threshold(rows, 0.95) == 20
    assert benchmark.steps_to_threshold(rows[:1], 0.95) is None


def test_steps_to_hold_counts_from_the_last_dip():
    rates = ((10, 0.5), (20, 0.96), (30, 0.4), (40, 1.0), (50, 0.95))
    rows = [{"timesteps": float(steps), "success_rate": rate} for steps, rate in rates]
    assert benchmark.steps_to_hold(rows, 0.95) == 40
    assert benchmark.steps_to_hold(rows[:3], 0.95) is None


def test_evaluate_env_kwargs_change_the_task(trained_run):
    # The shortest solution takes 7 steps: with max_steps=3 no episode can succeed, and none lasts longer than 3.
    result = evaluate.main([str(trained_run.run_dir), "--episodes", "4", "--env-kwargs", "max_steps=3"])
    assert result.mean_ep_length <= 3 and result.success_rate == 0.0
    with pytest.raises(ValueError, match="write key=value"):
        evaluate.main([str(trained_run.run_dir), "--episodes", "1", "--env-kwargs", "max_steps"])


def test_init_from_starts_a_new_run_from_another_runs_weights(trained_run, tmp_path):
    from stable_baselines3 import PPO

    # A learning rate of 0 keeps the weights as loaded, so the new run's model must equal its source's.
    frozen = ["--set", "learning_rate=0.0", "--run-dir", str(tmp_path), "--seed", "5"]
    result = train.main([*TINY, *frozen, "--init-from", str(trained_run.run_dir)])
    source = PPO.load(trained_run.model_path, device="cpu").policy.state_dict()
    started = PPO.load(result.model_path, device="cpu").policy.state_dict()
    assert all(torch.equal(source[key], started[key]) for key in source)
    assert yaml.safe_load((result.run_dir / ARGS_FILE).read_text())["init_from"] == str(trained_run.run_dir)
    fresh = PPO.load(train.main([*TINY, *frozen]).model_path, device="cpu").policy.state_dict()
    assert not all(torch.equal(source[key], fresh[key]) for key in source)
    with pytest.raises(ValueError, match="do not fit this run's ppo model"):
        train.main([*TINY, *frozen, "--set", "policy_kwargs.net_arch=[8]", "--init-from", str(trained_run.model_path)])


def test_training_cli_decays_the_bonus_and_logs_it(tmp_path):
    result = train.main([*TINY, "--set", "novelty_bonus=0.5", "--set", "novelty_bonus_steps=64", "--run-dir", str(tmp_path)])
    assert result.num_timesteps == 64
    config = yaml.safe_load((result.run_dir / "config.yml").read_text())
    assert (config["novelty_bonus"], config["novelty_bonus_steps"]) == (0.5, 64)
    (events,) = result.run_dir.rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    logged = [(event.step, event.value) for event in accumulator.Scalars("rollout/novelty_bonus")]
    # Rollouts of 2 envs x 16 steps start at 0 and 32 steps; each is logged when its rollout ends.
    assert logged == [(32, pytest.approx(0.5)), (64, pytest.approx(0.25))]


def test_the_minigrid_memory_curriculum_carries_ppo_ebmm_from_the_s13_tmaze(tmp_path):
    """results/benchmark_minigrid_memory_curriculum/run.sh: the S13 T-maze's ppo_ebmm initialises a MiniGrid-Memory run
    (same view, window and memory in both config sections), which trains with the novelty bonus."""
    from stable_baselines3 import PPO

    tiny_ppo_ebmm = [
        "--agent", "ppo_ebmm", "--timesteps", "32", "--n-envs", "2", "--set", "n_steps=16", "--set", "batch_size=16",
        "--set", "n_epochs=1", "--eval-freq", "0", "--eval-episodes", "2", "--checkpoint-freq", "0", "--device", "cpu",
        "--no-progress", "--run-dir", str(tmp_path),
    ]  # fmt: skip
    stage1 = train.main(["--env", "EBMM-MemoryS13TMaze", *tiny_ppo_ebmm])
    frozen = ["--set", "learning_rate=0.0", "--set", "novelty_bonus=0.01", "--set", "novelty_bonus_steps=32"]
    stage2 = train.main(["--env", "MiniGrid-Memory", *tiny_ppo_ebmm, *frozen, "--init-from", str(stage1.run_dir)])
    assert stage2.run_dir.name.startswith("MiniGrid-Memory-v0__ppo_ebmm__")
    source = PPO.load(stage1.model_path, device="cpu").policy.state_dict()
    started = PPO.load(stage2.model_path, device="cpu").policy.state_dict()
    assert source.keys() == started.keys()
    assert all(torch.equal(source[key], started[key]) for key in source)


@pytest.mark.parametrize("agent", ["ppo_ebmm", "ppo_ebmm_recurrent"])
@pytest.mark.parametrize("env_id", ["CartPoleNoVel-v1", "Pendulum-v1"])  # a section, and none: continuous actions
def test_memory_agents_train_and_evaluate_on_any_gymnasium_env(agent, env_id, tmp_path, capsys):
    tiny = ["--set", "n_steps=16", "--set", "batch_size=32", "--set", "n_epochs=1", "--set", "policy_kwargs.net_arch=[16]"]
    run = train.main([
        "--env", env_id, "--agent", agent, "--timesteps", "64", "--n-envs", "2", *tiny, "--eval-freq", "32",
        "--eval-episodes", "2", "--checkpoint-freq", "0", "--device", "cpu", "--no-progress", "--run-dir", str(tmp_path),
    ])  # fmt: skip
    assert run.num_timesteps == 64 and run.success_rate != run.success_rate  # nan: these envs have no success
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{agent} on {env_id}: mean return") and "success" not in line
    normalized = (run.run_dir / "final_model_vecnormalize.pkl").is_file()
    assert normalized == (env_id == "CartPoleNoVel-v1")  # rl-zoo's normalize: true, saved with the model
    result = evaluate.main([str(run.run_dir), "--episodes", "2", "--n-envs", "2", "--device", "cpu"])
    assert result.episodes == 2 and result.success_rate != result.success_rate
