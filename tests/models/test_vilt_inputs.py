"""ViLT's own inputs: non-square, zero-padded batches with per-image patch masks, the stored
position table resized at every forward (bilinear, align_corners=True), max_image_len sampling."""
import pytest
import torch

from _model_toys import text_batch, vilt_cfg
from vlkit.models.build import build_model
from vlkit.models.vilt_inputs import interpolated_positions, sample_patches, valid_patch_grid


def test_positions_are_resized_bilinearly_with_aligned_corners_and_padded():
    table = torch.tensor([[0.0], [1.0], [2.0], [3.0]])[None]  # a 2x2 grid [[0, 1], [2, 3]], D = 1
    out = interpolated_positions(table, (2, 2), torch.tensor([3, 2]), torch.tensor([3, 1]), 3, 4)
    grid = out[..., 0].reshape(2, 3, 4)
    # align_corners=True keeps the corners and puts the rest at exact midpoints
    assert torch.allclose(grid[0], torch.tensor([[0.0, 0.5, 1.0, 0.0], [1.0, 1.5, 2.0, 0.0], [2.0, 2.5, 3.0, 0.0]]))
    # a 2x1 grid samples the first column (x = 0), then zero padding
    assert torch.allclose(grid[1], torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))


def test_valid_grid_and_sampling():
    images = torch.zeros(2, 3, 64, 96)
    images[0] = 1.0  # 2 x 3 real patches
    images[1, :, :64, :32] = -0.5  # 2 x 1
    valid = valid_patch_grid(images, 2, 3)
    assert valid.tolist() == [[[1, 1, 1], [1, 1, 1]], [[1, 0, 0], [1, 0, 0]]]
    torch.manual_seed(0)
    index, keep = sample_patches(valid.flatten(1), max_image_len=4)
    assert index.shape == keep.shape == (2, 4)
    assert keep[0].tolist() == [1, 1, 1, 1] and len(set(index[0].tolist())) == 4  # 4 of 6, no repeats
    assert index[0].tolist() == sorted(index[0].tolist())
    assert keep[1].tolist() == [1, 1, 0, 0] and index[1, :2].tolist() == [0, 3]
    assert all(valid.flatten(1)[1, i] == 0 for i in index[1, 2:].tolist())  # filled with padding patches
    full_index, full_keep = sample_patches(valid.flatten(1), max_image_len=-1)
    assert full_index[0].tolist() == list(range(6)) and full_keep[1].tolist() == [1, 1, 0, 0, 0, 0]


def _model(**overrides):
    torch.manual_seed(0)
    return build_model(vilt_cfg(loss_names={"itm": 1}, **overrides)).eval()


def test_non_square_images_and_padding_do_not_change_an_images_features():
    model = _model(vilt_pos_grid=2)
    ids, masks = text_batch(batch=1, real=(12,))
    small = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    wide = torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(2))
    batch = torch.zeros(2, 3, 64, 128)
    batch[0, :, :, :64], batch[1] = small[0], wide[0]
    with torch.no_grad():
        alone = model.infer(ids, masks, small)
        together = model.infer(ids.repeat(2, 1), masks.repeat(2, 1), batch)
        wide_alone = model.infer(ids, masks, wide)
    assert together["image_masks"].tolist() == [[1, 1, 1, 1, 1, 0, 0, 0, 0], [1] * 9]
    assert torch.allclose(together["cls_feats"][0], alone["cls_feats"][0], atol=1e-5)
    assert torch.allclose(together["cls_feats"][1], wide_alone["cls_feats"][0], atol=1e-5)


def test_the_stored_table_is_resampled_at_each_forward_not_at_build():
    model = _model(vilt_pos_grid=2, image_size=96)
    assert model.transformer.pos_embed.shape == (1, 1 + 4, 64)  # ViLT's stored grid, whatever image_size
    image = torch.randn(1, 3, 96, 96)
    tokens, masks = model.transformer.embed_vilt(image)
    patches = model.transformer.patch_embed(image)
    expected = interpolated_positions(model.transformer.pos_embed[:, 1:], (2, 2), torch.tensor([3]),
                                      torch.tensor([3]), 3, 3)
    assert torch.allclose(tokens[:, 1:] - patches, expected, atol=1e-6) and masks.shape == (1, 10)


def test_square_inputs_at_the_built_grid_match_the_plain_path():
    model = _model()
    image = torch.randn(2, 3, 64, 64)
    tokens, masks = model.transformer.embed_vilt(image)
    plain = model.transformer.patch_embed(image) + model.transformer.pos_embed[:, 1:]
    assert torch.allclose(tokens[:, 1:], plain, atol=1e-6) and bool(masks.all())


@pytest.mark.parametrize("max_image_len, tokens", [(200, 201), (-1, 226)])
def test_max_image_len_caps_the_image_tokens_in_evaluation_too(max_image_len, tokens):
    model = _model(image_size=384, vilt_pos_grid=12, max_image_len=max_image_len, num_layers=1)
    ids, masks = text_batch(batch=1, real=(12,))
    with torch.no_grad():
        out = model.infer(ids, masks, torch.randn(1, 3, 480, 480))  # 15 x 15 patches
    assert out["image_feats"].shape[1] == tokens


def test_a_size_that_is_not_a_multiple_of_the_patch_is_refused():
    with pytest.raises(ValueError, match="multiples of patch_size=32"):
        _model().transformer.embed_vilt(torch.randn(1, 3, 64, 70))


def test_retrieval_cache_pads_image_batches_of_different_lengths():
    from vlkit.eval.retrieval_eval import _cat_padded

    tokens = _cat_padded([torch.ones(2, 3, 4), torch.ones(1, 5, 4)])
    masks = _cat_padded([torch.ones(2, 3, dtype=torch.long), torch.ones(1, 5, dtype=torch.long)])
    assert tokens.shape == (3, 5, 4) and masks.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1] * 5]
    assert not tokens[0, 3:].any()
