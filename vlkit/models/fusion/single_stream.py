"""Single-stream fusion (ViLT / VLC): one transformer over [text tokens; image tokens].

Forward as fact sheet §2.1; module and state-dict names as §2.4, so VLC and ViLT Lightning
checkpoints load without renaming.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.bert.modeling_bert import BertConfig, BertEmbeddings

from vlkit.models.backbones.vit import build_vision_tower, vit_flavour
from vlkit.models.heads import Pooler, bert_init, build_heads
from vlkit.models.token_reduction import check_no_patch_dropping

EMBEDDING_PARTS = ("cls_token", "pos_embed", "mask_token", "patch_embed")


def build_text_embeddings(cfg: Any) -> BertEmbeddings:
    """BERT word + position (``max_text_len``) + type-0 embeddings, LayerNorm, dropout; N(0, 0.02)."""
    config = BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=int(cfg.hidden_size * cfg.mlp_ratio),
        max_position_embeddings=cfg.max_text_len,
        hidden_dropout_prob=cfg.drop_rate,
        attention_probs_dropout_prob=cfg.drop_rate,
    )
    embeddings = BertEmbeddings(config)
    embeddings.apply(bert_init)
    return embeddings


def drops_patches(cfg: Any) -> bool:
    """Whether the encoder drops ``mask_ratio`` of the patches by default: ``mae_patch_drop``, or
    when that is None, ``is_pretrain`` for VLC's ``mae_vit_*`` (ViLT never drops patches)."""
    if cfg.mae_patch_drop is not None:
        return bool(cfg.mae_patch_drop)
    return bool(cfg.is_pretrain) and vit_flavour(cfg.vit, cfg.patch_size) == "mae"


