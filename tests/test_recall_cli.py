"""The image-recall CLI in-process with tiny models: train, resume, Ctrl-C, evaluate, memory accounting and usage
errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from ebmm_rl.recall import train as train_module
from ebmm_rl.recall.cli import main
from ebmm_rl.recall.evaluate import FIELDS
from ebmm_rl.recall.models import (
    BINARY_MEMORY,
    DATASET_DEFAULTS,
    UsageError,
    applicable_baselines,
    build_baseline,
    build_model,
    fast_size,
    load_checkpoint,
    load_task,
    model_spec,
)
from ebmm_rl.recall.train import TRAIN_DEFAULTS

TINY = ["--hidden", "16", "--hop-dim", "16", "--hops", "1", "--write-steps", "2", "--read-steps", "2", "--batch-size", "2"]
"""An EBMM of 17 floats per fast unit, small enough for a few steps in well under a second."""


def train(tmp_path, *args: str) -> list[train_module.TrainResult]:
    return main(["train", "--run-dir", str(tmp_path / "runs"), "--no-progress", "--log-every", "1", *args])


def evaluate(tmp_path, *args: str) -> list[dict]:
    return main(
        [
            "evaluate",
            "--out",
            str(tmp_path / "results"),
            "--overwrite",
            "--no-progress",
            "--batches",
            "4",
            "--chunk",
            "2",
            *args,
        ]
    )


def read_csv(path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_binary_round_trip(tmp_path):
    (result,) = train(tmp_path, "--dataset", "binary", *TINY, "--memory-sizes", "68", "--n-stored", "4", "--steps", "3")
    assert result.step == 3 and result.memory_size == 68 and not result.interrupted
    run_dir = result.run_dir
    assert run_dir.name.startswith("recall__binary__ebmm__m68__0__")
    for name in ("config.yml", "args.yml", "command.txt", "seed", "checkpoint.pt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    command = (run_dir / "command.txt").read_text()
    assert command.startswith("python -m ebmm_rl.recall train ") and "--dataset binary" in command
    assert load_checkpoint(run_dir)["config"]["corruption"] == "erase"

    rows = evaluate(tmp_path, "--dataset", "binary", "--checkpoints", str(run_dir), "--n-stored", "4", "8")
    out = tmp_path / "results"
    table = read_csv(out / "results.csv")
    assert tuple(table[0]) == FIELDS
    labels = {row["label"] for row in table}
    assert labels == {
        "EBMM (m=68)", "Hopfield (Hebb)", "Hopfield (Storkey)", "Hopfield (pseudo-inverse)", "Modern Hopfield",
        "Modern Hopfield (capped)",
    }  # fmt: skip
    assert len(table) == len(rows) == 2 * len(labels)
    for row in rows:
        assert row["batches"] == 4 and row["metric"] == "error_bits"
        assert 0 <= row["p5"] <= row["p95"] <= 128
    hebb = {row["n_stored"]: row["memory_size"] for row in rows if row["model"] == "hebb"}
    assert hebb == {4: BINARY_MEMORY, 8: BINARY_MEMORY}
    capped = {row["n_stored"]: row["memory_size"] for row in rows if row["model"] == "modern_hopfield_capped"}
    assert capped == {4: 4 * 128, 8: 8 * 128}  # under the protocol's 64 strings: everything is kept
    summary = json.loads((out / "results.json").read_text())
    assert summary["results"] == rows and summary["settings"]["corruption"] == "erase 64 of 128 bits"
    for name in ("distortion_vs_memory.png", "error_vs_n.png"):
        assert (out / name).stat().st_size > 0


def test_digits_round_trip_with_memnet_and_memory_sweep(tmp_path):
    ebmms = train(tmp_path, "--dataset", "digits", *TINY, "--memory-sizes", "34", "68", "--n-stored", "4", "--steps", "2")
    assert [result.memory_size for result in ebmms] == [34, 68]
    (memnet,) = train(
        tmp_path, "--dataset", "digits", "--model", "memnet", "--hidden", "16", "--memory-sizes", "32", "--n-stored", "4",
        "--batch-size", "2", "--steps", "2",
    )  # fmt: skip
    assert memnet.memory_size == 32  # four slots of 8 floats

    runs = [str(result.run_dir) for result in [*ebmms, memnet]]
    rows = evaluate(tmp_path, "--dataset", "digits", "--checkpoints", *runs, "--n-stored", "4")
    assert {row["label"] for row in rows} == {
        "EBMM (m=34)", "EBMM (m=68)", "MemNet (m=32)", "Modern Hopfield", "Modern Hopfield (capped)",
    }  # fmt: skip
    assert {row["metric"] for row in rows} == {"squared_error"}
    assert {row["corruption"] for row in rows} == {"occlude 4x4"}  # block = 8 // 2
    out = tmp_path / "results"
    assert tuple(read_csv(out / "results.csv")[0]) == FIELDS
    assert (out / "distortion_vs_memory.png").stat().st_size > 0
    assert (out / "retrievals.png").stat().st_size > 0
    assert not (out / "error_vs_n.png").exists()  # a single n


def test_unstored_control_tells_recall_from_completion(tmp_path):
    rows = evaluate(tmp_path, "--dataset", "binary", "--baselines", "pseudo_inverse", "modern_hopfield", "--n-stored", "4")
    assert len(rows) == 2
    for row in rows:
        # Under capacity both return the stored string; queried with an unstored one, they return some stored string,
        # which differs from it in about half of its 128 bits.
        assert row["mean"] < 1 and row["unstored_mean"] > 40, row
    assert {row["unstored_mean"] for row in read_csv(tmp_path / "results" / "results.csv")} != {""}


def test_unstored_control_is_left_empty_when_the_split_is_too_small(tmp_path):
    test_images = load_task("digits", "test").images.shape[0]
    n = test_images // 2 + 1  # n distinct images exist, 2n do not
    (row,) = evaluate(tmp_path, "--dataset", "digits", "--baselines", "modern_hopfield", "--n-stored", str(n))
    assert row["unstored_mean"] is None and row["mean"] >= 0
    assert read_csv(tmp_path / "results" / "results.csv")[0]["unstored_mean"] == ""


def test_augmented_training_transforms_train_images_only(tmp_path):
    (result,) = train(tmp_path, "--dataset", "digits", *TINY, "--memory-sizes", "34", "--n-stored", "4", "--steps", "2",
                      "--augment")  # fmt: skip
    assert load_checkpoint(result.run_dir)["config"]["augment"] is True
    rows = evaluate(tmp_path, "--dataset", "digits", "--checkpoints", str(result.run_dir), "--n-stored", "4", "--baselines")
    assert [row["label"] for row in rows] == ["EBMM (m=34, augmented)"]
    augmented = load_task("digits", "train", augment=True)
    assert augmented.augment_shift == 1 and load_task("digits", "train").augment_shift is None
    generator = torch.Generator().manual_seed(0)
    samples = augmented.sample(64, 8, generator).reshape(-1, 64)
    in_split = (samples[:, None, :] == augmented.images[None]).all(-1).any(-1)  # [samples]
    assert not in_split.all()  # transformed copies, not only the split's images


def test_random_memories_mix_random_binary_images_into_training_only(tmp_path):
    (result,) = train(tmp_path, "--dataset", "digits", *TINY, "--memory-sizes", "34", "--n-stored", "4", "--steps", "2",
                      "--random-memories", "0.5")  # fmt: skip
    assert load_checkpoint(result.run_dir)["config"]["random_memories"] == 0.5
    rows = evaluate(tmp_path, "--dataset", "digits", "--checkpoints", str(result.run_dir), "--n-stored", "4", "--baselines")
    assert [row["label"] for row in rows] == ["EBMM (m=34, 0.5 random)"]

    task = load_task("digits", "train", random_memories=0.5)
    samples = task.sample(400, 8, torch.Generator().manual_seed(0))  # [memories, n, 64]
    in_split = (samples.reshape(-1, 1, 64) == task.images[None]).all(-1).any(-1).reshape(400, 8).all(-1)  # [memories]
    binary = ((samples == 0) | (samples == 1)).all(-1).all(-1)
    assert 0.4 < (~in_split).float().mean() < 0.6  # about half the memories are random
    assert binary[~in_split].all()  # random memories hold binary images
    random_density = samples[~in_split].mean()
    assert abs(random_density - task.images.mean()) < 0.02  # of the split's mean intensity
    assert load_task("digits", "train").random_memories == 0


def test_random_memories_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train(tmp_path, "--dataset", "digits", *TINY, "--memory-sizes", "34", "--steps", "1", "--random-memories", "2")
    assert "argument --random-memories: '2' is not a number in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(tmp_path, "--dataset", "binary", *TINY, "--memory-sizes", "34", "--steps", "1", "--random-memories", "0.5")
    assert "binary strings are random already; drop --random-memories" in capsys.readouterr().err


def test_resume_continues_the_run_exactly(tmp_path):
    args = ["--dataset", "binary", *TINY, "--memory-sizes", "34", "--n-stored", "4", "--no-tensorboard"]
    (straight,) = train(tmp_path, *args, "--steps", "4")
    (first,) = train(tmp_path, *args, "--steps", "2")
    (resumed,) = main(["train", "--resume", str(first.run_dir), "--steps", "4", "--no-progress"])
    assert resumed.run_dir == first.run_dir and resumed.step == 4
    assert len((first.run_dir / "command.txt").read_text().splitlines()) == 2
    expected, actual = load_checkpoint(straight.run_dir), load_checkpoint(resumed.run_dir)
    assert actual["step"] == 4
    for name, value in expected["model"].items():
        torch.testing.assert_close(actual["model"][name], value, msg=name)


def test_resume_keeps_the_run_settings_unless_given(tmp_path, capsys):
    args = ["--dataset", "binary", *TINY, "--memory-sizes", "34", "--n-stored", "4", "--no-tensorboard"]
    (stopped,) = train(tmp_path, *args, "--steps", "3", "--time-limit", "0")  # stops before its first step
    assert stopped.step == 0
    (resumed,) = main(["train", "--resume", str(stopped.run_dir), "--time-limit", "60", "--no-progress"])
    assert resumed.step == 3  # the run's own --steps, not the default
    assert "step 3/3" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(stopped.run_dir), "--no-progress"])
    assert "at step 3, which already reaches its --steps 3; pass --steps N with N > 3" in capsys.readouterr().err
    (extended,) = main(["train", "--resume", str(stopped.run_dir), "--steps", "4", "--no-progress"])
    assert extended.step == 4


def test_init_from_starts_a_new_run_from_a_trained_model_with_more_read_steps(tmp_path, capsys):
    args = ["--dataset", "binary", *TINY, "--memory-sizes", "34", "--n-stored", "4", "--no-tensorboard"]
    (source,) = train(tmp_path, *args, "--steps", "2")
    more_steps = [*args, "--read-steps", "4", "--init-from", str(source.run_dir)]
    (started,) = train(tmp_path, *more_steps, "--steps", "1", "--time-limit", "0")  # saves before its first step
    assert started.run_dir != source.run_dir and started.step == 0
    assert "step 0/1, no meta-step in this start, 0.00 steps/s; time limit" in capsys.readouterr().out
    before, after = load_checkpoint(source.run_dir), load_checkpoint(started.run_dir)
    assert after["config"]["read_steps"] == 4 and after["spec"]["kwargs"]["read_steps"] == 4
    torch.testing.assert_close(after["model"]["theta_bar"], before["model"]["theta_bar"])
    torch.testing.assert_close(after["model"]["read_decay_logits"], before["model"]["read_decay_logits"].expand(3))
    assert yaml.safe_load((started.run_dir / "args.yml").read_text())["init_from"] == str(source.run_dir)
    with pytest.raises(SystemExit):
        train(tmp_path, *more_steps, "--hidden", "8")
    assert "that run's model differs from this one (hidden: 16 there, 8 here;" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(started.run_dir), "--init-from", str(source.run_dir)])
    assert "--init-from starts a new run" in capsys.readouterr().err


def test_resume_may_lower_the_learning_rate_and_nothing_else(tmp_path, capsys):
    args = ["--dataset", "binary", *TINY, "--memory-sizes", "34", "--n-stored", "4", "--no-tensorboard"]
    (first,) = train(tmp_path, *args, "--steps", "2")
    (resumed,) = main(["train", "--resume", str(first.run_dir), "--steps", "3", "--lr", "1e-5", "--no-progress"])
    assert resumed.step == 3
    checkpoint = load_checkpoint(first.run_dir)
    assert checkpoint["config"]["lr"] == 1e-5
    assert [group["lr"] for group in checkpoint["optimizer"]["param_groups"]] == [1e-5]
    assert yaml.safe_load((first.run_dir / "config.yml").read_text())["lr"] == 1e-5
    assert "--lr 1e-5" in (first.run_dir / "command.txt").read_text().splitlines()[-1]
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(first.run_dir), "--steps", "4", "--batch-size", "3", "--no-progress"])
    assert "a resumed run keeps its config; drop --batch-size 3" in capsys.readouterr().err


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path, monkeypatch):
    real_step = train_module.meta_train_step
    calls = []

    def interrupt_on_third_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "meta_train_step", interrupt_on_third_call)
    (result,) = train(tmp_path, "--dataset", "binary", *TINY, "--memory-sizes", "34", "--n-stored", "4", "--steps", "5")
    assert result.interrupted and result.step == 2
    assert load_checkpoint(result.run_dir)["step"] == 2


def test_ebmm_sizing_meets_the_memory_budget():
    assert fast_size("mlp", BINARY_MEMORY, hidden=128) == 64  # 64 * 129 = 8256 exactly
    assert fast_size("mlp", 8000, hidden=128) == 62
    assert fast_size("conv", 4 * 1154) == 4  # the paper's 1154 * ds
    task = load_task("binary", "train")
    config = {"model": "ebmm", **TRAIN_DEFAULTS, **DATASET_DEFAULTS["binary"]}
    assert build_model(model_spec(task, config)).memory_size == BINARY_MEMORY
    memnet = build_model(model_spec(task, {**config, "model": "memnet"}))
    assert memnet.memory_size(64) <= BINARY_MEMORY  # 64 slots of 8256 // 64 = 129 floats
    with pytest.raises(ValueError, match="smaller than one fast unit"):
        fast_size("mlp", 100, hidden=128)


@pytest.mark.parametrize("corruption", ["erase", "resample", "flip"])
def test_binary_corruptions(corruption):
    task = load_task("binary", "test", corruption=corruption)
    generator = torch.Generator().manual_seed(0)
    patterns = task.sample(8, 16, generator)
    queries = task.corrupt(patterns, generator)
    changed = (queries != patterns).sum(dim=-1)  # [8, 16]
    if corruption == "erase":
        assert torch.equal((queries == 0).sum(dim=-1), torch.full((8, 16), 64))
    elif corruption == "resample":
        assert bool((queries.abs() == 1).all()) and bool((changed <= 64).all())
        assert 24 < changed.float().mean() < 40  # about half of the 64 resampled bits change
    else:
        assert torch.equal(changed, torch.full((8, 16), 64))


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_unknown_dataset_suggests_the_closest(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--dataset", "digit"])
    assert exit_info.value.code == 2
    assert "unknown dataset 'digit'; did you mean 'digits'?" in capsys.readouterr().err


def test_missing_checkpoint_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--dataset", "binary", "--checkpoints", str(tmp_path / "nowhere")])
    assert "no checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(tmp_path)])
    assert "no checkpoint at" in capsys.readouterr().err


def test_bad_options_are_usage_errors(tmp_path, capsys):
    (result,) = train(tmp_path, "--dataset", "binary", *TINY, "--memory-sizes", "34", "--n-stored", "4", "--steps", "1")
    cases = [
        (["train", "--resume", str(result.run_dir), "--n-stored", "5"], "a resumed run keeps its config; drop --n-stored 5"),
        (["train", "--dataset", "binary", "--model", "memnet", "--hops", "2"], "--hops: EBMM options"),
        (["train", "--dataset", "binary", "--memory-sizes", "64"], "smaller than one fast unit"),
        (["evaluate", "--dataset", "digits", "--baselines", "hebb"], "two-valued patterns"),
        (["evaluate", "--dataset", "digits", "--checkpoints", str(result.run_dir)], "trained on binary"),
        (["evaluate", "--dataset", "binary", "--baselines"], "nothing to evaluate"),
        (["train", "--steps", "3"], "--dataset is required"),
        (["train", "--dataset", "binary", "--augment"], "drop --augment"),
        (["train", "--resume", str(result.run_dir), "--augment"], "drop --augment True"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit):
            main([*argv, "--run-dir", str(tmp_path / "runs")] if argv[0] == "train" else argv)
        assert message in capsys.readouterr().err, argv


def test_capped_modern_hopfield_holds_the_datasets_default_memory():
    assert build_baseline("modern_hopfield_capped", load_task("binary", "test")).slots == BINARY_MEMORY // 128 == 64
    assert build_baseline("modern_hopfield_capped", load_task("digits", "test")).slots == 2064 // 64
    too_large = load_task("digits", "test", image_size=64)  # 4,096 floats per image > 2,064
    assert applicable_baselines(too_large) == ["modern_hopfield"]
    with pytest.raises(UsageError, match="holds no 4096-float pattern; use modern_hopfield"):
        build_baseline("modern_hopfield_capped", too_large)


def test_no_gradient_penalty_reaches_the_model_and_may_change_with_init_from(tmp_path):
    args = ["--dataset", "binary", *TINY, "--memory-sizes", "34", "--n-stored", "4", "--no-tensorboard"]
    (plain,) = train(tmp_path, *args, "--no-gradient-penalty", "--steps", "1")
    payload = load_checkpoint(plain.run_dir)
    assert payload["config"]["gradient_penalty"] is False and build_model(payload["spec"]).gradient_penalty is False
    (penalised,) = train(tmp_path, *args, "--init-from", str(plain.run_dir), "--steps", "1", "--time-limit", "0")
    payload = load_checkpoint(penalised.run_dir)
    assert payload["config"]["gradient_penalty"] is True and build_model(payload["spec"]).gradient_penalty is True


def test_evaluation_never_overwrites_results_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    quick = ["evaluate", "--dataset", "binary", "--baselines", "hebb", "--n-stored", "4", "--batches", "2", "--no-progress"]
    main(quick)
    main(quick)
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all(folder.name.startswith("recall_evaluate__binary__") for folder in folders)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "results.csv").write_text("committed\n")
    with pytest.raises(SystemExit) as exit_info:
        main([*quick, "--out", str(kept)])
    assert exit_info.value.code == 2
    assert f"--out {kept} is not empty: pass --overwrite" in capsys.readouterr().err
    assert (kept / "results.csv").read_text() == "committed\n"
    main([*quick, "--out", str(kept), "--overwrite"])
    assert read_csv(kept / "results.csv")[0]["model"] == "hebb"


def test_a_truncated_checkpoint_is_named_in_a_usage_error(tmp_path, capsys):
    (result,) = train(tmp_path, "--dataset", "binary", *TINY, "--memory-sizes", "34", "--n-stored", "4", "--steps", "1")
    checkpoint = result.checkpoint
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    for arguments in (
        ["train", "--resume", str(result.run_dir)],
        ["evaluate", "--dataset", "binary", "--checkpoints", str(checkpoint)],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*arguments, "--no-progress"])
        assert exit_info.value.code == 2
        assert f"{checkpoint} is unreadable" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--steps", "-5"], "argument --steps: '-5' is not an integer >= 1"),
        (["--lr", "abc"], "argument --lr: 'abc' is not a number > 0"),
        (["--checkpoint-every", "0"], "argument --checkpoint-every: '0' is not an integer >= 1"),
        (["--device", "cuda:7"], "argument --device: "),
    ],
)
def test_train_rejects_bad_values_before_creating_a_run(arguments, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, "--dataset", "binary", *TINY, *arguments)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "runs").exists()
