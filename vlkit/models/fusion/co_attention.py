"""Co-attention fusion (METER, meter_elip.md §2): a CLIP-ViT (or Swin) image tower and a
RoBERTa/BERT text tower, each projected to ``hidden_size`` and typed (text 0, image 1, NLVR2's
second image 2), then
``num_top_layer`` co-attention layers per stream, the two streams updated in parallel.

A co-attention layer is BERT's post-LN self-attention, cross-attention to the other stream and
FFN: the cross-attention family's ``BertFusionLayer``, whose sublayer names are METER's
``BertCrossLayer`` ones. Module names follow METER (``vit_model``, ``text_transformer``,
``cross_modal_{text,image}_{transform,layers,pooler}``, ``token_type_embeddings``, heads), except
that the CLIP tower's keys lack METER's ``visual.`` level (``models/checkpoints/meter.py`` maps it).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlkit.models.backbones.clip_vit import build_clip_vit
from vlkit.models.backbones.hf_text import build_text_tower
from vlkit.models.backbones.swin import SwinVisionTower, build_swin_tower, is_swin
from vlkit.models.fusion.cross_attention import BertFusionLayer
from vlkit.models.heads import Pooler, bert_init, build_heads
from vlkit.models.token_reduction import schedule_from_config

VIT_EMBEDDING_PARTS = ("conv1", "class_embedding", "positional_embedding", "ln_pre")


class CoAttentionModel(nn.Module):
    """METER: ``vit_model`` (``ClipVisionTower``; token pruning hooks into its ``run_blocks``),
    ``text_transformer`` (HF RoBERTa/BERT), the cross-modal transforms, layers and poolers,
    ``token_type_embeddings`` (3 rows when ``loss_names.nlvr2`` > 0) and the heads of
    ``vlkit.models.heads.HEADS`` whose ``loss_names`` value is > 0 (MLM untied, as METER).

    ``cls_feats`` is the concatenation of the text and image poolers (2 · ``hidden_size``).
    """

    lr_head_name_parts = ("vqa_classifier", "nlvr2_classifier", "mlm_score", "itm_score", "snli_classifier")
    """Parameters trained at ``lr_mult_head`` (METER's ``head_names``)."""
    lr_cross_modal_name_parts = ("cross_modal",)
    """Parameters trained at ``lr_mult_cross_modal``: transforms, co-attention layers, poolers."""

    def __init__(self, cfg: Any):
        super().__init__()
        self.hidden_size = cfg.hidden_size
        self.vit_model = self._vision_tower(cfg)
        self.text_transformer = build_text_tower(cfg)
        self.num_layers = max(len(self.vit_model.blocks), self.text_transformer.config.num_hidden_layers)
        self.cross_modal_text_transform = nn.Linear(cfg.input_text_embed_size, cfg.hidden_size)
        self.cross_modal_image_transform = nn.Linear(cfg.input_image_embed_size, cfg.hidden_size)
        token_types = 3 if cfg.loss_names.get("nlvr2", 0) > 0 else 2
        self.token_type_embeddings = nn.Embedding(token_types, cfg.hidden_size)
        intermediate = int(cfg.hidden_size * cfg.mlp_ratio)
        self.cross_modal_text_layers, self.cross_modal_image_layers = (
            nn.ModuleList(
                BertFusionLayer(cfg.hidden_size, cfg.num_heads, intermediate, cfg.drop_rate, cfg.hidden_size)
                for _ in range(cfg.num_top_layer)
            )
            for _ in range(2)
        )
        self.cross_modal_text_pooler = Pooler(cfg.hidden_size)
        self.cross_modal_image_pooler = Pooler(cfg.hidden_size)
        for name, module in self.named_children():
            if name.startswith("cross_modal_") or name == "token_type_embeddings":
                module.apply(bert_init)
        for name, head in build_heads(cfg, self.feature_width).items():
            self.add_module(name, head)

    @staticmethod
    def _vision_tower(cfg: Any) -> nn.Module:
        """The CLIP ViT tower, or a Swin tower when ``vit`` names one (swin32_* presets)."""
        if not is_swin(cfg.vit):
            return build_clip_vit(cfg)
        if schedule_from_config(cfg) is not None:
            raise ValueError(f"vit={cfg.vit!r}: a Swin tower cannot prune tokens (ELIP needs a CLS token and "
                             "one token sequence); set img_prune.begin_layer=[] or use clip16 / clip32")
        return build_swin_tower(cfg)

    @property
    def is_swin(self) -> bool:
        return isinstance(self.vit_model, SwinVisionTower)

    def pooled_image_token(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1, H): the CLS token of a CLIP tower, the mean token of a Swin tower (METER's avgpool)."""
        return image_tokens.mean(dim=1, keepdim=True) if self.is_swin else image_tokens[:, :1]

    def adapt_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A Swin tower's keys in the original Swin layout (METER's checkpoints) into timm's, the
        relative-position tables resized to this window (``SwinVisionTower.adapt_state``)."""
        if not self.is_swin:
            return state
        prefix = "vit_model."
        tower = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        rest = {key: value for key, value in state.items() if not key.startswith(prefix)}
        return {**rest, **{prefix + key: value for key, value in self.vit_model.adapt_state(tower).items()}}

    @property
    def feature_width(self) -> int:
        """Width of ``cls_feats`` (what task heads take): both poolers, 2 · ``hidden_size``."""
        return 2 * self.hidden_size

    def encode_text(self, text_ids: torch.Tensor, text_masks: torch.Tensor) -> torch.Tensor:
        """The text tower's last hidden states (B, L, text width)."""
        # a 4-D boolean mask, used as given: the 2-D form makes transformers read it on the host
        # (to skip an all-ones mask), a synchronisation per step
        length = text_ids.shape[1]
        mask = text_masks.bool()[:, None, None, :].expand(-1, 1, length, -1)
        return self.text_transformer(input_ids=text_ids, attention_mask=mask).last_hidden_state

    def embed_image(self, image: torch.Tensor, image_token_type_idx: int = 1, mask_image: bool | None = None,
                    text_cls: torch.Tensor | None = None, text_ids: torch.Tensor | None = None,
                    text_masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Image tokens ready for fusion: the CLIP tower's output (conditioned on the caption
        when token pruning is on: its text-tower first token, given as ``text_cls`` or computed
        from ``text_ids`` / ``text_masks``), ``cross_modal_image_transform``, plus token type
        ``image_token_type_idx``. Returns ``tokens`` (B, N, H) and ``masks`` (B, N), batch first,
        so a retrieval evaluator can compute it once per image. This family never drops patches
        (``mask_image`` must be falsy)."""
        if mask_image:
            raise ValueError("the co_attention family does not drop patches: set itm_patch_drop and mae_patch_drop off")
        if text_cls is None and text_ids is not None:
            text_cls = self.encode_text(text_ids, text_masks)[:, 0]
        tokens = self.cross_modal_image_transform(self.vit_model(image, text_cls=text_cls))
        types = torch.full(tokens.shape[:2], image_token_type_idx, device=tokens.device)
        return {
            "tokens": tokens + self.token_type_embeddings(types),
            "masks": torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device),
        }

    def infer(self, text_ids: torch.Tensor, text_masks: torch.Tensor, image: torch.Tensor | None = None,
              image_token_type_idx: int = 1, mask_image: bool | None = None,
              image_embeds: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Fused features of a text batch (B, L) and an image batch (B, 3, S, S), or of the
        image's ``embed_image`` output given as ``image_embeds`` instead of ``image``.

        The text is encoded first; its first-token state (before ``cross_modal_text_transform``)
        goes to the vision tower as ``text_cls``. Returns ``text_feats`` (B, L, H),
        ``image_feats`` (B, N, H), ``cls_feats`` (B, 2H), ``text_masks`` and ``image_masks``.
        """
        if (image is None) == (image_embeds is None):
            raise ValueError("give exactly one of image and image_embeds")
        text_states = self.encode_text(text_ids, text_masks)
        text = self.cross_modal_text_transform(text_states)
        text = text + self.token_type_embeddings(torch.zeros_like(text_ids))
        if image_embeds is None:
            image_embeds = self.embed_image(image, image_token_type_idx, mask_image, text_cls=text_states[:, 0])
        image_tokens = image_embeds["tokens"]
        image_masks = image_embeds["masks"].to(text_masks.dtype)
        for text_layer, image_layer in zip(self.cross_modal_text_layers, self.cross_modal_image_layers):
            text, image_tokens = (text_layer(text, text_masks, image_tokens, image_masks),
                                  image_layer(image_tokens, image_masks, text, text_masks))
        image_cls = self.cross_modal_image_pooler(self.pooled_image_token(image_tokens))
        cls_feats = torch.cat([self.cross_modal_text_pooler(text), image_cls], dim=-1)
        return {"text_feats": text, "image_feats": image_tokens, "cls_feats": cls_feats,
                "text_masks": text_masks, "image_masks": image_masks}

    def text_only_feats(self, text_ids: torch.Tensor, text_masks: torch.Tensor) -> torch.Tensor:
        """The text tower's first token, projected to ``hidden_size`` (B, H): unimodal text features."""
        return self.cross_modal_text_transform(self.encode_text(text_ids, text_masks)[:, 0])

    def image_only_feats(self, image_embeds: dict[str, torch.Tensor]) -> torch.Tensor:
        """The projected CLIP CLS token (Swin: mean token) of an ``embed_image`` output (B, H):
        unimodal image features."""
        return self.pooled_image_token(image_embeds["tokens"])[:, 0]

    def layer_id(self, param_name: str) -> int:
        """Depth for layer-wise LR decay: embeddings 0, ViT block / text layer i → i + 1, the
        fusion part and heads ``num_layers`` + 1."""
        parts = param_name.split(".")
        if parts[0] == "vit_model" and self.is_swin:
            if parts[1] == "layers" and parts[3] == "blocks":
                return self.vit_model.block_index(int(parts[2]), int(parts[4])) + 1
            if parts[1] == "layers":  # a stage's downsampling: the depth of that stage's first block
                return self.vit_model.block_index(int(parts[2]), 0) + 1
            return 0 if parts[1] == "patch_embed" else self.num_layers
        if parts[0] == "vit_model":
            if parts[1] == "transformer":
                return int(parts[3]) + 1
            return 0 if parts[1] in VIT_EMBEDDING_PARTS else self.num_layers
        if parts[0] == "text_transformer":
            return 0 if parts[1] == "embeddings" else int(parts[3]) + 1
        return self.num_layers + 1
