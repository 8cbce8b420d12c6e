"""``--strategy fsdp`` for the classifier: FSDP2 over each block, then the whole model
(``vlkit.engine.fsdp.apply_fsdp``, as the trainer shards every family), bf16 mixed precision on
CUDA without a loss scaler, and the reference-format checkpoint's whole model and optimizer state
gathered from the shards (saving) and spread back over them (resuming).

The optimizer state in a checkpoint is always ``Optimizer.state_dict``'s (keyed by position), so
a checkpoint loads the same way under ddp, in one process and under fsdp at any world size.
"""
from __future__ import annotations

import argparse
import logging
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_optimizer_state_dict
from torch.distributed.fsdp import FSDPModule

from vlkit.engine.dcp_checkpoint import indexed_optimizer_state
from vlkit.engine.fsdp import apply_fsdp
from vlkit.utils import distributed

log = logging.getLogger(__name__)


def amp_dtype(args: argparse.Namespace) -> torch.dtype:
    """The CUDA autocast dtype: the reference's float16 (with a GradScaler), bfloat16 under fsdp."""
    return torch.bfloat16 if args.strategy == "fsdp" else torch.float16


def shard_classifier(model: nn.Module, args: argparse.Namespace, device: torch.device) -> nn.Module:
    """Shard ``model`` in place with FSDP2 (blocks, then the root); bf16 parameters with fp32
    gradient reduction on CUDA, fp32 on CPU; ``--fsdp_cpu_offload`` keeps the shards in CPU memory."""
    policy = SimpleNamespace(precision="bf16" if device.type == "cuda" else "32",
                             fsdp_cpu_offload=args.fsdp_cpu_offload)
    if device.type == "cuda":
        log.info("--strategy fsdp: bf16 autocast with bf16 parameters and fp32 gradient reduction replaces "
                 "the reference's float16 autocast, so no GradScaler is used")
    return apply_fsdp(model, model, policy, device)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model state, optimizer state)`` of the whole model, as an unsharded run's ``state_dict()``
    calls give them; under fsdp a collective that gathers them on CPU on rank 0 (empty elsewhere)."""
    if not isinstance(model, FSDPModule):
        return model.state_dict(), optimizer.state_dict()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    return model_state, indexed_optimizer_state(optimizer_state) if optimizer_state else {}


def _named_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                           state: dict[str, Any]) -> dict[str, Any]:
    """A position-keyed optimizer state keyed by parameter name (``set_optimizer_state_dict``'s)."""
    names = {id(param): name for name, param in model.named_parameters()}
    order = [names[id(param)] for group in optimizer.param_groups for param in group["params"]]
    if len(order) != sum(len(group["params"]) for group in state["param_groups"]):
        raise ValueError(f"the checkpoint's optimizer holds {sum(len(g['params']) for g in state['param_groups'])} "
                         f"parameters but this model has {len(order)}; resume with the same --model and sizes")
    groups = [{**group, "params": [order[i] for i in group["params"]]} for group in state["param_groups"]]
    return {"state": {order[i]: value for i, value in state["state"].items()}, "param_groups": groups}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a checkpoint's (position-keyed) optimizer state; under fsdp rank 0's copy is sharded
    and sent to every rank (a collective)."""
    if not isinstance(model, FSDPModule):
        optimizer.load_state_dict(state)
        return
    named = _named_optimizer_state(model, optimizer, state) if distributed.is_main() else {}
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_optimizer_state_dict(model, optimizer, named, options=options)
