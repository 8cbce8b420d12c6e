"""The image-ablation baseline: the same evaluation with every image replaced by a blank one.

A blank image is the normalisation mean everywhere, i.e. all zeros once normalised (every vlkit
transform ends with ``Normalize(mean, std)``). A model that ignores the image scores the same on
both; ``image_gain = metric - metric_blank`` is what looking at the images bought, a baseline
that, unlike majority-class chance, already includes every text prior the model learned.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import torch

from vlkit.data.collate import is_image_key


def blank_images(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with every image tensor (``image``, ``image_0``/``image_1``, ``false_image_k``:
    floating point, (B, C, H, W)) replaced by zeros; masks and every other entry unchanged."""
    return {
        key: torch.zeros_like(value)
        if is_image_key(key) and torch.is_tensor(value) and value.is_floating_point() and value.dim() == 4
        else value
        for key, value in batch.items()
    }


class BlankImages:
    """A loader whose batches have blank images (``blank_images``); length and order are the
    wrapped loader's."""

    def __init__(self, loader: Iterable[dict]):
        self.loader = loader

    def __iter__(self) -> Iterator[dict]:
        return (blank_images(batch) for batch in self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def image_gain_metrics(metrics: dict[str, float], blank: dict[str, float], names: Sequence[str]) -> dict[str, float]:
    """``{name}_blank`` and ``{name}_image_gain`` of every metric in ``names`` that both runs
    report, and ``image_gain``: the first such metric's gain (the task's headline metric)."""
    out: dict[str, float] = {}
    for name in names:
        if name in metrics and name in blank:
            out[f"{name}_blank"] = float(blank[name])
            out[f"{name}_image_gain"] = float(metrics[name]) - float(blank[name])
            out.setdefault("image_gain", out[f"{name}_image_gain"])
    return out


def with_image_ablation(task: Any, model: torch.nn.Module, loader: Iterable[dict], split: str,
                        metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` plus the blank-image figures of ``task.ablation_metrics`` (``image_gain_metrics``),
    from ``task.evaluate_blank`` on the same split; unchanged for a task that names none."""
    names = tuple(getattr(task, "ablation_metrics", ()))
    if not names:
        return metrics
    blank = task.evaluate_blank(model, loader, split)
    return {**metrics, **image_gain_metrics(metrics, blank, names)}
