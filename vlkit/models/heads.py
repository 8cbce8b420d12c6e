"""Prediction heads on the fused features, with the reference's module names.

``HEADS`` maps a ``loss_names`` entry to (attribute name, builder); a model builds the head when
that entry is > 0. A builder takes the config and the width of the model's pooled features
(``cls_feats``: ``hidden_size``, or twice that in METER's co-attention family), so one head serves
every model family. A new head is a module plus one entry here.
"""
from __future__ import annotations

from typing import Any, Callable

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.bert.modeling_bert import BertConfig, BertPredictionHeadTransform


def bert_init(module: nn.Module) -> None:
    """BERT-style init (``apply`` it): Linear/Embedding weights N(0, 0.02), biases 0, LayerNorm 1/0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class Pooler(nn.Module):
    """tanh(Linear) of the first token: (B, L, H) → (B, H)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.apply(bert_init)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class MLMHead(nn.Module):
    """BERT prediction head: dense, GELU, LayerNorm (eps 1e-12), untied decoder plus a bias."""

    def __init__(self, hidden_size: int, vocab_size: int):
        super().__init__()
        config = BertConfig(hidden_size=hidden_size, vocab_size=vocab_size)
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(hidden_size, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(bert_init)

    def forward(self, text_feats: torch.Tensor) -> torch.Tensor:
        """(B, L, H) → logits (B, L, vocab_size)."""
        return self.decoder(self.transform(text_feats)) + self.bias


class ITMHead(nn.Module):
    """Image-text match logits (B, 2) from the pooled features; index 1 = matched."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.fc = nn.Linear(hidden_size, 2)
        self.apply(bert_init)

    def forward(self, cls_feats: torch.Tensor) -> torch.Tensor:
        return self.fc(cls_feats)


def classifier(in_features: int, hidden: int, num_classes: int) -> nn.Sequential:
    """The reference's task classifier: Linear, LayerNorm, GELU, Linear (keys ``0.*`` .. ``3.*``)."""
    head = nn.Sequential(
        nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, num_classes)
    )
    head.apply(bert_init)
    return head


def pair_classifier(width: int, num_classes: int = 2) -> nn.Sequential:
    """ALBEF's NLVR2 ``cls_head`` on the fused CLS of a paired pass: Linear(H, H), ReLU,
    Linear(H, classes) (keys ``0.*``, ``2.*``), PyTorch's default init as ALBEF."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, num_classes))


class ITCHead(nn.Module):
    """Image-text contrastive projections: ``text_proj`` / ``image_proj`` (Linear to
    ``itc_embed_dim``, L2-normalised) and a learnable ``logit_scale`` (log 1/temperature; 0.07
    as CLIP and ALBEF)."""

    def __init__(self, width: int, embed_dim: int, temperature: float = 0.07):
        super().__init__()
        self.text_proj = nn.Linear(width, embed_dim)
        self.image_proj = nn.Linear(width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.text_proj.apply(bert_init)
        self.image_proj.apply(bert_init)

    def embed_text(self, text_feats: torch.Tensor) -> torch.Tensor:
        """(B, width) → unit vectors (B, embed_dim)."""
        return F.normalize(self.text_proj(text_feats), dim=-1)

    def embed_image(self, image_feats: torch.Tensor) -> torch.Tensor:
        """(B, width) → unit vectors (B, embed_dim)."""
        return F.normalize(self.image_proj(image_feats), dim=-1)


def init_rank_from_itm(model: nn.Module) -> None:
    """Copy the ITM head's "match" row (index 1) into ``rank_output`` and freeze ``itm_score``
    (VLC/ViLT's IRTR initialisation, fact sheet §2.3)."""
    if not (hasattr(model, "rank_output") and hasattr(model, "itm_score")):
        raise ValueError(
            "retrieval fine-tuning initialises rank_output from the ITM head: set loss_names.itm "
            "> 0 (the reference presets use 0.5, which builds the head without training it)"
        )
    with torch.no_grad():
        model.rank_output.weight.copy_(model.itm_score.fc.weight[1:2])
        model.rank_output.bias.copy_(model.itm_score.fc.bias[1:2])
    for param in model.itm_score.parameters():
        param.requires_grad_(False)


HEADS: dict[str, tuple[str, Callable[[Any, int], nn.Module]]] = {
    # MLM reads token states and ITC unimodal features, both hidden_size wide
    "mlm": ("mlm_score", lambda cfg, width: MLMHead(cfg.hidden_size, cfg.vocab_size)),
    "itm": ("itm_score", lambda cfg, width: ITMHead(width)),
    "itc": ("itc_head", lambda cfg, width: ITCHead(cfg.hidden_size, cfg.itc_embed_dim, cfg.itc_temperature)),
    # classifiers are 2 * hidden_size wide inside (ViLT: 768 → 1536; METER: 1536 → 1536)
    "vqa": ("vqa_classifier", lambda cfg, width: classifier(width, 2 * cfg.hidden_size, cfg.vqav2_label_size)),
    "nlvr2": ("nlvr2_classifier", lambda cfg, width: classifier(2 * width, 2 * cfg.hidden_size, 2)),
    "snli": ("snli_classifier", lambda cfg, width: classifier(width, 2 * cfg.hidden_size, 3)),
    "irtr": ("rank_output", lambda cfg, width: _bert_linear(width, 1)),
    # ALBEF's text assignment (NLVR2 pre-training): which slot holds the text's image, or neither
    "nlvr_ta": ("ta_head", lambda cfg, width: nn.Linear(width, 3)),
    # ALBEF's VQA answer decoder over the fused question states (width hidden_size)
    "vqa_decoder": ("text_decoder", lambda cfg, width: _answer_decoder(cfg)),
}


def _bert_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    layer.apply(bert_init)
    return layer


def _answer_decoder(cfg: Any) -> nn.Module:
    # imported here: the decoder is built from the cross-attention family's layers, which import this module
    from vlkit.models.answer_decoder import AnswerDecoder

    return AnswerDecoder(cfg)


def build_heads(cfg: Any, width: int) -> dict[str, nn.Module]:
    """{attribute name: head} for every ``HEADS`` entry whose ``cfg.loss_names`` value is > 0;
    ``width`` is the size of the model's pooled features."""
    return {
        attribute: build(cfg, width)
        for task, (attribute, build) in HEADS.items()
        if cfg.loss_names.get(task, 0) > 0
    }
