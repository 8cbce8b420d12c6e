"""CLIP-ViL (``model=clipvil``): a trainable CLIP ResNet whose grid cells become visual tokens of a
BERT encoder (fact sheet clipvil.md §2).

Published layout (the default): one BERT over [text tokens; visual tokens], ``num_layers`` deep.
A visual token is grid cell + row/column embedding (in CLIP feature space), then ``visual_proj``
(Linear → LayerNorm → dropout); it gets no BERT position or type embedding. With
``cross_layers`` > 0 the encoder is LXMERT's two-stream one instead: ``num_layers`` text layers,
``relation_layers`` visual layers, then ``cross_layers`` cross-modality layers.

Grid cells that cover only padding are masked out of attention unless ``attend_padded_cells``
(the reference attends to them). The pooler has no tanh, as published. Heads: ``mlm_score``
(decoder tied to the word embeddings), ``itm_score``, ``qa_head`` (``qa_label_size`` answers) and
``vqa_classifier``, the last two LXMERT's Linear → GELU → LayerNorm → Linear.
``models/checkpoints/clipvil.py`` maps the reference's checkpoints onto these names.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from vlkit.models.backbones.clip_resnet import (
    ClipResNetGrid, GridPositionEmbedding, cell_mask, grid_tokens, named_resnet, sub_sample_cells,
)
from vlkit.models.fusion.cross_attention import (
    BERT_LAYER_NORM_EPS, AttentionBlock, BertFusionLayer, Intermediate, LayerStack, ResidualOutput,
    bert_embeddings, text_positions,
)
from vlkit.models.heads import ITMHead, MLMHead, bert_init

log = logging.getLogger(__name__)

BACKBONE_PREFIX = "backbone."


def answer_head(width: int, num_answers: int) -> nn.Sequential:
    """LXMERT's answer head on the pooled features: Linear(H, 2H), GELU, LayerNorm, Linear(2H, N)
    (keys ``0.*``, ``2.*``, ``3.*``)."""
    head = nn.Sequential(
        nn.Linear(width, 2 * width), nn.GELU(), nn.LayerNorm(2 * width, eps=BERT_LAYER_NORM_EPS),
        nn.Linear(2 * width, num_answers),
    )
    head.apply(bert_init)
    return head


class VisualProjection(nn.Module):
    """Grid features (C wide) to the encoder's width: ``fc``, ``norm`` (eps 1e-12), dropout."""

    def __init__(self, channels: int, hidden: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(channels, hidden)
        self.norm = nn.LayerNorm(hidden, eps=BERT_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.norm(self.fc(tokens)))


class LxmertCrossLayer(nn.Module):
    """LXMERT's cross-modality layer: one cross-attention block used in both directions, then
    self-attention and an FFN per modality (post-LN residuals)."""

    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float):
        super().__init__()
        self.cross_attention = AttentionBlock(hidden, heads, hidden, dropout)
        self.text_self_attention = AttentionBlock(hidden, heads, hidden, dropout)
        self.image_self_attention = AttentionBlock(hidden, heads, hidden, dropout)
        self.text_intermediate = Intermediate(hidden, intermediate)
        self.text_output = ResidualOutput(intermediate, hidden, dropout)
        self.image_intermediate = Intermediate(hidden, intermediate)
        self.image_output = ResidualOutput(intermediate, hidden, dropout)

    def forward(self, text, text_masks, image, image_masks) -> tuple[torch.Tensor, torch.Tensor]:
        text, image = self.cross_attention(text, image, image_masks), self.cross_attention(image, text, text_masks)
        text = self.text_self_attention(text, text, text_masks)
        image = self.image_self_attention(image, image, image_masks)
        return (self.text_output(self.text_intermediate(text), text),
                self.image_output(self.image_intermediate(image), image))


