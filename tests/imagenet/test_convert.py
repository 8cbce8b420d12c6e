"""Pre-trained weights into the classifier: vision weights bit-exact, head fresh, position
embeddings resampled, the key report, and the VLC→MAE file of convert_vlc2mae.py."""
import subprocess
import sys

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from _foreign import DEPTH, DIM, GRID, PATCH, random_state, vit_shapes, vlc_lightning_checkpoint
from conftest import REPO, parse
from vlkit.imagenet.convert import MAE_CHECKPOINT_NAME, load_pretrained
from vlkit.imagenet.models import HEAD_INIT_STD, build_classifier
from vlkit.models.backbones.vit import VisionTransformer as VlkitTower
from vlkit.models.pos_embed import resample_pos_embed

MODEL = ["--model", "vit_base_patch16", "--embed_dim", str(DIM), "--depth", str(DEPTH), "--num_heads", "2",
         "--patch_size", str(PATCH), "--device", "cpu"]


def classifier(*extra, classes=7, size=GRID * PATCH):
    torch.manual_seed(1)
    return build_classifier(parse([*MODEL, "--input_size", str(size), "--nb_classes", str(classes), *extra]))


@pytest.fixture()
def vlc_file(tmp_path):
    checkpoint = vlc_lightning_checkpoint()
    path = tmp_path / "vlc.ckpt"
    torch.save(checkpoint, path)
    return path, checkpoint["state_dict"]


def test_vlc_checkpoint_loads_its_vision_weights_bit_exactly_and_leaves_the_head_fresh(vlc_file):
    path, source = vlc_file
    model = classifier()
    report = load_pretrained(model, str(path))
    state = model.state_dict()
    vision = [key for key in vit_shapes() if key not in ("norm.weight", "norm.bias")]
    for key in vision:
        assert torch.equal(state[key], source[f"transformer.{key}"]), key
    assert report.format == "lightning" and report.loaded_keys == sorted(vision)
    assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert {"norm.weight", "norm.bias", "mask_token", "decoder_pred.weight"} <= set(report.unexpected)
    assert {"text_embeddings.word_embeddings.weight", "pooler.dense.weight", "itm_score.fc.weight",
            "token_type_embeddings.weight"} <= set(report.ignored)
    head = state["head.weight"]
    assert head.abs().max() <= 6 * HEAD_INIT_STD and head.std() == pytest.approx(HEAD_INIT_STD, rel=0.2)
    assert torch.equal(state["head.bias"], torch.zeros(7))
    assert torch.equal(state["fc_norm.weight"], torch.ones(DIM))


def test_position_embeddings_are_resampled_to_the_input_size(vlc_file):
    path, source = vlc_file
    model = classifier(size=48)  # grid 6 instead of 4
    report = load_pretrained(model, str(path))
    expected = resample_pos_embed(source["transformer.pos_embed"], 6)
    assert report.resized == ["pos_embed"] and model.pos_embed.shape == (1, 37, DIM)
    assert torch.equal(model.pos_embed.data, expected)
    assert torch.equal(model.pos_embed.data[:, 0], source["transformer.pos_embed"][:, 0])
    assert torch.equal(model.blocks[1].mlp.fc2.weight, source["transformer.blocks.1.mlp.fc2.weight"])


def test_converted_classifier_computes_the_vlc_vision_towers_features(tmp_path):
    # vlkit's own VLC tower (fixed sin-cos positions) saved in the Lightning layout; with CLS-token
    # pooling the classifier keeps the final norm, so its features are the tower's.
    torch.manual_seed(0)
    tower = VlkitTower(image_size=32, patch_size=PATCH, dim=DIM, depth=DEPTH, num_heads=2,
                       decoder_dim=16, decoder_depth=1, decoder_heads=2).eval()
    torch.save({"state_dict": {f"transformer.{k}": v for k, v in tower.state_dict().items()}}, tmp_path / "t.ckpt")
    model = classifier("--cls_token", "--drop_path", "0").eval()
    report = load_pretrained(model, str(tmp_path / "t.ckpt"))
    assert sorted(report.missing) == ["head.bias", "head.weight"]
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(images), tower(images), rtol=0, atol=1e-5)


def test_mae_and_timm_checkpoints_load_and_a_fine_tuned_head_only_when_evaluating(tmp_path):
    mae = random_state(vit_shapes(decoder_dim=16), seed=3)
    torch.save({"model": mae}, tmp_path / "mae.pth")
    model = classifier()
    assert load_pretrained(model, str(tmp_path / "mae.pth")).format == "mae"
    assert torch.equal(model.blocks[0].attn.qkv.weight, mae["blocks.0.attn.qkv.weight"])

    timm_model = TimmViT(img_size=32, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=2,
                         num_classes=5, global_pool="avg")
    torch.save(timm_model.state_dict(), tmp_path / "timm.pth")
    fresh = classifier()
    report = load_pretrained(fresh, str(tmp_path / "timm.pth"))
    assert report.format == "timm" and sorted(report.ignored) == ["head.bias", "head.weight"]
    assert torch.equal(fresh.fc_norm.weight, timm_model.fc_norm.weight)

    evaluated = classifier(classes=5)
    load_pretrained(evaluated, str(tmp_path / "timm.pth"), keep_head=True)
    assert torch.equal(evaluated.head.weight, timm_model.head.weight)
    with pytest.raises(ValueError, match="--nb_classes 5"):
        load_pretrained(classifier(classes=7), str(tmp_path / "timm.pth"), keep_head=True)


def test_a_checkpoint_of_another_depth_or_width_is_refused_with_the_fix(tmp_path):
    torch.save({"model": random_state(vit_shapes(depth=1))}, tmp_path / "shallow.pth")
    with pytest.raises(ValueError, match="--depth"):
        load_pretrained(classifier(), str(tmp_path / "shallow.pth"))
    torch.save({"model": random_state(vit_shapes(dim=32))}, tmp_path / "narrow.pth")
    with pytest.raises(ValueError, match="'cls_token' has shape \\(1, 1, 32\\)"):
        load_pretrained(classifier(), str(tmp_path / "narrow.pth"))
    torch.save({"model": {"something": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="matches no known format"):
        load_pretrained(classifier(), str(tmp_path / "other.pth"))


def test_convert_vlc2mae_writes_the_vision_keys_that_load_like_the_vlc_file(vlc_file, tmp_path):
    path, source = vlc_file
    out = tmp_path / "mae_dir"
    subprocess.run([sys.executable, str(REPO / "convert_vlc2mae.py"), "--vlc_model", str(path),
                    "--mae_model", str(out)], check=True, capture_output=True)
    written = torch.load(out / MAE_CHECKPOINT_NAME, weights_only=True)["model"]
    assert sorted(written) == sorted(k[len("transformer."):] for k in source if k.startswith("transformer."))
    direct, converted = classifier(), classifier()
    load_pretrained(direct, str(path))
    load_pretrained(converted, str(out / MAE_CHECKPOINT_NAME))
    for key, value in direct.state_dict().items():
        if not key.startswith("head."):  # fresh in both
            assert torch.equal(value, converted.state_dict()[key]), key
