"""Masked-autoencoder pixel reconstruction loss (fact sheet §3.2)."""
from __future__ import annotations

import torch

NORM_PIX_EPS = 1e-6


def normalize_patches(patches: torch.Tensor) -> torch.Tensor:
    """Each patch (last dim) minus its mean, over sqrt(unbiased variance + 1e-6)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=True)
    return (patches - mean) / (var + NORM_PIX_EPS).sqrt()


def mae_loss(
    pred: torch.Tensor, target_patches: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True
) -> torch.Tensor:
    """Mean squared error per patch, averaged over the removed patches only.

    ``pred`` and ``target_patches`` are (B, N, D) (``target_patches`` = ``patchify(image)``),
    ``mask`` is (B, N) with 1 = removed. ``norm_pix`` normalises each target patch first (VLC always
    does). With no removed patch the loss is a zero that still back-propagates.
    """
    if pred.shape != target_patches.shape or mask.shape != pred.shape[:2]:
        raise ValueError(
            f"pred {tuple(pred.shape)}, target_patches {tuple(target_patches.shape)} and mask "
            f"{tuple(mask.shape)} must be (B, N, D), (B, N, D) and (B, N)"
        )
    target = normalize_patches(target_patches) if norm_pix else target_patches
    per_patch = (pred - target).pow(2).mean(dim=-1)
    removed = mask.to(per_patch.dtype)
    return (per_patch * removed).sum() / removed.sum().clamp(min=1)
