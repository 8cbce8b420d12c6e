"""Loading foreign checkpoints: VLC / ViLT Lightning files, MAE and timm vision towers, errors."""
import logging
from functools import partial

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn

from _model_foreign import (
    METRIC_STATES,
    fake_module_class,
    lightning_checkpoint,
    reference_shapes,
    shapes_for,
)
from _model_toys import image_batch, text_batch, tiny_cfg, vilt_cfg
from vlkit.models.build import build_model
from vlkit.models.checkpoints import LoadReport, load_checkpoint, read_checkpoint
from vlkit.utils.safe_load import UntrustedCheckpointError

VLC = {"mae": 1}  # VLC pre-training heads: mlm + itm (defaults) + the MAE decoder


def _cfg(cfg, **keys):
    cfg = cfg.copy()
    for key, value in keys.items():
        cfg[key] = value
    return cfg


def _build(cfg, seed):
    torch.manual_seed(seed)
    return build_model(cfg)


def _build_logged(cfg, seed, caplog):
    """build_model(cfg) and the LoadReport of each checkpoint it applied, by config key."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vlkit.models.build"):
        model = _build(cfg, seed)
    reports = {}
    for record in caplog.records:
        if record.name == "vlkit.models.build" and record.args and isinstance(record.args[0], LoadReport):
            reports[record.msg.split(":")[0]] = record.args[0]
    return model, reports


@torch.no_grad()
def _perturb(model, seed=123):
    """Move every parameter and float buffer off its (often constant) init, so a weight that a
    load forgets cannot hide behind LayerNorm ones, zero biases or the fixed sin-cos table."""
    generator = torch.Generator().manual_seed(seed)
    for value in model.state_dict().values():
        if value.is_floating_point():
            value.add_(0.05 * torch.randn(value.shape, generator=generator))
    return model


@torch.no_grad()
def _outputs(model, token_type=1):
    model.eval()
    ids, masks = text_batch()
    images = image_batch(size=model.transformer.image_size)
    out = model.infer(ids, masks, images, image_token_type_idx=token_type, mask_image=False)
    result = {k: out[k] for k in ("text_feats", "image_feats", "cls_feats", "raw_cls_feats")}
    if hasattr(model, "mlm_score"):
        result["mlm_logits"] = model.mlm_score(out["text_feats"])
    if hasattr(model, "itm_score"):
        result["itm_logits"] = model.itm_score(out["cls_feats"])
    if model.transformer.has_decoder:
        torch.manual_seed(7)
        masked = model.infer(ids, masks, images, mask_image=True)
        result["masked_image_feats"] = masked["image_feats"]
        result["mae_pred"] = model.mae_predict(masked["image_feats"], masked["mae_ids_restore"])
    return result


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _assert_differ(a, b):
    assert not torch.allclose(a["cls_feats"], b["cls_feats"])


def _save_official(path, checkpoint_for):
    """torch.save a PL 1.1.4 checkpoint whose callback states are keyed by the ModelCheckpoint
    class, so the file refers to ``pytorch_lightning``, which this environment lacks."""
    with fake_module_class("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint") as cls:
        torch.save(checkpoint_for(cls), path)


# ----- the state-dict layout ---------------------------------------------------------------------

# Fact sheet §2.4 written out for hidden 64, 2 blocks, 1 decoder block, mlm + itm + mae.
BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
         "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
         "mlp.fc2.weight", "mlp.fc2.bias"]
VLC_TINY_KEYS = (
    ["text_embeddings.position_ids",
     "text_embeddings.word_embeddings.weight", "text_embeddings.position_embeddings.weight",
     "text_embeddings.token_type_embeddings.weight",
     "text_embeddings.LayerNorm.weight", "text_embeddings.LayerNorm.bias",
     "token_type_embeddings.weight",
     "transformer.cls_token", "transformer.pos_embed",
     "transformer.patch_embed.proj.weight", "transformer.patch_embed.proj.bias"]
    + [f"transformer.blocks.0.{k}" for k in BLOCK]
    + [f"transformer.blocks.1.{k}" for k in BLOCK]
    + ["transformer.norm.weight", "transformer.norm.bias",
       "transformer.mask_token", "transformer.decoder_pos_embed",
       "transformer.decoder_embed.weight", "transformer.decoder_embed.bias"]
    + [f"transformer.decoder_blocks.0.{k}" for k in BLOCK]
    + ["transformer.decoder_norm.weight", "transformer.decoder_norm.bias",
       "transformer.decoder_pred.weight", "transformer.decoder_pred.bias",
       "pooler.dense.weight", "pooler.dense.bias",
       "mlm_score.bias", "mlm_score.transform.dense.weight", "mlm_score.transform.dense.bias",
       "mlm_score.transform.LayerNorm.weight", "mlm_score.transform.LayerNorm.bias",
       "mlm_score.decoder.weight",
       "itm_score.fc.weight", "itm_score.fc.bias"]
)
# transformers >= 5 no longer saves this buffer (fact sheet §12); official files have it.
OPTIONAL = {"text_embeddings.position_ids"}


def test_vlc_state_dict_keys_are_the_reference_keys():
    model = _build(tiny_cfg(VLC), 0)
    ours = set(model.state_dict())
    assert len(VLC_TINY_KEYS) == len(set(VLC_TINY_KEYS)) == 67
    assert ours - OPTIONAL == set(VLC_TINY_KEYS) - OPTIONAL
    # and the generator the round-trip tests use agrees with the literal list
    assert set(shapes_for(tiny_cfg(VLC))) == set(VLC_TINY_KEYS)


def test_state_dict_shapes_are_the_reference_shapes():
    for cfg in (tiny_cfg(VLC), vilt_cfg(), tiny_cfg({"mae": 1, "mlm": 0, "itm": 0})):
        model = _build(cfg, 0)
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in OPTIONAL}
        expected = {k: v for k, v in shapes_for(cfg).items() if k not in OPTIONAL}
        assert ours == expected


def test_vilt_flavour_layout():
    model = _build(vilt_cfg(), 0)
    keys = set(model.state_dict())
    assert not any("decoder_" in k or "mask_token" in k for k in keys)
    assert model.transformer.patch_embed.proj.weight.shape[-2:] == (32, 32)
    assert model.transformer.pos_embed.requires_grad  # learned in ViLT
    assert not _build(tiny_cfg(VLC), 0).transformer.pos_embed.requires_grad  # fixed in VLC


# ----- Lightning round trips ---------------------------------------------------------------------


def _round_trip(tmp_path, caplog, cfg, load_cfg=None):
    original = _perturb(_build(cfg, 0))
    path = tmp_path / "official.ckpt"
    _save_official(path, lambda cls: lightning_checkpoint(original, cfg, callback_type=cls))
    fresh = _build(load_cfg or cfg, 1)
    loaded, reports = _build_logged(_cfg(load_cfg or cfg, load_path=str(path)), 1, caplog)
    return original, fresh, loaded, reports["load_path"]


def test_vlc_lightning_round_trip(tmp_path, caplog):
    cfg = tiny_cfg(VLC)
    original, fresh, loaded, report = _round_trip(tmp_path, caplog, cfg)
    assert report.format == "lightning"
    assert report.missing == [] and report.unexpected == [] and report.resized == []
    # every weight of the state dict; position_ids and the metric states are not weights
    assert report.loaded == len(VLC_TINY_KEYS) - 1
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    _assert_differ(_outputs(fresh), _outputs(original))
    _assert_same(_outputs(loaded), _outputs(original))


def test_vilt_lightning_round_trip(tmp_path, caplog):
    cfg = vilt_cfg()
    original, fresh, loaded, report = _round_trip(tmp_path, caplog, cfg)
    assert report.missing == [] and report.unexpected == [] and report.resized == []
    assert report.loaded == len(shapes_for(cfg)) - 1
    _assert_differ(_outputs(fresh), _outputs(original))
    _assert_same(_outputs(loaded), _outputs(original))


def test_vilt_checkpoint_into_nlvr2_model_grows_token_types(tmp_path, caplog):
    cfg = vilt_cfg()
    original, _, loaded, report = _round_trip(
        tmp_path, caplog, cfg, load_cfg=vilt_cfg(loss_names={"nlvr2": 1})
    )
    assert report.resized == ["token_type_embeddings.weight"]
    assert report.missing and all(key.startswith("nlvr2_classifier.") for key in report.missing)
    types = loaded.token_type_embeddings.weight
    source = original.token_type_embeddings.weight
    assert types.shape == (3, 64)
    assert torch.equal(types[:2], source) and torch.equal(types[2], source[1])
    # image type 2 (NLVR2's second image) starts as type 1: same features as the original model
    expected = _outputs(original)
    _assert_same(_outputs(loaded, token_type=1), expected)
    _assert_same(_outputs(loaded, token_type=2), expected)


def test_nlvr2_checkpoint_keeps_its_three_token_types(tmp_path):
    cfg = vilt_cfg(loss_names={"nlvr2": 1})
    original = _perturb(_build(cfg, 0))
    path = tmp_path / "nlvr2.ckpt"
    torch.save(lightning_checkpoint(original, cfg, shapes=shapes_for(cfg, token_types=3, nlvr2=True)), path)
    model = _build(cfg, 1)
    report = load_checkpoint(model, str(path))
    assert report.missing == [] and report.resized == []
    assert torch.equal(model.token_type_embeddings.weight, original.token_type_embeddings.weight)


def test_metric_states_and_position_ids_are_dropped_not_reported(tmp_path):
    cfg = tiny_cfg()
    model = _build(cfg, 0)
    path = tmp_path / "m.ckpt"
    torch.save(lightning_checkpoint(model, cfg), path)
    report = load_checkpoint(_build(cfg, 1), str(path))
    assert report.unexpected == [] and report.missing == []
    assert not set(METRIC_STATES) & set(report.unexpected)


def test_heads_missing_from_checkpoint_are_reported(tmp_path):
    cfg = tiny_cfg()  # mlm + itm
    model = _build(cfg, 0)
    shapes = reference_shapes(hidden=64, vocab=120, text_len=16, grid=4, patch=16, depth=2, itm=False)
    path = tmp_path / "no_itm.ckpt"
    torch.save(lightning_checkpoint(model, cfg, shapes=shapes), path)
    report = load_checkpoint(_build(cfg, 1), str(path))
    assert sorted(report.missing) == ["itm_score.fc.bias", "itm_score.fc.weight"]


def test_vlc_checkpoint_into_finetuning_model_without_decoder(tmp_path):
    cfg = tiny_cfg(VLC)
    original = _perturb(_build(cfg, 0))
    path = tmp_path / "vlc.ckpt"
    torch.save(lightning_checkpoint(original, cfg), path)
    model = _build(tiny_cfg(is_pretrain=False), 1)
    report = load_checkpoint(model, str(path))
    assert report.missing == []
    assert report.unexpected and all(
        k.startswith(("transformer.decoder_", "transformer.mask_token")) for k in report.unexpected
    )
    assert torch.equal(model.transformer.blocks[1].mlp.fc2.weight, original.transformer.blocks[1].mlp.fc2.weight)


def test_pl11_file_reads_without_lightning_installed(tmp_path):
    """PL 1.1 keys callback states by the callback class: reading must not need the library."""
    cfg = tiny_cfg()
    path = tmp_path / "last.ckpt"
    _save_official(path, lambda cls: lightning_checkpoint(_build(cfg, 0), cfg, callback_type=cls))
    checkpoint = read_checkpoint(str(path), "load_path")
    [(callback, state)] = checkpoint["callbacks"].items()
    assert callback.__module__ == "pytorch_lightning.callbacks.model_checkpoint"
    assert callback.__name__ == "ModelCheckpoint"
    assert state["monitor"] == "val/the_metric"
    assert checkpoint["hyper_parameters"]["config"]["image_size"] == 64


@pytest.mark.parametrize("rebuilt_from_items", [False, True])
def test_config_in_unimportable_dict_class_still_gives_hints(tmp_path, rebuilt_from_items):
    """A config saved as a dict subclass of a missing library (sacred's read-only dict, say)
    comes back with its items, so mismatch errors can still quote it."""
    cfg = tiny_cfg()
    checkpoint = lightning_checkpoint(_build(cfg, 0), cfg)
    path = tmp_path / "sacred.ckpt"
    with fake_module_class("sacred.config.custom_containers", "ReadOnlyDict", (dict,)) as cls:
        if rebuilt_from_items:
            cls.__reduce__ = lambda self: (type(self), (dict(self),))
        checkpoint["hyper_parameters"]["config"] = cls(checkpoint["hyper_parameters"]["config"])
        torch.save(checkpoint, path)
    trust = not rebuilt_from_items  # a dict subclass filled item by item needs full unpickling
    if trust:
        with pytest.raises(UntrustedCheckpointError, match="Can only SETITEM.*trust_checkpoint=true"):
            load_checkpoint(_build(tiny_cfg(vocab_size=100), 1), str(path))
    with pytest.raises(ValueError, match=r"vocab_size=120; the checkpoint's config has .*'vocab_size': 120"):
        load_checkpoint(_build(tiny_cfg(vocab_size=100), 1), str(path), trust_checkpoint=trust)


# ----- MAE / timm vision towers via pretrain_path ------------------------------------------------


def _timm_vit(image_size=64, num_classes=0, seed=3):
    torch.manual_seed(seed)
    vit = TimmViT(
        img_size=image_size, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=4,
        qkv_bias=True, class_token=True, global_pool="", num_classes=num_classes,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    return _perturb(vit, seed).eval()


DECODER_PART = {  # some of an MAE decoder, in MAE's own (unprefixed) names; no decoder blocks
    "mask_token": (1, 1, 32), "decoder_pos_embed": (1, 17, 32), "decoder_embed.weight": (32, 64),
    "decoder_embed.bias": (32,), "decoder_norm.weight": (32,), "decoder_norm.bias": (32,),
    "decoder_pred.weight": (768, 32), "decoder_pred.bias": (768,),
}


@torch.no_grad()
def test_mae_pretrain_path_gives_timm_features(tmp_path, caplog):
    vit = _timm_vit()
    generator = torch.Generator().manual_seed(5)
    decoder = {k: torch.randn(shape, generator=generator) for k, shape in DECODER_PART.items()}
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": {**vit.state_dict(), **decoder}}, path)

    cfg = tiny_cfg(VLC)
    fresh = _build(cfg, 1).eval()
    model, reports = _build_logged(_cfg(cfg, pretrain_path=str(path)), 1, caplog)
    report = reports["pretrain_path"]
    model.eval()

    images = image_batch()
    expected = vit.forward_features(images)
    assert not torch.allclose(fresh.transformer(images), expected, atol=1e-3)
    torch.testing.assert_close(model.transformer(images), expected, atol=1e-5, rtol=1e-5)
    for key, value in decoder.items():
        assert torch.equal(model.transformer.state_dict()[key], value), key

    assert report.format == "mae" and report.unexpected == [] and report.resized == []
    # only the vision tower is in scope: the decoder blocks, not the (never loaded) text side
    assert set(report.missing) == {f"transformer.decoder_blocks.0.{k}" for k in BLOCK}
    # and the rest of the model is untouched
    assert torch.equal(model.pooler.dense.weight, fresh.pooler.dense.weight)
    assert torch.equal(model.text_embeddings.word_embeddings.weight, fresh.text_embeddings.word_embeddings.weight)


@torch.no_grad()
def test_timm_state_dict_pretrain_path(tmp_path, caplog):
    vit = _timm_vit(num_classes=5)
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)
    cfg = tiny_cfg(is_pretrain=False)  # no MAE decoder
    model, reports = _build_logged(_cfg(cfg, pretrain_path=str(path)), 1, caplog)
    report = reports["pretrain_path"]
    assert report.format == "timm" and report.missing == []
    assert sorted(report.unexpected) == ["transformer.head.bias", "transformer.head.weight"]
    images = image_batch()
    torch.testing.assert_close(
        model.eval().transformer(images), vit.forward_features(images), atol=1e-5, rtol=1e-5
    )


@torch.no_grad()
def test_mae_dict_as_load_path_loads_the_tower(tmp_path):
    """The reference silently loads nothing here (fact sheet §9.4); vlkit loads the tower."""
    vit = _timm_vit()
    path = tmp_path / "mae_modelckpt"
    torch.save({"model": vit.state_dict()}, path)
    model = build_model(_cfg(tiny_cfg(is_pretrain=False), load_path=str(path))).eval()
    images = image_batch()
    torch.testing.assert_close(model.transformer(images), vit.forward_features(images), atol=1e-5, rtol=1e-5)


# ----- errors ------------------------------------------------------------------------------------


def test_hidden_size_mismatch_names_key_shapes_and_config_key(tmp_path):
    wide = tiny_cfg(hidden_size=64)
    path = tmp_path / "wide.ckpt"
    torch.save(lightning_checkpoint(_build(wide, 0), wide), path)
    with pytest.raises(ValueError) as error:
        load_checkpoint(_build(tiny_cfg(hidden_size=32), 1), str(path))
    message = str(error.value)
    assert "text_embeddings.word_embeddings.weight" in message
    assert "(120, 64)" in message and "(120, 32)" in message
    assert "hidden_size=64" in message
    assert "vocab_size=" not in message.split(";")[0]  # the vocabulary is the same


def test_hidden_size_mismatch_in_a_vision_tower_checkpoint(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save({"model": _timm_vit().state_dict()}, path)  # width 64
    with pytest.raises(ValueError) as error:
        build_model(_cfg(tiny_cfg(hidden_size=32), pretrain_path=str(path)))
    message = str(error.value)
    assert "transformer.cls_token" in message
    assert "(1, 1, 64)" in message and "(1, 1, 32)" in message
    assert "hidden_size=64" in message


def _official_file(path, cfg):
    """``path`` holding an official-looking checkpoint of a model built from ``cfg``."""
    torch.save(lightning_checkpoint(_build(cfg, 0), cfg), path)
    return path


def test_vocab_size_mismatch_names_key_shapes_and_config_key(tmp_path):
    path = _official_file(tmp_path / "vocab.ckpt", tiny_cfg())
    with pytest.raises(ValueError) as error:
        load_checkpoint(_build(tiny_cfg(vocab_size=100), 1), str(path))
    message = str(error.value)
    assert "text_embeddings.word_embeddings.weight" in message
    assert "(120, 64)" in message and "(100, 64)" in message
    assert "vocab_size=120" in message


def test_max_text_len_mismatch_suggests_max_text_len(tmp_path):
    path = _official_file(tmp_path / "len.ckpt", tiny_cfg())
    with pytest.raises(ValueError, match=r"position_embeddings.*\(16, 64\).*\(12, 64\).*max_text_len=16"):
        load_checkpoint(_build(tiny_cfg(max_text_len=12), 1), str(path))


def test_vilt_checkpoint_into_vlc_model_is_a_patch_size_error(tmp_path):
    path = _official_file(tmp_path / "vilt.ckpt", vilt_cfg())
    with pytest.raises(ValueError) as error:
        load_checkpoint(_build(tiny_cfg(), 1), str(path))
    message = str(error.value)
    assert "transformer.patch_embed.proj.weight" in message
    assert "(64, 3, 32, 32)" in message and "(64, 3, 16, 16)" in message
    assert "patch_size" in message


def test_pretrain_path_given_a_lightning_checkpoint_says_use_load_path(tmp_path):
    cfg = tiny_cfg()
    path = _official_file(tmp_path / "vlc.ckpt", cfg)
    with pytest.raises(ValueError, match=r"pretrain_path.*lightning.*load_path"):
        build_model(_cfg(cfg, pretrain_path=str(path)))


@pytest.mark.parametrize("key", ["load_path", "pretrain_path"])
def test_missing_file_names_the_config_key(tmp_path, key):
    path = str(tmp_path / "nowhere.ckpt")
    with pytest.raises(FileNotFoundError, match=rf"{key}=.*nowhere\.ckpt"):
        build_model(_cfg(tiny_cfg(), **{key: path}))


def test_unknown_layout_lists_the_supported_formats(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": {"encoder.layer.0.weight": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match=r"matches no known format.*lightning.*mae.*timm"):
        build_model(_cfg(tiny_cfg(), load_path=str(path)))
