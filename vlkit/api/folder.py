"""Model folders: a trained model as plain files that load without unpickling anything.

``config.yaml`` (the resolved config), ``model.safetensors`` (every tensor; shared and tied ones
stored once, as ``safetensors.torch.save_model`` does), ``tokenizer/`` (``save_pretrained``),
``answers.json`` (when a head needs an answer vocabulary), ``preprocess.json`` (image size,
normalisation, eval transform) and ``README.md`` (the model card).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_model, save_model
from torch import nn

from vlkit.data.transforms import build_transform

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
ANSWERS_FILE = "answers.json"
PREPROCESS_FILE = "preprocess.json"
CARD_FILE = "README.md"
RUN_FOLDER = "model"
"""Where a run directory keeps the model folder that ``export_best`` writes."""

FOLDER_OVERRIDES = {"load_path": "", "pretrain_path": "", "resume_from": "", "clip_path": "",
                    "swin_weights": "", "backbone_init": "random", "test_only": False,
                    "momentum": 0.0, "itc_queue_size": 0, "distill_alpha": 0.0, "mae_patch_drop": False}
"""Config values a model folder is rebuilt with: every weight comes from ``model.safetensors``, and
the training-only parts (ALBEF's momentum model and queue, MAE's patch dropping) are left out."""
TRAINING_ONLY = ("momentum_model", "itc_queue")


def is_model_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


EVAL_TRANSFORMS = {"mae": "mae_test", "mae_randaug": "mae_test", "pixelbert_randaug": "pixelbert",
                   "clip_randaug": "clip", "imagenet_randaug": "imagenet", "albef_pretrain": "albef_test",
                   "albef_train": "albef_test"}
"""The deterministic transform of each augmenting one (a run may validate with ``mae``'s random crops)."""


def eval_transform_key(cfg: Any) -> str:
    key = list(cfg.val_transform_keys)[0]
    return EVAL_TRANSFORMS.get(key, key)


def preprocess_info(cfg: Any) -> dict[str, Any]:
    """How an image becomes the model's input: the eval transform key, size and its normalisation."""
    key = eval_transform_key(cfg)
    normalize = next((step for step in build_transform(key, cfg.image_size).transforms
                      if type(step).__name__ == "Normalize"), None)
    return {
        "transform": key,
        "image_size": int(cfg.image_size),
        "mean": list(normalize.mean) if normalize is not None else None,
        "std": list(normalize.std) if normalize is not None else None,
        "max_text_len": int(cfg.max_text_len),
    }


def text_tower_architecture(model: nn.Module) -> dict[str, int]:
    """The config keys that rebuild a Hugging Face text tower (METER's, loaded pretrained) from
    random weights with its own shapes; empty for models without one."""
    tower = getattr(model, "text_transformer", None)
    if tower is None:
        return {}
    config = tower.config
    return {"max_position_embeddings": config.max_position_embeddings, "text_layers": config.num_hidden_layers,
            "input_text_embed_size": config.hidden_size, "vocab_size": config.vocab_size}


def write_model_folder(out: str | Path, cfg: DictConfig, model: nn.Module, tokenizer: Any,
                       answers: list[str] | None, card: str) -> Path:
    """Write every file of a model folder into ``out`` (created) and return it; ``model`` loses
    its training-only parts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = OmegaConf.to_container(cfg, resolve=True)
    saved.update(FOLDER_OVERRIDES, tokenizer=TOKENIZER_DIR, **text_tower_architecture(model))
    for name in TRAINING_ONLY:
        if hasattr(model, name):
            delattr(model, name)
    (out / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.create(saved)))
    save_model(model, str(out / WEIGHTS_FILE), metadata={"format": "pt", "family": str(cfg.model)})
    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    if answers is not None:
        (out / ANSWERS_FILE).write_text(json.dumps(answers, indent=0) + "\n")
    (out / PREPROCESS_FILE).write_text(json.dumps(preprocess_info(cfg), indent=2) + "\n")
    (out / CARD_FILE).write_text(card)
    return out


def folder_config(path: str | Path) -> DictConfig:
    """The folder's config with ``tokenizer`` pointing at its ``tokenizer/`` (read as plain yaml)."""
    path = Path(path)
    cfg = OmegaConf.load(path / CONFIG_FILE)
    cfg.tokenizer = str(path / TOKENIZER_DIR)
    return cfg


def load_folder_weights(model: nn.Module, path: str | Path) -> None:
    """Fill ``model`` from ``model.safetensors`` (strict: every key present, none left over)."""
    file = Path(path) / WEIGHTS_FILE
    missing, unexpected = load_model(model, str(file), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{file} does not fit the model its config.yaml builds: missing {sorted(missing)[:8]}, "
            f"unexpected {sorted(unexpected)[:8]}; re-export the folder with `vlkit export`"
        )


def read_answers(path: str | Path) -> list[str] | None:
    file = Path(path) / ANSWERS_FILE
    return json.loads(file.read_text()) if file.is_file() else None
