"""Reading files a user names (``load_path``, ``pretrain_path``, ``--checkpoint``, resume files,
CLIP / Swin / ViT weight files) without running code from them.

:func:`safe_torch_load` is the one way vlkit ``torch.load``s such a file: ``weights_only=True``,
with a short allowlist of harmless types that checkpoints of the reference repositories hold
(``argparse.Namespace`` in ALBEF's and MAE's, the callback classes PyTorch Lightning 1.1 keys
ViLT's and VLC's callback states by). A file that needs anything else is refused, naming the
type, unless the caller trusts it (``trust_checkpoint=True``); then it is fully unpickled, with
classes of libraries that are not installed replaced by placeholders. A truncated file, an empty
one or one that is not a PyTorch file gives an error naming the file, the setting it came from
and what is wrong. :func:`safe_jit_state_dict` does the same for TorchScript archives (OpenAI's
CLIP files), which ``torch.jit.load`` reads without unpickling arbitrary objects.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import pickle
import re
import types
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["CheckpointReadError", "UntrustedCheckpointError", "safe_jit_state_dict", "safe_torch_load"]

PLACEHOLDER_CLASSES = (
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
    ("pytorch_lightning.callbacks.early_stopping", "EarlyStopping"),
    ("pytorch_lightning.callbacks.lr_monitor", "LearningRateMonitor"),
    ("sacred.config.custom_containers", "ReadOnlyDict"),
)
"""Classes that reference checkpoints name without needing their code: PyTorch Lightning 1.1's
callback classes (only dict keys of ``checkpoint["callbacks"]``) and sacred's read-only config
dict (ViLT's and VLC's ``hyper_parameters.config``). They load as placeholders of the same name
(a dict keeping the items), so neither library need be installed and nothing of theirs runs."""


class CheckpointReadError(ValueError):
    """A file that is not a readable PyTorch checkpoint (truncated, empty, another kind of file)."""


class UntrustedCheckpointError(ValueError):
    """A checkpoint that holds objects other than tensors and plain values, read without trust."""


class _Unimportable(dict):
    """Stands in for a class a checkpoint names that cannot be imported here; keeps the state
    unpickling gives it (dict items, ``__setstate__``). A dict, so containers such as sacred's
    ``ReadOnlyDict`` come back with their contents."""

    def __init__(self, *args: Any, **kwargs: Any):
        try:  # a dict subclass rebuilt as cls(items)
            super().__init__(*args, **kwargs)
        except (TypeError, ValueError):
            super().__init__()

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state


@functools.cache
def _placeholder(module: str, name: str) -> type:
    return type(name, (_Unimportable,), {"__module__": module})


class _LenientUnpickler(pickle.Unpickler):
    """Full unpickling that tolerates classes of libraries that are not installed."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            log.info("checkpoint refers to %s.%s, which is not importable; a placeholder stands in", module, name)
            return _placeholder(module, name)


_LENIENT_PICKLE = types.ModuleType("vlkit_lenient_pickle")
_LENIENT_PICKLE.Unpickler = _LenientUnpickler  # type: ignore[attr-defined]
_LENIENT_PICKLE.load = lambda file, **kwargs: _LenientUnpickler(file, **kwargs).load()  # type: ignore[attr-defined]


def _safe_globals() -> list:
    callbacks = [(_placeholder(module, name), f"{module}.{name}") for module, name in PLACEHOLDER_CLASSES]
    return [argparse.Namespace, *callbacks]


def _unsupported_global(error: Exception) -> str:
    """What the weights-only reader refused, from its message."""
    text = str(error)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"a {found.group(1)} object"
    after = text.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in after.splitlines() if line.strip()]
    return f"data the weights-only reader refuses ({lines[0][:200] if lines else 'unknown'})"


def _check_file(path: str, config_key: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{config_key}={path!r}: no such file; give the path of an existing checkpoint or leave {config_key} empty"
        )
    if os.path.getsize(path) == 0:
        raise CheckpointReadError(f"{config_key}={path!r} is empty (0 bytes): the download or copy did not finish; "
                                  "fetch or write the file again")


def _check_torch_file(path: str, config_key: str) -> None:
    """A ``torch.save`` file is a zip archive, or (before PyTorch 1.6) starts with a pickle protocol mark."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head != b"PK\x03\x04" and not head.startswith(b"\x80"):
        raise CheckpointReadError(
            f"{config_key}={path!r} is not a PyTorch checkpoint (it starts with {head!r}, neither a zip archive nor "
            "a pickle): give a file written by torch.save (a .ckpt/.pth/.pt checkpoint)"
        )


def _read_error(path: str, config_key: str, error: Exception) -> CheckpointReadError:
    detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
    return CheckpointReadError(
        f"{config_key}={path!r} ({os.path.getsize(path)} bytes) is not a readable PyTorch checkpoint: it is "
        f"truncated or corrupt, or another kind of file ({type(error).__name__}: {detail}); give an intact "
        "checkpoint (fetch or write it again) written by torch.save"
    )


def safe_torch_load(path: str | os.PathLike, config_key: str = "path", trust_checkpoint: bool = False) -> Any:
    """``torch.load(path)`` on CPU without running code from the file unless it is trusted.

    ``config_key`` names the setting the path came from in errors. With ``trust_checkpoint`` a
    file that the weights-only reader refuses is fully unpickled (with a warning).
    """
    path = os.fspath(path)
    _check_file(path, config_key)
    _check_torch_file(path, config_key)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error) or "Unsupported operand" in str(error):
            raise _read_error(path, config_key, error) from error
        if not trust_checkpoint:
            raise UntrustedCheckpointError(
                f"{config_key}={path!r} holds {_unsupported_global(error)}, which only full unpickling can "
                "rebuild, and unpickling runs code stored in the file. If you trust where the file comes "
                "from, set trust_checkpoint=true (imagenet: --trust_checkpoint); otherwise re-save its "
                "weights as plain tensors (torch.save(checkpoint['state_dict']) in the environment that wrote it)"
            ) from error
        log.warning("%s=%s: trust_checkpoint=true, fully unpickling it (%s)", config_key, path,
                    _unsupported_global(error))
        try:
            return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_LENIENT_PICKLE)
        except Exception as inner:  # noqa: BLE001 - any failure of a trusted read is a bad file
            raise _read_error(path, config_key, inner) from inner
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, IndexError) as error:
        raise _read_error(path, config_key, error) from error


def safe_jit_state_dict(path: str | os.PathLike, config_key: str = "path") -> dict[str, torch.Tensor]:
    """The state dict of a TorchScript archive (OpenAI's CLIP ``.pt`` files), on CPU; a damaged
    archive gives an error naming the file and the setting."""
    path = os.fspath(path)
    _check_file(path, config_key)
    try:
        return torch.jit.load(path, map_location="cpu").state_dict()
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise _read_error(path, config_key, error) from error
