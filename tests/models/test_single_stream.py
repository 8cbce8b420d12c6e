"""The fused single-stream model: padding, outputs, config errors, layer ids, token types."""
import pytest
import torch

from _model_toys import image_batch, text_batch, tiny_cfg, vilt_cfg
from vlkit.models.build import build_model

FLAVOURS = {"vlc": lambda **k: tiny_cfg({"mae": 1}, **k), "vilt": lambda **k: vilt_cfg(**k)}


def _padded(ids, masks, length):
    """The same texts padded (id 0, mask 0) to ``length`` positions."""
    extra = length - ids.shape[1]
    return (torch.cat([ids, torch.zeros(ids.shape[0], extra, dtype=ids.dtype)], 1),
            torch.cat([masks, torch.zeros(masks.shape[0], extra, dtype=masks.dtype)], 1))


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("mask_image", [False, True])
@torch.no_grad()
def test_padding_does_not_change_real_outputs(flavour, mask_image):
    torch.manual_seed(0)
    model = build_model(FLAVOURS[flavour]()).eval()
    ids8, masks8 = text_batch(length=8, real=(8, 5))
    ids16, masks16 = _padded(ids8, masks8, 16)
    images = image_batch(size=64)

    torch.manual_seed(1)
    short = model.infer(ids8, masks8, images, mask_image=mask_image)
    torch.manual_seed(1)
    long = model.infer(ids16, masks16, images, mask_image=mask_image)

    assert long["text_feats"].shape == (2, 16, 64) and short["text_feats"].shape == (2, 8, 64)
    real = masks8.bool()
    close = dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(long["text_feats"][:, :8][real], short["text_feats"][real], **close)
    torch.testing.assert_close(long["cls_feats"], short["cls_feats"], **close)
    torch.testing.assert_close(long["raw_cls_feats"], short["raw_cls_feats"], **close)
    torch.testing.assert_close(long["image_feats"], short["image_feats"], **close)


