"""ALBEF's momentum (teacher) model and ITC feature queue (fact sheet grit_albef.md §2.4, §2.5).

``attach_momentum(model, cfg)`` adds, when ``cfg.momentum`` > 0:

* ``model.momentum_model``: a frozen copy of the model's encoders, ``itc_head`` projections and
  ``mlm_score`` (the other heads are dropped), updated as an exponential moving average of the
  online weights (``momentum_update``). It is a copy of the model itself, so it has the same API
  (``embed_image``, ``infer``, ``text_only_feats``, ...) whatever the family;
* ``model.itc_queue`` (``FeatureQueue``), when ``cfg.itc_queue_size`` > 0: the last
  ``itc_queue_size`` momentum ITC features of every rank, used as extra contrastive keys.

Both are submodules, so checkpoints carry them and a resumed run continues exactly.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor

from vlkit.models.heads import HEADS
from vlkit.models.token_reduction import switch_off_token_pruning
from vlkit.utils import distributed

MOMENTUM_HEADS = ("itc_head", "mlm_score")
"""Heads the momentum model keeps: its ITC projections and, for MLM distillation, its MLM head."""
NO_INDEX = -100
"""``FeatureQueue.index`` of a slot that holds no example yet (ALBEF's fill value)."""


class FeatureQueue(nn.Module):
    """A ring of ``size`` (image, text) unit feature pairs with their example ids (``index``).

    Starts as random unit vectors with no ids, as ALBEF's; ``enqueue`` writes every rank's rows,
    so the queue is the same on every rank.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("image", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("text", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("index", torch.full((size,), NO_INDEX, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return self.image.shape[0]

    @torch.no_grad()
    def enqueue(self, image: torch.Tensor, text: torch.Tensor, index: torch.Tensor) -> None:
        """Write every rank's ``image`` / ``text`` rows (B, D) and ``index`` (B,) after the oldest."""
        image, text, index = (distributed.all_gather_rows(x.detach()) for x in (image, text, index))
        slots = (self.ptr + torch.arange(len(image), device=image.device)) % len(self)
        self.image[slots] = image.to(self.image.dtype)
        self.text[slots] = text.to(self.text.dtype)
        self.index[slots] = index.to(torch.long)
        self.ptr.copy_((self.ptr + len(image)) % len(self))


def build_momentum_copy(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` keeping only the encoders and ``MOMENTUM_HEADS`` (without
    the learnable temperature, which stays the online model's)."""
    teacher = copy.deepcopy(model)
    for attribute, _ in HEADS.values():
        if attribute not in MOMENTUM_HEADS and hasattr(teacher, attribute):
            delattr(teacher, attribute)
    if hasattr(teacher, "itc_head"):
        del teacher.itc_head.logit_scale
    teacher.requires_grad_(False)
    switch_off_token_pruning(teacher)  # ELIP prunes the online encoder only
    return teacher


def attach_momentum(model: nn.Module, cfg: Any) -> None:
    """Add ``momentum_model`` and ``itc_queue`` to ``model`` as ``cfg`` asks (see the module doc)."""
    if cfg.momentum <= 0:
        if cfg.itc_queue_size > 0 or cfg.distill_alpha > 0:
            raise ValueError(
                f"itc_queue_size={cfg.itc_queue_size} and distill_alpha={cfg.distill_alpha} use the "
                f"momentum model's features: set momentum (ALBEF: 0.995) or set them to 0"
            )
        return
    if not 0 < cfg.momentum < 1:
        raise ValueError(f"momentum={cfg.momentum} must be in (0, 1) (ALBEF: 0.995) or 0 for none")
    if not hasattr(model, "itc_head"):
        raise ValueError("the momentum model serves ITC: set loss_names.itc=1, or momentum=0")
    model.momentum_model = build_momentum_copy(model)
    if cfg.itc_queue_size > 0:
        model.itc_queue = FeatureQueue(cfg.itc_queue_size, cfg.itc_embed_dim)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a ``strategy=fsdp`` parameter (a DTensor), any other tensor as it is:
    sharded teacher blocks pair with the same shard of the online blocks (vlkit.engine.fsdp)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _online_pairs(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    online = dict(model.named_parameters())
    return [(_local(teacher), _local(online[name])) for name, teacher in model.momentum_model.named_parameters()]


@torch.no_grad()
def momentum_update(model: nn.Module, momentum: float) -> None:
    """teacher ← momentum · teacher + (1 − momentum) · online, parameter by parameter."""
    pairs = _online_pairs(model)
    teachers, onlines = zip(*pairs)
    torch._foreach_lerp_(list(teachers), [p.detach() for p in onlines], 1.0 - momentum)


@torch.no_grad()
def copy_online_into_momentum(model: nn.Module) -> None:
    """Set the momentum model to the online weights (after loading a checkpoint without them)."""
    for teacher, online in _online_pairs(model):
        teacher.copy_(online)
