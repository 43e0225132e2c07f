"""The training, evaluation and benchmark CLIs, in-process with a tiny budget."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ebmm_rl import benchmark, evaluate, train
from ebmm_rl.sb3 import callbacks
from ebmm_rl.runs.checkpoints import CheckpointCallback, list_checkpoints
from ebmm_rl.runs.directory import ARGS_FILE
from ebmm_rl.runs.training import start_run

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
    assert [(int(row["timesteps"]), row["stage"]) for row in rows] == [(32, "1"), (64, "1")]
    assert float(rows[-1]["success_rate"]) == trained_run.success_rate
    assert trained_run.best_model_path == run_dir / "best_model.zip" and trained_run.best_model_path.is_file()


def test_ctrl_c_saves_the_state_of_the_rollout_start_and_resume_finishes(tmp_path, monkeypatch, capsys):
    on_step = CheckpointCallback._on_step

    def interrupt_at_step_40(self):
        if self.num_timesteps == 40:  # in the rollout from 32 to 64
            os.kill(os.getpid(), signal.SIGINT)
        return on_step(self)

    with monkeypatch.context() as patch:
        patch.setattr(CheckpointCallback, "_on_step", interrupt_at_step_40)
        interrupted = train.main([*TINY, "--run-dir", str(tmp_path)])
    run_dir = interrupted.run_dir
    assert (interrupted.interrupted, interrupted.exit_code, interrupted.num_timesteps) == (True, 130, 32)
    assert interrupted.model_path == run_dir / "checkpoints" / "model_32_steps.zip"
    assert list_checkpoints(run_dir / "checkpoints") == [interrupted.model_path]
    assert not (run_dir / "final_model.zip").exists()
    assert not list(run_dir.glob("checkpoints/.*"))  # no temporary files left
    assert "SIGINT: stopping at the next environment step" in capsys.readouterr().err

    resumed = train.main(["--resume", str(run_dir), "--no-progress"])
    assert not resumed.interrupted and resumed.exit_code == 0
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
        (["--set", "learning_rate=abc"], r"learning_rate='abc' is not a number or a schedule \(lin_<number>\)"),
        (["--set", "n_steps=12.5"], r"n_steps=12.5 is not an integer"),
        (["--set", "gamma=1.5"], r"gamma=1.5 is out of range; expected a number in \[0, 1\]"),
        (["--set", "policy_kwargs.net_arch=[16, x]"], r"policy_kwargs.net_arch=\[16, 'x'\] is not"),
        (["--set", "policy_kwargs.net_arc=[16]"], r"unknown key 'policy_kwargs.net_arc'.*Did you mean 'net_arch'"),
        (["--set", "policy_kwargs.optimizer_kwargs.eps=small"], r"policy_kwargs.optimizer_kwargs.eps='small' is not a number"),
        (
            ["--agent", "ppo_ebmm", "--set", "policy_kwargs.features_extractor_kwargs.memory.fast_units=many"],
            r"policy_kwargs.features_extractor_kwargs.memory.fast_units='many' is not an integer",
        ),
        (
            ["--agent", "ppo_ebmm_recurrent", "--set", "policy_kwargs.memory.fast_unit=8"],
            r"policy_kwargs.memory: Unknown memory key 'fast_unit'. Did you mean 'fast_units'",
        ),
        (
            ["--agent", "ppo_ebmm", "--set", "policy_kwargs.features_extractor_kwargs.encoder_kwargs.hiden=8"],
            r"unknown key 'policy_kwargs.features_extractor_kwargs.encoder_kwargs.hiden'.*Did you mean 'hidden'",
        ),
        (
            ["--agent", "ppo_ebmm", "--set", "policy_kwargs.features_extractor_kwargs.write=online"],
            r"the config does not fit ppo_ebmm \(EBMMPPO\): write must be 'batch' or 'stream', got 'online'",
        ),
        (["--set", "env_kwargs.corridor=3"], r"env_kwargs \{'corridor': 3\} do not fit EBMM-MemoryShort-v0"),
        (["--eval-episodes", "0"], r"argument --eval-episodes: '0' is not an integer >= 1"),
        (["--checkpoint-freq", "-1"], r"argument --checkpoint-freq: '-1' is not an integer >= 0"),
        (["--seed", "-3"], r"argument --seed: '-3' is not an integer in \[0, "),
        (["--init-from", "nowhere"], r"--init-from nowhere: no model there"),
    ],
)
def test_train_rejects_bad_input_in_one_line_with_status_2_before_creating_a_run(arguments, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main([*TINY, *arguments, "--run-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("python -m ebmm_rl.train: error: ") and error.count("\n") == 1
    assert re.search(message, error), error
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_an_error(tmp_path, capsys):
    for main in (
        lambda: train.main([*TINY, "--device", "cuda", "--run-dir", str(tmp_path)]),
        lambda: evaluate.main(["x", "--device", "cuda"]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2
        assert "--device: CUDA is not available on this machine; use --device cpu" in capsys.readouterr().err
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
    assert result.model_path == trained_run.best_model_path  # the default
    for model, path in (("final", trained_run.model_path), ("latest", trained_run.run_dir / "checkpoints/model_64_steps.zip")):
        assert evaluate.main([str(trained_run.run_dir), "--model", model, "--episodes", "1"]).model_path == path
    assert result.env_id == "EBMM-MemoryShort-v0"
    with Image.open(gif) as image:
        assert image.n_frames > evaluate.GIF_END_FRAMES


def test_evaluate_rebuilds_the_runs_final_greedy_evaluation(tmp_path):
    # Same model, same evaluation seed, greedy actions: evaluate must find what training's last evaluation found.
    run = train.main([*TINY, "--eval-deterministic", "--eval-episodes", "4", "--run-dir", str(tmp_path)])
    final = read_rows(run.run_dir / "evaluations.csv")[-1]
    result = evaluate.main(
        [str(run.run_dir), "--model", "final", "--episodes", "4", "--n-envs", "2", "--deterministic", "--device", "cpu"]
    )
    assert result.success_rate == float(final["success_rate"])
    assert result.mean_reward == pytest.approx(float(final["mean_reward"]), abs=1e-6)
    assert result.mean_ep_length == float(final["mean_ep_length"])


def test_benchmark_writes_csv_json_and_png_counting_a_curriculum_from_its_last_stage(tmp_path):
    out = tmp_path / "out"
    result = benchmark.main(
        [
            "--agents", "ppo",
            "--envs", "EBMM-MemoryShort",
            "--seeds", "0",
            "--timesteps", "32",
            "--n-envs", "2",
            "--set", "n_steps=8",
            "--set", "batch_size=16",
            "--set", "n_epochs=1",
            "--set", "curriculum={first: {n_timesteps: 16, env_kwargs: {max_steps: 12}}, last: {}}",
            "--eval-freq", "16",
            "--eval-episodes", "1",
            "--threshold", "0",  # every evaluation reaches it
            "--workers", "1",
            "--out", str(out),
            "--run-dir", str(tmp_path / "runs"),
        ]
    )  # fmt: skip
    assert not result.failed
    rows = read_rows(out / "evaluations.csv")
    assert list(rows[0]) == list(benchmark.EVALUATION_COLUMNS)
    assert [(row["agent"], row["env"], row["seed"], row["timesteps"], row["stage"]) for row in rows] == [
        ("ppo", "EBMM-MemoryShort-v0", "0", "16", "1"),
        ("ppo", "EBMM-MemoryShort-v0", "0", "32", "2"),
    ]
    assert result.runs[0]["steps_to_threshold"] == 32  # the first evaluation on the env benchmarked, the last stage's
    summary = json.loads((out / "summary.json").read_text())
    assert summary["thresholds"] == {"EBMM-MemoryShort-v0": 0}
    assert summary["summary"][0]["agent"] == "ppo"
    assert summary["summary"][0]["seeds"] == 1
    assert summary["runs"][0]["timesteps"] == 32
    assert read_rows(out / "summary.csv")[0]["env"] == "EBMM-MemoryShort-v0"
    with Image.open(out / "success_rate.png") as image:
        assert image.format == "PNG"


def test_benchmark_config_file_reaches_every_run_and_bad_keys_stop_it_first(tmp_path):
    config = tmp_path / "tuned.yml"
    config.write_text("EBMM-MemoryShort-v0:\n  gamma: 0.9\n  n_epochs: 2\n")
    common = [
        "--agents", "ppo", "--envs", "EBMM-MemoryShort", "--timesteps", "16", "--n-envs", "2",
        "--set", "n_steps=8", "--set", "batch_size=16", "--eval-freq", "0", "--eval-episodes", "1", "--workers", "1",
        "--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    result = benchmark.main([*common, "--seeds", "0", "1", "--config", str(config)])
    assert not result.failed and len(result.runs) == 2
    for run in result.runs:
        run_dir = Path(run["run_dir"])
        resolved = yaml.safe_load((run_dir / "config.yml").read_text())
        assert (resolved["gamma"], resolved["n_epochs"]) == (0.9, 2)
        assert f"--config={config}" in (run_dir / "command.txt").read_text()

    config.write_text("EBMM-MemoryShort-v0:\n  gama: 0.9\n")
    with pytest.raises(SystemExit) as error:
        benchmark.main([*common, "--seeds", "2", "--config", str(config)])
    assert error.value.code == 2
    assert not list((tmp_path / "runs").glob("*__2__*"))


def test_steps_to_threshold():
    rows = [{"timesteps": float(steps), "success_rate": rate} for steps, rate in ((10, 0.5), (20, 0.96), (30, 1.0))]
    assert benchmark.steps_to_threshold(rows, 0.95) == 20
    assert benchmark.steps_to_threshold(rows[:1], 0.95) is None


def test_steps_to_hold_counts_from_the_last_dip():
    rates = ((10, 0.5), (20, 0.96), (30, 0.4), (40, 1.0), (50, 0.95))
    rows = [{"timesteps": float(steps), "success_rate": rate} for steps, rate in rates]
    assert benchmark.steps_to_hold(rows, 0.95) == 40
    assert benchmark.steps_to_hold(rows[:3], 0.95) is None


def test_evaluate_env_kwargs_change_the_task(trained_run, capsys):
    # The shortest solution takes 7 steps: with max_steps=3 no episode can succeed, and none lasts longer than 3.
    result = evaluate.main([str(trained_run.run_dir), "--episodes", "4", "--env-kwargs", "max_steps=3"])
    assert result.mean_ep_length <= 3 and result.success_rate == 0.0
    with pytest.raises(SystemExit):
        evaluate.main([str(trained_run.run_dir), "--episodes", "1", "--env-kwargs", "max_steps"])
    assert "write key=value" in capsys.readouterr().err


def test_init_from_starts_a_new_run_from_another_runs_weights(trained_run, tmp_path, capsys):
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
    with pytest.raises(SystemExit):
        train.main([*TINY, *frozen, "--set", "policy_kwargs.net_arch=[8]", "--init-from", str(trained_run.model_path)])
    assert "do not fit this run's ppo model" in capsys.readouterr().err


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


CURRICULUM = """
EBMM-MemoryShort:
  curriculum:
    short:
      n_timesteps: 1000
      advance: {success_rate: 0.0, evaluations: 2}  # met by every evaluation: the stage ends after its second
      env_kwargs: {max_steps: 12}
      learning_rate: lin_1e-3
    long:
      learning_rate: lin_1e-3
      novelty_bonus: 0.5
      novelty_bonus_steps: 64
