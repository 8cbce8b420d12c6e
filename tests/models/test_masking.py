"""MAE patch dropping, the patch ↔ image reshapes, and masking inside the fused model."""
import pytest
import torch

from _model_toys import image_batch, text_batch, tiny_cfg
from vlkit.models.build import build_model
from vlkit.models.masking import patchify, random_masking, unpatchify


@pytest.mark.parametrize("length,ratio", [(16, 0.75), (16, 0.6), (10, 0.6), (7, 0.5), (5, 0.0)])
def test_random_masking_keeps_int_n_times_one_minus_ratio(length, ratio):
    torch.manual_seed(0)
    tokens = torch.randn(3, length, 4)
    keep = int(length * (1 - ratio))
    kept, mask, ids_restore = random_masking(tokens, ratio)
    assert kept.shape == (3, keep, 4)
    assert mask.shape == ids_restore.shape == (3, length)
    assert torch.equal(mask.sum(1), torch.full((3,), float(length - keep)))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    for b in range(3):
        assert sorted(ids_restore[b].tolist()) == list(range(length))  # a permutation


def test_ids_restore_puts_kept_tokens_back_at_their_positions():
    torch.manual_seed(1)
    batch, length, dim = 4, 12, 3
    tokens = torch.arange(batch * length * dim, dtype=torch.float32).reshape(batch, length, dim)
    kept, mask, ids_restore = random_masking(tokens, 0.75)
    # the decoder's unshuffle: append fillers for the removed ones, gather with ids_restore
    filler = torch.full((batch, length - kept.shape[1], dim), -1.0)
    restored = torch.cat([kept, filler], 1).gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))
    visible = mask == 0
    assert torch.equal(restored[visible], tokens[visible])
    assert (restored[~visible] == -1).all()
    # the kept tokens are exactly the unmasked positions of each sample
    for b in range(batch):
        assert sorted(kept[b, :, 0].tolist()) == tokens[b, visible[b], 0].tolist()


def test_random_masking_differs_per_sample_and_follows_the_global_rng():
    tokens = torch.zeros(8, 16, 2)
    torch.manual_seed(3)
    _, mask_a, _ = random_masking(tokens, 0.5)
    torch.manual_seed(3)
    _, mask_b, _ = random_masking(tokens, 0.5)
    assert torch.equal(mask_a, mask_b)
    assert len({tuple(row.tolist()) for row in mask_a}) > 1


def test_random_masking_rejects_ratio_one():
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(torch.zeros(1, 4, 2), 1.0)


def test_patchify_layout_is_h_w_p_q_c():
    # a 4×4 image, 3 channels, 2-px patches; each value encodes its (c, y, x)
    c, y, x = torch.meshgrid(torch.arange(3), torch.arange(4), torch.arange(4), indexing="ij")
    image = (100 * c + 10 * y + x).float().unsqueeze(0)
    patches = patchify(image, 2)
    assert patches.shape == (1, 4, 2 * 2 * 3)
    # patch (row 0, col 1) is pixels y in 0..1, x in 2..3; flattened p (row), q (col), c fastest
    expected = [100 * ch + 10 * py + (2 + qx) for py in range(2) for qx in range(2) for ch in range(3)]
    assert patches[0, 1].tolist() == expected
    # raster order of patches: index 2 is (row 1, col 0)
    assert patches[0, 2, :3].tolist() == [20.0, 120.0, 220.0]


def test_patchify_unpatchify_round_trip():
    images = torch.randn(2, 3, 64, 64)
    patches = patchify(images, 16)
    assert patches.shape == (2, 16, 768)
    assert torch.equal(unpatchify(patches, 16), images)


def test_patchify_rejects_partial_patches():
    with pytest.raises(ValueError, match="16-px patches"):
        patchify(torch.zeros(1, 3, 40, 40), 16)


def test_model_patchify_is_the_mae_target_layout():
    model = build_model(tiny_cfg({"mae": 1}))
    images = image_batch()
    assert torch.equal(model.patchify(images), patchify(images, 16))


# ----- masking inside the model ------------------------------------------------------------------

N = 16  # 64 px / 16-px patches → 4×4


@torch.no_grad()
def test_infer_with_masking_keeps_one_plus_k_image_tokens():
    model = build_model(tiny_cfg({"mae": 1}, mask_ratio=0.75)).eval()
    ids, masks = text_batch()
    out = model.infer(ids, masks, image_batch(), mask_image=True)
    keep = int(N * (1 - 0.75))
    assert out["image_feats"].shape == (2, 1 + keep, 64)
    assert out["image_masks"].shape == (2, 1 + keep) and bool(out["image_masks"].all())
    assert out["text_feats"].shape == (2, 16, 64)
    assert out["mae_mask"].shape == out["mae_ids_restore"].shape == (2, N)
    assert torch.equal(out["mae_mask"].sum(1), torch.full((2,), float(N - keep)))
    pred = model.mae_predict(out["image_feats"], out["mae_ids_restore"])
    assert pred.shape == (2, N, 16 * 16 * 3)


@pytest.mark.parametrize("keys", [
    dict(is_pretrain=True),  # VLC pre-training: patches dropped by default
    dict(is_pretrain=False, mae_patch_drop=True),
])
@torch.no_grad()
def test_patch_drop_on_by_config(keys):
    model = build_model(tiny_cfg({"mae": 1}, mask_ratio=0.6, **keys))
    ids, masks = text_batch()
    out = model.infer(ids, masks, image_batch())
    assert out["image_feats"].shape[1] == 1 + int(N * 0.4)


@pytest.mark.parametrize("keys", [dict(is_pretrain=False), dict(is_pretrain=True, mae_patch_drop=False)])
@torch.no_grad()
def test_patch_drop_off_by_config_keeps_all_patches(keys):
    model = build_model(tiny_cfg({"mae": 1}, **keys))
    ids, masks = text_batch()
    out = model.infer(ids, masks, image_batch())
    assert out["image_feats"].shape == (2, 1 + N, 64)
    assert "mae_mask" not in out and "mae_ids_restore" not in out
    # the decoder still predicts every patch without ids_restore
    assert model.mae_predict(out["image_feats"], None).shape == (2, N, 768)


@torch.no_grad()
def test_kept_image_tokens_are_the_unmasked_patches():
    """With masking, the encoder sees exactly the patch tokens of the unmasked positions."""
    model = build_model(tiny_cfg({"mae": 1}, mask_ratio=0.5)).eval()
    images = image_batch()
    torch.manual_seed(11)
    tokens, mask, ids_restore = model.transformer.embed(images, 0.5)
    full, _, _ = model.transformer.embed(images, 0.0)
    assert tokens.shape == (2, 1 + 8, 64)
    assert torch.equal(tokens[:, 0], full[:, 0])  # CLS first, with its position
    filler = torch.zeros(2, N - 8, 64)
    index = ids_restore.unsqueeze(-1).expand(-1, -1, 64)
    restored = torch.cat([tokens[:, 1:], filler], 1).gather(1, index)
    visible = mask == 0
    assert torch.equal(restored[visible], full[:, 1:][visible])


def test_mae_predict_without_decoder_is_a_clear_error():
    model = build_model(tiny_cfg())
    with pytest.raises(RuntimeError, match="loss_names.mae"):
        model.mae_predict(torch.zeros(1, 17, 64), None)
