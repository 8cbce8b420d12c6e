"""What a training step asks of the host and which attention kernels it reaches, per family.

On CUDA a host-device synchronisation inside the step stalls the GPU. On the CPU the same calls
(``.item()``, ``bool(tensor)``, ``.tolist()``, ``nonzero``, boolean-mask indexing, ``.cpu()``) are
found by watching every torch function the step calls; on CUDA the steps also run under
``torch.cuda.set_sync_debug_mode("error")``.
"""
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

from tests.tasks.test_parallelize_families import FAMILIES, family_setup
from vlkit.engine.attention_kernels import attention_kernels
from vlkit.engine.optim import build_optimizer

SYNCING = {"item", "__bool__", "tolist", "nonzero", "__int__", "__float__", "__index__", "masked_select", "cpu",
           "numpy"}


class HostReads(TorchFunctionMode):
    """Records ``(call, vlkit file:line)`` of every torch call that would wait for the device."""

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        syncing = name in SYNCING
        if name == "__getitem__" and len(args) > 1:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            syncing = any(torch.is_tensor(i) and i.dtype == torch.bool for i in index)
        stack = traceback.extract_stack()[:-1]
        # torch's own host-side bookkeeping (the optimizers' CPU step counters) is not a device read
        if syncing and "/torch/" not in stack[-1].filename:
            frames = [f for f in stack if "/vlkit/" in f.filename]
            self.found.append((name, f"{frames[-1].filename}:{frames[-1].lineno}" if frames else stack[-1].filename))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_training_step_never_reads_a_tensor_on_the_host(family, synthetic):
    cfg, task, model, batch = family_setup(family, synthetic)
    optimizer = build_optimizer(model, cfg)
    reads = HostReads()
    with reads:
        loss = task.training_step(model, batch)["loss"]
        loss.backward()
        optimizer.step()
    assert reads.found == []


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_reaches_a_fused_attention_kernel(family, synthetic):
    """Without dropout (evaluation) every attention call of every family takes a fused kernel:
    the masks have a form the kernels accept. (CPU: the flash kernel; CUDA: flash/efficient.)"""
    _, task, model, batch = family_setup(family, synthetic)
    model.eval()
    with torch.no_grad():
        kernels = attention_kernels(lambda: task.training_step(model, batch))
    assert sum(kernels.values()) > 0 and kernels.get("math", 0) == 0, dict(kernels)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-only: no GPU on this machine")


@cuda
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_steps_run_under_sync_debug_mode_error(family, synthetic):
    cfg, task, model, batch = family_setup(family, synthetic)
    model.cuda()
    batch = {k: v.cuda(non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    optimizer = build_optimizer(model, cfg)
    for _ in range(2):  # the first step may initialise lazily
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = task.training_step(model, batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = task.training_step(model, batch)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
def test_fused_adamw_steps_like_the_foreach_one():
    torch.manual_seed(0)
    weights = [torch.randn(64, 32, device="cuda", requires_grad=True) for _ in range(3)]
    copies = [w.detach().clone().requires_grad_() for w in weights]
    fused = torch.optim.AdamW(weights, lr=1e-3, weight_decay=0.05, fused=True)
    foreach = torch.optim.AdamW(copies, lr=1e-3, weight_decay=0.05, foreach=True)
    for step in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for w, c, g in zip(weights, copies, grads):
            w.grad, c.grad = g.clone(), g.clone()
        fused.step()
        foreach.step()
    for w, c in zip(weights, copies):
        torch.testing.assert_close(w, c, rtol=1e-5, atol=1e-6)


@cuda
@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_attention_reaches_flash_or_efficient_kernels_on_cuda(family, synthetic):
    _, task, model, batch = family_setup(family, synthetic)
    model.cuda().eval()
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        kernels = attention_kernels(lambda: task.training_step(model, batch))
    assert kernels.get("math", 0) == 0, dict(kernels)
