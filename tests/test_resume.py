"""Nothing lost: a run killed (SIGKILL, even during a checkpoint write) or stopped (SIGTERM, even during an evaluation)
and resumed ends bit for bit as the same run uninterrupted; damaged checkpoints are skipped, naming the file."""

from __future__ import annotations

import contextlib
import csv
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from ebmm_rl import evaluate, train
from ebmm_rl.runs.checkpoints import BestModel, read_training_state
from ebmm_rl.runs import interrupt
from ebmm_rl.runs.interrupt import stop_on_signals
from ebmm_rl.sb3.algorithms import EBMMPPO

EXACT = [
    "--env", "EBMM-MemoryShort",
    "--agent", "ppo",
    "--timesteps", "128",
    "--n-envs", "2",
    "--set", "n_steps=16",
    "--set", "batch_size=16",
    "--set", "n_epochs=2",
    "--set", "policy_kwargs.net_arch=[16]",
    "--set", "env_kwargs.max_steps=12",  # episodes end inside rollouts, so envs are mid-episode at checkpoints
    "--eval-freq", "32",
    "--eval-episodes", "2",
    "--checkpoint-freq", "32",
    "--device", "cpu",
    "--threads", "1",
    "--no-progress",
]  # fmt: skip
"""Four rollouts of 2 envs x 16 steps; a checkpoint and an evaluation at the end of each."""

FAULTS = """
import os, signal, sys, zipfile
from ebmm_rl import train
from ebmm_rl.runs import checkpoints
from ebmm_rl.sb3.callbacks import SuccessEvalCallback

fault, at = sys.argv[1], int(sys.argv[2])
if fault == "sigkill-during-checkpoint-write":
    writestr = zipfile.ZipFile.writestr

    def write_half_then_die(self, name, data, *args, **kwargs):
        if name == checkpoints.TRAINING_STATE_MEMBER and f"model_{at}_steps" in str(self.filename):
            self.fp.flush()
            os.truncate(self.filename, os.path.getsize(self.filename) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return writestr(self, name, data, *args, **kwargs)

    zipfile.ZipFile.writestr = write_half_then_die
elif fault == "sigterm-during-evaluation":
    check_stop = SuccessEvalCallback._check_stop

    def terminate_then_check(self, *args):
        if self.model.num_timesteps == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return check_stop(self, *args)

    SuccessEvalCallback._check_stop = terminate_then_check
sys.argv = ["train", *sys.argv[3:]]
sys.exit(train.cli())
"""


def run_with_fault(fault: str, at: int, arguments: list[str]) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", FAULTS, fault, str(at), *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)


def the_run(parent: Path) -> Path:
    (run_dir,) = parent.iterdir()
    return run_dir


CURRICULUM = """
EBMM-MemoryShort:
  curriculum:
    short:  # 8-step rollouts; it ends at the rollout start after its evaluations at 32 and 64 steps
      n_timesteps: 1000
      advance: {success_rate: 0.0, evaluations: 2}
      env_kwargs: {max_steps: 12}
      n_steps: 8
      learning_rate: lin_1e-3
    long:  # 16-step rollouts, its own schedule
      learning_rate: lin_5e-4
      env_kwargs: {max_steps: 20}
"""


def assert_same_training(expected: Path, actual: Path, algorithm: type[BaseAlgorithm] = PPO) -> None:
    """Same weights, optimiser state and update count; same evaluations; the same TensorBoard values, each step once."""
    expected_model, actual_model = (algorithm.load(run / "final_model.zip", device="cpu") for run in (expected, actual))
    assert actual_model.num_timesteps == expected_model.num_timesteps == 128
    assert actual_model._n_updates == expected_model._n_updates
    for name, tensor in expected_model.policy.state_dict().items():
        assert torch.equal(actual_model.policy.state_dict()[name], tensor), name
    expected_optimizer, actual_optimizer = (
        model.policy.optimizer.state_dict()["state"] for model in (expected_model, actual_model)
    )
    assert expected_optimizer.keys() == actual_optimizer.keys()
    for index, state in expected_optimizer.items():
        assert all(torch.equal(actual_optimizer[index][key], value) for key, value in state.items())
    assert evaluations(actual) == evaluations(expected)
    expected_scalars = scalars(expected)
    assert scalars(actual) == expected_scalars
    assert {tag.split("/")[0] for tag, _ in expected_scalars} >= {"train", "rollout", "eval"}


