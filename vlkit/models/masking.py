"""MAE patch dropping and the patch ↔ image reshapes used by the reconstruction target."""
from __future__ import annotations

import torch


def random_masking(
    tokens: torch.Tensor, mask_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random ``int(N * (1 - mask_ratio))`` of the N tokens of each sample.

    ``tokens`` is (B, N, D). Returns the kept tokens (B, K, D) in shuffled order, ``mask`` (B, N)
    with 1 = removed in the original order, and ``ids_restore`` (B, N), which puts the shuffled
    sequence (kept tokens then removed ones) back in the original order. Uses the global RNG.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    batch, length, dim = tokens.shape
    keep = int(length * (1 - mask_ratio))
    noise = torch.rand(batch, length, device=tokens.device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = tokens.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch, length, device=tokens.device, dtype=tokens.dtype)
    mask[:, :keep] = 0
    mask = mask.gather(1, ids_restore)
    return kept, mask, ids_restore


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) → (B, N, p·p·C), patches in raster order, each flattened as (p, q, c)."""
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image of {height}x{width} px is not a whole number of {patch_size}-px patches"
        )
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    x = x.permute(0, 2, 4, 3, 5, 1)
    return x.reshape(batch, rows * cols, patch_size * patch_size * channels)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify` for a square grid: (B, N, p·p·C) → (B, C, H, W)."""
    batch, count, _ = patches.shape
    side = int(count**0.5)
    if side * side != count:
        raise ValueError(f"unpatchify needs a square number of patches, got {count}")
    x = patches.reshape(batch, side, side, patch_size, patch_size, channels)
    x = x.permute(0, 5, 1, 3, 2, 4)
    return x.reshape(batch, channels, side * patch_size, side * patch_size)