class ClipVilEncoder(LayerStack):
    """``layer`` (single stream: the joint layers; LXMERT: the text layers), ``relation_layers``
    and ``cross_layers`` (LXMERT only)."""

    def __init__(self, cfg: Any):
        intermediate = int(cfg.hidden_size * cfg.mlp_ratio)

        def self_layer() -> BertFusionLayer:
            return BertFusionLayer(cfg.hidden_size, cfg.num_heads, intermediate, cfg.drop_rate, None)

        super().__init__([self_layer() for _ in range(cfg.num_layers)])
        self.two_stream = cfg.cross_layers > 0
        if cfg.relation_layers and not self.two_stream:
            raise ValueError(f"relation_layers={cfg.relation_layers} needs cross_layers > 0 (LXMERT's layout); "
                             "the published single-stream model sets both to 0")
        self.relation_layers = nn.ModuleList([self_layer() for _ in range(cfg.relation_layers)])
        self.cross_layers = nn.ModuleList([
            LxmertCrossLayer(cfg.hidden_size, cfg.num_heads, intermediate, cfg.drop_rate)
            for _ in range(cfg.cross_layers)
        ])

    def forward(self, text, text_masks, image, image_masks) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.two_stream:
            x, masks = torch.cat([text, image], dim=1), torch.cat([text_masks, image_masks], dim=1)
            for layer in self.layer:
                x = layer(x, masks)
            return x[:, :text.shape[1]], x[:, text.shape[1]:]
        for layer in self.layer:
            text = layer(text, text_masks)
        for layer in self.relation_layers:
            image = layer(image, image_masks)
        for layer in self.cross_layers:
            text, image = layer(text, text_masks, image, image_masks)
        return text, image


