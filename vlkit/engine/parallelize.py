"""Functions applied to a plain model before training: activation checkpointing and regional
compilation (torchtitan's ``apply_ac`` / ``apply_compile``), for every model family.

Both work on *blocks*, found by type rather than by family: timm ViT and Swin blocks, open_clip
residual attention blocks, Hugging Face BERT/RoBERTa layers, vlkit's BERT fusion and LXMERT cross
layers, and the four stages of a CLIP ResNet. A *stack* is the container a tower runs them from
(an ``nn.ModuleList`` or ``nn.Sequential``; a CLIP ResNet's ``layer1..layer4``), so
``grad_checkpointing=N`` checkpoints the first N blocks of every stack.

Parameter names never change: blocks are compiled in place (``nn.Module.compile``) and
checkpointed by giving them a subclass whose ``forward`` runs under
``torch.utils.checkpoint.checkpoint(use_reentrant=False)``. Where a library runs the loop over
its own blocks and has a switch for it (transformers ``gradient_checkpointing_enable``, timm
``set_grad_checkpointing``), the switch is used.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator

import torch
from open_clip.transformer import ResidualAttentionBlock
from open_clip.modified_resnet import ModifiedResNet
from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock
from timm.models.vision_transformer import Block as TimmBlock
from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from vlkit.config.schema import check_allowed_value
from vlkit.models.fusion.clipvil import LxmertCrossLayer
from vlkit.models.fusion.cross_attention import BertFusionLayer

BLOCK_TYPES = (TimmBlock, SwinTransformerBlock, ResidualAttentionBlock, BertFusionLayer, LxmertCrossLayer)
"""Transformer blocks that vlkit's own towers loop over."""

RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def resolve_compile(setting: bool | str | None, device: torch.device) -> str | None:
    """``"blocks"``, ``"model"`` or None (off) for a ``compile`` value; None picks blocks on CUDA."""
    check_allowed_value("compile", setting)
    if setting is None:
        setting = device.type == "cuda"
    if setting is False:
        return None
    return "blocks" if setting is True else setting


# ----- finding blocks ---------------------------------------------------------------------------


def _library_towers(model: nn.Module) -> list[nn.Module]:
    """Sub-modules that run their own block loop with a checkpointing switch of their library."""
    return [m for m in model.modules()
            if isinstance(m, (PreTrainedModel, TimmVisionTransformer, SwinTransformer))]


def block_stacks(model: nn.Module) -> list[list[nn.Module]]:
    """Every stack of blocks in ``model``, in module order (a stack lists its blocks in run order)."""
    stacks = []
    for module in model.modules():
        if isinstance(module, ModifiedResNet):
            stacks.append([getattr(module, name) for name in RESNET_STAGES])
        elif isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > 0:
            children = list(module)
            if all(isinstance(child, BLOCK_TYPES) or _is_hf_layer(child) for child in children):
                stacks.append(children)
    return stacks


def _is_hf_layer(module: nn.Module) -> bool:
    return type(module).__name__ in ("BertLayer", "RobertaLayer")


def blocks(model: nn.Module) -> Iterator[nn.Module]:
    """Every block of every stack."""
    for stack in block_stacks(model):
        yield from stack


# ----- activation checkpointing -----------------------------------------------------------------


