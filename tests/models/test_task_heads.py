"""Task heads (reference names and shapes), the rank-head initialisation, and the model API the
retrieval evaluator uses (cached image embeddings, unimodal passes)."""
import pytest
import torch

from _model_toys import image_batch, text_batch, tiny_cfg
from vlkit.models.build import build_model
from vlkit.models.heads import init_rank_from_itm

H = 64


def test_task_heads_have_the_reference_keys_and_shapes():
    model = build_model(tiny_cfg({"vqa": 1, "nlvr2": 1, "snli": 1, "itm": 0.5, "irtr": 1}, vqav2_label_size=25))
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert shapes["vqa_classifier.0.weight"] == (2 * H, H)
    assert shapes["vqa_classifier.1.weight"] == (2 * H,)  # LayerNorm; index 2 is the GELU
    assert shapes["vqa_classifier.3.weight"] == (25, 2 * H)
    assert shapes["nlvr2_classifier.0.weight"] == (2 * H, 2 * H)
    assert shapes["nlvr2_classifier.3.weight"] == (2, 2 * H)
    assert shapes["snli_classifier.3.weight"] == (3, 2 * H)
    assert shapes["rank_output.weight"] == (1, H) and shapes["rank_output.bias"] == (1,)
    assert shapes["token_type_embeddings.weight"] == (3, H)
    assert not any(key.startswith("vqa_classifier.2") for key in shapes)


def test_rank_output_copies_the_itm_match_row_and_freezes_itm():
    model = build_model(tiny_cfg({"itm": 0.5, "irtr": 1}))
    init_rank_from_itm(model)
    assert torch.equal(model.rank_output.weight[0], model.itm_score.fc.weight[1])
    assert torch.equal(model.rank_output.bias, model.itm_score.fc.bias[1:2])
    assert not any(p.requires_grad for p in model.itm_score.parameters())
    features = torch.randn(3, H)
    assert torch.allclose(model.rank_output(features)[:, 0], model.itm_score(features)[:, 1])


def test_rank_init_without_an_itm_head_names_the_fix():
    with pytest.raises(ValueError, match="loss_names.itm"):
        init_rank_from_itm(build_model(tiny_cfg({"irtr": 1, "itm": 0})))


@torch.no_grad()
def test_cached_image_embeddings_give_the_same_fused_features():
    model = build_model(tiny_cfg({"itm": 1}, mae_patch_drop=False)).eval()
    ids, masks = text_batch()
    images = image_batch()
    direct = model.infer(ids, masks, images)
    embeds = model.embed_image(images)
    cached = model.infer(ids, masks, image_embeds=embeds)
    torch.testing.assert_close(direct["cls_feats"], cached["cls_feats"])
    # one image's embeddings serve several captions when its rows are repeated
    repeated = {key: value[[0, 0]] for key, value in embeds.items()}
    pair = model.infer(ids, masks, image_embeds=repeated)
    alone = model.infer(ids[1:], masks[1:], images[:1])
    torch.testing.assert_close(pair["cls_feats"][1:], alone["cls_feats"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        model.infer(ids, masks)


@torch.no_grad()
def test_unimodal_passes_see_only_their_modality():
    model = build_model(tiny_cfg({"itc": 1}, mae_patch_drop=False, itc_embed_dim=16)).eval()
    ids, masks = text_batch()
    text = model.text_only_feats(ids, masks)
    ids_changed_padding = ids.clone()
    ids_changed_padding[masks == 0] = 7  # padding is masked out
    torch.testing.assert_close(model.text_only_feats(ids_changed_padding, masks), text)
    image = model.image_only_feats(model.embed_image(image_batch()))
    other = model.image_only_feats(model.embed_image(image_batch(seed=5)))
    assert text.shape == image.shape == (2, H) and not torch.allclose(image, other)
    embedded = model.itc_head.embed_text(text)
    assert embedded.shape == (2, 16)
    torch.testing.assert_close(embedded.norm(dim=-1), torch.ones(2))
