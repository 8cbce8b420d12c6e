"""``strategy=fsdp``: PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``) over every family.

Each block that ``vlkit.engine.parallelize.blocks`` finds (transformer blocks of every tower, CLIP
ResNet stages) becomes one FSDP unit, then the training-step module (model and task) the root
unit, as torchtitan does. Inside a training step the root's parameters stay gathered, so a
task may call any model method; each block gathers its own parameters around its forward.

The momentum (teacher) model of ALBEF keeps working: its blocks are sharded like the online ones,
and its other parameters (embeddings, projections: frozen, small) stay whole on every rank, so
``momentum_update`` pairs a sharded teacher block with the same shard of the online block and a
whole teacher tensor with the gathered online one.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from vlkit.engine.parallelize import blocks
from vlkit.utils import distributed

STRATEGIES = ("ddp", "fsdp")
BF16_PRECISIONS = ("bf16", "bf16-mixed")


def check_strategy(cfg: Any) -> None:
    """Refuse an unknown ``strategy`` or a precision that FSDP cannot train with."""
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"strategy={cfg.strategy!r} is not one of {list(STRATEGIES)}")
    if cfg.strategy == "fsdp" and str(cfg.precision) in ("16", "16-mixed"):
        raise ValueError(
            f"strategy=fsdp with precision={cfg.precision}: fp16 needs a loss scaler that FSDP2 does not "
            "share across shards; use precision=bf16 (FSDP keeps bf16 parameters and fp32 reductions) or 32"
        )


def _shared_groups(blocks: list[nn.Module]) -> list[list[nn.Module]]:
    """Blocks grouped so that blocks sharing a parameter (ALBEF's paired NLVR layers share their
    cross-attention key/value) form one FSDP unit."""
    owner: dict[int, int] = {}
    groups: list[list[nn.Module]] = []
    for block in blocks:
        joined = {owner[id(p)] for p in block.parameters() if id(p) in owner}
        if joined:
            target = min(joined)
            for other in sorted(joined - {target}, reverse=True):
                groups[target].extend(groups[other])
                groups[other] = []
        else:
            target = len(groups)
            groups.append([])
        groups[target].append(block)
        for member in groups[target]:
            owner.update({id(p): target for p in member.parameters()})
    return [group for group in groups if group]


def _policies(cfg: Any, device: torch.device) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    if device.type == "cuda" and str(cfg.precision) in BF16_PRECISIONS:
        policies["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if cfg.fsdp_cpu_offload:
        policies["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    return policies


def apply_fsdp(root: nn.Module, model: nn.Module, cfg: Any, device: torch.device) -> nn.Module:
    """Shard ``model``'s transformer blocks, then ``root`` (the module whose forward runs the whole
    training step and holds ``model``), in place; returns ``root``. bf16 parameters with fp32
    gradient reduction on GPU when ``precision=bf16``; ``fsdp_cpu_offload`` keeps the shards (and
    the optimizer state) in CPU memory."""
    policies = _policies(cfg, device)
    _broadcast_from_rank0(root)
    for group in _shared_groups(list(blocks(model))):
        fully_shard(group if len(group) > 1 else group[0], **policies)
    teacher = getattr(model, "momentum_model", None)
    whole = {p for p in teacher.parameters() if not isinstance(p, DTensor)} if teacher is not None else set()
    scalars = {p for p in root.parameters() if p.dim() == 0 and p not in whole}
    for param in scalars:  # FSDP2 cannot shard 0-d tensors (ITC's logit_scale): kept whole, grads averaged
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(_average_grad)
    fully_shard(root, ignored_params=(whole | scalars) or None, **policies)
    return root


def _average_grad(param: torch.Tensor) -> None:
    """Average a whole parameter's gradient over ranks. Run after every micro-batch's backward:
    averaging the part already equal on every rank changes nothing, so accumulation stays exact."""
    dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
    param.grad /= dist.get_world_size()


@torch.no_grad()
def _broadcast_from_rank0(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (ranks initialise with different seeds; DDP
    does the same when it wraps a model)."""
    if distributed.get_world_size() > 1:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def gathered_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of ``model`` on CPU, on rank 0 (empty elsewhere); a collective."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def grad_norm(parameters: list[torch.Tensor]) -> torch.Tensor:
    """The global L2 norm of the gradients, over sharded (``DTensor``) and whole ones alike."""
    grads = [p.grad for p in parameters if p.grad is not None]
    sharded = [g for g in grads if isinstance(g, DTensor)]
    whole = [g for g in grads if not isinstance(g, DTensor)]
    norm = torch.zeros((), dtype=torch.float32, device=grads[0].device if grads else "cpu")
    if sharded:  # (on CPU under fsdp_cpu_offload)
        norm = norm + nn.utils.get_total_norm(sharded).full_tensor().float().to(norm.device) ** 2
    if whole:
        norm = norm + nn.utils.get_total_norm(whole).float().to(norm.device) ** 2
    return norm.sqrt()


@torch.no_grad()
def clip_grads(parameters: list[torch.Tensor], max_norm: float, norm: torch.Tensor) -> None:
    """Scale the gradients so that their global norm ``norm`` is at most ``max_norm`` (as
    ``clip_grad_norm_``, for sharded and whole gradients alike)."""
    coefficient = min(1.0, max_norm / (norm.item() + 1e-6))
    if coefficient < 1.0:
        for param in parameters:
            if param.grad is not None:
                param.grad.mul_(coefficient)
