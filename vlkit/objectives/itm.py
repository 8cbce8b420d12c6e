"""Image-text matching: labels for a batch and the 2-way classification loss (fact sheet §3.3)."""
from __future__ import annotations

import torch

from vlkit.objectives.mlm import LossOutput, classification_loss


def itm_labels(batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """floor(B/2) ones (matched pairs) and B - floor(B/2) zeros, in a random order (long, made on
    ``device`` so that no copy waits for the host)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    order = torch.randperm(batch_size, generator=generator, device=device)
    return (order < batch_size // 2).long()


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> LossOutput:
    """Cross-entropy of the (B, 2) ITM logits against the (B,) labels (1 = matched), with accuracy."""
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ValueError(f"ITM logits must be (B, 2); got shape {tuple(logits.shape)}")
    return classification_loss(logits, labels)


def in_batch_negatives(
    similarity: torch.Tensor,
    exclude: torch.Tensor | None = None,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM negatives from a batch's (B, B) image-text similarity (row i: image i, column j: text j).

    Returns ``(image_for_text, text_for_image)``, both (B,) long: for text j the negative image,
    for image i the negative text. The diagonal is never chosen, nor a pair that ``exclude``
    (B, B bool) marks, e.g. two captions of one image; a row with every candidate excluded falls
    back to any other row. ``sample=False`` takes the most similar candidate (GRIT-VLP's hardest
    negative); ``sample=True`` draws one with probability softmax(similarity) (ALBEF), so pass
    temperature-scaled logits.
    """
    size = similarity.shape[0]
    if similarity.shape != (size, size) or size < 2:
        raise ValueError(
            f"in-batch ITM negatives need a square similarity of a batch of >= 2 pairs; got shape "
            f"{tuple(similarity.shape)}: raise per_gpu_batchsize or use itm_negatives=random"
        )
    diagonal = torch.eye(size, dtype=torch.bool, device=similarity.device)
    blocked = diagonal if exclude is None else (exclude.bool() | diagonal)

    def pick(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = torch.where(mask.all(dim=1, keepdim=True), diagonal, mask)
        scores = scores.detach().float().masked_fill(mask, float("-inf"))
        if not sample:
            return scores.argmax(dim=1)
        # one draw per row by the exponential race (argmax p / E, E ~ Exp(1)): distributed as
        # multinomial, but on the device and without a host synchronisation
        race = torch.empty_like(scores).exponential_(generator=generator)
        return (scores.softmax(dim=1) / race).argmax(dim=1)

    return pick(similarity.t(), blocked.t()), pick(similarity, blocked)
