"""Activation checkpointing and regional compilation on every model family: the same losses and
gradients as eager, on a real batch of each family's tiny pre-training task."""
import copy

import pytest
import torch
import torch._inductor.config

from vlkit.config import resolve_config
from vlkit.config.cli_with import ConfigError
from vlkit.engine.optim import build_optimizer
from vlkit.engine.parallelize import (
    CompileStats, apply_activation_checkpointing, apply_compile, block_stacks, resolve_compile,
)
from vlkit.tasks import build_task

BATCH = 4


def family_words(family: str, synthetic: dict) -> list[str]:
    """A tiny pre-training config of ``family`` on the synthetic set."""
    data = [f"tokenizer={synthetic['tokenizer']}", f"vocab_size={synthetic['vocab_size']}"]
    if family == "clipvil":
        return ["clipvil_pretrain", "clipvil_tiny", f"data_root={synthetic['clipvil']['root']}", *data,
                "aspect_ratio_group_factor=-1"]
    data.append(f"data_root={synthetic['out_dir']}")
    if family == "single_stream":  # VLC: MAE patch dropping in the MLM pass, random ITM negatives
        return ["task_mlm_itm_mae", "tiny", *data, "datasets=[coco]"]
    if family == "co_attention":  # METER with ELIP pruning before blocks 1 and 2
        return ["task_mlm_itm_clip_bert", "clip16", "meter_tiny", "image_size=32", "max_text_len=16", *data,
                "datasets=[coco]", "drop_rate=0.0"]
    return ["albef_pretrain", "tiny", "model=cross_attention", "fusion_layer=1", "max_position_embeddings=0",
            "image_size=64", "itc_queue_size=16", "datasets=[coco]", *data]  # momentum model and queue


FAMILIES = ("single_stream", "co_attention", "cross_attention", "clipvil")


def family_setup(family: str, synthetic: dict, *words: str):
    cfg = resolve_config([*family_words(family, synthetic), *words])
    assert cfg.model == family
    task = build_task(cfg)
    torch.manual_seed(0)
    model = task.build_model().train()
    dataset = task.build_dataset("train")
    batch = task.collate_fn("train")([dataset[i] for i in range(BATCH)])
    return cfg, task, model, batch


def train_steps(task, model, cfg, batch, steps: int):
    """Losses and the gradients of the last step, ``steps`` AdamW steps on ``batch`` (seeded)."""
    optimizer = build_optimizer(model, cfg)
    losses = []
    for step in range(steps):
        torch.manual_seed(100 + step)
        optimizer.zero_grad()
        loss = task.training_step(model, batch)["loss"]
        loss.backward()
        losses.append(loss.detach())
        if step < steps - 1:
            optimizer.step()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return torch.stack(losses), grads


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpointing_every_block_gives_the_same_gradients(family, synthetic):
    cfg, task, model, batch = family_setup(family, synthetic)
    checkpointed = copy.deepcopy(model)
    count = apply_activation_checkpointing(checkpointed, True)
    assert count == sum(len(stack) for stack in block_stacks(checkpointed)) > 0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eager_losses, eager_grads = train_steps(task, model, cfg, batch, 1)
    checkpointed.load_state_dict(state)
    ac_losses, ac_grads = train_steps(task, checkpointed, cfg, batch, 1)
    torch.testing.assert_close(ac_losses, eager_losses, rtol=0, atol=1e-5)
    assert ac_grads.keys() == eager_grads.keys()
    for name in eager_grads:
        torch.testing.assert_close(ac_grads[name], eager_grads[name], rtol=1e-5, atol=1e-5, msg=name)
    if family == "clipvil":  # BatchNorm statistics are updated once, not again in the recomputation
        for (name, a), b in zip(model.named_buffers(), checkpointed.buffers()):
            torch.testing.assert_close(b, a, msg=name)


def test_checkpointing_the_first_block_of_each_stack_only(synthetic):
    _, _, model, _ = family_setup("co_attention", synthetic)
    stacks = block_stacks(model)
    count = apply_activation_checkpointing(model, 1)
    assert count == len(stacks)  # the CLIP tower, the HF text layers and both co-attention stacks
    text_layers = model.text_transformer.encoder.layer
    assert text_layers[0].gradient_checkpointing and not text_layers[1].gradient_checkpointing
    assert getattr(model.vit_model.blocks[0], "checkpointed", False)
    assert not getattr(model.vit_model.blocks[1], "checkpointed", False)
    names = [name for name, _ in model.named_parameters()]
    assert any(name.startswith("vit_model.transformer.resblocks.0.") for name in names)  # names unchanged


COMPILE_BACKENDS = {"single_stream": "inductor", "co_attention": "aot_eager", "cross_attention": "aot_eager",
                    "clipvil": "aot_eager"}
"""Inductor (code generation, the default) on one family; graph capture, guards and autograd
through ``aot_eager`` on the others, which starts in a fraction of inductor's time on a CPU."""


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_blocks_match_eager(family, synthetic):
    """Two optimizer steps with each block compiled: the same losses and gradients within 1e-4;
    ELIP's changing token counts (METER) compile no new graph after the first steps."""
    cfg, task, model, batch = family_setup(family, synthetic)
    compiled = copy.deepcopy(model)
    assert apply_compile(compiled, "blocks", COMPILE_BACKENDS[family]) > 0
    eager_losses, eager_grads = train_steps(task, model, cfg, batch, 2)
    with torch._inductor.config.patch(fallback_random=True):  # dropout draws as eager
        compiled_losses, compiled_grads = train_steps(task, compiled, cfg, batch, 2)
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-4, atol=1e-4)
    for name in eager_grads:
        torch.testing.assert_close(compiled_grads[name], eager_grads[name], rtol=1e-4, atol=1e-4, msg=name)
    if family == "co_attention":
        before = CompileStats.now()
        train_steps(task, compiled, cfg, batch, 2)
        after = CompileStats.now().since(before)
        assert (after.graphs, after.recompilations) == (0, 0)


def test_bad_values_fail_before_anything_runs_naming_the_valid_ones():
    with pytest.raises(ConfigError, match="compile='fast' is not valid; use one of None, False, True, 'blocks'"):
        resolve_config(["tiny", "compile=fast"])
    with pytest.raises(ConfigError, match="grad_checkpointing=-1 is not valid; use False, True"):
        resolve_config(["tiny", "grad_checkpointing=-1"])
    with pytest.raises(ConfigError, match="optimizer_impl='fastest' is not valid"):
        resolve_config(["tiny", "optimizer_impl=fastest"])
    assert resolve_compile(None, torch.device("cpu")) is None
    assert resolve_compile(None, torch.device("cuda")) == "blocks"
    assert resolve_compile(True, torch.device("cpu")) == "blocks"
