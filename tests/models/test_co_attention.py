"""METER's co_attention family: the two streams, its heads, its optimizer groups, its named
configs and its image transforms."""
import pytest
import torch
from PIL import Image

from tests.models._meter_toys import meter_cfg
from vlkit.config import resolve_config
from vlkit.config.named_configs import UnknownPresetError
from vlkit.data.transforms import CLIP_MEAN, CLIP_STD, build_transform
from vlkit.engine.optim import param_groups_vanilla
from vlkit.models.build import build_model

IMAGE = 32


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = meter_cfg({"itm": 1, "mlm": 1, "vqa": 1, "nlvr2": 1, "snli": 1, "irtr": 1}, num_top_layer=2,
                    vqav2_label_size=7)
    return build_model(cfg).eval()


def inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 120, (2, 10), generator=generator)
    masks = torch.tensor([[1] * 10, [1] * 6 + [0] * 4])
    return ids, masks, torch.randn(2, 3, IMAGE, IMAGE, generator=generator)


def test_both_streams_update_in_parallel_from_the_previous_layer(model):
    ids, masks, image = inputs()
    with torch.no_grad():
        out = model.infer(ids, masks, image)
        text_states = model.encode_text(ids, masks)
        x = model.cross_modal_text_transform(text_states) + model.token_type_embeddings.weight[0]
        y = model.cross_modal_image_transform(model.vit_model(image)) + model.token_type_embeddings.weight[1]
        y_masks = torch.ones(y.shape[:2], dtype=torch.long)
        for text_layer, image_layer in zip(model.cross_modal_text_layers, model.cross_modal_image_layers):
            new_x = text_layer(x, masks, y, y_masks)
            new_y = image_layer(y, y_masks, x, masks)  # reads the text of the previous layer
            x, y = new_x, new_y
        cls = torch.cat([torch.tanh(model.cross_modal_text_pooler.dense(x[:, 0])),
                         torch.tanh(model.cross_modal_image_pooler.dense(y[:, 0]))], dim=-1)
    assert out["image_feats"].shape == (2, 1 + (IMAGE // 16) ** 2, 64)
    torch.testing.assert_close(out["text_feats"], x)
    torch.testing.assert_close(out["image_feats"], y)
    torch.testing.assert_close(out["cls_feats"], cls)


def test_padding_ids_do_not_change_the_fused_features(model):
    ids, masks, image = inputs()
    changed = ids.clone()
    changed[1, 6:] = 5
    with torch.no_grad():
        first = model.infer(ids, masks, image)["cls_feats"]
        second = model.infer(changed, masks, image)["cls_feats"]
    torch.testing.assert_close(first, second)


def test_the_second_nlvr2_image_type_changes_the_features(model):
    ids, masks, image = inputs()
    assert model.token_type_embeddings.weight.shape == (3, 64)
    with torch.no_grad():
        first = model.infer(ids, masks, image, image_token_type_idx=1)["cls_feats"]
        second = model.infer(ids, masks, image, image_token_type_idx=2)["cls_feats"]
    assert not torch.allclose(first, second)


def test_the_vision_tower_gets_the_text_first_token_state(model, monkeypatch):
    ids, masks, image = inputs()
    seen = {}
    original = model.vit_model.run_blocks

    def spy(x, text_cls=None):
        seen["text_cls"] = text_cls
        return original(x, text_cls)

    monkeypatch.setattr(model.vit_model, "run_blocks", spy)
    with torch.no_grad():
        model.infer(ids, masks, image)
        expected = model.encode_text(ids, masks)[:, 0]
    torch.testing.assert_close(seen["text_cls"], expected)


def test_heads_have_meters_shapes(model):
    width = 2 * 64
    assert model.feature_width == width
    assert model.itm_score.fc.weight.shape == (2, width)
    assert [model.vqa_classifier[i].weight.shape for i in (0, 3)] == [(width, width), (7, width)]
    assert [model.nlvr2_classifier[i].weight.shape for i in (0, 3)] == [(width, 2 * width), (2, width)]
    assert [model.snli_classifier[i].weight.shape for i in (0, 3)] == [(width, width), (3, width)]
    assert model.rank_output.weight.shape == (1, width)
    assert model.mlm_score.decoder.weight.shape == (120, 64)
    assert model.mlm_score.decoder.weight.data_ptr() != model.text_transformer.embeddings.word_embeddings.weight.data_ptr()


def test_six_parameter_groups_with_meters_multipliers(model):
    cfg = resolve_config(["task_finetune_vqa_clip_bert"])
    groups = param_groups_vanilla(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert len(groups) == 6
    assert by_name["vqa_classifier.0.weight"] == (pytest.approx(5e-6 * 50), 0.01)
    assert by_name["mlm_score.transform.dense.bias"] == (pytest.approx(5e-6 * 50), 0.0)
    assert by_name["cross_modal_image_layers.0.attention.self.query.weight"] == (pytest.approx(5e-6 * 5), 0.01)
    assert by_name["cross_modal_text_pooler.dense.bias"] == (pytest.approx(5e-6 * 5), 0.0)
    # METER's quirks: token types and the rank head in the base group, CLIP's ln_* weights decayed
    assert by_name["token_type_embeddings.weight"] == (pytest.approx(5e-6), 0.01)
    assert by_name["rank_output.weight"] == (pytest.approx(5e-6), 0.01)
    assert by_name["vit_model.ln_post.weight"] == (pytest.approx(5e-6), 0.01)


def test_named_configs_apply_in_order_with_meters_values():
    seed = resolve_config(["task_finetune_vqa_clip_bert", "clip16", "text_roberta", "image_size=576", "clip_randaug"])
    assert (seed.model, seed.vit, seed.patch_size, seed.image_size) == ("co_attention", "ViT-B/16", 16, 576)
    assert (seed.tokenizer, seed.vocab_size, seed.learning_rate, seed.lr_mult_head) == ("roberta-base", 50265, 5e-6, 50)
    assert (list(seed.train_transform_keys), list(seed.val_transform_keys)) == (["clip_randaug"], ["clip"])
    assert dict(seed.img_prune) == {"begin_layer": [2, 4, 9], "num_act_layers": [2, 5, 2], "keep_ratio": [0.9, 0.7, 0.45]}
    assert resolve_config(["task_mlm_itm_clip_bert", "clip16"]).image_size == 224  # clip16 resets it
    pretrain = resolve_config(["task_mlm_itm_clip_bert", "text_roberta"])
    assert pretrain.whole_word_masking and pretrain.max_text_len == 50 and pretrain.warmup_steps == 0.1
    f30k = resolve_config(["task_finetune_irtr_f30k_clip_bert"])
    assert (list(f30k.datasets), f30k.max_text_len, f30k.draw_false_text, f30k.loss_names["itm"]) == (["f30k"], 40, 15, 0.5)
    assert resolve_config(["task_finetune_snli_clip_bert"]).learning_rate == 2e-6
    assert resolve_config(["task_mlm_itm_clip_bert", "img_prune.begin_layer=[]"]).img_prune["begin_layer"] == []
    with pytest.raises(UnknownPresetError, match="'text_bert'; did you mean 'text_roberta'"):
        resolve_config(["task_mlm_itm_clip_bert", "text_bert"])


def test_clip_transform_resizes_the_shorter_side_crops_the_centre_and_normalises():
    image = Image.new("RGB", (60, 40), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 40))  # a blue band that the centre crop cuts away
    tensor = build_transform("clip", 32)(image)
    assert tensor.shape == (3, 32, 32)
    expected = torch.tensor([(1 - CLIP_MEAN[0]) / CLIP_STD[0], -CLIP_MEAN[1] / CLIP_STD[1], -CLIP_MEAN[2] / CLIP_STD[2]])
    torch.testing.assert_close(tensor[:, 16, 16], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(tensor[:, 16, 4], expected, atol=0.02, rtol=0)