"""


def scalars(run_dir, tag):
    values = []
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values += [(event.step, event.value) for event in accumulator.Scalars(tag)]
    return sorted(values)


def test_a_curriculum_advances_when_its_evaluations_hold_and_schedules_count_from_the_stage(tmp_path, capsys):
    config = tmp_path / "curriculum.yml"
    config.write_text(CURRICULUM)
    tiny = [*TINY[: TINY.index("--timesteps")], "--timesteps", "128", *TINY[TINY.index("--timesteps") + 2 :]]
    result = train.main([*tiny, "--config", str(config), "--run-dir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    # Evaluations at 32 and 64 steps hold the condition; the stage ends at the next rollout's start, after its update.
    assert "Advancing at 64 steps to stage 2 of 2 (long, EBMM-MemoryShort-v0)" in out
    rows = read_rows(result.run_dir / "evaluations.csv")
    assert [(int(row["timesteps"]), row["stage"], float(row["mean_ep_length"]) <= 12) for row in rows] == [
        (32, "1", True),
        (64, "1", True),
        (96, "2", False),  # max_steps back to the env's 56: an untrained agent runs out of time
        (128, "2", False),
    ]
    assert result.stage == "stage 2 of 2 (long, EBMM-MemoryShort-v0)"
    assert "(curriculum: reached stage 2 of 2 (long, EBMM-MemoryShort-v0)): success" in out.splitlines()[-1]
    # Logged when each rollout ends: stage 1's at 32 and 64, stage 2's at 96 and 128.
    assert scalars(result.run_dir, "rollout/stage") == [(32, 1.0), (64, 1.0), (96, 2.0), (128, 2.0)]
    # The bonus decays over 64 steps from the second stage's start at 64: 0.5 for its first rollout, 0.25 for its second.
    assert scalars(result.run_dir, "rollout/novelty_bonus") == [(96, pytest.approx(0.5)), (128, pytest.approx(0.25))]
    # Each lin_1e-3 decays over its stage: the first's budget ends with the run at 128 steps, the second runs from 64 to
    # 128. The updates at 32 and 96 steps are logged at the evaluations at 64 and 128.
    learning_rates = dict(scalars(result.run_dir, "train/learning_rate"))
    assert learning_rates[64] == pytest.approx(1e-3 * (1 - 32 / 128))
    assert learning_rates[128] == pytest.approx(1e-3 * (1 - (96 - 64) / (128 - 64)))


def test_the_last_stages_advance_ends_the_run_once_solved(tmp_path, capsys):
    config = tmp_path / "curriculum.yml"
    solved = "      advance: {success_rate: 0.0, evaluations: 2}  # met at once: the run ends after 2 evaluations of stage 2\n"
    config.write_text(CURRICULUM + solved)
    tiny = [*TINY[: TINY.index("--timesteps")], "--timesteps", "1024", *TINY[TINY.index("--timesteps") + 2 :]]
    result = train.main([*tiny, "--config", str(config), "--run-dir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert "Ending at 128 steps: 2 evaluations in a row reached 0, the last stage's advance" in out
    assert result.num_timesteps == 128 and not result.interrupted and (result.run_dir / "final_model.zip").is_file()
    rows = read_rows(result.run_dir / "evaluations.csv")
    assert [(int(row["timesteps"]), row["stage"]) for row in rows] == [(32, "1"), (64, "1"), (96, "2"), (128, "2")]


def test_a_config_may_ask_for_greedy_evaluations_and_the_option_wins(tmp_path):
    def greedy(agent, env, overrides=(), option=None):
        options = {"agent": agent, "env": env, "eval_deterministic": option}
        return start_run(options, "python -m ebmm_rl.train", overrides=overrides).settings["eval_deterministic"]

    assert greedy("ppo", "EBMM-MemoryShort") is False  # no key: sampled, the default
    assert greedy("ppo", "EBMM-MemoryShort", ["eval_deterministic=true"]) is True
    assert greedy("ppo", "EBMM-MemoryShort", ["eval_deterministic=false"], option=True) is True  # --eval-deterministic
    assert greedy("ppo_ebmm", "MiniGrid-Memory") is True  # its best model is the best greedy one
    with pytest.raises(ValueError, match="eval_deterministic 3: expected true or false"):
        greedy("ppo", "EBMM-MemoryShort", ["eval_deterministic=3"])
    result = train.main([*TINY, "--set", "eval_deterministic=true", "--run-dir", str(tmp_path)])
    assert yaml.safe_load((result.run_dir / ARGS_FILE).read_text())["eval_deterministic"] is True


def test_minigrid_memory_trains_through_its_curriculum_in_one_run(tmp_path):
    """``--env MiniGrid-Memory`` runs the config's curriculum in one run directory: the S13 T-maze, the agent starting
    beside the cue, in the start room and up to 5 cells into the hallway (``EBMM-MemoryS13Near``), then MiniGrid-Memory,
    every stage after the T-maze with the novelty bonus; ``--set curriculum=null`` trains on MiniGrid-Memory alone."""
    tiny_ppo_ebmm = [
        "--env", "MiniGrid-Memory", "--agent", "ppo_ebmm", "--timesteps", "160", "--n-envs", "2", "--set", "n_steps=16",
        "--set", "batch_size=16", "--set", "n_epochs=1", "--eval-freq", "0", "--eval-episodes", "1", "--checkpoint-freq",
        "0", "--device", "cpu", "--no-progress", "--run-dir", str(tmp_path),
    ]  # fmt: skip
    budgets = [f"curriculum.{stage}.n_timesteps=32" for stage in ("s13tmaze", "cue", "room", "hallway")]
    result = train.main([*tiny_ppo_ebmm, *(argument for budget in budgets for argument in ("--set", budget))])
    assert result.stage == "stage 5 of 5 (memory, MiniGrid-Memory-v0)"
    assert scalars(result.run_dir, "rollout/stage") == [(32 * k, float(k)) for k in range(1, 6)]
    assert scalars(result.run_dir, "rollout/novelty_bonus") == [(32 * k, pytest.approx(0.01)) for k in range(2, 6)]
    direct = train.main([*tiny_ppo_ebmm, "--timesteps", "64", "--set", "curriculum=null"])
    assert direct.stage == "" and not scalars(direct.run_dir, "rollout/stage")


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("{env: EBMM-MemoryShort, n_timesteps: 32, n_step: 8}", r"'n_step' cannot change within a run.*'n_steps'"),
        ("{env: EBMM-MemoryShort, n_timesteps: 32, policy_kwargs: {net_arch: [8]}}", r"'policy_kwargs' cannot change"),
        (
            "{env: EBMM-MemoryShort, n_timesteps: 32}",
            r"'s2': MiniGrid-Memory-v0 gives observations \{direction: .*image: Box\(7, 7, 3\)\}.*Box\(3, 3, 3\)",
        ),
        ("{env: MiniGrid-Memory, advance: {success_rate: 2}, n_timesteps: 32}", r"advance.success_rate must be a number"),
        ("{env: MiniGrid-Memory}", r"'s1': n_timesteps \(the stage's step budget\) must be a positive integer"),
        ("{env: MiniGrid-Memory, n_timesteps: 32, gamma: 2}", r"'s1': gamma=2 is out of range"),
    ],
)
def test_a_bad_curriculum_is_one_line_before_any_run_directory(stage, message, tmp_path, capsys):
    arguments = [*TINY[2:], "--env", "MiniGrid-Memory", "--set", f"curriculum={{s1: {stage}, s2: {{}}}}"]
    with pytest.raises(SystemExit) as exit_info:
        train.main([*arguments, "--run-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("python -m ebmm_rl.train: error: ") and error.count("\n") == 1
    assert re.search(message, error), error
    assert not list(tmp_path.iterdir())


def test_progress_lines_when_not_a_terminal_give_the_rate_of_the_final_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(callbacks, "PROGRESS_INTERVAL_S", 0.0)  # a line at every step
    arguments = [argument for argument in TINY if argument != "--no-progress"]
    result = train.main([*arguments, "--run-dir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    progress = [line for line in lines if " of 64 steps " in line]
    assert progress and progress[-1].startswith("64 of 64 steps (100.0%), ")
    assert any(line.startswith("evaluating at 32 steps: ") for line in lines)
    rate = float(re.search(r", (\d+) fps", progress[-1])[1])
    # The last line comes before the last update; the final rate after it: the same count over a little more time.
    assert 0.5 * rate <= result.fps <= rate + 1


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
