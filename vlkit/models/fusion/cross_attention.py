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

from vlkit.models.backbones.vit import VisionTransformer, with_token_pruner
from vlkit.models.heads import bert_init, build_heads, pair_classifier
from vlkit.models.token_reduction import check_no_patch_dropping

BERT_LAYER_NORM_EPS = 1e-12


class SelfOrCrossAttention(nn.Module):
    """BERT attention projections (``query``, ``key``, ``value``) computed with SDPA.

    ``key``/``value`` read ``context_width`` inputs, so a cross-attention block can attend to
    image tokens of another width. ``causal`` (self-attention of a decoder) lets position i see
    positions <= i only.
    """

    def __init__(self, hidden: int, heads: int, context_width: int, dropout: float, causal: bool = False):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden_size={hidden} is not a multiple of num_heads={heads}")
        self.heads, self.dropout, self.causal = heads, dropout, causal
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(context_width, hidden)
        self.value = nn.Linear(context_width, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, H) queries over (B, C, W) context whose ``context_mask`` (B, C) is 1 for real tokens."""
        q, k, v = self._split(self.query(x)), self._split(self.key(context)), self._split(self.value(context))
        mask = context_mask.bool()[:, None, None, :]
        if self.causal:
            mask = mask & torch.ones(x.shape[1], context.shape[1], dtype=torch.bool, device=x.device).tril()
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

    def __init__(self, hidden: int, heads: int, context_width: int, dropout: float, causal: bool = False):
        super().__init__()
        self.self = SelfOrCrossAttention(hidden, heads, context_width, dropout, causal)
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
    """Self-attention (``causal`` in a decoder), optional cross-attention to image tokens (or any
    context of width ``context_width``), FFN; each post-LN residual."""

    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float, context_width: int | None,
                 causal: bool = False):
        super().__init__()
        self.attention = AttentionBlock(hidden, heads, hidden, dropout, causal)
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


def text_positions(cfg: Any) -> int:
    """Rows of BERT's position table: ``max_position_embeddings``, else ``max_text_len``."""
    return cfg.max_position_embeddings or cfg.max_text_len


