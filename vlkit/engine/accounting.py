"""FLOP and MFU accounting: model FLOPs of a training step, achieved TFLOP/s, and model FLOPs
utilisation against the device's bf16 dense peak.

Model FLOPs follow PaLM's MFU convention: a training step costs three times its forward pass
(forward, then the gradients of inputs and of weights), whatever activation checkpointing
recomputes. Forward work done without gradients (ALBEF's momentum model, ELIP's look-ahead
scoring) has no backward and counts once. The forward is counted with PyTorch's
``FlopCounterMode`` on the first step of a run.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_attention_flops(query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


_cpu_attention_flops._get_raw = True  # FlopCounterMode passes the tensors themselves
CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
"""The fused CPU attention kernel, which PyTorch's FLOP table leaves out (its CUDA kernels are in)."""

PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("A6000", 155.0),
    ("V100", 125.0),
)
"""Dense bf16 tensor-core peaks (fp16 for V100, which has no bf16) by a substring of the CUDA device
name, most specific first. ``peak_tflops=`` overrides them."""


def device_peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    """The device's dense bf16 peak in TFLOP/s: ``override`` when given, else the table's entry for
    the CUDA device name; None on CPU or for an unknown GPU (then no MFU is reported)."""
    if override is not None:
        if override <= 0:
            raise ValueError(f"peak_tflops={override} must be > 0 (the device's dense bf16 TFLOP/s)")
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


class _TotalsOnly:
    """Stands in for FlopCounterMode's module tracker: totals only, no per-module attribution (the
    tracker's gradient hooks on module inputs fail on some inputs, e.g. ALBEF's paired images)."""

    parents = ("Global",)

    def __enter__(self) -> "_TotalsOnly":
        return self

    def __exit__(self, *exc) -> None:
        return None


class _ForwardFlops(FlopCounterMode):
    """Counts forward FLOPs, keeping the part run without gradients apart."""

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
        self.mod_tracker = _TotalsOnly()
        self.without_grad = 0

    def _count_flops(self, func_packet, out, args, kwargs):
        before = self.get_total_flops()
        result = super()._count_flops(func_packet, out, args, kwargs)
        if not torch.is_grad_enabled():
            self.without_grad += self.get_total_flops() - before
        return result


class FlopCount:
    """The model FLOPs of the forward passes run inside ``counting()``."""

    def __init__(self) -> None:
        self.total: int | None = None

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count the forward run inside (compiled code runs eagerly meanwhile, so every op is seen)."""
        mode = _ForwardFlops()
        with torch.compiler.set_stance("force_eager"), mode:
            yield
        with_grad = mode.get_total_flops() - mode.without_grad
        self.total = 3 * with_grad + mode.without_grad


def throughput_fields(flops_per_sample: float | None, samples_per_s: float, peak_tflops: float | None,
                      world_size: int = 1) -> dict[str, float]:
    """``model_flops_per_sample``, ``tflops`` (achieved per device) and ``mfu`` (when the peak is
    known) for a measured rate of ``samples_per_s`` across ``world_size`` devices."""
    if not flops_per_sample:
        return {}
    achieved = flops_per_sample * samples_per_s / world_size / 1e12
    fields = {"model_flops_per_sample": float(flops_per_sample), "tflops": achieved}
    if peak_tflops:
        fields["mfu"] = achieved / peak_tflops
    return fields
