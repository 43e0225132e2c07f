"""Datasets of the image-recall validation suite: random binary strings, scikit-learn's digits, Omniglot and CIFAR-10,
each with its canonical train/test split, and a sampler of memories of distinct images.

Every image loader returns :class:`ImageData`: float32 images ``[num_images, channels * height * width]`` with values
in [0, 1] (flattened channel-first, as ``block_occlude`` and ``ConvEnergy`` expect) and their ``(C, H, W)`` shape.

Omniglot and CIFAR-10 are read straight from their official archives (no extraction), which are downloaded into
``root`` (default: ``$XDG_CACHE_HOME/ebmm_rl``, i.e. ``~/.cache/ebmm_rl``) when missing and checked against the
official md5 checksums.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

logger = logging.getLogger(__name__)

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")

DIGITS_TRAIN_SIZE = 1500
"""The digits split: the first 1,500 of scikit-learn's 1,797 images train, the remaining 297 test."""


class Archive(NamedTuple):
    """An official dataset archive.

    :param url: where it is downloaded from
    :param filename: its name under the data root
    :param md5: its official md5 checksum (hex)
    """

    url: str
    filename: str
    md5: str


CIFAR10_ARCHIVE = Archive(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
)
OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"


def _omniglot_archive(name: str, md5: str) -> Archive:
    return Archive(url=f"{OMNIGLOT_URL}/{name}.zip", filename=f"{name}.zip", md5=md5)


OMNIGLOT_ARCHIVES: dict[str, dict[str, Archive]] = {
    "full": {
        "train": _omniglot_archive("images_background", "68d2efa1b9178cc56df9314c21c6e718"),
        "test": _omniglot_archive("images_evaluation", "6b91aef0f799c5bb55b94e3f2daec811"),
    },
    "small": {
        "train": _omniglot_archive("images_background_small1", "e704a628b5459e08445c13499850abc4"),
        "test": _omniglot_archive("images_background_small2", "b75a71a51d3b13f821f212756fe481fd"),
    },
}
"""Omniglot's official archives by ``archives`` and split. "full": ``images_background`` (964 characters of 30
alphabets, 19,280 images) trains and ``images_evaluation`` (659 characters of 20 alphabets, 13,180 images) tests.
"small": the repository's "background small" archives, ``images_background_small1`` (136 characters of 5 alphabets,
2,720 images) trains and ``images_background_small2`` tests, without the alphabets it shares with small1
(:data:`OMNIGLOT_LEFT_OUT`): 106 characters of 3 alphabets, 2,120 images. Both test on alphabets unseen in training."""
OMNIGLOT_VARIANTS: tuple[str, ...] = tuple(OMNIGLOT_ARCHIVES)
OMNIGLOT_LEFT_OUT: dict[tuple[str, str], tuple[str, ...]] = {("small", "test"): ("Greek", "Latin")}
"""Alphabets left out of a split, by ``(archives, split)``. Both background small archives are drawn from
``images_background`` and both hold its Greek and Latin characters (the same 1,000 images); the test split leaves
them out so that it tests on alphabets unseen in training: Japanese (katakana), Sanskrit and Tagalog."""
CIFAR10_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


class ImageData(NamedTuple):
    """A split of an image dataset.

    :param images: ``[num_images, channels * height * width]`` float32 in [0, 1], each image flattened channel-first
    :param image_shape: ``(channels, height, width)``
    """

    images: Tensor
    image_shape: tuple[int, int, int]

    @property
    def dim(self) -> int:
        """Size of one flattened image."""
        return self.images.shape[1]


