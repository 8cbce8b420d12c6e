"""CLIP weight files: OpenAI's TorchScript archives (``ViT-B-16.pt``, ``RN50.pt``), OpenAI-layout
state dicts, and open_clip checkpoints (``{"state_dict": ...}`` with an optional ``module.`` prefix).

All three use the same key names (``visual.conv1.weight``, ``visual.transformer.resblocks.N.*`` for
ViTs, ``visual.layer1.*`` / ``visual.attnpool.*`` for ModifiedResNets, ``transformer.*`` for the
text tower), so one reader serves METER's CLIP-ViT tower and CLIP-ViL's ResNet. It returns a plain
state dict; the families pick the ``visual.`` part they build.
"""
from __future__ import annotations

import os
import zipfile
from typing import Any, Mapping

import torch

from vlkit.utils.safe_load import safe_jit_state_dict

METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
"""Integer entries of OpenAI's archives that are not weights (their loader deletes them too)."""


def is_torchscript(path: str) -> bool:
    """True for a TorchScript archive (a zip holding ``*/code/`` or ``*/constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


def _unwrap(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def read_clip_state_dict(path: str, config_key: str = "path", trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The CLIP weights in ``path`` in OpenAI's key names, on CPU, without metadata entries.

    ``config_key`` names the setting the path came from in error messages; ``trust_checkpoint``
    allows full unpickling of a non-TorchScript file (``vlkit.utils.safe_load``).
    """
    from vlkit.models.checkpoints import read_checkpoint

    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{config_key}={path!r}: no such CLIP file; give the path of an OpenAI CLIP archive "
            "(e.g. ViT-B-16.pt, RN50.pt) or an open_clip state dict (weights cannot be downloaded here)"
        )
    if is_torchscript(path):
        state = safe_jit_state_dict(path, config_key)
    else:
        state = _unwrap(read_checkpoint(path, config_key, trust_checkpoint))
    if not any(isinstance(key, str) and key.startswith(("visual.", "module.visual.")) for key in state):
        raise ValueError(
            f"{config_key}={path!r} holds no CLIP image tower (no 'visual.*' keys; first keys: "
            f"{sorted(map(str, state))[:6]}): give an OpenAI CLIP or open_clip checkpoint"
        )
    return {
        key.removeprefix("module."): value
        for key, value in state.items()
        if key not in METADATA_KEYS and isinstance(value, torch.Tensor)
    }


def visual_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``visual.`` entries of a CLIP state dict, prefix removed."""
    return {key[len("visual."):]: value for key, value in state.items() if key.startswith("visual.")}


def visual_kind(state: Mapping[str, torch.Tensor]) -> str:
    """``"vit"`` or ``"resnet"`` (ModifiedResNet) for a CLIP state dict."""
    if "visual.layer1.0.conv1.weight" in state:
        return "resnet"
    if "visual.class_embedding" in state:
        return "vit"
    raise ValueError("CLIP state dict is neither a ViT (visual.class_embedding) nor a ModifiedResNet (visual.layer1.*)")
