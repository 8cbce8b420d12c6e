"""METER with a Swin vision tower (swin32_* presets): timm's Swin at METER's window, the image
pooler on the mean token, Swin files and METER checkpoints in the original Swin layout, and a
clear refusal of ELIP."""
import re

import pytest
import torch
from omegaconf import OmegaConf

from tests.models._meter_toys import meter_cfg
from vlkit.config import resolve_config
from vlkit.engine.optim import build_optimizer
from vlkit.models.backbones.swin import SWIN_ARCHITECTURES, SwinVisionTower, build_swin_tower, swin_architecture
from vlkit.models.build import build_model
from vlkit.models.checkpoints import load_checkpoint

SWIN = "swin_base_patch4_window7_224_in22k"
IMAGE = 64


def swin_cfg(loss_names=None, **overrides):
    """A tiny co_attention config with a random 8-wide Swin-B layout (64-wide final tokens) at 64 px."""
    return meter_cfg(loss_names or {"itm": 1, "mlm": 1}, vit=SWIN, image_size=IMAGE, patch_size=32, **overrides)


def as_original_swin(state: dict, prefix: str = "") -> dict:
    """timm-layout Swin keys in the original layout (downsampling at the end of the previous
    stage), with the index buffers the original files carry."""
    out = {}
    for key, value in state.items():
        if key.startswith(prefix):
            key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key] = value
        if key.endswith("relative_position_bias_table"):
            out[key.replace("relative_position_bias_table", "relative_position_index")] = torch.zeros(4, 4).long()
    return out


def outputs(model):
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 120, (2, 12), generator=generator)
    image = torch.randn(2, 3, IMAGE, IMAGE, generator=generator)
    with torch.no_grad():
        out = model.infer(ids, torch.ones(2, 12, dtype=torch.long), image)
    return out["cls_feats"], out["image_feats"], model.itm_score(out["cls_feats"])


def test_swin_tower_gives_final_stage_tokens_and_the_pooler_sees_their_mean():
    torch.manual_seed(0)
    model = build_model(swin_cfg()).eval()
    assert isinstance(model.vit_model, SwinVisionTower)
    assert {block.window_size for block in model.vit_model.blocks} == {(2, 2)}
    image = torch.randn(2, 3, IMAGE, IMAGE)
    tokens = model.vit_model(image)
    assert tokens.shape == (2, (IMAGE // 32) ** 2, 64)
    ids, masks = torch.randint(1, 120, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    with torch.no_grad():
        out = model.infer(ids, masks, image)
        image_cls = model.cross_modal_image_pooler(out["image_feats"].mean(dim=1, keepdim=True))
    torch.testing.assert_close(out["cls_feats"][:, 64:], image_cls)
    assert model.num_layers == 24  # Swin-B's 2 + 2 + 18 + 2 blocks


def test_named_swin_architectures_have_meters_widths():
    for name, width in (("swin_base_patch4_window12_384_in22k", 1024), ("swin_large_patch4_window12_384_in22k", 1536)):
        cfg = resolve_config(["task_finetune_vqa_clip_bert", "swin32_large384" if "large" in name else "swin32_base384"])
        assert (cfg.vit, cfg.input_image_embed_size, cfg.image_size, cfg.img_prune["begin_layer"]) == (name, width, 384, [])
        assert list(cfg.train_transform_keys) == ["imagenet"]
        assert SWIN_ARCHITECTURES[name].embed_dim * 8 == width
        assert swin_architecture(cfg).embed_dim == width // 8  # random towers keep the named width too


def test_swin_weights_in_the_original_layout_load_and_reproduce_the_tower(tmp_path):
    torch.manual_seed(0)
    source = build_model(swin_cfg()).eval()
    path = tmp_path / f"{SWIN}.pth"
    tower_state = as_original_swin(source.vit_model.state_dict())
    torch.save({"model": {**tower_state, "head.weight": torch.zeros(3, 64), "head.bias": torch.zeros(3)}}, path)
    pretrained = swin_cfg(backbone_init="pretrained")  # the tower alone: the text tower would need a HF folder
    with pytest.raises(FileNotFoundError, match="swin_weights="):
        build_swin_tower(pretrained)
    with pytest.raises(ValueError, match="input_image_embed_size=64"):
        build_swin_tower(OmegaConf.merge(pretrained, {"swin_weights": str(path), "input_image_embed_size": 1024}))
    target = build_swin_tower(OmegaConf.merge(pretrained, {"swin_weights": str(path)})).eval()
    image = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(target(image), source.vit_model(image))


def test_official_meter_swin_checkpoint_round_trip_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    source = build_model(swin_cfg()).eval()
    path = tmp_path / "meter_swinbase_384_roberta_pretrain.ckpt"
    torch.save({"state_dict": as_original_swin(source.state_dict(), prefix="vit_model.")}, path)
    torch.manual_seed(1)
    target = build_model(swin_cfg()).eval()
    report = load_checkpoint(target, str(path))
    assert report.format == "meter" and not report.missing and not report.unexpected
    assert any(key.endswith("relative_position_index") for key in report.ignored)
    for before, after in zip(outputs(source), outputs(target)):
        torch.testing.assert_close(after, before)


def test_a_swin_tower_refuses_token_pruning_and_decays_by_block_depth():
    with pytest.raises(ValueError, match="Swin tower cannot prune"):
        build_model(swin_cfg(img_prune={"begin_layer": [1], "num_act_layers": [1], "keep_ratio": [0.5]}))
    model = build_model(swin_cfg())
    assert model.layer_id("vit_model.patch_embed.proj.weight") == 0
    assert model.layer_id("vit_model.layers.0.blocks.1.attn.qkv.weight") == 2
    assert model.layer_id("vit_model.layers.2.downsample.reduction.weight") == 5  # before stage 2's first block
    assert model.layer_id("vit_model.layers.3.blocks.1.mlp.fc1.weight") == 24
    assert model.layer_id("vit_model.norm.weight") == model.num_layers


def test_a_swin_meter_learns_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = swin_cfg({"itm": 1}, learning_rate=1e-3)
    model = build_model(cfg).train()
    optimizer = build_optimizer(model, cfg)
    images = torch.randn(8, 3, IMAGE, IMAGE)
    ids, masks = torch.randint(1, 120, (8, 6)), torch.ones(8, 6, dtype=torch.long)
    labels = torch.tensor([0, 1] * 4)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model.itm_score(model.infer(ids, masks, images)["cls_feats"]), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
