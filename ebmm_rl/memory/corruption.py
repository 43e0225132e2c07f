"""Distortions that turn stored patterns into queries, as in the paper's protocol. Pure torch, batched."""

from __future__ import annotations

import torch
from torch import Tensor


def flip_bits(patterns: Tensor, n_flips: int, generator: torch.Generator | None = None) -> Tensor:
    """Flip the sign of ``n_flips`` random entries of each +-1 pattern (the paper: 64 of 128 bits).

    :param patterns: ``[batch, n, dim]`` with values in {-1, +1}
    :return: ``[batch, n, dim]``
    """
    dim = patterns.shape[-1]
    if not 0 <= n_flips <= dim:
        raise ValueError(f"n_flips must be in [0, {dim}] for patterns of size {dim}, got {n_flips}")
    scores = torch.rand(patterns.shape, generator=generator, device=patterns.device)
    flipped = scores.argsort(dim=-1)[..., :n_flips]  # [batch, n, n_flips]
    signs = torch.ones_like(patterns).scatter(-1, flipped, -1.0)
    return patterns * signs


def add_noise(patterns: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """Add Gaussian noise of standard deviation ``std``.

    :param patterns: ``[batch, n, dim]``
    :return: ``[batch, n, dim]``
    """
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    noise = torch.randn(patterns.shape, generator=generator, device=patterns.device, dtype=patterns.dtype)
    return patterns + std * noise


def block_occlude(
    images: Tensor,
    image_shape: tuple[int, int, int],
    block: int,
    fill: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Overwrite a random ``block x block`` square of every image with ``fill`` (the paper: 16x16 of 32x32).

    :param images: ``[batch, n, channels * height * width]``
    :param image_shape: ``(channels, height, width)``
    :return: ``[batch, n, channels * height * width]``
    """
    channels, height, width = image_shape
    if images.shape[-1] != channels * height * width:
        raise ValueError(f"images have {images.shape[-1]} values, image_shape {image_shape} needs {channels * height * width}")
    if not 0 < block <= min(height, width):
        raise ValueError(f"block must be in [1, {min(height, width)}] for {height}x{width} images, got {block}")
    leading = images.shape[:-1]
    count = images[..., 0].numel()
    top = torch.randint(0, height - block + 1, (count,), generator=generator).to(images.device)
    left = torch.randint(0, width - block + 1, (count,), generator=generator).to(images.device)
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + block)  # [count, height]
    in_cols = (cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + block)  # [count, width]
    occluded = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [count, 1, height, width]
    flat = images.reshape(count, channels, height, width)
    return torch.where(occluded, torch.full_like(flat, fill), flat).reshape(*leading, -1)