@contextlib.contextmanager
def _batch_norm_statistics_frozen(module: nn.Module) -> Iterator[None]:
    """Recomputation must not update BatchNorm running statistics a second time."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _run_checkpointed(module: nn.Module, forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    if module.checkpoint_freezes_batch_norm and not torch.compiler.is_compiling():
        # (compiled code recomputes from a functional graph: buffer updates are applied once)
        recompute = (lambda: (contextlib.nullcontext(), _batch_norm_statistics_frozen(module)))
        return checkpoint(forward, *args, use_reentrant=False, context_fn=recompute, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


@functools.cache
def checkpointed_class(cls: type) -> type:
    """A subclass of ``cls`` whose forward is activation-checkpointed while gradients are on."""

    def forward(self, *args, **kwargs):
        return _run_checkpointed(self, super(checkpointed, self).forward, *args, **kwargs)

    checkpointed = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                               "__qualname__": cls.__qualname__, "checkpointed": True})
    return checkpointed


def _checkpoint_block(block: nn.Module) -> None:
    if not getattr(block, "checkpointed", False):
        block.checkpoint_freezes_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.modules())
        block.__class__ = checkpointed_class(type(block))


def _enable_library_checkpointing(tower: nn.Module, first: int | None) -> list[nn.Module]:
    """Turn on the library's own switch; returns the blocks it covers. ``first``: only the first
    N layers (Hugging Face layers have a flag each; timm's switch covers all or none)."""
    if isinstance(tower, PreTrainedModel):
        if hasattr(tower, "activation_checkpointing_enable"):  # transformers >= 5
            tower.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        layers = [m for m in tower.modules() if hasattr(m, "gradient_checkpointing") and _is_hf_layer(m)]
        for index, layer in enumerate(layers):
            layer.gradient_checkpointing = first is None or index < first
        return layers
    if first is not None:
        return []  # timm: all or nothing; the first N blocks are wrapped as vlkit's own
    tower.set_grad_checkpointing(True)
    return list(blocks(tower))


def apply_activation_checkpointing(model: nn.Module, setting: bool | int) -> int:
    """Checkpoint every block (``True``) or the first ``setting`` blocks of each stack; returns
    how many blocks are checkpointed. ``False`` or 0 does nothing."""
    check_allowed_value("grad_checkpointing", setting)
    if setting is False or setting == 0:
        return 0
    first = None if setting is True else int(setting)
    covered: set[int] = set()
    count = 0
    for tower in _library_towers(model):
        if any(id(m) in covered for m in tower.modules()):
            continue
        handled = _enable_library_checkpointing(tower, first)
        count += sum(1 for layer in handled if first is None or getattr(layer, "gradient_checkpointing", True))
        covered.update(id(m) for m in handled)
    for stack in block_stacks(model):
        if any(id(block) in covered for block in stack):
            continue
        for block in stack if first is None else stack[:first]:
            _checkpoint_block(block)
            count += 1
        covered.update(id(block) for block in stack)
    return count


# ----- compilation ------------------------------------------------------------------------------


def apply_compile(model: nn.Module, mode: str | None, backend: str = "inductor") -> int:
    """``blocks``: compile each block in place (one graph per block type, reused by every
    instance); returns the number of compiled modules. ``model`` and None leave the model as it is
    (the trainer compiles the whole training step)."""
    if mode != "blocks":
        return 0
    count = 0
    for block in blocks(model):
        block.compile(backend=backend)
        count += 1
    return count


@dataclass
class CompileStats:
    """Dynamo's process-wide counters, read relative to when the object was made."""

    graphs: int = 0
    recompilations: int = 0

    @staticmethod
    def now() -> "CompileStats":
        from torch._dynamo.utils import counters, guard_failures

        return CompileStats(int(counters["stats"]["unique_graphs"]),
                            sum(len(reasons) for reasons in guard_failures.values()))

    def since(self, start: "CompileStats") -> "CompileStats":
        return CompileStats(self.graphs - start.graphs, self.recompilations - start.recompilations)


def configure_cuda_math(device: torch.device, allow_tf32: bool | None) -> None:
    """TF32 matmuls and convolutions on CUDA (``allow_tf32``; None: on)."""
    if device.type != "cuda":
        return
    enabled = True if allow_tf32 is None else bool(allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def apply_channels_last(model: nn.Module) -> int:
    """Convolutional towers (CLIP ResNets) in ``channels_last`` memory format; returns how many."""
    towers = [m for m in model.modules() if isinstance(m, ModifiedResNet)]
    for tower in towers:
        tower.to(memory_format=torch.channels_last)
    return len(towers)
