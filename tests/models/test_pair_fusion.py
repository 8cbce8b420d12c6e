"""ALBEF's NLVR2 encoder (``pair_fusion``): paired fusion layers with shared key/value, the
12 → 18 layer spreading of checkpoints, and the official NLVR2 / TA checkpoint layouts."""
import copy
import math

import pytest
import torch

from tests.models._model_toys import image_batch, text_batch, tiny_cfg
from vlkit.models.build import build_model, build_model_with_reports
from vlkit.models.checkpoints.albef import to_albef
from vlkit.models.fusion.cross_attention import pair_fusion_layers

ALBEF = dict(model="cross_attention", fusion_layer=1, max_position_embeddings=20, drop_rate=0.0)
PAIRED = dict(ALBEF, pair_fusion=True, num_layers=5, vision_layers=2)  # layers 1-2 and 3-4 are pairs


def paired_model(loss_names=None, **overrides):
    torch.manual_seed(0)
    return build_model(tiny_cfg(loss_names or {"nlvr2": 1}, **{**PAIRED, **overrides})).eval()


def layer_outputs(model, ids, masks, images):
    """Output of every BERT layer of one paired pass, by layer index."""
    outputs, handles = {}, []
    for index, layer in enumerate(model.text_encoder.encoder.layer):
        handles.append(layer.register_forward_hook(lambda m, args, out, i=index: outputs.__setitem__(i, out)))
    with torch.no_grad():
        model.infer(ids, masks, images)
    for handle in handles:
        handle.remove()
    return outputs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_first_layer_of_the_first_pair_reads_image_0_only_and_the_second_reads_image_1(seed):
    model = paired_model()
    ids, masks = text_batch()
    first, second, other = (image_batch(seed=seed + k) for k in (0, 10, 20))
    base = layer_outputs(model, ids, masks, (first, second))
    new_second = layer_outputs(model, ids, masks, (first, other))
    new_first = layer_outputs(model, ids, masks, (other, second))
    assert torch.equal(base[0], new_second[0])  # text-only layer
    assert torch.allclose(base[1], new_second[1], atol=1e-6)  # first of the pair: image 1 not read
    assert not torch.allclose(base[2], new_second[2], atol=1e-4)  # second of the pair reads it
    assert not torch.allclose(base[1], new_first[1], atol=1e-4)  # and the first reads image 0


def test_each_pair_cross_attends_to_image_0_then_image_1():
    model = paired_model()
    ids, masks = text_batch()
    contexts, handles = {}, []
    for index in range(1, 5):
        attention = model.text_encoder.encoder.layer[index].crossattention.self
        handles.append(attention.register_forward_hook(
            lambda m, args, out, i=index: contexts.__setitem__(i, args[1])))
    images = (image_batch(seed=1), image_batch(seed=2))
    with torch.no_grad():
        embeds = model.embed_image_pair(*images)
        model.infer(ids, masks, image_embeds=embeds)
    for handle in handles:
        handle.remove()
    for index, slot in ((1, 0), (2, 1), (3, 0), (4, 1)):
        assert torch.equal(contexts[index], embeds[slot]["tokens"]), index


def test_both_images_go_through_the_vit_as_one_batch():
    model = paired_model()
    first, second = image_batch(seed=1), image_batch(seed=2)
    with torch.no_grad():
        pair = model.embed_image_pair(first, second)
        alone = model.embed_image(second)
    assert torch.allclose(pair[1]["tokens"], alone["tokens"], atol=1e-6)
    assert pair[0]["tokens"].shape == alone["tokens"].shape


def test_key_and_value_are_shared_within_a_pair_and_learn_from_both_layers():
    model = paired_model()
    layers = model.text_encoder.encoder.layer
    for first in (1, 3):
        tied, source = layers[first].crossattention.self, layers[first + 1].crossattention.self
        assert tied.key is source.key and tied.value is source.value
        assert tied.query is not source.query
        assert layers[first].crossattention.output is not layers[first + 1].crossattention.output
    assert layers[1].crossattention.self.key is not layers[3].crossattention.self.key
    state = model.state_dict()
    for index in range(1, 5):  # every fusion layer keeps ALBEF's key names
        assert f"text_encoder.encoder.layer.{index}.crossattention.self.value.bias" in state
    names = [name for name, _ in model.named_parameters()]
    assert sum("crossattention.self.key.weight" in name for name in names) == 2  # one per pair

    untied = copy.deepcopy(model)
    own = untied.text_encoder.encoder.layer[1].crossattention.self
    own.key, own.value = copy.deepcopy(own.key), copy.deepcopy(own.value)
    ids, masks = text_batch()
    images = (image_batch(seed=1), image_batch(seed=2))
    for each in (model, untied):
        each.infer(ids, masks, images)["cls_feats"].square().sum().backward()
    shared = layers[2].crossattention.self.key.weight.grad
    from_first = untied.text_encoder.encoder.layer[1].crossattention.self.key.weight.grad
    from_second = untied.text_encoder.encoder.layer[2].crossattention.self.key.weight.grad
    assert from_first.abs().sum() > 0 and from_second.abs().sum() > 0
    assert torch.allclose(shared, from_first + from_second, atol=1e-6)


