"""METER's text tower (meter_elip.md §2.3): a transformers ``RobertaModel`` or ``BertModel``,
every layer, last hidden states; loaded from the folder (or cached hub name) that ``tokenizer``
names, as METER does, or built from random weights for CPU runs.

Which of the two: the folder's ``config.json`` (``model_type``), else its
``tokenizer_config.json`` (``tokenizer_class``), else METER's rule: RoBERTa when ``roberta`` is
in the name. The HF pooler is not built (METER never uses it).
"""
from __future__ import annotations

import json
import os
from typing import Any

from transformers import BertConfig, BertModel, PreTrainedModel, RobertaConfig, RobertaModel

TEXT_MODELS = {"roberta": (RobertaModel, RobertaConfig), "bert": (BertModel, BertConfig)}
ROBERTA_POSITION_OFFSET = 2
"""RoBERTa numbers positions from ``pad_token_id + 1`` = 2, so its table has 2 extra rows."""


def _read_json(path: str) -> dict:
    with open(path) as file:
        return json.load(file)


def text_model_kind(name_or_path: str) -> str:
    """``"roberta"`` or ``"bert"`` for a model folder or hub name (see the module docstring)."""
    config_file = os.path.join(name_or_path, "config.json")
    if os.path.isfile(config_file):
        kind = _read_json(config_file).get("model_type", "")
        if kind not in TEXT_MODELS:
            raise ValueError(
                f"{config_file} describes a {kind!r} model; METER's text tower is a RoBERTa or BERT model"
            )
        return kind
    tokenizer_file = os.path.join(name_or_path, "tokenizer_config.json")
    if os.path.isfile(tokenizer_file):
        return "roberta" if "roberta" in _read_json(tokenizer_file).get("tokenizer_class", "").lower() else "bert"
    return "roberta" if "roberta" in name_or_path.lower() else "bert"


def random_text_tower(kind: str, cfg: Any) -> PreTrainedModel:
    """A ``kind`` model with random weights: width ``input_text_embed_size``, ``text_layers``
    layers, one head per 64 channels, ``max_position_embeddings`` position rows (0: enough for
    ``max_text_len`` tokens)."""
    model_class, config_class = TEXT_MODELS[kind]
    width = cfg.input_text_embed_size
    roberta = kind == "roberta"
    config = config_class(
        vocab_size=cfg.vocab_size, hidden_size=width, num_hidden_layers=cfg.text_layers,
        num_attention_heads=max(1, width // 64), intermediate_size=4 * width,
        max_position_embeddings=cfg.max_position_embeddings or cfg.max_text_len + (ROBERTA_POSITION_OFFSET if roberta else 0),
        hidden_dropout_prob=cfg.drop_rate, attention_probs_dropout_prob=cfg.drop_rate,
        pad_token_id=1 if roberta else 0, type_vocab_size=1 if roberta else 2,
    )
    return model_class(config, add_pooling_layer=False)


def build_text_tower(cfg: Any) -> PreTrainedModel:
    """The text tower for ``cfg.tokenizer`` (``backbone_init``: ``pretrained`` or ``random``)."""
    kind = text_model_kind(cfg.tokenizer)
    if cfg.backbone_init == "random":
        return random_text_tower(kind, cfg)
    model_class = TEXT_MODELS[kind][0]
    try:
        model = model_class.from_pretrained(cfg.tokenizer, add_pooling_layer=False)
    except OSError as err:
        raise FileNotFoundError(
            f"tokenizer={cfg.tokenizer!r}: METER loads its text encoder from where the tokenizer "
            f"is, and no {kind} model was found there ({str(err).splitlines()[0]}). Save the model "
            f"into that folder ({model_class.__name__}.save_pretrained), or build from random "
            f"weights with backbone_init=random"
        ) from err
    if model.config.hidden_size != cfg.input_text_embed_size:
        raise ValueError(
            f"the text model in {cfg.tokenizer!r} is {model.config.hidden_size} wide: set "
            f"input_text_embed_size={model.config.hidden_size}"
        )
    return model
