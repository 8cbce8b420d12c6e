"""Image-text matching: labels for a batch and the 2-way classification loss (fact sheet §3.3)."""
from __future__ import annotations

import torch

from vlkit.objectives.mlm import LossOutput, classification_loss


def itm_labels(batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """floor(B/2) ones (matched pairs) and B - floor(B/2) zeros, in a random order (CPU, long)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    ordered = torch.zeros(batch_size, dtype=torch.long)
    ordered[: batch_size // 2] = 1
    return ordered[torch.randperm(batch_size, generator=generator)]


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> LossOutput:
    """Cross-entropy of the (B, 2) ITM logits against the (B,) labels (1 = matched), with accuracy."""
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ValueError(f"ITM logits must be (B, 2); got shape {tuple(logits.shape)}")
    return classification_loss(logits, labels)
