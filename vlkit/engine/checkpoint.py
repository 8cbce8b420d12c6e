"""Lightning-compatible training checkpoints: layout and validated reading (written with
``vlkit.utils.atomic.atomic_torch_save``).

A checkpoint is a dict with Lightning's keys (``state_dict``, ``hyper_parameters.config``,
``optimizer_states``, ``lr_schedulers``, ``global_step``, ``epoch``) plus ``vlkit``: the resume state
(every rank's RNG states, sampler position, GradScaler, best metric, counters, vlkit version).
Everything in it is a tensor or a plain Python value, so it loads with ``weights_only=True``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

import vlkit
from vlkit.utils.safe_load import safe_torch_load

RESUME_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch", "vlkit")


def portable_rng_state(state: dict) -> dict:
    """``seeding.rng_state()`` with numpy's key array as a tensor (safe for ``weights_only``)."""
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    return {**state, "numpy": (name, keys, pos, has_gauss, cached)}


def native_rng_state(state: dict) -> dict:
    """Inverse of ``portable_rng_state``: ready for ``seeding.set_rng_state``."""
    name, keys, pos, has_gauss, cached = state["numpy"]
    return {**state, "numpy": (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)}


def checkpoint_metadata(
    *,
    schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler],
    config: dict,
    global_step: int,
    epoch: int,
    resume_state: dict[str, Any],
) -> dict[str, Any]:
    """Everything of a checkpoint but the weights and optimizer states (a sharded checkpoint's
    ``trainer_state.pt``)."""
    return {
        "hyper_parameters": {"config": config},
        "lr_schedulers": [scheduler.state_dict() for scheduler in schedulers],
        "global_step": global_step,
        "epoch": epoch,
        "vlkit": {**resume_state, "version": vlkit.__version__},
    }


def build_checkpoint(
    *,
    model: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler],
    config: dict,
    global_step: int,
    epoch: int,
    resume_state: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint dict; ``model`` is the unwrapped module (no ``module.`` prefix). Every
    optimizer and schedule is kept, in order (Lightning's lists)."""
    return {
        "state_dict": model.state_dict(),
        "optimizer_states": [optimizer.state_dict() for optimizer in optimizers],
        **checkpoint_metadata(schedulers=schedulers, config=config, global_step=global_step, epoch=epoch,
                              resume_state=resume_state),
    }


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = RESUME_KEYS) -> dict[str, Any]:
    """Read a checkpoint written by the Trainer (``atomic_torch_save``); errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the path (e.g. resume_from)")
    try:
        checkpoint = safe_torch_load(path, "resume_from")
    except Exception as exc:
        raise ValueError(
            f"checkpoint {path} is corrupt or not a vlkit checkpoint ({type(exc).__name__}: {exc}); "
            f"use an intact one, e.g. the run's checkpoints/best.ckpt"
        ) from exc
    missing = [key for key in required if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}; it was not written by vlkit's Trainer")
    return checkpoint


def restore_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, source: str) -> None:
    """``optimizer.load_state_dict(state)`` after checking that every saved per-parameter tensor
    has its parameter's shape (torch checks only group sizes, so a state saved for another
    parameter order would load silently); ``source`` names the file in errors."""
    params = [param for group in optimizer.param_groups for param in group["params"]]
    saved_groups = state.get("param_groups", [])
    saved_ids = [pid for group in saved_groups for pid in group["params"]]
    if len(saved_ids) != len(params) or len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(
            f"{source}: optimizer state for {len(saved_ids)} parameters in {len(saved_groups)} groups, but this "
            f"optimizer has {len(params)} in {len(optimizer.param_groups)}; it was saved for another model or "
            "optimizer set-up: start that optimizer fresh"
        )
    for pid, param in zip(saved_ids, params):
        for name, value in state.get("state", {}).get(pid, {}).items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape:
                raise ValueError(
                    f"{source}: saved {name!r} of shape {tuple(value.shape)} for a parameter of shape "
                    f"{tuple(param.shape)}: the state follows another parameter order; start that optimizer fresh"
                )
    optimizer.load_state_dict(state)


def read_state_file(path: str | os.PathLike, what: str) -> dict:
    """A ``torch.save``d state dict (an optimizer's or a schedule's), read on CPU."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} state file {path} does not exist; check the path or leave it out")
    state = safe_torch_load(path, f"{what} state file")
    if not isinstance(state, dict):
        raise ValueError(f"{what} state file {path} holds a {type(state).__name__}, not a state dict")
    return state
