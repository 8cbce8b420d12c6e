"""Cross-attention fusion (ALBEF / GRIT-VLP): a ViT image encoder and a BERT whose upper layers
cross-attend to the image tokens (fact sheet grit_albef.md §2.1-2.4).

BERT layers ``[0, fusion_layer)`` encode the text alone; layers ``[fusion_layer, num_layers)``
add cross-attention (query: text, key/value: image tokens) between self-attention and the FFN,
all post-LN as BERT. Module names follow ALBEF's fine-tuned layout (``visual_encoder.*``,
``text_encoder.embeddings.*``, ``text_encoder.encoder.layer.N.{attention,crossattention,
intermediate,output}.*``); heads are vlkit's shared ones (``vlkit.models.heads``), so every task
runs on this family unchanged. ``models/checkpoints/albef.py`` maps official checkpoints.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.bert.modeling_bert import BertConfig, BertEmbeddings

from vlkit.models.backbones.vit import VisionTransformer
from vlkit.models.heads import bert_init, build_heads

BERT_LAYER_NORM_EPS = 1e-12


class SelfOrCrossAttention(nn.Module):
    """BERT attention projections (``query``, ``key``, ``value``) computed with SDPA.

    ``key``/``value`` read ``context_width`` inputs, so a cross-attention block can attend to
    image tokens of another width.
    """

    def __init__(self, hidden: int, heads: int, context_width: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden_size={hidden} is not a multiple of num_heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(context_width, hidden)
        self.value = nn.Linear(context_width, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, H) queries over (B, C, W) context whose ``context_mask`` (B, C) is 1 for real tokens."""
        q, k, v = self._split(self.query(x)), self._split(self.key(context)), self._split(self.value(context))
        mask = context_mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(x.shape)


class ResidualOutput(nn.Module):
    """BERT's post-LN residual: LayerNorm(x + dropout(dense(h)))."""

    def __init__(self, in_features: int, hidden: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=BERT_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(h)))


class AttentionBlock(nn.Module):
    """``self`` (projections + SDPA) and ``output`` (dense, residual, LayerNorm): BERT's names."""

    def __init__(self, hidden: int, heads: int, context_width: int, dropout: float):
        super().__init__()
        self.self = SelfOrCrossAttention(hidden, heads, context_width, dropout)
        self.output = ResidualOutput(hidden, hidden, dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, context, context_mask), x)


class Intermediate(nn.Module):
    """FFN expansion with GELU (``intermediate.dense``)."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertFusionLayer(nn.Module):
    """Self-attention, optional cross-attention to image tokens, FFN; each post-LN residual."""

    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float, context_width: int | None):
        super().__init__()
        self.attention = AttentionBlock(hidden, heads, hidden, dropout)
        if context_width is not None:
            self.crossattention = AttentionBlock(hidden, heads, context_width, dropout)
        self.intermediate = Intermediate(hidden, intermediate)
        self.output = ResidualOutput(intermediate, hidden, dropout)

    @property
    def has_cross_attention(self) -> bool:
        return hasattr(self, "crossattention")

    def forward(self, x, masks, image=None, image_masks=None) -> torch.Tensor:
        x = self.attention(x, x, masks)
        if self.has_cross_attention:
            x = self.crossattention(x, image, image_masks)
        return self.output(self.intermediate(x), x)


class LayerStack(nn.Module):
    """Holds ``layer`` (a ModuleList), giving BERT's ``encoder.layer.N`` key names."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layer = nn.ModuleList(layers)


