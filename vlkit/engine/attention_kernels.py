"""Which scaled-dot-product-attention kernel a forward pass reaches.

``F.scaled_dot_product_attention`` picks its kernel from the inputs: on CUDA, flash attention
needs no mask, the memory-efficient kernel takes one, and a mask of the wrong form (or dtype,
or a head dimension the kernels lack) silently falls back to the slow math kernel. This module
records the kernels a pass dispatched to, so that a check can name the family that falls back.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
KERNELS = {
    aten._scaled_dot_product_flash_attention.default: "flash",
    aten._scaled_dot_product_flash_attention_for_cpu.default: "flash_cpu",
    aten._scaled_dot_product_efficient_attention.default: "efficient",
    aten._scaled_dot_product_cudnn_attention.default: "cudnn",
}
"""The fused kernels; the math fallback is composite (it decomposes into matmuls), so a call that
reached none of these is counted as ``math``."""


class _KernelRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.kernels: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in KERNELS:
            self.kernels[KERNELS[func]] += 1
        return func(*args, **(kwargs or {}))


class _CallCounter(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def attention_kernels(run: Callable[[], object]) -> Counter[str]:
    """Count, by kernel name (``flash``, ``efficient``, ``cudnn``, ``flash_cpu``, ``math``), the
    attention calls that ``run()`` makes. Attention written out as matmuls (no SDPA) is not seen."""
    recorder, calls = _KernelRecorder(), _CallCounter()
    with calls, recorder:
        run()
    kernels = recorder.kernels
    fallback = calls.calls - sum(kernels.values())
    if fallback > 0:
        kernels["math"] = fallback
    return kernels

