"""``vlkit.load``: a model folder, a run directory or a checkpoint file as a ``VLModel``."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from vlkit.api.classifier import ImageClassifier, is_classifier_folder
from vlkit.api.folder import RUN_FOLDER, folder_config, is_model_folder, load_folder_weights, read_answers
from vlkit.api.model import VLModel
from vlkit.data.tokenizer import load_tokenizer
from vlkit.models.build import build_model


def load_folder(path: str | os.PathLike, device: str | torch.device = "cpu",
                precision: str | int = 32) -> VLModel | ImageClassifier:
    """A model folder: yaml, json, the tokenizer files and safetensors; nothing is unpickled."""
    if is_classifier_folder(path):
        return ImageClassifier(path, device)
    cfg = folder_config(path)
    model = build_model(cfg)
    load_folder_weights(model, path)
    return VLModel(model, cfg, load_tokenizer(cfg.tokenizer), read_answers(path), device, precision)


def load(path: str | os.PathLike, device: str | torch.device = "cpu", precision: str | int = 32,
         words: Sequence[str] = (), trust_checkpoint: bool = False) -> VLModel | ImageClassifier:
    """The model at ``path`` with its preprocessing, ready for ``vqa``, ``match``, ``retrieve`` ...

    ``path``: a model folder (``vlkit export``), a run directory (its ``model/`` folder when the
    run exported one) or a checkpoint file; the last two are exported to a temporary folder first (``words``: the presets and ``key=value`` words that
    describe a checkpoint without a vlkit config). ``trust_checkpoint`` allows full unpickling of
    checkpoint formats that need it (old Lightning hyper-parameters); model folders never unpickle.
    """
    if is_model_folder(path) or is_classifier_folder(path):
        return load_folder(path, device, precision)
    if not Path(path).exists():
        raise FileNotFoundError(f"vlkit.load: {str(path)!r} does not exist; give a model folder (vlkit export), "
                                "a run directory or a checkpoint file")
    if not words and is_model_folder(Path(path) / RUN_FOLDER):
        return load_folder(Path(path) / RUN_FOLDER, device, precision)
    from vlkit.api.export import export_source

    with tempfile.TemporaryDirectory(prefix="vlkit_load_") as folder:
        source = export_source(path, folder, words, trust_checkpoint=trust_checkpoint)
        model = load_folder(folder, device, precision)
    if source is not None:
        model.cfg.tokenizer = source.cfg.tokenizer  # the temporary copy is gone
    return model