class BertFusionEncoder(nn.Module):
    """BERT embeddings and ``num_layers`` layers, of which those from ``fusion_layer`` on
    cross-attend to image tokens of width ``image_width``."""

    def __init__(self, cfg: Any, image_width: int):
        super().__init__()
        if not 0 <= cfg.fusion_layer <= cfg.num_layers:
            raise ValueError(
                f"fusion_layer={cfg.fusion_layer} must be in [0, num_layers={cfg.num_layers}]: the "
                f"BERT layers before it read text only, those from it on cross-attend to the image"
            )
        self.fusion_layer = cfg.fusion_layer
        self.max_text_len = cfg.max_position_embeddings or cfg.max_text_len
        self.embeddings = BertEmbeddings(BertConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
            max_position_embeddings=self.max_text_len, hidden_dropout_prob=cfg.drop_rate,
            layer_norm_eps=BERT_LAYER_NORM_EPS,
        ))
        intermediate = int(cfg.hidden_size * cfg.mlp_ratio)
        self.encoder = LayerStack([
            BertFusionLayer(cfg.hidden_size, cfg.num_heads, intermediate, cfg.drop_rate,
                            image_width if depth >= cfg.fusion_layer else None)
            for depth in range(cfg.num_layers)
        ])
        self.apply(bert_init)

    def encode_text(self, text_ids: torch.Tensor, text_masks: torch.Tensor) -> torch.Tensor:
        """The text-only layers ("text" mode): (B, L) ids → (B, L, H)."""
        if text_ids.shape[1] > self.max_text_len:
            raise ValueError(
                f"text_ids has {text_ids.shape[1]} positions but the text embeddings hold "
                f"{self.max_text_len}; tokenize to at most max_text_len={self.max_text_len}"
            )
        x = self.embeddings(input_ids=text_ids)
        for layer in self.encoder.layer[: self.fusion_layer]:
            x = layer(x, text_masks)
        return x

    def fuse(self, text: torch.Tensor, text_masks: torch.Tensor, image: torch.Tensor,
             image_masks: torch.Tensor) -> torch.Tensor:
        """The fusion layers ("fusion" mode) on text-mode states and image tokens."""
        for layer in self.encoder.layer[self.fusion_layer:]:
            text = layer(text, text_masks, image, image_masks)
        return text


def build_albef_vit(cfg: Any) -> VisionTransformer:
    """ALBEF's ViT (learned positions, no dropout, LayerNorm 1e-6), with an MAE decoder when
    ``loss_names.mae`` > 0 (MAE masking on this family)."""
    with_decoder = cfg.loss_names.get("mae", 0) > 0
    return VisionTransformer(
        image_size=cfg.image_size, patch_size=cfg.patch_size, dim=cfg.hidden_size,
        depth=cfg.vision_layers or cfg.num_layers, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
        learned_pos=True, drop_rate=0.0,
        decoder_dim=cfg.mae_decoder_dim if with_decoder else 0,
        decoder_depth=cfg.mae_decoder_depth, decoder_heads=cfg.mae_decoder_heads,
    )


