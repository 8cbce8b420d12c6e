"""ViLT's image inputs (fact sheet vilt_vlc.md §2.2): images of any size in a zero-padded batch.

* **Patch masks.** A pixel is real when its channels do not sum to 0 (the collator pads with
  zeros); the pixel mask is resized (nearest) to the patch grid, and each image's valid grid is
  ``h`` rows by ``w`` columns (counted along its first column and first row).
* **Positions.** The stored position table (``G_h x G_w``, e.g. ViLT's 12 x 12 for 384 / 32) is
  resized to each image's ``h x w`` with bilinear interpolation, ``align_corners=True``, at every
  forward, and zero-padded to the batch grid. (VLC and MAE resample once, bicubic, when loading;
  that stays theirs.)
* **Patch sampling** (``max_image_len`` > 0): each image keeps at most that many of its valid
  patches, drawn at random without replacement (global RNG, in evaluation too, as ViLT); the
  batch length is ``min(most valid patches, max_image_len)``, and images with fewer valid
  patches are filled with padding patches drawn with replacement and masked out. Kept patches
  stay in raster order (ViLT shuffles them; attention does not depend on the order).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def valid_patch_grid(images: torch.Tensor, grid_height: int, grid_width: int) -> torch.Tensor:
    """(B, grid_height, grid_width) long mask of the patches that hold real pixels."""
    pixels = (images.sum(dim=1) != 0).float()[:, None]
    return F.interpolate(pixels, size=(grid_height, grid_width)).long()[:, 0]


def interpolated_positions(table: torch.Tensor, table_grid: tuple[int, int], heights: torch.Tensor,
                           widths: torch.Tensor, grid_height: int, grid_width: int) -> torch.Tensor:
    """(B, grid_height * grid_width, D): the patch rows of ``table`` (1, G_h * G_w, D) resized
    bilinearly (``align_corners=True``) to each image's ``heights[b] x widths[b]``, zero-padded
    to the batch grid, in raster order."""
    stored = table.transpose(1, 2).reshape(1, table.shape[-1], *table_grid)
    resized: dict[tuple[int, int], torch.Tensor] = {}
    rows = []
    for height, width in zip(heights.tolist(), widths.tolist()):
        if (height, width) not in resized:
            grid = (F.interpolate(stored, size=(height, width), mode="bilinear", align_corners=True)
                    if height and width else stored.new_zeros(1, stored.shape[1], 0, 0))
            resized[height, width] = F.pad(grid, (0, grid_width - width, 0, grid_height - height))
        rows.append(resized[height, width])
    return torch.cat(rows).flatten(2).transpose(1, 2)


def sample_patches(valid: torch.Tensor, max_image_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, keep)``, both (B, K): which patches of a (B, N) validity mask go into the
    sequence and whether each is real; K = the most valid patches in the batch, capped at
    ``max_image_len`` when it is > 0."""
    counts = valid.sum(dim=1)
    length = int(counts.max()) if max_image_len is None or max_image_len <= 0 else min(int(counts.max()), max_image_len)
    if length == valid.shape[1] and bool(valid.all()):  # every patch real and kept: raster order
        index = torch.arange(length, device=valid.device).expand(valid.shape[0], -1)
        return index, torch.ones_like(index)
    index, keep = [], []
    for row in valid.bool():
        real = row.nonzero()[:, 0]
        if len(real) >= length:
            chosen = real if len(real) == length else real[torch.randperm(len(real), device=row.device)[:length]].sort().values
            index.append(chosen)
            keep.append(torch.ones(length, dtype=torch.long, device=row.device))
        else:
            padding = (~row).nonzero()[:, 0]
            filler = padding[torch.randint(len(padding), (length - len(real),), device=row.device)]
            index.append(torch.cat([real, filler]))
            keep.append(torch.cat([torch.ones(len(real), dtype=torch.long, device=row.device),
                                   torch.zeros(length - len(real), dtype=torch.long, device=row.device)]))
    return torch.stack(index), torch.stack(keep)
