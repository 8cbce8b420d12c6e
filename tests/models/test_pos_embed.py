"""Fixed sin-cos tables (MAE formula) and resampling position embeddings on load."""
import math

import pytest
import torch
import torch.nn.functional as F

from _model_foreign import lightning_checkpoint
from _model_toys import image_batch, text_batch, tiny_cfg
from vlkit.models.build import build_model
from vlkit.models.checkpoints import load_checkpoint
from vlkit.models.pos_embed import grid_side, resample_pos_embed, sincos_2d

S1, C1 = math.sin(1.0), math.cos(1.0)


def test_sincos_dim4_grid2_by_hand():
    # dim 4: two channels per axis, one frequency (1/10000**0 = 1): [sin x, cos x, sin y, cos y],
    # x the column and y the row of the patch, patches in raster order, CLS row zeros.
    expected = torch.tensor([
        [0, 0, 0, 0],
        [0, 1, 0, 1],  # (row 0, col 0)
        [S1, C1, 0, 1],  # (row 0, col 1)
        [0, 1, S1, C1],  # (row 1, col 0)
        [S1, C1, S1, C1],  # (row 1, col 1)
    ], dtype=torch.float32)
    table = sincos_2d(4, 2)
    assert table.shape == (1, 5, 4) and table.dtype == torch.float32
    torch.testing.assert_close(table[0], expected, atol=1e-7, rtol=0)


def test_sincos_dim8_frequencies_by_hand():
    # dim 8: 4 channels per axis, frequencies 1/10000**(k/2) for k = 0, 1 → 1 and 1/100,
    # laid out [sin(p·1), sin(p/100), cos(p·1), cos(p/100)].
    table = sincos_2d(8, 3)[0]
    assert table.shape == (10, 8)

    def axis(p):
        return [math.sin(p), math.sin(p / 100), math.cos(p), math.cos(p / 100)]

    for row in range(3):
        for col in range(3):
            expected = torch.tensor(axis(col) + axis(row), dtype=torch.float32)
            torch.testing.assert_close(table[1 + row * 3 + col], expected, atol=1e-7, rtol=0)
    assert torch.equal(table[0], torch.zeros(8))


def test_sincos_rejects_width_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(6, 2)


def test_model_pos_tables_are_sincos():
    model = build_model(tiny_cfg({"mae": 1}))
    assert torch.equal(model.transformer.pos_embed, sincos_2d(64, 4))
    assert torch.equal(model.transformer.decoder_pos_embed, sincos_2d(32, 4))


def _by_hand(table, new_grid):
    """CLS row kept; the grid reshaped (1, D, g, g), bicubic without align_corners, flattened back."""
    old_grid = math.isqrt(table.shape[1] - 1)
    grid = table[:, 1:].reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    return torch.cat([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1)], dim=1)


def test_resample_pos_embed_matches_bicubic_by_hand():
    table = torch.randn(1, 1 + 9, 8, generator=torch.Generator().manual_seed(0))
    for new in (2, 5, 6):
        out = resample_pos_embed(table, new)
        assert out.shape == (1, 1 + new * new, 8)
        assert torch.equal(out[:, :1], table[:, :1])
        torch.testing.assert_close(out, _by_hand(table, new), atol=1e-6, rtol=1e-6)
    assert torch.equal(resample_pos_embed(table, 3), table)


def test_grid_side_rejects_non_square_tables():
    assert grid_side(torch.zeros(1, 17, 4)) == 4
    with pytest.raises(ValueError, match=r"my_table has shape \(1, 11, 4\)"):
        grid_side(torch.zeros(1, 11, 4), key="my_table")


@torch.no_grad()
def _checkpoint_at(tmp_path, image_size, seed=0):
    """A VLC Lightning checkpoint made at ``image_size`` whose pos tables are random (so a resize
    is visible), and that model."""
    cfg = tiny_cfg({"mae": 1}, image_size=image_size)
    torch.manual_seed(seed)
    model = build_model(cfg)
    generator = torch.Generator().manual_seed(seed + 10)
    for table in (model.transformer.pos_embed, model.transformer.decoder_pos_embed):
        table.copy_(torch.randn(table.shape, generator=generator))
    path = tmp_path / f"vlc_{image_size}.ckpt"
    torch.save(lightning_checkpoint(model, cfg), path)
    return model, path


