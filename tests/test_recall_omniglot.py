"""Omniglot's small split through the recall CLI, on tiny archives in the official layout (and the loader's checksum
check patched to their md5s)."""

from __future__ import annotations

import json

import pytest

from ebmm_rl.recall import datasets
from ebmm_rl.recall.cli import main
from ebmm_rl.recall.models import load_checkpoint
from omniglot_archives import fixture_archives, write_omniglot_archives

TINY = ["--energy", "mlp", "--hidden", "16", "--hop-dim", "16", "--hops", "1", "--write-steps", "2", "--read-steps", "2"]


@pytest.fixture
def small_archives(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    write_omniglot_archives(root)
    monkeypatch.setattr(datasets, "OMNIGLOT_ARCHIVES", fixture_archives(root))
    return root


def test_small_split_trains_on_small1_and_evaluates_on_small2(tmp_path, small_archives):
    train = ["train", "--dataset", "omniglot", "--data-root", str(small_archives), "--run-dir", str(tmp_path / "runs"),
             "--no-progress", "--no-tensorboard", *TINY, "--memory-sizes", "34", "--n-stored", "4", "--batch-size", "2",
             "--steps", "2"]  # fmt: skip
    (result,) = main([*train, "--omniglot-split", "small"])
    assert load_checkpoint(result.run_dir)["config"]["omniglot_split"] == "small"
    (full,) = main(train)
    assert load_checkpoint(full.run_dir)["config"]["omniglot_split"] == "full"

    evaluate = ["evaluate", "--dataset", "omniglot", "--data-root", str(small_archives), "--no-progress", "--batches",
                "2", "--n-stored", "2", "--baselines", "modern_hopfield"]  # fmt: skip
    # The small test split holds 4 images (the fixture's Greek left out), the full one 2: only the small one has
    # 2 n = 4 distinct images for the unstored-query control.
    rows = main([*evaluate, "--checkpoints", str(result.run_dir), "--out", str(tmp_path / "small")])
    assert {row["metric"] for row in rows} == {"hamming_error"}
    assert all(row["unstored_mean"] is not None for row in rows)  # the split came from the checkpoint
    assert json.loads((tmp_path / "small" / "results.json").read_text())["settings"]["omniglot_split"] == "small"
    rows = main([*evaluate, "--out", str(tmp_path / "full")])
    assert all(row["unstored_mean"] is None for row in rows)
    rows = main([*evaluate, "--omniglot-split", "small", "--out", str(tmp_path / "given")])
    assert all(row["unstored_mean"] is not None for row in rows)


def test_omniglot_split_is_an_omniglot_option(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "digits", "--omniglot-split", "small", "--run-dir", str(tmp_path), "--steps", "1"])
    assert "--omniglot-split chooses Omniglot's archives; digits has none" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "omniglot", "--omniglot-split", "tiny"])
    assert "invalid choice: 'tiny'" in capsys.readouterr().err
