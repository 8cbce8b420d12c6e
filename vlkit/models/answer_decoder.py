"""ALBEF's VQA answer decoder (``text_decoder``, fact sheet grit_albef.md §2.6).

A BERT causal decoder: its own embeddings, ``answer_decoder_layers`` layers of causal
self-attention, cross-attention to the question states (the fused text states of the model's
``infer``) and FFN, all post-LN, and an LM head tied to its own word embeddings. Key names are
BERT's (``embeddings.*``, ``encoder.layer.N.{attention,crossattention,intermediate,output}.*``)
plus ``lm_head.*``; ``models/checkpoints/albef.py`` maps ALBEF's ``text_decoder.bert.*`` and
``text_decoder.cls.predictions.*`` onto them.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlkit.models.fusion.cross_attention import BertFusionLayer, LayerStack, bert_embeddings, text_positions
from vlkit.models.heads import MLMHead, bert_init


class AnswerDecoder(nn.Module):
    """Causal BERT over answer tokens, cross-attending to question states of width ``hidden_size``."""

    def __init__(self, cfg: Any):
        super().__init__()
        if cfg.answer_decoder_layers < 1:
            raise ValueError(f"answer_decoder_layers={cfg.answer_decoder_layers}: the answer decoder needs >= 1 layer")
        self.max_len = text_positions(cfg)
        self.embeddings = bert_embeddings(cfg)
        intermediate = int(cfg.hidden_size * cfg.mlp_ratio)
        self.encoder = LayerStack([
            BertFusionLayer(cfg.hidden_size, cfg.num_heads, intermediate, cfg.drop_rate, cfg.hidden_size, causal=True)
            for _ in range(cfg.answer_decoder_layers)
        ])
        self.lm_head = MLMHead(cfg.hidden_size, cfg.vocab_size)
        self.apply(bert_init)
        self.lm_head.decoder.weight = self.embeddings.word_embeddings.weight

    def forward(self, answer_ids: torch.Tensor, answer_masks: torch.Tensor, question_states: torch.Tensor,
                question_masks: torch.Tensor) -> torch.Tensor:
        """Decoder states (N, T, H) of (N, T) answer tokens over (N, Lq, H) question states; position
        t sees answer tokens <= t and every real question token."""
        if answer_ids.shape[1] > self.max_len:
            raise ValueError(
                f"answers of {answer_ids.shape[1]} tokens but the decoder's position table holds "
                f"{self.max_len}; truncate answers to {self.max_len} tokens"
            )
        x = self.embeddings(input_ids=answer_ids)
        for layer in self.encoder.layer:
            x = layer(x, answer_masks, question_states, question_masks)
        return x

    def sequence_log_probs(self, answer_ids: torch.Tensor, answer_masks: torch.Tensor,
                           question_states: torch.Tensor, question_masks: torch.Tensor) -> torch.Tensor:
        """log p(answer | question) (N,): the sum, over the real tokens after the start token, of
        each token's log-probability given the tokens before it (teacher forcing; pads ignored).
        The LM head runs only where a real token is predicted."""
        hidden = self(answer_ids, answer_masks, question_states, question_masks)
        predicted = answer_masks[:, 1:].bool()
        rows = predicted.nonzero(as_tuple=True)[0]
        logits = self.lm_head(hidden[:, :-1][predicted]).float()
        targets = answer_ids[:, 1:][predicted]
        token_log_probs = logits.gather(1, targets[:, None]).squeeze(1) - logits.logsumexp(dim=-1)
        out = torch.zeros(len(answer_ids), dtype=token_log_probs.dtype, device=answer_ids.device)
        return out.index_add(0, rows, token_log_probs)
