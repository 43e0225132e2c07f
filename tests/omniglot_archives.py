"""Omniglot archives for the tests: tiny ones in the official layout, and where the real "background small" ones are."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image

from ebmm_rl.recall.datasets import OMNIGLOT_ARCHIVES, file_md5

OMNIGLOT_SPLITS = {"train": {"Alphabet_A": 2, "Alphabet_B": 1}, "test": {"Alphabet_C": 1}}  # characters per alphabet
DRAWERS = 2  # images per character
SHARED_OMNIGLOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"
"""The official "background small" archives, unchanged, in the shared data folder beside the repository (CI has it)."""


def character_png(character: int, drawer: int) -> bytes:
    """A 105x105 mode-"1" PNG as in Omniglot: white background, a black square stroke in the top-left quadrant."""
    image = Image.new("1", (105, 105), 1)
    image.paste(0, (10 + character, 10 + drawer, 50, 50))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_omniglot_archives(root: Path) -> Path:
    """Every archive of :data:`OMNIGLOT_ARCHIVES` in the official folder layout, tiny; the small variant's test
    archive holds two characters of another alphabet and one of Greek, which it shares with small1 (as the official
    archives do)."""
    for variant, archives in OMNIGLOT_ARCHIVES.items():
        for split, archive_info in archives.items():
            alphabets = dict(OMNIGLOT_SPLITS[split])
            if variant == "small" and split == "test":
                alphabets = {"Alphabet_D": 2, "Greek": 1}
            folder = archive_info.filename.removesuffix(".zip")
            with zipfile.ZipFile(root / archive_info.filename, "w") as archive:
                for alphabet, characters in alphabets.items():
                    for character in range(1, characters + 1):
                        for drawer in range(1, DRAWERS + 1):
                            name = f"{folder}/{alphabet}/character{character:02d}/{character:04d}_{drawer:02d}.png"
                            archive.writestr(name, character_png(character, drawer))
    return root


def fixture_archives(root: Path) -> dict[str, dict[str, object]]:
    """:data:`OMNIGLOT_ARCHIVES` with the md5s of the archives :func:`write_omniglot_archives` wrote under ``root``
    (to monkeypatch in, so that the loader's checksum check passes on them)."""
    return {
        variant: {split: archive._replace(md5=file_md5(root / archive.filename)) for split, archive in archives.items()}
        for variant, archives in OMNIGLOT_ARCHIVES.items()
    }
