"""Sharded checkpoints (``strategy=fsdp``) with ``torch.distributed.checkpoint`` (DCP).

A sharded checkpoint is a folder: DCP's ``.metadata`` and one ``__R_0.distcp`` file per rank (the
model and every optimizer, keyed by parameter name, so it loads at any world size, into a sharded
or a plain model) plus ``trainer_state.pt``, the rest of a vlkit checkpoint (config, schedules,
step, epoch, sampler position, RNG states) written by rank 0. Every rank writes into a hidden
``.NAME.partial`` folder, which rank 0 renames to ``NAME`` once all are done: a folder with the
checkpoint's name is always complete. ``consolidate`` turns one into the usual single-file
checkpoint (``vlkit.engine.checkpoint``'s layout).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
)

from vlkit.utils import distributed
from vlkit.utils.atomic import atomic_torch_save, fsync_dir

TRAINER_STATE = "trainer_state.pt"
METADATA = ".metadata"


def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a complete sharded checkpoint folder."""
    path = Path(path)
    return path.is_dir() and (path / METADATA).is_file() and (path / TRAINER_STATE).is_file()


def _state(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, Any]:
    return {"model": get_model_state_dict(model),
            **{f"optimizer_{i}": get_optimizer_state_dict(model, opt) for i, opt in enumerate(optimizers)}}


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """DCP warns on every call without a process group; one process is a supported case here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _publish(partial: Path, path: Path) -> None:
    """Rename the finished ``partial`` folder to ``path`` (replacing an older one)."""
    old = path.parent / f".{path.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.rename(path, old)
    os.rename(partial, path)
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def save_sharded(path: str | os.PathLike, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer],
                 trainer_state: dict[str, Any]) -> Path:
    """Write a sharded checkpoint folder ``path`` (a collective: every rank calls it)."""
    path = Path(path)
    partial = path.parent / f".{path.name}.partial"
    if distributed.is_main():
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    distributed.barrier()
    with _single_process_quiet():
        dcp.save(_state(model, optimizers), checkpoint_id=partial, no_dist=not dist.is_initialized())
    if distributed.is_main():
        atomic_torch_save(trainer_state, partial / TRAINER_STATE)
        _publish(partial, path)
    distributed.barrier()
    return path


def read_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    """``trainer_state.pt`` of the sharded checkpoint ``path``; errors say what is wrong."""
    path = Path(path)
    if not is_sharded_checkpoint(path):
        raise ValueError(
            f"{path} is not a complete sharded checkpoint (a folder with {METADATA} and {TRAINER_STATE}); "
            "give a folder that strategy=fsdp wrote into a run's checkpoints/ (step_NNNNNNN, last or best)"
        )
    return torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)


def load_sharded(path: str | os.PathLike, model: nn.Module,
                 optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, Any]:
    """Load the model and optimizers (sharded or not, any world size) from ``path``; returns its
    trainer state."""
    trainer_state = read_trainer_state(path)
    saved = trainer_state["num_optimizers"]
    if saved != len(optimizers):
        raise ValueError(
            f"{path} holds {saved} optimizer(s) but this run builds {len(optimizers)}; "
            "resume with the same visual_optimizer setting"
        )
    state = _state(model, optimizers)
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=Path(path), no_dist=not dist.is_initialized())
    set_model_state_dict(model, state["model"])
    for i, optimizer in enumerate(optimizers):
        set_optimizer_state_dict(model, optimizer, state[f"optimizer_{i}"])
    return trainer_state


def indexed_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name (DCP's) keyed by position, as ``Optimizer.state_dict``."""
    ids: dict[str, int] = {}
    groups = [{**group, "params": [ids.setdefault(name, len(ids)) for name in group["params"]]}
              for group in state["param_groups"]]
    return {"state": {ids[name]: value for name, value in state["state"].items()}, "param_groups": groups}


def consolidate(path: str | os.PathLike, out_file: str | os.PathLike) -> Path:
    """Write the sharded checkpoint ``path`` as one checkpoint file (``state_dict``, ``optimizer_states``
    and the rest: what ``strategy=ddp`` writes), in a single process."""
    trainer_state = read_trainer_state(path)
    with tempfile.TemporaryDirectory() as scratch:
        flat_file = Path(scratch) / "flat.pt"
        dcp_to_torch_save(Path(path), flat_file)
        flat = torch.load(flat_file, map_location="cpu", weights_only=True)
    optimizers = [indexed_optimizer_state(flat[f"optimizer_{i}"])
                  for i in range(trainer_state["num_optimizers"])]
    checkpoint = {key: value for key, value in trainer_state.items() if key != "num_optimizers"}
    checkpoint.update(state_dict=flat["model"], optimizer_states=optimizers)
    return atomic_torch_save(checkpoint, out_file)


def command_checkpoint(argv: Sequence[str]) -> int:
    """``vlkit checkpoint consolidate DIR OUT``."""
    parser = argparse.ArgumentParser(prog="vlkit checkpoint", description="sharded checkpoint tools")
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("consolidate", help="write a sharded checkpoint folder as one .ckpt file")
    merge.add_argument("folder", help="a sharded checkpoint folder (e.g. RUN/checkpoints/step_0001000)")
    merge.add_argument("out", help="the single-file checkpoint to write (e.g. step_0001000.ckpt)")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {consolidate(args.folder, args.out)}")
    except ValueError as err:  # not a complete sharded checkpoint: the message says what to give
        print(f"vlkit checkpoint: {err}", file=sys.stderr)
        return 2
    return 0