@torch.no_grad()
def test_padding_token_ids_are_not_attended():
    model = build_model(tiny_cfg()).eval()
    ids, masks = text_batch(real=(16, 9))
    other = ids.clone()
    other[1, 9:] = 77  # change only positions whose mask is 0
    images = image_batch()
    a = model.infer(ids, masks, images, mask_image=False)
    b = model.infer(other, masks, images, mask_image=False)
    torch.testing.assert_close(a["cls_feats"], b["cls_feats"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a["text_feats"][1, :9], b["text_feats"][1, :9], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a["image_feats"], b["image_feats"], atol=1e-6, rtol=1e-6)
    # a masked-in token does change things
    masks_on = masks.clone()
    masks_on[1, 9] = 1
    c = model.infer(other, masks_on, images, mask_image=False)
    assert not torch.allclose(c["cls_feats"][1], a["cls_feats"][1], atol=1e-4)


@torch.no_grad()
def test_outputs_and_pooler():
    model = build_model(tiny_cfg()).eval()
    ids, masks = text_batch()
    out = model.infer(ids, masks, image_batch(), mask_image=False)
    assert out["text_feats"].shape == (2, 16, 64)
    assert out["image_feats"].shape == (2, 17, 64)
    assert torch.equal(out["raw_cls_feats"], out["text_feats"][:, 0])  # the text [CLS] position
    torch.testing.assert_close(out["cls_feats"], torch.tanh(model.pooler.dense(out["raw_cls_feats"])))
    assert torch.equal(out["text_masks"], masks)
    assert out["image_masks"].shape == (2, 17) and bool(out["image_masks"].all())
    assert model.mlm_score(out["text_feats"]).shape == (2, 16, 120)
    assert model.itm_score(out["cls_feats"]).shape == (2, 2)


def test_module_details_from_the_fact_sheet():
    model = build_model(tiny_cfg())
    assert model.text_embeddings.LayerNorm.eps == 1e-12
    assert model.mlm_score.transform.LayerNorm.eps == 1e-12
    assert model.transformer.norm.eps == 1e-6
    assert model.transformer.blocks[0].norm1.eps == 1e-6
    assert model.transformer.blocks[0].attn.qkv.bias is not None
    assert model.mlm_score.decoder.bias is None  # separate `mlm_score.bias`
    assert model.mlm_score.decoder.weight.data_ptr() != model.text_embeddings.word_embeddings.weight.data_ptr()
    assert model.token_type_embeddings.weight.shape == (2, 64)
    assert build_model(tiny_cfg({"nlvr2": 1})).token_type_embeddings.weight.shape == (3, 64)


@torch.no_grad()
def test_image_token_type_selects_the_row():
    model = build_model(tiny_cfg({"nlvr2": 1})).eval()
    ids, masks = text_batch()
    images = image_batch()
    one = model.infer(ids, masks, images, image_token_type_idx=1, mask_image=False)
    two = model.infer(ids, masks, images, image_token_type_idx=2, mask_image=False)
    assert not torch.allclose(one["cls_feats"], two["cls_feats"])
    model.token_type_embeddings.weight[2] = model.token_type_embeddings.weight[1]
    again = model.infer(ids, masks, images, image_token_type_idx=2, mask_image=False)
    assert torch.equal(again["cls_feats"], one["cls_feats"])


# ----- errors ------------------------------------------------------------------------------------


def test_wrong_image_size_at_infer_is_clear():
    model = build_model(tiny_cfg())
    ids, masks = text_batch()
    with pytest.raises(ValueError, match=r"\(2, 3, 32, 32\).*\(B, 3, 64, 64\).*image_size"):
        model.infer(ids, masks, image_batch(size=32))


def test_too_long_text_is_clear():
    model = build_model(tiny_cfg())
    ids, masks = text_batch(length=20, real=(20, 3))
    with pytest.raises(ValueError, match="max_text_len=16"):
        model.infer(ids, masks, image_batch())


@pytest.mark.parametrize("name", ["single_streem", "singlestream", "dual_stream"])
def test_unknown_model_family_suggests_the_closest(name):
    cfg = tiny_cfg()
    cfg.model = name
    with pytest.raises(ValueError, match=rf"model={name!r}.*did you mean 'single_stream'"):
        build_model(cfg)


def test_bad_vit_names_and_sizes():
    with pytest.raises(ValueError, match=r"vit='resnet50'.*mae_vit_"):
        build_model(tiny_cfg(vit="resnet50"))
    mismatched = build_model(tiny_cfg(vit="vit_base_patch32_384", mae_patch_drop=False))
    assert mismatched.transformer.patch_embed.proj.kernel_size == (16, 16)  # patch_size decides
    with pytest.raises(ValueError, match=r"image_size=72 is not a multiple of patch_size=16"):
        build_model(tiny_cfg(image_size=72))


# ----- layer ids for layer-wise LR decay (fact sheet §7.3) ---------------------------------------


def test_layer_id():
    model = build_model(tiny_cfg({"mae": 1}))  # 2 blocks: ids 0..3
    top = 3
    expected = {
        "text_embeddings.word_embeddings.weight": 0,
        "text_embeddings.LayerNorm.bias": 0,
        "token_type_embeddings.weight": 0,
        "transformer.cls_token": 0,
        "transformer.pos_embed": 0,
        "transformer.mask_token": 0,
        "transformer.patch_embed.proj.weight": 0,
        "transformer.patch_embed.proj.bias": 0,
        "transformer.blocks.0.norm1.weight": 1,
        "transformer.blocks.0.attn.qkv.weight": 1,
        "transformer.blocks.1.mlp.fc2.bias": 2,
        "transformer.norm.weight": top,
        "transformer.decoder_embed.weight": top,
        "transformer.decoder_pos_embed": top,
        "transformer.decoder_blocks.0.attn.qkv.weight": top,
        "transformer.decoder_pred.bias": top,
        "pooler.dense.weight": top,
        "mlm_score.bias": top,
        "mlm_score.transform.dense.weight": top,
        "itm_score.fc.weight": top,
    }
    assert {name: model.layer_id(name) for name in expected} == expected
    ids = [model.layer_id(name) for name, _ in model.named_parameters()]
    assert min(ids) == 0 and max(ids) == top
    assert sorted(set(ids)) == [0, 1, 2, 3]


def test_layer_id_counts_twelve_blocks():
    model = build_model(tiny_cfg(num_layers=12, hidden_size=32, num_heads=2))
    assert model.layer_id("transformer.blocks.11.attn.proj.weight") == 12
    assert model.layer_id("transformer.norm.bias") == 13
    assert model.layer_id("text_embeddings.position_embeddings.weight") == 0


# ----- token types ----------------------------------------------------------------------------


def test_expand_token_types_copies_row_one():
    model = build_model(tiny_cfg())
    before = model.token_type_embeddings.weight.detach().clone()
    model.expand_token_types(3)
    after = model.token_type_embeddings.weight
    assert after.shape == (3, 64) and after.requires_grad
    assert torch.equal(after[:2], before) and torch.equal(after[2], before[1])
    assert "token_type_embeddings.weight" in dict(model.named_parameters())
    model.expand_token_types(3)  # already 3 rows: unchanged
    assert torch.equal(model.token_type_embeddings.weight, after)
    with pytest.raises(ValueError, match="cannot shrink"):
        model.expand_token_types(2)


@torch.no_grad()
def test_expanded_type_two_behaves_like_type_one():
    model = build_model(tiny_cfg()).eval()
    ids, masks = text_batch()
    images = image_batch()
    one = model.infer(ids, masks, images, image_token_type_idx=1, mask_image=False)
    model.expand_token_types(3)
    two = model.infer(ids, masks, images, image_token_type_idx=2, mask_image=False)
    assert torch.equal(one["cls_feats"], two["cls_feats"])