# ---------------------------------------------------------------------------------------------- samplers
def binary_strings(
    batch: int, n: int, dim: int = 128, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """Uniformly random +-1 strings, the paper's binary-string task (dim 128).

    :param batch: number of memories
    :param n: patterns per memory
    :param dim: bits per pattern
    :return: ``[batch, n, dim]`` float32 with values in {-1, +1}
    """
    if batch < 1 or n < 1 or dim < 1:
        raise ValueError(f"batch, n and dim must be positive, got {batch}, {n}, {dim}")
    bits = torch.randint(0, 2, (batch, n, dim), generator=generator, device=device)
    return (2 * bits - 1).float()


def sample_batches(images: Tensor, batch: int, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Memories of ``n`` distinct images each, drawn uniformly without replacement (independently per memory).

    :param images: ``[num_images, dim]``, e.g. ``ImageData.images``
    :param batch: number of memories
    :param n: images per memory
    :return: ``[batch, n, dim]`` on the device of ``images``
    """
    if not isinstance(images, Tensor) or images.dim() != 2:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [num_images, dim] (e.g. ImageData.images), got {shape}")
    if batch < 1 or n < 1:
        raise ValueError(f"batch and n must be positive, got {batch} and {n}")
    if n > images.shape[0]:
        raise ValueError(f"cannot draw {n} distinct images per memory from {images.shape[0]}; lower n")
    # Sampling without replacement from uniform weights gives distinct indices within each memory, independently.
    indices = torch.ones(batch, images.shape[0]).multinomial(n, replacement=False, generator=generator)  # [batch, n]
    return images[indices.to(images.device)]


def augment_images(
    patterns: Tensor, image_shape: tuple[int, int, int], max_shift: int, generator: torch.Generator | None = None
) -> Tensor:
    """Each image under one of the 8 symmetries of the square (rotations by 90 degrees, with or without a mirror),
    then shifted by up to ``max_shift`` pixels along each axis (uncovered pixels are 0), drawn independently.

    Meta-training on a few thousand images lets the slow weights specialise to them (digits: EBMM's error on fresh
    memories of the train split was 0.37 and of the test split 0.94); transformed copies make the train split a
    distribution the slow weights cannot memorise.

    :param patterns: ``[batch, n, C * H * W]`` square images (H == W)
    :param image_shape: ``(C, H, W)``
    :param max_shift: largest shift in pixels, >= 0
    :return: ``[batch, n, C * H * W]``
    """
    channels, height, width = image_shape
    if height != width:
        raise ValueError(f"augment_images transforms square images, got {height}x{width}")
    if not 0 <= max_shift < height:
        raise ValueError(f"max_shift must be in [0, {height - 1}] for {height}x{width} images, got {max_shift}")
    shape = patterns.shape
    images = patterns.reshape(-1, channels, height, width)  # [images, C, H, W]
    count = images.shape[0]
    symmetries = torch.stack(
        [torch.rot90(variant, turns, dims=(2, 3)) for variant in (images, images.flip(3)) for turns in range(4)]
    )  # [8, images, C, H, W]
    chosen = torch.randint(0, 8, (count,), generator=generator).to(images.device)
    images = symmetries[chosen, torch.arange(count, device=images.device)]  # [images, C, H, W]
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (count, 2), generator=generator).to(images.device)
        padded = F.pad(images, (max_shift,) * 4)  # [images, C, H + 2s, W + 2s]
        grid = torch.arange(height, device=images.device) + max_shift
        rows = grid[None, :] - shifts[:, :1]  # [images, H]
        cols = grid[None, :] - shifts[:, 1:]  # [images, W]
        index = torch.arange(count, device=images.device)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return images.reshape(shape)


# ---------------------------------------------------------------------------------------------- datasets
def digits(split: Split = "train", image_size: int = 8) -> ImageData:
    """scikit-learn's bundled handwritten digits (8x8 grey images, values 0..16) scaled to [0, 1].

    Split: the first 1,500 images train, the remaining 297 test (``DIGITS_TRAIN_SIZE``); no download is needed.

    :param split: "train" or "test"
    :param image_size: side of the square images; other than 8 they are resized by bilinear interpolation
        (``torch.nn.functional.interpolate``, antialiased when shrinking), which keeps values in [0, 1]
    """
    _check_split(split)
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("digits() needs scikit-learn: pip install scikit-learn") from error
    pixels = torch.from_numpy(load_digits().images).float() / 16.0  # [1797, 8, 8]
    pixels = pixels[:DIGITS_TRAIN_SIZE] if split == "train" else pixels[DIGITS_TRAIN_SIZE:]
    images = pixels[:, None]  # [num_images, 1, 8, 8]
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=image_size < 8)
    return ImageData(images.clamp(0, 1).flatten(1).contiguous(), (1, image_size, image_size))


def cifar10(split: Split = "train", root: str | Path | None = None, download: bool = True, verify: bool = True) -> ImageData:
    """CIFAR-10 (Krizhevsky 2009), 32x32 colour images, read from the official python archive
    ``cifar-10-python.tar.gz`` under ``root``. Canonical split: ``data_batch_1..5`` train (50,000 images),
    ``test_batch`` test (10,000).

    :param split: "train" or "test"
    :param root: directory of the archive; default :func:`default_data_root`
    :param download: fetch the archive when it is missing
    :param verify: check the archive's md5; turn off only for archives you built yourself (it holds pickles, which
        can run code when loaded from an untrusted file)
    :return: images ``[num_images, 3072]`` of shape ``(3, 32, 32)``
    """
    _check_split(split)
    path = fetch_archive(CIFAR10_ARCHIVE, root, download, verify)
    wanted = {f"cifar-10-batches-py/{name}": name for name in CIFAR10_BATCHES[split]}
    batches = {}
    # One pass over the gzip stream: seeking back to named members would decompress it again for each one.
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            if member.name in wanted:
                with archive.extractfile(member) as file:
                    batches[wanted[member.name]] = pickle.load(file, encoding="bytes")
    missing = [name for name in CIFAR10_BATCHES[split] if name not in batches]
    if missing:
        raise ValueError(
            f"{path} lacks cifar-10-batches-py/{missing[0]}; it is not the python version of CIFAR-10, download "
            f"{CIFAR10_ARCHIVE.url} instead"
        )
    # Each row is 1024 red, 1024 green then 1024 blue values of a row-major 32x32 image: already [C * H * W].
    data = np.concatenate([batches[name][b"data"] for name in CIFAR10_BATCHES[split]])  # [num_images, 3072] uint8
    return ImageData(torch.from_numpy(data).float() / 255.0, (3, 32, 32))


def omniglot(
    split: Split = "train",
    root: str | Path | None = None,
    image_size: int = 32,
    ink_threshold: float | None = 0.25,
    download: bool = True,
    verify: bool = True,
    archives: str = "full",
) -> ImageData:
    """Omniglot (Lake et al. 2015) handwritten characters, read from the official zips of
    github.com/brendenlake/omniglot under ``root``, in sorted path order. Canonical split (``archives="full"``):
    ``images_background`` train (964 characters, 19,280 images), ``images_evaluation`` test (659 characters, 13,180
    images); ``archives="small"``: ``images_background_small1`` train (2,720 images), ``images_background_small2``
    without small1's alphabets test (2,120 images); see :data:`OMNIGLOT_ARCHIVES`.

    The 105x105 black-on-white PNGs become ink = 1 on background = 0, are shrunk to ``image_size`` by area averaging,
    and binarised: a pixel is ink when at least ``ink_threshold`` of its area is. The default 0.25 rather than 0.5
    keeps thin strokes, which shrink to about a pixel, connected where they straddle two pixels (this project's
    choice; the paper does not state its preprocessing). The 32x32 size matches the paper's 16x16 occlusion of 32x32
    images.

    :param split: "train" or "test"
    :param root: directory of the zips; default :func:`default_data_root`
    :param image_size: side of the square output images
    :param ink_threshold: binarisation threshold in (0, 1), or None to keep the grey ink fraction
    :param download: fetch the zip when it is missing
    :param verify: check the zip's md5 against the official one
    :param archives: "full" (the canonical split) or "small" (the background small archives)
    :return: images ``[num_images, image_size ** 2]`` of shape ``(1, image_size, image_size)``
    """
    from PIL import Image  # Pillow comes with matplotlib; imported here so the rest of the module does not need it

    _check_split(split)
    if archives not in OMNIGLOT_ARCHIVES:
        raise ValueError(f"archives must be one of {OMNIGLOT_VARIANTS}, got {archives!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if ink_threshold is not None and not 0 < ink_threshold < 1:
        raise ValueError(f"ink_threshold must be in (0, 1) or None, got {ink_threshold}")
    archive_info = OMNIGLOT_ARCHIVES[archives][split]
    path = fetch_archive(archive_info, root, download, verify)
    images = []
    with zipfile.ZipFile(path) as archive:
        left_out = OMNIGLOT_LEFT_OUT.get((archives, split), ())
        names = sorted(
            name for name in archive.namelist() if name.lower().endswith(".png") and _alphabet(name) not in left_out
        )
        if not names:
            raise ValueError(f"{path} holds no PNG images; download {archive_info.url} instead")
        for name in names:
            with Image.open(io.BytesIO(archive.read(name))) as image:
                grey = image.convert("L").resize((image_size, image_size), Image.Resampling.BOX)
                images.append(np.asarray(grey, dtype=np.float32))
    ink = 1.0 - torch.from_numpy(np.stack(images)) / 255.0  # [num_images, image_size, image_size]
    if ink_threshold is not None:
        ink = (ink >= ink_threshold).float()
    return ImageData(ink.flatten(1).contiguous(), (1, image_size, image_size))


# ---------------------------------------------------------------------------------------------- archives
def default_data_root() -> Path:
    """``$XDG_CACHE_HOME/ebmm_rl``, or ``~/.cache/ebmm_rl`` when XDG_CACHE_HOME is unset."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "ebmm_rl"


def file_md5(path: str | Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_archive(archive: Archive, root: str | Path | None, download: bool, verify: bool) -> Path:
    """The path of ``archive`` under ``root``, downloading it when missing and checking its md5 when ``verify``.

    :raises FileNotFoundError: the archive is missing and cannot be downloaded
    :raises ValueError: its md5 is not the official one
    """
    root = default_data_root() if root is None else Path(root)
    path = root / archive.filename
    if not path.exists():
        if not download:
            raise FileNotFoundError(f"{path} is missing; download {archive.url} and put it there, or pass download=True")
        _download(archive, path)
    if verify:
        actual = file_md5(path)
        if actual != archive.md5:
            raise ValueError(
                f"{path} has md5 {actual} but the official {archive.filename} has {archive.md5}: it is corrupt, "
                f"truncated or another file; delete it and load again to download {archive.url}, or pass "
                "verify=False for an archive you built yourself"
            )
    return path


def _download(archive: Archive, path: Path) -> None:
    """Download into a partial file, then rename, so an interrupted download never looks complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    logger.info("downloading %s to %s", archive.url, path)
    try:
        with urllib.request.urlopen(archive.url, timeout=60) as response, open(partial, "wb") as file:
            while chunk := response.read(1 << 20):
                file.write(chunk)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise FileNotFoundError(
            f"could not download {archive.url} ({error}); download it by hand and put it at {path}"
        ) from error
    partial.replace(path)


def _alphabet(member: str) -> str:
    """The alphabet of an Omniglot archive member ``<archive name>/<alphabet>/<character>/<image>.png``."""
    parts = member.split("/")
    return parts[-3] if len(parts) >= 3 else ""


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
