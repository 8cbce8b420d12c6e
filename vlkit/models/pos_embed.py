"""Absolute 2-D position embeddings: fixed sin-cos tables and resampling to a new patch grid."""
from __future__ import annotations

import math

import torch
from timm.layers import resample_abs_pos_embed


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(len(positions), dim): sin of each position times dim/2 frequencies, then cos of the same."""
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.reshape(-1, 1).double() * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_size: int, num_prefix: int = 1) -> torch.Tensor:
    """The MAE table, shape (1, num_prefix + grid_size², dim), float32; prefix rows are zeros.

    Patches are in raster order (row-major). The first dim/2 channels encode the column (x)
    coordinate and the last dim/2 the row (y) coordinate, each as [sin..., cos...]; computed in
    float64 as MAE's numpy code does.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    table = torch.cat([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], dim=1)
    table = torch.cat([torch.zeros(num_prefix, dim, dtype=table.dtype), table])
    return table.float().unsqueeze(0)


def grid_side(pos_embed: torch.Tensor, num_prefix: int = 1, key: str = "pos_embed") -> int:
    """Side of the square patch grid a (1, num_prefix + G², D) table was built for."""
    patches = pos_embed.shape[1] - num_prefix
    side = math.isqrt(max(patches, 0))
    if pos_embed.dim() != 3 or side * side != patches:
        raise ValueError(
            f"{key} has shape {tuple(pos_embed.shape)}: expected (1, {num_prefix} + G*G, D) for a "
            "square patch grid"
        )
    return side


def resample_pos_embed(
    pos_embed: torch.Tensor, grid_size: int, num_prefix: int = 1, key: str = "pos_embed"
) -> torch.Tensor:
    """Bicubic resize of the grid rows to grid_size × grid_size; prefix (CLS) rows are kept.

    No antialiasing (``align_corners=False``), as MAE/VLC's ``interpolate_pos_embed``. The same
    grid returns the input unchanged; ``key`` names the table in errors.
    """
    old = grid_side(pos_embed, num_prefix, key)
    return resample_abs_pos_embed(
        pos_embed,
        new_size=[grid_size, grid_size],
        old_size=[old, old],
        num_prefix_tokens=num_prefix,
        interpolation="bicubic",
        antialias=False,
    )