class ClipVilModel(nn.Module):
    """CLIP-ViL: ``backbone`` (CLIP ResNet), ``grid_pos``, ``visual_proj``, ``text_embeddings``,
    ``encoder``, ``pooler`` and the heads switched on by ``loss_names`` (mlm, itm, vqa) and
    ``qa_label_size``."""

    visual_backbone_prefix = BACKBONE_PREFIX

    def __init__(self, cfg: Any):
        super().__init__()
        self.hidden_size = cfg.hidden_size
        self.num_layers = cfg.num_layers
        self.max_text_len = text_positions(cfg)
        self.sub_sampling, self.sub_feat_num = cfg.sub_sampling, cfg.sub_feat_num
        self.attend_padded_cells = cfg.attend_padded_cells
        self.answer_transplant: tuple[list[str], list[str]] | None = None
        """(QA answers of the checkpoint, normalised VQA answers): set it to have ``adapt_checkpoint``
        fill ``vqa_classifier`` from a checkpoint's ``qa_head``."""

        self.backbone = ClipResNetGrid.from_config(cfg)
        channels = self.backbone.out_channels
        self.grid_pos = GridPositionEmbedding(cfg.pos_num, channels) if cfg.use_positional_embedding else None
        self.visual_proj = VisualProjection(channels, cfg.hidden_size, cfg.drop_rate)
        self.text_embeddings = bert_embeddings(cfg)
        for table in (self.text_embeddings.position_embeddings, self.text_embeddings.token_type_embeddings):
            table.padding_idx = 0  # LXMERT creates them with padding_idx=0: row 0 never trains (clipvil.md §2.6)
        self.encoder = ClipVilEncoder(cfg)
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        for module in (self.visual_proj, self.text_embeddings, self.encoder, self.pooler):
            module.apply(bert_init)
        if self.grid_pos is not None:
            self.grid_pos.apply(bert_init)
        if cfg.loss_names.get("mlm", 0) > 0:
            self.mlm_score = MLMHead(cfg.hidden_size, cfg.vocab_size)
            self.mlm_score.decoder.weight = self.text_embeddings.word_embeddings.weight
        if cfg.loss_names.get("itm", 0) > 0:
            self.itm_score = ITMHead(cfg.hidden_size)
        if cfg.qa_label_size > 0:
            self.qa_head = answer_head(cfg.hidden_size, cfg.qa_label_size)
        if cfg.loss_names.get("vqa", 0) > 0:
            self.vqa_classifier = answer_head(cfg.hidden_size, cfg.vqav2_label_size)
        if cfg.clip_freeze:
            self.backbone.requires_grad_(False)

    @property
    def feature_width(self) -> int:
        """Width of ``cls_feats``."""
        return self.hidden_size

    def embed_image(self, image: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Visual tokens of a (B, 3, H, W) batch whose ``pixel_mask`` (B, H, W) is 1 on real
        pixels (None: all real). Returns ``tokens`` (B, K, hidden) and ``masks`` (B, K): K is
        ``sub_feat_num`` when sub-sampling (in training), else every cell."""
        grid = self.backbone(image)
        rows, cols = grid.shape[-2:]
        if self.grid_pos is not None:
            grid = self.grid_pos(grid)
        tokens = grid_tokens(grid)
        if pixel_mask is None:
            valid = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        else:
            valid = cell_mask(pixel_mask, rows, cols).flatten(1)
        if self.sub_sampling and self.training:
            tokens, valid = sub_sample_cells(tokens, valid, self.sub_feat_num, prefer_valid=not self.attend_padded_cells)
        if self.attend_padded_cells:
            valid = torch.ones_like(valid)
        tokens = self.visual_proj(tokens.to(self.visual_proj.fc.weight.dtype))
        return {"tokens": tokens, "masks": valid.long()}

    def infer(
        self,
        text_ids: torch.Tensor,
        text_masks: torch.Tensor,
        image: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        image_embeds: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Fused features of texts (B, L) and images (B, 3, H, W), or of ``embed_image``'s output
        given as ``image_embeds``. Returns ``text_feats`` (B, L, H), ``image_feats`` (B, K, H),
        ``cls_feats`` (pooled [CLS], no tanh), ``text_masks`` and ``image_masks``."""
        if (image is None) == (image_embeds is None):
            raise ValueError("give exactly one of image and image_embeds")
        if text_ids.shape[1] > self.max_text_len:
            raise ValueError(f"text_ids has {text_ids.shape[1]} positions but the text embeddings hold "
                             f"{self.max_text_len}; tokenize to at most max_text_len")
        if image_embeds is None:
            image_embeds = self.embed_image(image, pixel_mask)
        text = self.text_embeddings(input_ids=text_ids)
        image_masks = image_embeds["masks"].to(text_masks.dtype)
        text_feats, image_feats = self.encoder(text, text_masks, image_embeds["tokens"], image_masks)
        return {
            "text_feats": text_feats, "image_feats": image_feats, "cls_feats": self.pooler(text_feats[:, 0]),
            "text_masks": text_masks, "image_masks": image_masks,
        }

    def layer_id(self, param_name: str) -> int:
        """Depth for layer-wise LR decay in [0, num_layers + 1]: embeddings and the vision side 0,
        joint (or text) layer i i + 1, everything above num_layers + 1."""
        parts = param_name.split(".")
        if parts[0] in ("backbone", "grid_pos", "visual_proj", "text_embeddings"):
            return 0
        if parts[0] == "encoder" and parts[1] == "layer":
            return int(parts[2]) + 1
        return self.num_layers + 1

    def adapt_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Refuse a checkpoint of another CLIP ResNet; fill ``vqa_classifier`` from ``qa_head``
        when ``answer_transplant`` is set (called by ``load_checkpoint``)."""
        self._check_backbone(state)
        if self.answer_transplant is not None and "qa_head.3.weight" in state and not hasattr(self, "qa_head"):
            from vlkit.models.checkpoints.clipvil import transplant_answer_head

            state, mapped = transplant_answer_head(state, *self.answer_transplant)
            log.info("vqa_classifier: %d of %d answers initialised from the QA head", mapped,
                     len(self.answer_transplant[1]))
        return state

    def _check_backbone(self, state: dict[str, torch.Tensor]) -> None:
        width = state.get(BACKBONE_PREFIX + "conv1.weight")
        channels = state.get("visual_proj.fc.weight")
        found_width = width.shape[0] * 2 if width is not None else None
        found_channels = channels.shape[1] if channels is not None else None
        if found_width in (None, self.backbone.width) and found_channels in (None, self.backbone.out_channels):
            return
        layers = [len({k.split(".")[2] for k in state if k.startswith(f"{BACKBONE_PREFIX}layer{i}.")}) for i in range(1, 5)]
        width = found_width or (found_channels // 32)
        found = named_resnet(layers, width) or f"a ResNet of width {width} ({width * 32}-channel grid)"
        mine = named_resnet(self.backbone.layers, self.backbone.width) or f"width {self.backbone.width}"
        raise ValueError(
            f"the checkpoint was built for clip_model_name={found} but this model is {mine}: "
            f"build the model with that clip_model_name (command line: --clip_model_name {found})"
        )


def build_clipvil(cfg: Any) -> ClipVilModel:
    """The ``clipvil`` family: the model, with ``clip_path``'s CLIP ResNet weights loaded."""
    model = ClipVilModel(cfg)
    if cfg.clip_path:
        model.backbone.load_clip(cfg.clip_path, trust_checkpoint=cfg.trust_checkpoint)
    return model
