"""What every task on the Arrow datasets shares: tokenizer, datasets, collator and the model."""
from __future__ import annotations

from functools import cached_property
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from vlkit.data.collate import Collator
from vlkit.data.datasets import build_datasets
from vlkit.data.tokenizer import load_tokenizer
from vlkit.models.build import build_model
from vlkit.objectives import LossOutput
from vlkit.tasks.base import Task


def term_loss(value: LossOutput | torch.Tensor) -> torch.Tensor:
    """The loss of a term's output (a ``LossOutput`` or a bare loss tensor)."""
    return value.loss if isinstance(value, LossOutput) else value


def logged_terms(out: dict[str, LossOutput | torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{term}_loss`` of every term and ``{term}_accuracy`` of those with one, detached."""
    logged = {}
    for name, value in out.items():
        logged[f"{name}_loss"] = term_loss(value).detach()
        if isinstance(value, LossOutput):
            logged[f"{name}_accuracy"] = value.accuracy.detach()
    return logged


class ArrowTask(Task):
    """A task whose data are the ``cfg.datasets`` Arrow tables and whose model is ``cfg.model``."""

    @cached_property
    def tokenizer(self):
        """``cfg.tokenizer``, loaded on first use and checked to hold ``vocab_size`` tokens."""
        tokenizer = load_tokenizer(self.cfg.tokenizer)
        if len(tokenizer) != self.cfg.vocab_size:
            raise ValueError(
                f"tokenizer {self.cfg.tokenizer!r} has {len(tokenizer)} tokens but vocab_size="
                f"{self.cfg.vocab_size}; set vocab_size={len(tokenizer)} (or leave it out: it follows the tokenizer)"
            )
        return tokenizer

    def build_model(self) -> nn.Module:
        return build_model(self.cfg)

    def build_dataset(self, split: str) -> Dataset | None:
        return build_datasets(list(self.cfg.datasets), split, self.cfg, self.tokenizer)

    def collate_fn(self, split: str) -> Callable[[list], dict]:
        return Collator(self.tokenizer, self.cfg.mlm_prob, self.cfg.whole_word_masking)