def test_paired_nlvr2_head_is_albefs_cls_head_on_the_fused_cls():
    model = paired_model()
    head = model.nlvr2_classifier
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Linear"]
    assert head[0].in_features == 64 and head[2].out_features == 2
    unpaired = build_model(tiny_cfg({"nlvr2": 1}, **ALBEF))
    assert unpaired.nlvr2_classifier[0].in_features == 128  # two passes concatenated


def test_wrong_image_arity_and_odd_fusion_layers_are_refused():
    model = paired_model()
    ids, masks = text_batch()
    with pytest.raises(ValueError, match="pair of images per text"):
        model.infer(ids, masks, image_batch())
    unpaired = build_model(tiny_cfg({"itm": 1}, **ALBEF))
    with pytest.raises(ValueError, match="pair_fusion=True"):
        unpaired.infer(ids, masks, (image_batch(), image_batch()))
    with pytest.raises(ValueError, match="even"):
        build_model(tiny_cfg({"nlvr2": 1}, **{**PAIRED, "num_layers": 4}))


def test_unpaired_layers_are_spread_onto_the_pairs():
    def layer_keys(count):
        return {f"text_encoder.encoder.layer.{n}.attention.self.query.weight": torch.tensor(float(n))
                for n in range(count)}
    state = {**layer_keys(5), "text_encoder.embeddings.word_embeddings.weight": torch.tensor(-1.0),
             "itc_head.logit_scale": torch.tensor(-2.0)}
    spread = pair_fusion_layers(state, fusion_layer=2, num_layers=8)  # 2 + 3 pairs
    got = {int(key.split(".")[3]): value.item() for key, value in spread.items() if ".layer." in key}
    assert got == {0: 0.0, 1: 1.0, 2: 2.0, 3: 2.0, 4: 3.0, 5: 3.0, 6: 4.0, 7: 4.0}
    assert spread["text_encoder.embeddings.word_embeddings.weight"].item() == -1.0
    assert spread["itc_head.logit_scale"].item() == -2.0
    paired = layer_keys(8)
    assert pair_fusion_layers(paired, fusion_layer=2, num_layers=8) is paired  # already paired
    partial = layer_keys(3)
    assert pair_fusion_layers(partial, fusion_layer=2, num_layers=8) is partial


def test_pretraining_checkpoint_fills_both_layers_of_each_pair(tmp_path):
    torch.manual_seed(0)
    pretrained = build_model(tiny_cfg({"itc": 1, "itm": 1, "mlm": 1}, **ALBEF, num_layers=3, vision_layers=2))
    torch.save({"model": to_albef(pretrained.state_dict(), "pretrain")}, tmp_path / "grit.pth")
    torch.manual_seed(1)
    model, reports = build_model_with_reports(tiny_cfg(
        {"nlvr2": 1}, **PAIRED, load_path=str(tmp_path / "grit.pth")))
    assert all(key.startswith("nlvr2_classifier.") for key in reports[0].missing)
    source = pretrained.text_encoder.encoder.layer
    for index, pretrained_index in ((0, 0), (1, 1), (2, 1), (3, 2), (4, 2)):
        got = model.text_encoder.encoder.layer[index].state_dict()
        for key, value in source[pretrained_index].state_dict().items():
            assert torch.equal(got[key], value), (index, key)


def test_official_nlvr2_and_ta_checkpoints_round_trip(tmp_path):
    for loss_names, head_keys in (({"nlvr2": 1}, ["cls_head.0.weight", "cls_head.2.bias"]),
                                  ({"nlvr_ta": 1, "itc": 0.5}, ["ta_head.weight", "vision_proj.weight", "temp"])):
        model = paired_model(loss_names)
        with torch.no_grad():  # the two layers of a pair now differ everywhere but in key/value
            for param in model.text_encoder.parameters():
                param.add_(torch.randn_like(param) * 0.1)
            if hasattr(model, "itc_head"):
                model.itc_head.logit_scale.fill_(math.log(1 / 0.05))
        official = to_albef(model.state_dict(), "finetune")
        assert set(head_keys) <= set(official)
        assert not any(".bert." in key or key.startswith(("nlvr2_classifier", "itc_head")) for key in official)
        for index in range(1, 5):
            assert f"text_encoder.encoder.layer.{index}.crossattention.self.key.weight" in official
        torch.save({"model": official, "config": {}, "epoch": 0}, tmp_path / "nlvr.pth")
        torch.manual_seed(5)
        loaded, reports = build_model_with_reports(tiny_cfg(
            loss_names, **PAIRED, load_path=str(tmp_path / "nlvr.pth")))
        assert reports[0].format == "albef" and reports[0].missing == [] and reports[0].unexpected == []
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        ids, masks = text_batch()
        images = (image_batch(seed=1), image_batch(seed=2))
        with torch.no_grad():
            expected, got = (m.eval().infer(ids, masks, images)["cls_feats"] for m in (model, loaded))
        assert torch.allclose(expected, got, atol=1e-6)
