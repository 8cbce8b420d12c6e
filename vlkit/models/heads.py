"""Prediction heads on the fused features, with the reference's module names.

``HEADS`` maps a ``loss_names`` entry to (attribute name, builder); a model builds the head when
that entry is > 0. A new head is a module plus one entry here.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
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


HEADS: dict[str, tuple[str, Callable[[Any], nn.Module]]] = {
    "mlm": ("mlm_score", lambda cfg: MLMHead(cfg.hidden_size, cfg.vocab_size)),
    "itm": ("itm_score", lambda cfg: ITMHead(cfg.hidden_size)),
}


def build_heads(cfg: Any) -> dict[str, nn.Module]:
    """{attribute name: head} for every ``HEADS`` entry whose ``cfg.loss_names`` value is > 0."""
    return {
        attribute: build(cfg)
        for task, (attribute, build) in HEADS.items()
        if cfg.loss_names.get(task, 0) > 0
    }
