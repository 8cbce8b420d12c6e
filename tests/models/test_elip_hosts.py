"""ELIP in its hosts: the single-stream (VLC/ViLT) and cross-attention (ALBEF) families, phases,
the momentum encoder, the presets and the configuration errors."""
import dataclasses

import pytest
import torch

from tests.models._model_toys import image_batch, text_batch, tiny_cfg
from vlkit.config import resolve_config
from vlkit.models.build import build_model
from vlkit.models.token_reduction import token_pruners

STAGES = {"begin_layer": [1, 2], "num_act_layers": [1, 1], "keep_ratio": [0.5, 0.25]}
ALBEF = dict(model="cross_attention", fusion_layer=1, max_position_embeddings=20, drop_rate=0.0, num_layers=3)


def vlc(**overrides):
    return tiny_cfg({"itm": 1, "mlm": 1}, **{"num_layers": 3, "mae_patch_drop": False, "img_prune": STAGES,
                                             **overrides})


def albef(**overrides):
    return tiny_cfg({"itc": 1, "itm": 1, "mlm": 1}, img_prune=STAGES, **{**ALBEF, **overrides})


def image_tokens(model, **kw):
    ids, masks = text_batch()
    with torch.no_grad():
        return model.infer(ids, masks, image_batch(), **kw)["image_feats"].shape[1]


@pytest.fixture(scope="module")
def hosts():
    torch.manual_seed(0)
    return {"vlc": build_model(vlc()), "albef": build_model(albef())}


@pytest.mark.parametrize("host", ["vlc", "albef"])
@pytest.mark.parametrize("phases,is_pretrain,training,prunes", [
    (["pretrain"], True, True, True), (["pretrain"], True, False, False), (["pretrain"], False, True, False),
    (["finetune"], False, True, True), (["finetune"], True, True, False), (["eval"], True, False, True),
    (["eval"], True, True, False),
])
def test_phases_switch_pruning(hosts, host, phases, is_pretrain, training, prunes):
    model = hosts[host].train(training)
    (pruner,) = token_pruners(model)
    pruner.schedule = dataclasses.replace(pruner.schedule, phases=tuple(phases))
    pruner.is_pretrain = is_pretrain
    assert image_tokens(model) == (1 + 4 + 1 if prunes else 1 + 16)


def test_single_stream_prunes_only_image_tokens_and_keeps_masks_consistent():
    torch.manual_seed(0)
    model = build_model(vlc()).eval()
    ids, masks = text_batch()
    with torch.no_grad():
        out = model.infer(ids, masks, image_batch())
    assert out["text_feats"].shape[1] == 16 and torch.equal(out["text_masks"], masks)
    assert out["image_feats"].shape[1] == out["image_masks"].shape[1] == 6
    trace = model.transformer.token_pruner.last_trace
    assert trace.tokens_per_block == [17, 10, 6]
    # the text vector is the text [CLS] of the joint sequence: a different caption, a different choice
    with torch.no_grad():
        model.infer(ids.flip(0), masks.flip(0), image_batch())
    assert not torch.equal(model.transformer.token_pruner.last_trace.stages[0].kept, trace.stages[0].kept)


def test_albef_scores_against_the_unimodal_text_cls():
    torch.manual_seed(0)
    model = build_model(albef()).eval()
    ids, masks = text_batch()
    images = image_batch()
    with torch.no_grad():
        fused = model.infer(ids, masks, images)
        direct = model.embed_image(images, text_ids=ids, text_masks=masks)
        again = model.infer(ids, masks, image_embeds=direct)
    assert fused["image_feats"].shape[1] == 6
    assert torch.allclose(fused["cls_feats"], again["cls_feats"], atol=1e-6)
    text_cls = model.text_encoder.encode_text(ids, masks)[:, 0]
    with torch.no_grad():
        by_hand = model.visual_encoder(images, text_cls=text_cls)
    assert torch.allclose(by_hand, direct["tokens"], atol=1e-6)


def test_momentum_encoder_stays_full_length():
    torch.manual_seed(0)
    model = build_model(albef(momentum=0.995, img_prune_phases=["pretrain"])).train()
    online, teacher = token_pruners(model)
    assert online.enabled and not teacher.enabled
    ids, masks = text_batch()
    with torch.no_grad():
        assert model.embed_image(image_batch(), text_ids=ids, text_masks=masks)["tokens"].shape[1] == 6
        assert model.momentum_model.embed_image(image_batch(), text_ids=ids, text_masks=masks)["tokens"].shape[1] == 17


def test_pruning_and_mae_patch_dropping_is_a_clear_error():
    with pytest.raises(ValueError, match="MAE patch dropping"):
        build_model(vlc(mae_patch_drop=None, is_pretrain=True))
    model = build_model(vlc(mae_patch_drop=None, is_pretrain=False))  # fine-tuning: no patch dropping
    assert token_pruners(model)[0].is_pretrain is False


def test_presets_and_command_line_entries():
    cfg = resolve_config(["elip_meter", "img_prune.keep_ratio=[0.8,0.6,0.4]"])
    assert cfg.img_prune == {"begin_layer": [2, 4, 9], "num_act_layers": [2, 5, 2], "keep_ratio": [0.8, 0.6, 0.4]}
    albef_preset = resolve_config(["elip_albef"])
    assert albef_preset.img_prune.begin_layer == [2, 4, 10] and albef_preset.img_prune_phases == ["pretrain"]
    with pytest.raises(ValueError, match=r"img_prune\.begin_layer"):  # stage 10 of a 3-block tower
        build_model(tiny_cfg({"itm": 1}, num_layers=3, mae_patch_drop=False, img_prune=dict(albef_preset.img_prune)))


def test_meter_clip_tower_prunes_with_the_text_first_token_state():
    from tests.models._meter_toys import meter_cfg

    stages = {"begin_layer": [1], "num_act_layers": [1], "keep_ratio": [0.25]}
    torch.manual_seed(0)
    model = build_model(meter_cfg({"itm": 1}, image_size=64, img_prune=stages)).eval()
    ids, masks = text_batch(length=10, real=(10, 6))
    with torch.no_grad():
        out = model.infer(ids, masks, image_batch())
        text_cls = model.encode_text(ids, masks)[:, 0]
        tower = model.vit_model(image_batch(), text_cls=text_cls)
    assert out["image_feats"].shape[1] == tower.shape[1] == 1 + 4 + 1
    assert model.vit_model.token_pruner.last_trace.tokens_per_block == [17, 6]
    off = build_model(meter_cfg({"itm": 1}, image_size=64, img_prune=stages, img_prune_phases=["pretrain"])).eval()
    with torch.no_grad():
        assert off.infer(ids, masks, image_batch())["image_feats"].shape[1] == 17