def test_loading_at_a_larger_image_size_resamples_both_tables(tmp_path):
    source, path = _checkpoint_at(tmp_path, 32)  # 2×2 grid
    model = build_model(tiny_cfg({"mae": 1}, image_size=64))  # 4×4 grid
    report = load_checkpoint(model, str(path))
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.resized) == ["transformer.decoder_pos_embed", "transformer.pos_embed"]
    for name in ("pos_embed", "decoder_pos_embed"):
        old, new = getattr(source.transformer, name), getattr(model.transformer, name)
        assert new.shape == (1, 17, old.shape[-1])
        assert torch.equal(new[:, :1], old[:, :1])  # CLS row exactly
        torch.testing.assert_close(new, _by_hand(old.detach(), 4), atol=1e-6, rtol=1e-6)
        assert not new.requires_grad  # still the fixed VLC table
    # every other weight loaded unchanged, and the model runs at its own size
    assert torch.equal(model.transformer.blocks[0].attn.qkv.weight, source.transformer.blocks[0].attn.qkv.weight)
    ids, masks = text_batch()
    out = model.eval().infer(ids, masks, image_batch(size=64), mask_image=False)
    assert out["image_feats"].shape == (2, 17, 64)


def test_loading_at_a_smaller_image_size_resamples(tmp_path):
    source, path = _checkpoint_at(tmp_path, 64)
    model = build_model(tiny_cfg({"mae": 1}, image_size=32))
    load_checkpoint(model, str(path))
    torch.testing.assert_close(
        model.transformer.pos_embed, _by_hand(source.transformer.pos_embed.detach(), 2), atol=1e-6, rtol=1e-6
    )


def test_same_image_size_is_identity(tmp_path):
    source, path = _checkpoint_at(tmp_path, 64)
    model = build_model(tiny_cfg({"mae": 1}, image_size=64))
    report = load_checkpoint(model, str(path))
    assert report.resized == []
    assert torch.equal(model.transformer.pos_embed, source.transformer.pos_embed)
    assert torch.equal(model.transformer.decoder_pos_embed, source.transformer.decoder_pos_embed)


def test_pos_embed_of_other_width_is_an_error_not_a_resize(tmp_path):
    path = tmp_path / "bad.ckpt"
    cfg = tiny_cfg()
    state = lightning_checkpoint(build_model(cfg), cfg)
    state["state_dict"]["transformer.pos_embed"] = torch.zeros(1, 17, 48)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"transformer.pos_embed.*\(1, 17, 48\).*\(1, 17, 64\)"):
        load_checkpoint(build_model(cfg), str(path))


def test_mae_pretrain_checkpoint_at_another_size_is_resampled(tmp_path):
    """The MAE layout goes through the same fitting: unprefixed tables at 2×2 into a 4×4 model."""
    generator = torch.Generator().manual_seed(4)
    pos = torch.randn(1, 5, 64, generator=generator)
    decoder_pos = torch.randn(1, 5, 32, generator=generator)
    path = tmp_path / "mae.pth"
    torch.save({"model": {"pos_embed": pos, "decoder_pos_embed": decoder_pos,
                          "patch_embed.proj.weight": torch.randn(64, 3, 16, 16, generator=generator)}}, path)
    model = build_model(tiny_cfg({"mae": 1}))
    report = load_checkpoint(model, str(path))
    assert report.format == "mae"
    assert sorted(report.resized) == ["transformer.decoder_pos_embed", "transformer.pos_embed"]
    torch.testing.assert_close(model.transformer.pos_embed, _by_hand(pos, 4), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(model.transformer.decoder_pos_embed, _by_hand(decoder_pos, 4), atol=1e-6, rtol=1e-6)