def bert_embeddings(cfg: Any) -> BertEmbeddings:
    """BERT's word, position (``text_positions`` rows) and token-type embeddings, LayerNorm, dropout."""
    return BertEmbeddings(BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, max_position_embeddings=text_positions(cfg),
        hidden_dropout_prob=cfg.drop_rate, layer_norm_eps=BERT_LAYER_NORM_EPS,
    ))


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
        fusion_layers = cfg.num_layers - cfg.fusion_layer
        if cfg.pair_fusion and (fusion_layers == 0 or fusion_layers % 2):
            raise ValueError(
                f"pair_fusion=True pairs the fusion layers [fusion_layer={cfg.fusion_layer}, "
                f"num_layers={cfg.num_layers}): their number must be even and > 0 (ALBEF's NLVR2 "
                f"encoder: fusion_layer=6, num_layers=18)"
            )
        self.fusion_layer = cfg.fusion_layer
        self.max_text_len = text_positions(cfg)
        self.embeddings = bert_embeddings(cfg)
        intermediate = int(cfg.hidden_size * cfg.mlp_ratio)
        self.encoder = LayerStack([
            BertFusionLayer(cfg.hidden_size, cfg.num_heads, intermediate, cfg.drop_rate,
                            image_width if depth >= cfg.fusion_layer else None)
            for depth in range(cfg.num_layers)
        ])
        self.apply(bert_init)
        if cfg.pair_fusion:
            self._share_pair_key_value()

    def _share_pair_key_value(self) -> None:
        """In each pair of fusion layers the first one's cross-attention ``key``/``value`` are the
        second one's modules (ALBEF's ``share_cross_attention``); queries and outputs stay separate."""
        for first in range(self.fusion_layer, len(self.encoder.layer), 2):
            tied, source = (self.encoder.layer[n].crossattention.self for n in (first, first + 1))
            tied.key, tied.value = source.key, source.value

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

    def fuse(self, text: torch.Tensor, text_masks: torch.Tensor, image: torch.Tensor | list[torch.Tensor],
             image_masks: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """The fusion layers ("fusion" mode) on text-mode states and image tokens. ``image`` and
        ``image_masks`` may be lists: fusion layer ``fusion_layer + i`` attends to element ``i mod
        len`` (ALBEF's NLVR2 pairs: image 0, image 1, image 0, ...)."""
        images = image if isinstance(image, (list, tuple)) else [image]
        masks = image_masks if isinstance(image_masks, (list, tuple)) else [image_masks]
        for i, layer in enumerate(self.encoder.layer[self.fusion_layer:]):
            text = layer(text, text_masks, images[i % len(images)], masks[i % len(masks)])
        return text


TEXT_LAYER_PREFIX = "text_encoder.encoder.layer."


def pair_fusion_layers(state: dict[str, torch.Tensor], fusion_layer: int,
                       num_layers: int) -> dict[str, torch.Tensor]:
    """An unpaired checkpoint's BERT layers spread onto the paired NLVR2 encoder of ``num_layers``,
    as ALBEF's ``Pretrain_nlvr.py``: layer n < ``fusion_layer`` keeps its index, layer n >=
    ``fusion_layer`` fills both ``fusion_layer + 2(n - fusion_layer)`` and the layer after it.

    Applies only when the checkpoint holds exactly the unpaired layers ``[0, fusion_layer +
    (num_layers - fusion_layer) / 2)``; any other state (already paired, say) comes back unchanged.
    """
    unpaired = fusion_layer + (num_layers - fusion_layer) // 2
    layer_of = {key: int(key[len(TEXT_LAYER_PREFIX):].split(".", 1)[0])
                for key in state if key.startswith(TEXT_LAYER_PREFIX)}
    if set(layer_of.values()) != set(range(unpaired)):
        return state
    out = {}
    for key, value in state.items():
        if key not in layer_of or layer_of[key] < fusion_layer:
            out[key] = value
            continue
        rest = key[len(TEXT_LAYER_PREFIX):].split(".", 1)[1]
        first = fusion_layer + 2 * (layer_of[key] - fusion_layer)
        for target in (first, first + 1):
            out[f"{TEXT_LAYER_PREFIX}{target}.{rest}"] = value
    return out


def answer_decoder_from_encoder(state: dict[str, torch.Tensor], fusion_layer: int,
                                decoder_layers: int) -> dict[str, torch.Tensor]:
    """The VQA answer decoder filled as ALBEF's ``VQA.py`` does from a checkpoint without one
    (pre-training): the text encoder's embeddings, its layer ``fusion_layer + i`` as decoder layer
    ``i`` (for i < ``decoder_layers``) and the MLM head as the LM head. A state that holds
    ``text_decoder.*`` keys comes back unchanged."""
    if any(key.startswith("text_decoder.") for key in state):
        return state
    out = dict(state)
    for key, value in state.items():
        if key.startswith("text_encoder.embeddings."):
            out["text_decoder." + key[len("text_encoder."):]] = value
        elif key.startswith("mlm_score."):
            out["text_decoder.lm_head." + key[len("mlm_score."):]] = value
        elif key.startswith(TEXT_LAYER_PREFIX):
            layer, rest = key[len(TEXT_LAYER_PREFIX):].split(".", 1)
            if 0 <= int(layer) - fusion_layer < decoder_layers:
                out[f"text_decoder.encoder.layer.{int(layer) - fusion_layer}.{rest}"] = value
    return out


def build_albef_vit(cfg: Any) -> VisionTransformer:
    """ALBEF's ViT (learned positions, no dropout, LayerNorm 1e-6), with an MAE decoder when
    ``loss_names.mae`` > 0 (MAE masking on this family) and ELIP's pruner when ``img_prune`` is set."""
    with_decoder = cfg.loss_names.get("mae", 0) > 0
    return with_token_pruner(VisionTransformer(
        image_size=cfg.image_size, patch_size=cfg.patch_size, dim=cfg.hidden_size,
        depth=cfg.vision_layers or cfg.num_layers, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
        learned_pos=True, drop_rate=0.0,
        decoder_dim=cfg.mae_decoder_dim if with_decoder else 0,
        decoder_depth=cfg.mae_decoder_depth, decoder_heads=cfg.mae_decoder_heads,
    ), cfg)


class CrossAttentionModel(nn.Module):
    """ALBEF / GRIT-VLP: ``visual_encoder`` (ViT), ``text_encoder`` (BERT with fusion layers) and
    the heads of ``vlkit.models.heads.HEADS`` whose ``loss_names`` value is > 0.

    The MLM decoder is tied to the word embeddings, as BERT and ALBEF. There is no pooler:
    ``cls_feats`` is the fused CLS state, where ALBEF's ITM head reads.

    With ``pair_fusion`` (ALBEF's NLVR2 model) one pass reads both images of a pair (``infer``
    with a pair of images or of ``embed_image`` dicts), and the NLVR2 head is ALBEF's
    ``cls_head`` on the fused CLS (``heads.pair_classifier``) instead of the two-pass classifier.

    ELIP (``img_prune``) prunes the ViT's patch tokens, scored against the unimodal text [CLS]
    (the text-only layers' output, as ELIP-ALBEF) of the caption the image is fused with, or
    against the image CLS alone when ``embed_image`` gets no text. The momentum model stays full
    length (``vlkit.models.momentum``).
    """

    vision_tower_prefix = "visual_encoder."
    """Where vision-tower checkpoints (timm, MAE, DeiT) load."""

    def __init__(self, cfg: Any):
        super().__init__()
        self.hidden_size = cfg.hidden_size
        self.num_layers = cfg.num_layers
        self.mask_ratio = cfg.mask_ratio
        self.patch_drop = bool(cfg.mae_patch_drop)
        check_no_patch_dropping(cfg, self.patch_drop)
        self.pair_fusion = bool(cfg.pair_fusion)
        self.visual_encoder = build_albef_vit(cfg)
        self.text_encoder = BertFusionEncoder(cfg, image_width=cfg.hidden_size)
        heads = build_heads(cfg, self.feature_width)
        if self.pair_fusion and "nlvr2_classifier" in heads:  # one paired pass, its fused CLS
            heads["nlvr2_classifier"] = pair_classifier(self.hidden_size)
        for name, head in heads.items():
            self.add_module(name, head)
        if hasattr(self, "mlm_score"):
            self.mlm_score.decoder.weight = self.text_encoder.embeddings.word_embeddings.weight

    @property
    def feature_width(self) -> int:
        """Width of ``cls_feats`` (what task heads take)."""
        return self.hidden_size

    def embed_image(self, image: torch.Tensor, image_token_type_idx: int = 1, mask_image: bool | None = None,
                    text_ids: torch.Tensor | None = None,
                    text_masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The ViT's output tokens (B, 1 + K, D) with ``masks`` and, when patches were dropped,
        ``mae_mask`` / ``mae_ids_restore``. ``image_token_type_idx`` does not apply (no type
        embeddings on image tokens in this family). ``text_ids`` / ``text_masks``: the caption
        whose unimodal [CLS] ELIP scores the patches against, read only when the ViT prunes."""
        text_cls = None
        if text_ids is not None and self.visual_encoder.prunes():
            text_cls = self.text_encoder.encode_text(text_ids, text_masks)[:, 0]
        return self._embed_image(image, mask_image, text_cls)

    def _embed_image(self, image: torch.Tensor, mask_image: bool | None,
                     text_cls: torch.Tensor | None) -> dict[str, torch.Tensor]:
        drop = self.patch_drop if mask_image is None else mask_image
        tokens, mae_mask, ids_restore = self.visual_encoder.embed(image, self.mask_ratio if drop else 0.0)
        tokens = self.visual_encoder.encode(tokens, image_start=0, text_cls=text_cls)
        out = {"tokens": tokens, "masks": torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)}
        if mae_mask is not None:
            out["mae_mask"], out["mae_ids_restore"] = mae_mask, ids_restore
        return out

    def infer(self, text_ids: torch.Tensor, text_masks: torch.Tensor, image: torch.Tensor | None = None,
              image_token_type_idx: int = 1, mask_image: bool | None = None,
              image_embeds: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Fused features, with the same inputs and outputs as ``SingleStreamModel.infer``:
        ``text_feats`` (fused text states), ``image_feats`` (ViT states), ``cls_feats`` and
        ``raw_cls_feats`` (both the fused CLS), masks, and the MAE entries when patches were dropped.

        A ``pair_fusion`` model takes both images of each pair: ``image`` as a pair of (B, 3, S, S)
        tensors or ``image_embeds`` as a pair of ``embed_image`` dicts (``embed_image_pair``);
        ``image_feats`` and ``image_masks`` are then pairs too."""
        if (image is None) == (image_embeds is None):
            raise ValueError("give exactly one of image and image_embeds")
        given = image if image is not None else image_embeds
        if isinstance(given, (list, tuple)) != self.pair_fusion:
            if self.pair_fusion:
                raise ValueError("this model fuses a pair of images per text (pair_fusion=True): give "
                                 "image=(image_0, image_1) or image_embeds=[embeds_0, embeds_1]")
            raise ValueError("a pair of images needs the paired encoder: build the model with pair_fusion=True")
        if self.pair_fusion:
            return self._infer_pair(text_ids, text_masks, image, mask_image, image_embeds)
        text = None
        if image_embeds is None:
            text_cls = None
            if self.visual_encoder.prunes():  # ELIP: the text first, its [CLS] scores the patches
                text = self.text_encoder.encode_text(text_ids, text_masks)
                text_cls = text[:, 0]
            image_embeds = self._embed_image(image, mask_image, text_cls)
        image_masks = image_embeds["masks"].to(text_masks.dtype)
        if text is None:
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

    def embed_image_pair(self, first: torch.Tensor, second: torch.Tensor, mask_image: bool | None = None,
                         text_ids: torch.Tensor | None = None,
                         text_masks: torch.Tensor | None = None) -> list[dict[str, torch.Tensor]]:
        """Both images of each pair through the ViT as one batch of 2B (as ALBEF), split back into
        ``[embeds of image 0, embeds of image 1]`` (``embed_image`` dicts); ELIP scores both
        images against the same caption."""
        if text_ids is not None:
            text_ids, text_masks = torch.cat([text_ids, text_ids]), torch.cat([text_masks, text_masks])
        both = self.embed_image(torch.cat([first, second]), mask_image=mask_image, text_ids=text_ids,
                                text_masks=text_masks)
        size = first.shape[0]
        return [{key: value[:size] for key, value in both.items()},
                {key: value[size:] for key, value in both.items()}]

    def _infer_pair(self, text_ids: torch.Tensor, text_masks: torch.Tensor, image: Any,
                    mask_image: bool | None, image_embeds: Any) -> dict[str, torch.Tensor]:
        """``infer`` of a paired model: fusion layer pairs attend to image 0, then image 1."""
        views = list(image_embeds) if image_embeds is not None else list(image)
        if len(views) != 2:
            raise ValueError(f"a paired model fuses 2 images per text; got {len(views)}")
        if image_embeds is None:
            views = self.embed_image_pair(*views, mask_image=mask_image, text_ids=text_ids, text_masks=text_masks)
        tokens = [view["tokens"] for view in views]
        image_masks = [view["masks"].to(text_masks.dtype) for view in views]
        text = self.text_encoder.encode_text(text_ids, text_masks)
        fused = self.text_encoder.fuse(text, text_masks, tokens, image_masks)
        return {
            "text_feats": fused, "image_feats": tokens, "cls_feats": fused[:, 0],
            "raw_cls_feats": fused[:, 0], "text_masks": text_masks, "image_masks": image_masks,
        }

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

    def adapt_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A converted whole-model checkpoint fitted to this variant (``load_checkpoint`` calls it):
        parts this model has and the checkpoint lacks are filled from parts it has."""
        if hasattr(self, "text_decoder"):  # before pairing: the decoder copies the checkpoint's own layers
            state = answer_decoder_from_encoder(state, self.text_encoder.fusion_layer,
                                                len(self.text_decoder.encoder.layer))
        if self.pair_fusion:  # a 12-layer (unpaired) checkpoint fills both layers of each pair
            state = pair_fusion_layers(state, self.text_encoder.fusion_layer, self.num_layers)
        return state

    def expand_token_types(self, rows: int) -> None:
        """Nothing to grow: image tokens carry no type embeddings in this family."""