def evaluations(run_dir: Path) -> list[tuple[str, ...]]:
    with open(run_dir / "evaluations.csv", newline="") as file:
        return [
            (row["timesteps"], row["success_rate"], row["mean_reward"], row["mean_ep_length"], row["stage"])
            for row in csv.DictReader(file)
        ]


def scalars(run_dir: Path) -> dict[tuple[str, int], float]:
    """Every scalar of the run's event files in the order written, but time/ (wall clock); a step written twice fails."""
    values: dict[tuple[str, int], float] = {}
    for path in sorted(run_dir.glob("tensorboard_*/events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag.startswith("time/"):
                    continue
                assert (value.tag, event.step) not in values, f"{value.tag} written twice at step {event.step}"
                values[value.tag, event.step] = (
                    value.simple_value if value.HasField("simple_value") else value.tensor.float_val[0]
                )
    return values


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    parent = tmp_path_factory.mktemp("uninterrupted")
    assert train.main([*EXACT, "--run-dir", str(parent)]).exit_code == 0
    return the_run(parent)


def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_newest_whole_one_and_ends_bit_for_bit_equal(
    uninterrupted, tmp_path, capsys
):
    killed = run_with_fault("sigkill-during-checkpoint-write", 96, [*EXACT, "--run-dir", str(tmp_path)])
    assert killed.returncode == -9, killed.stderr
    run_dir = the_run(tmp_path)
    checkpoints = run_dir / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == [
        ".model_96_steps.zip.tmp",
        "model_32_steps.zip",
        "model_64_steps.zip",
    ]
    # The newest checkpoint damaged too (a disk error, a copy cut short): the run falls back to the one before, by name.
    newest = checkpoints / "model_64_steps.zip"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    result = train.main(["--resume", str(run_dir), "--no-progress", "--threads", "1"])
    assert (result.exit_code, result.num_timesteps) == (0, 128)
    captured = capsys.readouterr()
    assert f"Skipping {newest} is unreadable" in captured.err
    assert "from" in captured.out and "model_32_steps.zip at 32 steps" in captured.out
    assert_same_training(uninterrupted, run_dir)


def test_a_recurrent_run_killed_and_resumed_ends_bit_for_bit_equal(tmp_path):
    """sb3-contrib leaves the last LSTM state out of its saves; the checkpoint holds it."""
    recurrent = [argument if argument != "ppo" else "ppo_lstm" for argument in EXACT]
    assert train.main([*recurrent, "--run-dir", str(tmp_path / "uninterrupted")]).exit_code == 0
    killed = run_with_fault("sigkill-during-checkpoint-write", 96, [*recurrent, "--run-dir", str(tmp_path / "killed")])
    assert killed.returncode == -9, killed.stderr
    run_dir = the_run(tmp_path / "killed")
    assert train.main(["--resume", str(run_dir), "--no-progress", "--threads", "1"]).num_timesteps == 128
    assert_same_training(the_run(tmp_path / "uninterrupted"), run_dir, RecurrentPPO)


def without(arguments: list[str], option: str) -> list[str]:
    """The arguments without one ``--set`` override (its key) or option and its value."""
    index = next(i for i, argument in enumerate(arguments) if argument == option or argument.startswith(option + "="))
    start = index - 1 if arguments[index - 1] == "--set" else index
    return arguments[:start] + arguments[index + 1 :]


WINDOWED = [argument if argument != "ppo" else "ppo_ebmm" for argument in EXACT]
"""ppo_ebmm: its observations come through VecEpisodicWindow, whose windows hold the episodes under way."""
NORMALIZED = [
    *(argument.replace("EBMM-MemoryShort", "PendulumNoVel-v1") for argument in without(EXACT, "env_kwargs.max_steps")),
    "--set", "env_kwargs.max_episode_steps=12",  # gymnasium.make's: episodes end inside rollouts here too
]  # fmt: skip
"""ppo on PendulumNoVel-v1 (its section: normalize, VecNormalize's running statistics, and gSDE's noise)."""


@pytest.mark.parametrize(
    ("arguments", "algorithm"), [(WINDOWED, EBMMPPO), (NORMALIZED, PPO)], ids=["window", "normalize_and_sde"]
)
def test_a_run_with_vec_env_wrappers_killed_and_resumed_ends_bit_for_bit_equal(arguments, algorithm, tmp_path):
    """The window and the normalisation statistics live in VecEnv wrappers, outside the envs a checkpoint pickles: the
    checkpoint holds them (and a normalised run's statistics file beside each model is that of its state)."""
    assert train.main([*arguments, "--run-dir", str(tmp_path / "uninterrupted")]).exit_code == 0
    killed = run_with_fault("sigkill-during-checkpoint-write", 96, [*arguments, "--run-dir", str(tmp_path / "killed")])
    assert killed.returncode == -9, killed.stderr
    run_dir = the_run(tmp_path / "killed")
    assert train.main(["--resume", str(run_dir), "--no-progress", "--threads", "1"]).num_timesteps == 128
    uninterrupted = the_run(tmp_path / "uninterrupted")
    assert_same_training(uninterrupted, run_dir, algorithm)
    if algorithm is PPO:
        expected, actual = (
            pickle.loads((run / "final_model_vecnormalize.pkl").read_bytes()) for run in (uninterrupted, run_dir)
        )
        assert np.array_equal(actual.obs_rms.mean, expected.obs_rms.mean)
        assert np.array_equal(actual.obs_rms.var, expected.obs_rms.var) and actual.ret_rms.var == expected.ret_rms.var


def test_a_curriculum_run_resumed_across_its_stage_boundary_ends_bit_for_bit_equal(tmp_path):
    """The run is killed in its second stage. Resumed there, or, with its checkpoint there damaged, in the first stage
    (advancing again at the same step), it ends with the same model, evaluations and curves."""
    config = tmp_path / "curriculum.yml"
    config.write_text(CURRICULUM)
    arguments = [*EXACT, "--config", str(config)]
    assert train.main([*arguments, "--run-dir", str(tmp_path / "uninterrupted")]).exit_code == 0
    uninterrupted = the_run(tmp_path / "uninterrupted")
    assert [row[4] for row in evaluations(uninterrupted)] == ["1", "1", "2", "2"]
    for steps, stage in ((32, {"index": 0, "start": 0, "held": 1}), (96, {"index": 1, "start": 64, "held": 0})):
        assert read_training_state(uninterrupted / "checkpoints" / f"model_{steps}_steps.zip").stage == stage
    killed = run_with_fault("sigkill-during-checkpoint-write", 96, [*arguments, "--run-dir", str(tmp_path / "killed")])
    assert killed.returncode == -9, killed.stderr
    assert "Advancing at 64 steps to stage 2 of 2 (long, EBMM-MemoryShort-v0)" in killed.stdout
    run_dir = the_run(tmp_path / "killed")
    in_second_stage = Path(shutil.copytree(run_dir, tmp_path / "copy" / run_dir.name))
    second_stage = run_dir / "checkpoints" / "model_64_steps.zip"  # the second stage's first rollout start
    second_stage.write_bytes(second_stage.read_bytes()[:100])

    for resumed_dir in (run_dir, in_second_stage):  # from 32 steps, in the first stage, and from 64, in the second
        resumed = train.main(["--resume", str(resumed_dir), "--no-progress", "--threads", "1"])
        assert (resumed.num_timesteps, resumed.stage) == (128, "stage 2 of 2 (long, EBMM-MemoryShort-v0)")
        assert_same_training(uninterrupted, resumed_dir)


def test_sigterm_during_an_evaluation_saves_exits_143_and_the_resume_redoes_the_evaluation(uninterrupted, tmp_path):
    stopped = run_with_fault("sigterm-during-evaluation", 96, [*EXACT, "--run-dir", str(tmp_path)])
    assert stopped.returncode == 143, stopped.stderr
    assert "SIGTERM: stopping at the next environment step" in stopped.stderr
    run_dir = the_run(tmp_path)
    # The evaluation at 96 comes at the last step of the rollout that started at 64: the state saved is that start's.
    assert (
        f"saved the state after the update at 64 steps to {run_dir / 'checkpoints' / 'model_64_steps.zip'}" in stopped.stdout
    )
    assert [row[0] for row in evaluations(run_dir)] == ["32", "64"]

    resumed = train.main(["--resume", str(run_dir), "--no-progress", "--threads", "1"])
    assert (resumed.exit_code, resumed.num_timesteps) == (0, 128)
    assert_same_training(uninterrupted, run_dir)


def test_a_resumed_run_keeps_a_best_model_saved_by_an_evaluation_its_checkpoint_predates(tmp_path):
    path = tmp_path / "best_model.zip"
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, seed=0)

    def row(success: float, step: int) -> dict[str, float]:
        return {"timesteps": step, "success_rate": success, "mean_reward": success}

    first = BestModel(path, stage=1)
    assert first.offer(model, row(0.5, 100)) and first.offer(model, row(0.9, 200))
    saved = path.read_bytes()
    # Resumed from the checkpoint at 150: the evaluation at 200 is dropped, its model is still the one to beat.
    resumed = BestModel(path, [row(0.5, 100)], stage=1)
    assert not resumed.offer(model, row(0.7, 250)) and path.read_bytes() == saved
    assert resumed.offer(model, row(0.95, 300))
    # A later stage's evaluations are of another task: the record of stage 1 does not count there.
    assert BestModel(path, stage=2).offer(model, row(0.1, 400))


def test_a_resume_with_no_readable_checkpoint_names_them_and_changes_nothing(uninterrupted, tmp_path, capsys):
    run_dir = Path(shutil.copytree(uninterrupted, tmp_path / uninterrupted.name))
    for checkpoint in (run_dir / "checkpoints").iterdir():
        checkpoint.write_bytes(b"")
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--resume", str(run_dir), "--timesteps", "256", "--eval-freq", "64", "--no-progress"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "no readable model" in error and "model_128_steps.zip is unreadable" in error and "model_32_steps.zip" in error
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before


def test_evaluate_falls_back_from_a_damaged_final_model_and_says_so(uninterrupted, tmp_path, capsys):
    run_dir = Path(shutil.copytree(uninterrupted, tmp_path / uninterrupted.name))
    final = run_dir / "final_model.zip"
    final.write_bytes(final.read_bytes()[:100])
    result = evaluate.main([str(run_dir), "--model", "final", "--episodes", "2", "--n-envs", "2"])
    assert result.model_path == run_dir / "checkpoints" / "model_128_steps.zip"
    error = capsys.readouterr().err
    assert f"Skipping {final} is unreadable" in error
    assert f"Evaluating {result.model_path} instead of {final}" in error


def child_pids(parent: int) -> set[int]:
    """The live processes whose parent is ``parent`` (from /proc)."""
    pids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if int(fields["PPid"]) == parent and fields["State"].strip()[0] != "Z":
                pids.add(int(status.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads worker processes from /proc")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_worker_whose_parent_already_ended_gets_sigterm_at_once():
    # The race stop_with_parent closes: the parent ended before the worker asked to be told.
    code = (
        "import os, time; from ebmm_rl.runs.interrupt import stop_with_parent; "
        "stop_with_parent(os.getppid() + 1); time.sleep(30)"
    )
    worker = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert worker.returncode == -signal.SIGTERM


def test_a_second_signal_during_the_stop_save_stops_once_the_save_is_written():
    # A worker whose benchmark was killed gets SIGTERM (stop_with_parent), and its new parent may send another at once.
    written = []
    with pytest.raises(KeyboardInterrupt), stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop()
        with stop.save_before_stopping():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run, and not stopped the save
            written.append("checkpoint")
    assert written == ["checkpoint"]
    with pytest.raises(KeyboardInterrupt), stop_on_signals():  # outside a save, a second signal stops at once
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        written.append("after the second signal")
    assert written == ["checkpoint"]


def test_an_orphaned_worker_takes_no_second_signal(monkeypatch):
    # Its benchmark's end stopped it; the process that adopted it may send SIGTERM again, and no one else can.
    monkeypatch.setattr(interrupt, "_watched_parent", os.getppid() + 1)
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    assert stop.signal == signal.SIGTERM and not stop.second_signal


def test_a_killed_benchmark_leaves_no_worker_training_and_its_run_resumable(tmp_path):
    # SIGKILL cannot be handled or forwarded: the worker itself asked to be told of its parent's end.
    command = [
        sys.executable, "-m", "ebmm_rl.benchmark", "--agents", "ppo", "--envs", "EBMM-MemoryShort", "--seeds", "0",
        "--timesteps", "1000000", "--n-envs", "2", "--set", "n_steps=16", "--set", "batch_size=32",
        "--set", "policy_kwargs.net_arch=[16]", "--eval-freq", "0", "--eval-episodes", "1", "--workers", "1",
        "--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    benchmark = subprocess.Popen(command, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "runs").glob("*/config.yml")) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the run is training
        workers = child_pids(benchmark.pid)
        assert workers, "the benchmark's worker process was not found"
        benchmark.kill()
        benchmark.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    finally:
        benchmark.kill()
    states = {pid: Path(f"/proc/{pid}/status").read_text().splitlines()[:3] for pid in alive if Path(f"/proc/{pid}").exists()}
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"a worker trained on after the benchmark was killed {states}"
    (run_dir,) = (tmp_path / "runs").iterdir()
    newest = max((run_dir / "checkpoints").glob("*.zip"), key=lambda path: path.stat().st_mtime)
    assert read_training_state(newest).num_timesteps > 0  # the worker stopped as on SIGTERM: its state was saved


def test_sigterm_to_the_benchmark_stops_its_runs_resumably_and_leaves_no_worker(tmp_path):
    command = [
        sys.executable, "-m", "ebmm_rl.benchmark", "--agents", "ppo", "--envs", "EBMM-MemoryShort", "--seeds", "0", "1",
        "--timesteps", "1000000", "--n-envs", "2", "--set", "n_steps=16", "--set", "batch_size=32",
        "--set", "policy_kwargs.net_arch=[16]", "--eval-freq", "0", "--eval-episodes", "1", "--workers", "1",
        "--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    benchmark = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "runs").glob("*/config.yml")) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the first run is training
        workers = child_pids(benchmark.pid)
        assert workers, "the benchmark's worker process was not found"
        benchmark.send_signal(signal.SIGTERM)
        _, stderr = benchmark.communicate(timeout=120)
    finally:
        benchmark.kill()
    assert benchmark.returncode == 143, stderr
    (run_dir,) = (tmp_path / "runs").iterdir()  # seed 1 never started
    assert f"python -m ebmm_rl.train --resume {run_dir}" in stderr
    assert "1 runs not started" in stderr
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "a worker outlived the benchmark"
    newest = max((run_dir / "checkpoints").glob("*.zip"), key=lambda path: path.stat().st_mtime)
    assert read_training_state(newest).num_timesteps > 0  # what --resume starts from
