"""Step checkpoints (``checkpoint_every_n_steps``, ``keep_last_k``) and ``resume_from=auto``.

A checkpoint is a ``NAME.ckpt`` file (``strategy=ddp``) or a ``NAME`` folder (``strategy=fsdp``,
``vlkit.engine.dcp_checkpoint``); both are written atomically, so every visible one is complete
and half-written ones stay hidden (dot-prefixed) until they are done.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch

from vlkit.engine.dcp_checkpoint import is_sharded_checkpoint, read_trainer_state

STEP_PREFIX = "step_"
AUTO = "auto"


def step_name(step: int) -> str:
    """``step_0000123``: the step checkpoint's name (no suffix)."""
    return f"{STEP_PREFIX}{step:07d}"


def checkpoint_path(folder: Path, name: str, sharded: bool) -> Path:
    """``folder/NAME`` (a sharded folder) or ``folder/NAME.ckpt``."""
    return folder / name if sharded else folder / f"{name}.ckpt"


def _step_of_name(path: Path) -> int | None:
    stem = path.name.removesuffix(".ckpt")
    digits = stem[len(STEP_PREFIX):]
    return int(digits) if stem.startswith(STEP_PREFIX) and digits.isdigit() else None


def step_checkpoints(folder: Path) -> list[Path]:
    """The step checkpoints in ``folder``, oldest first."""
    found = [p for p in folder.glob(f"{STEP_PREFIX}*") if _step_of_name(p) is not None]
    return sorted(found, key=_step_of_name)


def prune_step_checkpoints(folder: Path, keep_last_k: int) -> list[Path]:
    """Delete all but the newest ``keep_last_k`` step checkpoints (0 keeps all); returns the deleted."""
    if keep_last_k <= 0:
        return []
    stale = step_checkpoints(folder)[:-keep_last_k]
    for path in stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return stale


def checkpoint_step(path: Path) -> int | None:
    """The global step of the complete checkpoint ``path`` (None: not one, or unreadable)."""
    try:
        if path.is_dir():
            return read_trainer_state(path)["global_step"] if is_sharded_checkpoint(path) else None
        if path.suffix == ".ckpt" and path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    except Exception as exc:  # an unreadable file is skipped, never resumed from
        warnings.warn(f"resume_from=auto skips {path}: {type(exc).__name__}: {exc}")
    return None


def find_latest_checkpoint(run_parent: Path) -> Path | None:
    """The complete checkpoint with the highest global step (then the newest file) in any
    ``run_parent/version_*/checkpoints``; hidden (partial) entries are never considered."""
    candidates = []
    for path in run_parent.glob("version_*/checkpoints/*"):
        if path.name.startswith(".") or path.name.startswith("nan_debug"):
            continue
        step = checkpoint_step(path)
        if step is not None:
            candidates.append((step, path.stat().st_mtime, str(path)))
    return Path(max(candidates)[2]) if candidates else None


def resolve_resume(resume_from: str | None, run_parent: Path) -> str | None:
    """``resume_from`` itself, or for ``auto`` the newest complete checkpoint of the run (None: start fresh)."""
    if resume_from != AUTO:
        return resume_from or None
    latest = find_latest_checkpoint(run_parent)
    return str(latest) if latest is not None else None


def is_checkpoint_folder(path: str | os.PathLike) -> bool:
    """Whether ``resume_from`` names a folder (a sharded checkpoint) rather than a file."""
    return Path(path).is_dir()
