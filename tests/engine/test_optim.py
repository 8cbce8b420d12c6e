"""Parameter groups, optimizer choice and LR schedules on a hand-built 2-layer toy model."""
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from vlkit.config.schema import defaults
from vlkit.engine.optim import (
    build_optimizer,
    build_scheduler,
    param_groups_layer_decay,
    param_groups_vanilla,
    warmup_steps_from,
)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(4)
        self.attn = nn.Linear(4, 4)


class Transform(nn.Module):
    def __init__(self):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(4)


class Toy(nn.Module):
    """Embeddings = layer 0, blocks.i = i + 1, everything else = 3 (num_layers + 1)."""

    num_layers = 2

    def __init__(self):
        super().__init__()
        self.text_embeddings = nn.Embedding(5, 4)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.norm = nn.LayerNorm(4)
        self.transform = Transform()
        self.vqa_classifier = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def layer_id(self, name):
        if name.startswith("text_embeddings"):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers + 1


FINAL_NORMS = ("transform.LayerNorm.weight", "transform.LayerNorm.bias")


def make_cfg(**overrides):
    cfg = OmegaConf.create(defaults())
    base = {"learning_rate": 1e-4, "weight_decay": 0.01, "lr_mult": 10, "layer_decay": 0.5}
    cfg.merge_with({**base, **overrides})
    return cfg


