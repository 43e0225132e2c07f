"""The distortions that form queries."""

from __future__ import annotations

import pytest
import torch

from ebmm_rl.memory import add_noise, block_occlude, flip_bits


def test_flip_bits_flips_exactly_n_bits():
    patterns = torch.randint(0, 2, (3, 5, 128)).float() * 2 - 1
    queries = flip_bits(patterns, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal((queries != patterns).sum(-1), torch.full((3, 5), 64))
    assert set(queries.unique().tolist()) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="n_flips"):
        flip_bits(patterns, 129)


def test_block_occlude_overwrites_one_square_per_image():
    images = torch.rand(2, 3, 3 * 32 * 32) + 1.0
    queries = block_occlude(images, (3, 32, 32), block=16, generator=torch.Generator().manual_seed(0))
    changed = (queries != images).reshape(2, 3, 3, 32, 32)
    assert torch.equal(changed.sum(dim=(-1, -2)), torch.full((2, 3, 3), 16 * 16))
    rows = changed.any(dim=-1)  # [2, 3, 3, 32]
    assert torch.equal(rows.sum(-1), torch.full((2, 3, 3), 16))
    assert (queries[changed.reshape(2, 3, -1)] == 0).all()
    with pytest.raises(ValueError, match="image_shape"):
        block_occlude(images, (1, 32, 32), block=16)


def test_add_noise_has_requested_scale():
    patterns = torch.zeros(4, 100, 64)
    noisy = add_noise(patterns, 0.5, generator=torch.Generator().manual_seed(0))
    assert abs(noisy.std().item() - 0.5) < 0.02