class SingleStreamModel(nn.Module):
    """VLC (``mae_vit_*``) or ViLT (``vit_*``) fused encoder with its pooler and pre-training heads.

    Attributes: ``text_embeddings``, ``token_type_embeddings`` (2 rows, 3 when
    ``loss_names.nlvr2`` > 0), ``transformer`` (vision tower and fusion blocks), ``pooler``, and
    the heads of ``vlkit.models.heads.HEADS`` whose ``loss_names`` value is > 0.

    ELIP (``img_prune``) prunes only the image patch tokens of the joint sequence; the text
    tokens are never pruned. The text vector mixed into the image CLS is the text [CLS] state at
    the scoring block's input (no separate text encoder here); an image-only pass scores with
    the image CLS alone. It does not compose with MAE patch dropping (a clear error at build).
    """

    def __init__(self, cfg: Any):
        super().__init__()
        check_no_patch_dropping(cfg, drops_patches(cfg))
        self.hidden_size = cfg.hidden_size
        self.num_layers = cfg.num_layers
        self.max_text_len = cfg.max_text_len
        self.mask_ratio = cfg.mask_ratio
        self.patch_drop = drops_patches(cfg)
        self.max_image_len = cfg.max_image_len
        """ViLT: patches kept per image (-1: all); VLC does not read it."""

        self.text_embeddings = build_text_embeddings(cfg)
        token_types = 3 if cfg.loss_names.get("nlvr2", 0) > 0 else 2
        self.token_type_embeddings = nn.Embedding(token_types, cfg.hidden_size)
        self.token_type_embeddings.apply(bert_init)
        self.transformer = build_vision_tower(cfg)
        self.pooler = Pooler(cfg.hidden_size)
        for name, head in build_heads(cfg, self.feature_width).items():
            self.add_module(name, head)

    @property
    def feature_width(self) -> int:
        """Width of ``cls_feats`` (what task heads take)."""
        return self.hidden_size

    def embed_image(
        self, image: torch.Tensor, image_token_type_idx: int = 1, mask_image: bool | None = None,
        text_ids: torch.Tensor | None = None, text_masks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Image tokens ready for fusion: patch + position + token-type embeddings.

        Returns ``tokens`` (B, 1 + K, H), ``masks`` (B, 1 + K) and, when patches were dropped
        (``mask_image``; None: the model's default), ``mae_mask`` and ``mae_ids_restore``. Every
        entry has the batch first, so a retrieval evaluator can compute it once per image and
        index rows of it for many captions. ``text_ids`` / ``text_masks`` (the caption ELIP scores
        against in a two-tower family) are not needed here: this family prunes in the joint pass.
        """
        drop = self.patch_drop if mask_image is None else mask_image
        if self.transformer.vilt_inputs and not drop:  # ViLT: padded batches, patch masks, max_image_len
            tokens, masks = self.transformer.embed_vilt(image, self.max_image_len)
            mae_mask = ids_restore = None
        else:
            tokens, mae_mask, ids_restore = self.transformer.embed(image, self.mask_ratio if drop else 0.0)
            masks = torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)
        types = torch.full(tokens.shape[:2], image_token_type_idx, device=tokens.device)
        out = {"tokens": tokens + self.token_type_embeddings(types), "masks": masks}
        if mae_mask is not None:
            out["mae_mask"], out["mae_ids_restore"] = mae_mask, ids_restore
        return out

    def embed_text(self, text_ids: torch.Tensor) -> torch.Tensor:
        """Text tokens ready for fusion (B, L, H): BERT embeddings + token type 0."""
        if text_ids.shape[1] > self.max_text_len:
            raise ValueError(
                f"text_ids has {text_ids.shape[1]} positions but the text embeddings hold "
                f"max_text_len={self.max_text_len}; tokenize to at most that length"
            )
        text = self.text_embeddings(input_ids=text_ids)
        return text + self.token_type_embeddings(torch.zeros_like(text_ids))

    def infer(
        self,
        text_ids: torch.Tensor,
        text_masks: torch.Tensor,
        image: torch.Tensor | None = None,
        image_token_type_idx: int = 1,
        mask_image: bool | None = None,
        image_embeds: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Fused features of a text batch (B, L) and an image batch (B, 3, S, S), or of the
        image's ``embed_image`` output given as ``image_embeds`` instead of ``image``.

        ``mask_image`` drops ``mask_ratio`` of the patches (None: ``mae_patch_drop``, or
        ``is_pretrain`` when that is None). Returns ``text_feats`` (B, L, H), ``image_feats``
        (B, 1 + K, H; fewer tokens when ELIP prunes), ``cls_feats`` (pooled, B, H),
        ``raw_cls_feats``, ``text_masks``, ``image_masks`` and, when patches were dropped,
        ``mae_mask`` (B, N; 1 = removed) and ``mae_ids_restore`` (B, N).
        """
        if (image is None) == (image_embeds is None):
            raise ValueError("give exactly one of image and image_embeds")
        if image_embeds is None:
            image_embeds = self.embed_image(image, image_token_type_idx, mask_image)
        text = self.embed_text(text_ids)
        image_masks = image_embeds["masks"].to(text_masks.dtype)
        text_len = text_ids.shape[1]
        x = self.transformer.encode(
            torch.cat([text, image_embeds["tokens"]], dim=1), torch.cat([text_masks, image_masks], dim=1),
            image_start=text_len,
        )
        if x.shape[1] - text_len != image_masks.shape[1]:  # ELIP pruned: every remaining image token is real
            image_masks = image_masks.new_ones(x.shape[0], x.shape[1] - text_len)
        out = {
            "text_feats": x[:, :text_len],
            "image_feats": x[:, text_len:],
            "cls_feats": self.pooler(x),
            "raw_cls_feats": x[:, 0],
            "text_masks": text_masks,
            "image_masks": image_masks,
        }
        for key in ("mae_mask", "mae_ids_restore"):
            if key in image_embeds:
                out[key] = image_embeds[key]
        return out

    def text_only_feats(self, text_ids: torch.Tensor, text_masks: torch.Tensor) -> torch.Tensor:
        """The text alone through the fusion transformer: its first token's features (B, H)."""
        return self.transformer.encode(self.embed_text(text_ids), text_masks)[:, 0]

    def image_only_feats(self, image_embeds: dict[str, torch.Tensor]) -> torch.Tensor:
        """The image alone (``embed_image`` output) through the transformer: its CLS features (B, H)."""
        return self.transformer.encode(image_embeds["tokens"], image_embeds["masks"], image_start=0)[:, 0]

    def mae_predict(self, image_feats: torch.Tensor, ids_restore: torch.Tensor | None) -> torch.Tensor:
        """MAE decoder prediction (B, N, p·p·3) from ``infer``'s ``image_feats`` and ids_restore."""
        return self.transformer.decode(image_feats, ids_restore)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, N, p·p·3) in (h, w, p, q, c) order."""
        return self.transformer.patchify(images)

    def layer_id(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise LR decay, in [0, num_layers + 1] (fact sheet §7.3)."""
        parts = param_name.split(".")
        if parts[0] in ("text_embeddings", "token_type_embeddings"):
            return 0
        if parts[0] == "transformer" and parts[1] in EMBEDDING_PARTS:
            return 0
        if parts[0] == "transformer" and parts[1] == "blocks":
            return int(parts[2]) + 1
        return self.num_layers + 1

    def expand_token_types(self, rows: int) -> None:
        """Grow ``token_type_embeddings`` to ``rows`` rows (NLVR2: 3); new rows copy row 1."""
        old = self.token_type_embeddings.weight
        if rows < old.shape[0]:
            raise ValueError(
                f"token_type_embeddings has {old.shape[0]} rows; cannot shrink to {rows}"
            )
        grown = nn.Embedding(rows, old.shape[1], device=old.device, dtype=old.dtype)
        with torch.no_grad():
            grown.weight[: old.shape[0]] = old
            grown.weight[old.shape[0] :] = old[1]
        self.token_type_embeddings = grown
