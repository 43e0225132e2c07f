"""Datasets of the image-recall suite. Omniglot and CIFAR-10 are read from tiny archives built in ``tmp_path`` in the
official on-disk formats (no download), and Omniglot's "background small" archives from ``../shared/data/omniglot/``
beside the repository when it is there (CI has them)."""

from __future__ import annotations

import io
import pickle
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmm_rl.recall import datasets
from omniglot_archives import DRAWERS, SHARED_OMNIGLOT, write_omniglot_archives
from ebmm_rl.recall.datasets import (
    augment_images,
    CIFAR10_ARCHIVE,
    OMNIGLOT_ARCHIVES,
    OMNIGLOT_LEFT_OUT,
    OMNIGLOT_VARIANTS,
    binary_strings,
    cifar10,
    digits,
    file_md5,
    omniglot,
    sample_batches,
)

CIFAR_TRAIN_PER_BATCH, CIFAR_TEST = 2, 3


def cifar_batch(count: int, seed: int) -> dict[bytes, object]:
    """A batch dict as in cifar-10-batches-py: b"data" uint8 [count, 3072] and b"labels"."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    data[0, :] = 255  # pins the scaling: a full-intensity image must load as ones
    return {b"batch_label": b"fixture", b"labels": list(range(count)), b"data": data}


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """``cifar-10-python.tar.gz`` with the official member layout and tiny batches."""
    batches = {f"data_batch_{i}": cifar_batch(CIFAR_TRAIN_PER_BATCH, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(CIFAR_TEST, 0)
    with tarfile.open(tmp_path / CIFAR10_ARCHIVE.filename, "w:gz") as archive:
        for name, batch in batches.items():
            payload = pickle.dumps(batch, protocol=2)
            member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            member.size = len(payload)
            archive.addfile(member, io.BytesIO(payload))
    return tmp_path


@pytest.fixture
def omniglot_root(tmp_path: Path) -> Path:
    return write_omniglot_archives(tmp_path)


def test_binary_strings_are_seeded_plus_minus_one():
    strings = binary_strings(3, 4, 128, generator=torch.Generator().manual_seed(1))
    assert strings.shape == (3, 4, 128) and strings.dtype == torch.float32
    assert set(strings.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(strings, binary_strings(3, 4, 128, generator=torch.Generator().manual_seed(1)))


def test_digits_splits_and_range():
    train, test = digits("train"), digits("test")
    assert train.images.shape == (1500, 64) and test.images.shape == (297, 64)
    assert train.image_shape == (1, 8, 8) and train.dim == 64
    assert train.images.dtype == torch.float32
    assert train.images.min() == 0 and train.images.max() == 1
    upscaled = digits("test", image_size=16)
    assert upscaled.images.shape == (297, 256) and upscaled.image_shape == (1, 16, 16)
    assert upscaled.images.min() >= 0 and upscaled.images.max() <= 1


def test_sample_batches_draws_distinct_images_per_memory():
    images = torch.arange(10, dtype=torch.float32)[:, None].expand(10, 3)  # image i is all i
    batches = sample_batches(images, batch=50, n=10, generator=torch.Generator().manual_seed(0))
    assert batches.shape == (50, 10, 3)
    assert all(len(set(memory[:, 0].tolist())) == 10 for memory in batches)
    with pytest.raises(ValueError, match="distinct"):
        sample_batches(images, batch=1, n=11)


def test_augment_images_applies_symmetries_and_shifts():
    images = torch.rand(40, 5, 2 * 6 * 6)  # [batch, n, C * H * W], two 6x6 channels
    generator = torch.Generator().manual_seed(0)
    symmetric = augment_images(images, (2, 6, 6), max_shift=0, generator=generator)
    assert symmetric.shape == images.shape
    grids = images.reshape(-1, 2, 6, 6)
    variants = [torch.rot90(v, k, dims=(2, 3)) for v in (grids, grids.flip(3)) for k in range(4)]
    matches = torch.stack([(symmetric.reshape(-1, 2, 6, 6) == v).flatten(1).all(1) for v in variants])  # [8, images]
    assert matches.any(0).all()  # every image is one of its 8 symmetries, channels transformed together
    assert (matches.sum(1) > 0).all()  # and every symmetry occurs
    shifted = augment_images(images, (2, 6, 6), max_shift=1, generator=generator).reshape(-1, 2, 6, 6)
    assert (shifted == 0).any()  # uncovered pixels are 0
    assert torch.equal(
        augment_images(images, (2, 6, 6), 2, torch.Generator().manual_seed(3)),
        augment_images(images, (2, 6, 6), 2, torch.Generator().manual_seed(3)),
    )
    with pytest.raises(ValueError, match="max_shift"):
        augment_images(images, (2, 6, 6), 6)


def test_cifar10_reads_the_official_layout(cifar_root):
    train = cifar10("train", root=cifar_root, download=False, verify=False)
    test = cifar10("test", root=cifar_root, download=False, verify=False)
    assert train.images.shape == (5 * CIFAR_TRAIN_PER_BATCH, 3072) and test.images.shape == (CIFAR_TEST, 3072)
    assert train.image_shape == (3, 32, 32) and train.images.dtype == torch.float32
    assert train.images.min() >= 0 and train.images.max() <= 1
    expected_first = torch.from_numpy(cifar_batch(CIFAR_TRAIN_PER_BATCH, 1)[b"data"]).float() / 255
    torch.testing.assert_close(train.images[:CIFAR_TRAIN_PER_BATCH], expected_first)  # batches in order 1..5
    assert torch.all(test.images[0] == 1)


def test_cifar10_verifies_the_checksum(cifar_root, monkeypatch):
    with pytest.raises(ValueError, match=r"md5 .* delete it and load again"):
        cifar10("test", root=cifar_root, download=False)
    fixture_md5 = file_md5(cifar_root / CIFAR10_ARCHIVE.filename)
    monkeypatch.setattr(datasets, "CIFAR10_ARCHIVE", CIFAR10_ARCHIVE._replace(md5=fixture_md5))
    assert cifar10("test", root=cifar_root, download=False).images.shape == (CIFAR_TEST, 3072)


def test_missing_archive_names_the_url_and_the_place(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(CIFAR10_ARCHIVE.filename)) as error:
        cifar10(root=tmp_path, download=False)
    assert CIFAR10_ARCHIVE.url in str(error.value) and str(tmp_path) in str(error.value)
    with pytest.raises(FileNotFoundError, match=re.escape(OMNIGLOT_ARCHIVES["full"]["test"].url)):
        omniglot("test", root=tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match=re.escape(OMNIGLOT_ARCHIVES["small"]["train"].url)):
        omniglot("train", root=tmp_path, download=False, archives="small")


def test_omniglot_reads_the_official_layout(omniglot_root):
    train = omniglot("train", root=omniglot_root, download=False, verify=False)
    test = omniglot("test", root=omniglot_root, download=False, verify=False)
    assert train.images.shape == (3 * DRAWERS, 32 * 32) and test.images.shape == (1 * DRAWERS, 32 * 32)
    assert train.image_shape == (1, 32, 32) and train.images.dtype == torch.float32
    assert set(train.images.unique().tolist()) == {0.0, 1.0}
    grid = train.images.reshape(-1, 32, 32)
    assert torch.all(grid[:, 5:14, 5:14] == 1) and torch.all(grid[:, 20:, :] == 0)  # ink is 1 where the stroke is
    grey = omniglot("test", root=omniglot_root, image_size=16, ink_threshold=None, download=False, verify=False)
    assert grey.images.shape == (DRAWERS, 256) and grey.images.min() >= 0 and grey.images.max() <= 1
    assert ((grey.images > 0) & (grey.images < 1)).any()  # area averaging leaves grey edge pixels


def test_omniglot_checksum_mismatch_is_a_clear_error(omniglot_root):
    with pytest.raises(ValueError, match=r"images_background\.zip has md5"):
        omniglot("train", root=omniglot_root, download=False)


def test_omniglot_small_archives_are_a_choice(omniglot_root):
    full = omniglot("test", root=omniglot_root, download=False, verify=False)
    small = omniglot("test", root=omniglot_root, download=False, verify=False, archives="small")
    assert full.images.shape[0] == DRAWERS and small.images.shape[0] == 2 * DRAWERS  # Alphabet_D without Greek
    assert OMNIGLOT_VARIANTS == ("full", "small")
    small_files = {split: archive.filename for split, archive in OMNIGLOT_ARCHIVES["small"].items()}
    assert small_files == {"train": "images_background_small1.zip", "test": "images_background_small2.zip"}
    with pytest.raises(ValueError, match=r"images_background_small2\.zip has md5"):
        omniglot("test", root=omniglot_root, download=False, archives="small")
    with pytest.raises(ValueError, match="archives must be one of"):
        omniglot("test", root=omniglot_root, download=False, archives="tiny")


@pytest.mark.skipif(not SHARED_OMNIGLOT.is_dir(), reason=f"no real Omniglot archives at {SHARED_OMNIGLOT}")
def test_omniglot_small_archives_are_the_official_ones():
    """The real archives: official checksums; 2,720 training images of 5 alphabets and, without the 2 alphabets the
    archives share, 2,120 test images of 3 others; 32x32 binarised with about 10% ink."""
    for split, count in (("train", 2720), ("test", 2120)):
        assert file_md5(SHARED_OMNIGLOT / OMNIGLOT_ARCHIVES["small"][split].filename) == OMNIGLOT_ARCHIVES["small"][split].md5
        data = omniglot(split, root=SHARED_OMNIGLOT, download=False, archives="small")  # verifies the md5 itself
        assert data.images.shape == (count, 32 * 32) and data.image_shape == (1, 32, 32)
        assert set(data.images.unique().tolist()) == {0.0, 1.0}
        assert 0.08 < data.images.mean().item() < 0.13
        assert (data.images.sum(dim=1) > 0).all()  # every character has ink
    alphabets = {}
    for split, archive_info in OMNIGLOT_ARCHIVES["small"].items():
        with zipfile.ZipFile(SHARED_OMNIGLOT / archive_info.filename) as archive:
            alphabets[split] = {name.split("/")[1] for name in archive.namelist() if name.endswith(".png")}
    assert alphabets["train"] & alphabets["test"] == set(OMNIGLOT_LEFT_OUT["small", "test"]) == {"Greek", "Latin"}
    assert len(alphabets["train"]) == len(alphabets["test"]) == 5
