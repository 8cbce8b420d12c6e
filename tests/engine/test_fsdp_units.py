"""How strategy=fsdp cuts a model into units: every family's repeated layers, ALBEF's paired
NLVR2 layers (shared key/value) kept in one unit, the momentum model's blocks included; a
sharded paired model computes what the plain one does (one gloo process, also with CPU offload
and with activation checkpointing)."""
import copy

import pytest
import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from tests.models._model_toys import image_batch, text_batch, tiny_cfg
from vlkit.config.schema import defaults
from vlkit.engine.fsdp import _shared_groups, apply_fsdp, check_strategy
from vlkit.engine.parallelize import apply_activation_checkpointing, blocks
from vlkit.models.build import build_model

PAIRED = dict(model="cross_attention", fusion_layer=1, max_position_embeddings=20, drop_rate=0.0,
              pair_fusion=True, num_layers=5, vision_layers=2)  # BERT layers 1-2 and 3-4 are pairs


def paired_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg({"nlvr2": 1}, **PAIRED))


def names_of(model, modules):
    lookup = {id(m): name for name, m in model.named_modules()}
    return [lookup[id(m)] for m in modules]


def test_paired_layers_share_one_unit_and_no_parameter_is_in_two():
    model = paired_model()
    groups = [names_of(model, group) for group in _shared_groups(list(blocks(model)))]
    assert ["text_encoder.encoder.layer.1", "text_encoder.encoder.layer.2"] in groups
    assert ["text_encoder.encoder.layer.3", "text_encoder.encoder.layer.4"] in groups
    assert ["text_encoder.encoder.layer.0"] in groups and ["visual_encoder.blocks.0"] in groups
    seen = set()
    for group in _shared_groups(list(blocks(model))):
        params = {id(p) for block in group for p in block.parameters()}
        assert not params & seen
        seen |= params


def test_momentum_model_blocks_are_units_too():
    torch.manual_seed(0)
    model = build_model(tiny_cfg({"itc": 1, "itm": 1}, model="cross_attention", fusion_layer=1,
                                 max_position_embeddings=20, momentum=0.995))
    names = names_of(model, list(blocks(model)))
    assert "momentum_model.text_encoder.encoder.layer.1" in names and "text_encoder.encoder.layer.1" in names


def test_fsdp_refuses_fp16_and_unknown_strategies():
    cfg = OmegaConf.create({**defaults(), "strategy": "fsdp", "precision": 16})
    with pytest.raises(ValueError, match="precision=bf16"):
        check_strategy(cfg)
    with pytest.raises(ValueError, match="not one of"):
        check_strategy(OmegaConf.create({**defaults(), "strategy": "zero3"}))


@pytest.fixture
def one_process_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


class Forward(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, masks, images):
        return self.model.infer(ids, masks, images)["cls_feats"].clone()


@pytest.mark.parametrize("offload, checkpointed", [(False, False), (True, True)],
                         ids=["sharded", "cpu_offload_and_activation_checkpointing"])
def test_sharded_paired_model_computes_the_plain_output_and_gradients(one_process_group, offload, checkpointed):
    plain = Forward(paired_model())
    sharded = copy.deepcopy(plain)
    if checkpointed:  # the trainer's order: activation checkpointing, then FSDP
        assert apply_activation_checkpointing(sharded.model, True) > 0
    cfg = OmegaConf.create({"precision": 32, "fsdp_cpu_offload": offload})
    apply_fsdp(sharded, sharded.model, cfg, torch.device("cpu"))
    ids, masks = text_batch()
    images = (image_batch(seed=1), image_batch(seed=2))
    expected, got = plain(ids, masks, images), sharded(ids, masks, images)
    torch.testing.assert_close(got, expected)
    expected.square().sum().backward()
    got.square().sum().backward()
    shared = sharded.model.text_encoder.encoder.layer[2].crossattention.self.key.weight
    reference = plain.model.text_encoder.encoder.layer[2].crossattention.self.key.weight
    torch.testing.assert_close(shared.grad.full_tensor(), reference.grad)