class CrossAttentionModel(nn.Module):
    """ALBEF / GRIT-VLP: ``visual_encoder`` (ViT), ``text_encoder`` (BERT with fusion layers) and
    the heads of ``vlkit.models.heads.HEADS`` whose ``loss_names`` value is > 0.

    The MLM decoder is tied to the word embeddings, as BERT and ALBEF. There is no pooler:
    ``cls_feats`` is the fused CLS state, where ALBEF's ITM head reads.
    """

    vision_tower_prefix = "visual_encoder."
    """Where vision-tower checkpoints (timm, MAE, DeiT) load."""

    def __init__(self, cfg: Any):
        super().__init__()
        self.hidden_size = cfg.hidden_size
        self.num_layers = cfg.num_layers
        self.mask_ratio = cfg.mask_ratio
        self.patch_drop = bool(cfg.mae_patch_drop)
        self.visual_encoder = build_albef_vit(cfg)
        self.text_encoder = BertFusionEncoder(cfg, image_width=cfg.hidden_size)
        for name, head in build_heads(cfg, self.feature_width).items():
            self.add_module(name, head)
        if hasattr(self, "mlm_score"):
            self.mlm_score.decoder.weight = self.text_encoder.embeddings.word_embeddings.weight

    @property
    def feature_width(self) -> int:
        """Width of ``cls_feats`` (what task heads take)."""
        return self.hidden_size

    def embed_image(self, image: torch.Tensor, image_token_type_idx: int = 1,
                    mask_image: bool | None = None) -> dict[str, torch.Tensor]:
        """The ViT's output tokens (B, 1 + K, D) with ``masks`` and, when patches were dropped,
        ``mae_mask`` / ``mae_ids_restore``. ``image_token_type_idx`` does not apply (no type
        embeddings on image tokens in this family)."""
        drop = self.patch_drop if mask_image is None else mask_image
        tokens, mae_mask, ids_restore = self.visual_encoder.embed(image, self.mask_ratio if drop else 0.0)
        tokens = self.visual_encoder.encode(tokens)
        out = {"tokens": tokens, "masks": torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)}
        if mae_mask is not None:
            out["mae_mask"], out["mae_ids_restore"] = mae_mask, ids_restore
        return out

    def infer(self, text_ids: torch.Tensor, text_masks: torch.Tensor, image: torch.Tensor | None = None,
              image_token_type_idx: int = 1, mask_image: bool | None = None,
              image_embeds: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Fused features, with the same inputs and outputs as ``SingleStreamModel.infer``:
        ``text_feats`` (fused text states), ``image_feats`` (ViT states), ``cls_feats`` and
        ``raw_cls_feats`` (both the fused CLS), masks, and the MAE entries when patches were dropped."""
        if (image is None) == (image_embeds is None):
            raise ValueError("give exactly one of image and image_embeds")
        if image_embeds is None:
            image_embeds = self.embed_image(image, image_token_type_idx, mask_image)
        image_masks = image_embeds["masks"].to(text_masks.dtype)
        text = self.text_encoder.encode_text(text_ids, text_masks)
        fused = self.text_encoder.fuse(text, text_masks, image_embeds["tokens"], image_masks)
        out = {
            "text_feats": fused, "image_feats": image_embeds["tokens"], "cls_feats": fused[:, 0],
            "raw_cls_feats": fused[:, 0], "text_masks": text_masks, "image_masks": image_masks,
        }
        for key in ("mae_mask", "mae_ids_restore"):
            if key in image_embeds:
                out[key] = image_embeds[key]
        return out

    def text_only_feats(self, text_ids: torch.Tensor, text_masks: torch.Tensor) -> torch.Tensor:
        """CLS of the text-only layers (B, H), what ALBEF's ``text_proj`` reads."""
        return self.text_encoder.encode_text(text_ids, text_masks)[:, 0]

    def image_only_feats(self, image_embeds: dict[str, torch.Tensor]) -> torch.Tensor:
        """CLS of the ViT output (B, D), what ALBEF's ``vision_proj`` reads."""
        return image_embeds["tokens"][:, 0]

    def mae_predict(self, image_feats: torch.Tensor, ids_restore: torch.Tensor | None) -> torch.Tensor:
        """MAE decoder prediction (B, N, p·p·3) from the ViT states of kept patches."""
        return self.visual_encoder.decode(image_feats, ids_restore)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual_encoder.patchify(images)

    def layer_id(self, param_name: str) -> int:
        """Depth for layer-wise LR decay: embeddings 0, ViT block / BERT layer i → i + 1, heads top."""
        parts = param_name.split(".")
        if parts[0] == "visual_encoder":
            if parts[1] == "blocks":
                return min(int(parts[2]) + 1, self.num_layers)
            return 0 if parts[1] in ("cls_token", "pos_embed", "patch_embed") else self.num_layers
        if parts[0] == "text_encoder":
            return 0 if parts[1] == "embeddings" else int(parts[3]) + 1
        return self.num_layers + 1

    def expand_token_types(self, rows: int) -> None:
        """Nothing to grow: image tokens carry no type embeddings in this family."""