def described(model, groups):
    """{frozenset of parameter names: (lr_scale, weight_decay, lr)} for each group."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        frozenset(names[id(p)] for p in group["params"]): (group["lr_scale"], group["weight_decay"], group["lr"])
        for group in groups
    }


def assert_groups(actual, expected):
    assert set(actual) == set(expected)
    for names, (scale, decay) in expected.items():
        assert actual[names] == (pytest.approx(scale), decay, pytest.approx(1e-4 * scale)), sorted(names)


def test_vanilla_groups_split_norms_biases_and_heads():
    model = Toy()
    expected = {
        frozenset({"text_embeddings.weight", "blocks.0.attn.weight", "blocks.1.attn.weight"}): (1, 0.01),
        frozenset({"blocks.0.norm1.weight", "blocks.0.norm1.bias", "blocks.0.attn.bias",
                   "blocks.1.norm1.weight", "blocks.1.norm1.bias", "blocks.1.attn.bias",
                   "norm.weight", "norm.bias", *FINAL_NORMS}): (1, 0.0),
        # the head's own LayerNorm weight ("vqa_classifier.1.weight") matches no no-decay name: decayed
        frozenset({"vqa_classifier.0.weight", "vqa_classifier.1.weight"}): (10, 0.01),
        frozenset({"vqa_classifier.0.bias", "vqa_classifier.1.bias"}): (10, 0.0),
    }
    assert_groups(described(model, param_groups_vanilla(model, make_cfg())), expected)


def test_vanilla_groups_drop_empty_groups():
    model = Toy()
    model.vqa_classifier.requires_grad_(False)
    groups = param_groups_vanilla(model, make_cfg())
    assert [g["lr_scale"] for g in groups] == [1, 1]


def test_layer_decay_groups_have_hand_computed_scales():
    model = Toy()
    expected = {
        frozenset({"text_embeddings.weight"}): (0.125, 0.01),
        frozenset({"blocks.0.attn.weight"}): (0.25, 0.01),
        frozenset({"blocks.0.norm1.weight", "blocks.0.norm1.bias", "blocks.0.attn.bias"}): (0.25, 0.0),
        frozenset({"blocks.1.attn.weight"}): (0.5, 0.01),
        frozenset({"blocks.1.norm1.weight", "blocks.1.norm1.bias", "blocks.1.attn.bias"}): (0.5, 0.0),
        frozenset({"norm.weight", "norm.bias", *FINAL_NORMS}): (1, 0.0),
        frozenset({"vqa_classifier.0.weight"}): (10, 0.01),
        frozenset({"vqa_classifier.0.bias", "vqa_classifier.1.weight", "vqa_classifier.1.bias"}): (10, 0.0),
    }
    assert_groups(described(model, param_groups_layer_decay(model, make_cfg())), expected)


def test_frozen_parameters_are_in_no_group():
    model = Toy()
    frozen = {id(p) for p in model.frozen.parameters()}
    for make_groups in (param_groups_vanilla, param_groups_layer_decay):
        grouped = [id(p) for g in make_groups(model, make_cfg()) for p in g["params"]]
        assert frozen.isdisjoint(grouped)
        assert len(grouped) == len(set(grouped)) == sum(p.requires_grad for p in model.parameters())


def test_layer_decay_rejects_models_without_layer_ids():
    with pytest.raises(TypeError, match="layer_decay=1"):
        param_groups_layer_decay(nn.Linear(2, 2), make_cfg())


def test_build_optimizer_picks_groups_and_class():
    model = Toy()
    pretrain = build_optimizer(model, make_cfg(is_pretrain=True))
    assert isinstance(pretrain, torch.optim.AdamW) and len(pretrain.param_groups) == 4
    assert pretrain.defaults["betas"] == (0.9, 0.98) and pretrain.defaults["eps"] == 1e-8
    assert len(build_optimizer(model, make_cfg(is_pretrain=False)).param_groups) == 8
    assert len(build_optimizer(model, make_cfg(is_pretrain=False, layer_decay=1.0)).param_groups) == 4
    assert type(build_optimizer(model, make_cfg(optim_type="adam"))) is torch.optim.Adam
    sgd = build_optimizer(model, make_cfg(optim_type="sgd"))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match="'adamw', 'adam', 'sgd'"):
        build_optimizer(model, make_cfg(optim_type="lamb"))


def test_adamw_decays_only_the_decay_groups():
    model = Toy()
    optimizer = build_optimizer(model, make_cfg(learning_rate=0.1, weight_decay=0.1))
    for p in model.parameters():
        p.data.fill_(1.0)
        p.grad = torch.full_like(p, 0.5)
    optimizer.step()
    # first Adam step moves each weight by lr (g / |g|); decoupled decay also scales it by 1 - lr*wd
    assert torch.allclose(model.blocks[0].attn.weight, torch.full((4, 4), 0.99 - 0.1))
    assert torch.allclose(model.blocks[0].attn.bias, torch.full((4,), 1 - 0.1))


@pytest.mark.parametrize(
    ("warmup", "total", "expected"), [(7, 100, 7), (0.1, 100, 10), (0.25, 30, 7), (20.0, 100, 20), (0, 50, 0)]
)
def test_warmup_steps_from(warmup, total, expected):
    assert warmup_steps_from(make_cfg(warmup_steps=warmup), total) == expected


@pytest.mark.parametrize("warmup", [-1, True])
def test_warmup_steps_rejects_bad_values(warmup):
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_steps_from(make_cfg(warmup_steps=warmup), 100)


def lrs_at(scheduler, optimizer, steps):
    """Each group's LR after ``s`` scheduler steps, for each s in ``steps``."""
    seen = {}
    for step in range(max(steps) + 1):
        if step in steps:
            seen[step] = [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    return seen


def test_linear_schedule_with_warmup_fraction():
    model = Toy()
    optimizer = build_optimizer(model, make_cfg())
    cfg = make_cfg(warmup_steps=0.1, decay_power=1, end_lr=0.0)
    scheduler = build_scheduler(optimizer, cfg, total_steps=100)
    # warm-up 10 steps: lr * s / 10, then lr * (100 - s) / 90; the head group is 10x throughout
    expected = {0: 0.0, 5: 0.5, 10: 1.0, 55: 0.5, 91: 0.1, 100: 0.0}
    for step, lrs in lrs_at(scheduler, optimizer, list(expected)).items():
        assert lrs == pytest.approx([1e-4 * expected[step] * s for s in (1, 1, 10, 10)], abs=1e-12), step


def test_cosine_schedule():
    model = Toy()
    optimizer = build_optimizer(model, make_cfg(is_pretrain=False))
    scheduler = build_scheduler(optimizer, make_cfg(warmup_steps=10, decay_power="cosine"), total_steps=110)
    scales = [g["lr_scale"] for g in optimizer.param_groups]
    expected = {5: 0.5, 10: 1.0, 35: (1 + 2**-0.5) / 2, 60: 0.5, 110: 0.0}
    for step, lrs in lrs_at(scheduler, optimizer, list(expected)).items():
        assert lrs == pytest.approx([1e-4 * expected[step] * s for s in scales], abs=1e-12), step


def test_cosine_schedule_ends_at_end_lr():
    """ALBEF's ``min_lr``: lr = min + (max - min)(1 + cos(pi t)) / 2 after the warm-up."""
    model = Toy()
    optimizer = build_optimizer(model, make_cfg(is_pretrain=False))
    cfg = make_cfg(warmup_steps=10, decay_power="cosine", end_lr=1e-5)
    scheduler = build_scheduler(optimizer, cfg, total_steps=110)
    expected = {10: 1e-4, 60: 1e-5 + 0.5 * 9e-5, 110: 1e-5}
    for step, lrs in lrs_at(scheduler, optimizer, list(expected)).items():
        assert lrs[-1] == pytest.approx(expected[step] * optimizer.param_groups[-1]["lr_scale"], rel=1e-9), step


def test_scheduler_rejects_bad_settings():
    optimizer = build_optimizer(Toy(), make_cfg())
    with pytest.raises(ValueError, match="'linear'"):
        build_scheduler(optimizer, make_cfg(warmup_steps=10, decay_power="linear"), 100)
    with pytest.raises(ValueError, match="100 total steps"):
        build_scheduler(optimizer, make_cfg(warmup_steps=100), 100)
