"""The classifier: timm's ``VisionTransformer`` with MAE's fine-tuning head (fact sheet §8.3).

timm's class (subclassed only to tell the layer-wise LR decay each parameter's depth) rather
than vlkit's vision tower (``vlkit.models.backbones.vit``): it has what the recipe needs and the
tower lacks (drop path, global pooling with ``fc_norm``, the classification ``head``, a learnable
``pos_embed``, ``no_weight_decay``), and its parameter names are MAE's ``models_vit`` names,
which are also the names vlkit's tower and VLC / ViLT / MAE / timm checkpoints use under their
prefixes, so weights load by copying, bit-exactly, without renaming. The layer decay is
``engine.optim``'s, not timm's ``param_groups_layer_decay``: with ``--cls_token`` timm's puts the
final ``norm`` on the last block's level, where MAE puts it on the top one.

With ``global_pool`` (the default) the mean of the patch tokens goes through ``fc_norm`` then
``head`` and there is no final ``norm``; with ``--cls_token`` the CLS token goes through ``norm``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vlkit.models.backbones.vit import LAYER_NORM

HEAD_INIT_STD = 2e-5
"""MAE re-initialises ``head.weight`` with a truncated normal of this std after loading."""


@dataclass(frozen=True)
class ViTSize:
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


MODELS = {
    # MAE's models_vit (the reference's choices)
    "vit_base_patch16": ViTSize(16, 768, 12, 12),
    "vit_large_patch16": ViTSize(16, 1024, 24, 16),
    "vit_huge_patch14": ViTSize(14, 1280, 32, 16),
    # vlkit additions, timm's sizes: ViLT's ViT-B/32 and small models
    "vit_base_patch32": ViTSize(32, 768, 12, 12),
    "vit_small_patch16": ViTSize(16, 384, 12, 6),
    "vit_tiny_patch16": ViTSize(16, 192, 12, 3),
}


def model_size(args: argparse.Namespace) -> ViTSize:
    """``args.model``'s size with the vlkit overrides (``--patch_size`` ...) applied."""
    if args.model not in MODELS:
        raise ValueError(f"--model {args.model!r} is unknown; choose one of {sorted(MODELS)}")
    overrides = {name: getattr(args, name) for name in ("patch_size", "embed_dim", "depth", "num_heads")
                 if getattr(args, name, None) is not None}
    size = replace(MODELS[args.model], **overrides)
    if size.embed_dim % size.num_heads:
        raise ValueError(f"embed_dim {size.embed_dim} is not divisible by num_heads {size.num_heads}; "
                         "change --embed_dim or --num_heads")
    if args.input_size % size.patch_size:
        raise ValueError(f"--input_size {args.input_size} is not a multiple of the patch size "
                         f"{size.patch_size}; pick an input size divisible by it")
    return size


class ViTClassifier(VisionTransformer):
    """timm's ViT with ``num_layers`` and ``layer_id``, which ``engine.optim``'s layer decay reads."""

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def layer_id(self, name: str) -> int:
        """MAE's depth of a parameter: 0 for the embeddings (``cls_token``, ``pos_embed``,
        ``patch_embed``), i + 1 for ``blocks.i``, num_layers + 1 for the rest (norms, head)."""
        if name in ("cls_token", "pos_embed") or name.startswith("patch_embed."):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers + 1


@torch.no_grad()
def init_head(model: VisionTransformer) -> None:
    """A fresh classifier: ``head.weight`` truncated normal (std 2e-5), ``head.bias`` zero."""
    nn.init.trunc_normal_(model.head.weight, std=HEAD_INIT_STD)
    nn.init.zeros_(model.head.bias)


def build_classifier(args: argparse.Namespace) -> ViTClassifier:
    """The ViT classifier for ``args`` (model, input_size, nb_classes, drop_path, global_pool);
    the head is freshly initialised, the rest has timm's initialisation."""
    size = model_size(args)
    model = ViTClassifier(
        img_size=args.input_size,
        patch_size=size.patch_size,
        num_classes=args.nb_classes,
        global_pool="avg" if args.global_pool else "token",
        embed_dim=size.embed_dim,
        depth=size.depth,
        num_heads=size.num_heads,
        mlp_ratio=size.mlp_ratio,
        qkv_bias=True,
        norm_layer=LAYER_NORM,
        drop_path_rate=args.drop_path,
    )
    init_head(model)
    return model
