"""The cross-attention family (ALBEF / GRIT-VLP) and its official checkpoint layouts."""
import math

import pytest
import torch
from transformers import BertConfig, BertModel

from tests.models._model_toys import image_batch, text_batch, tiny_cfg
from vlkit.models.build import build_model, build_model_with_reports
from vlkit.models.checkpoints.albef import to_albef

ALBEF = dict(model="cross_attention", fusion_layer=1, max_position_embeddings=20, drop_rate=0.0)


def albef_cfg(**overrides):
    return tiny_cfg({"itc": 1, "itm": 1, "mlm": 1}, **{**ALBEF, **overrides})


def model_and_inputs(**overrides):
    torch.manual_seed(0)
    model = build_model(albef_cfg(**overrides)).eval()
    return model, (*text_batch(), image_batch())


def test_text_layers_compute_what_transformers_bert_computes():
    model, (ids, masks, _) = model_and_inputs()
    bert = BertModel(BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=256, max_position_embeddings=20), add_pooling_layer=False).eval()
    text_encoder = model.text_encoder.state_dict()
    bert.load_state_dict({k: v for k, v in text_encoder.items() if "crossattention" not in k and "layer.1." not in k}, strict=False)
    expected = bert(input_ids=ids, attention_mask=masks).last_hidden_state
    ours = model.text_encoder.encode_text(ids, masks)
    real = masks.bool()
    assert torch.allclose(ours[real], expected[real], atol=1e-5)


def test_fused_text_ignores_padding_and_the_order_of_image_tokens():
    model, (ids, masks, images) = model_and_inputs()
    with torch.no_grad():
        base = model.infer(ids, masks, images)
        padded = model.infer(torch.cat([ids, torch.zeros_like(ids[:, :3])], 1),
                             torch.cat([masks, torch.zeros_like(masks[:, :3])], 1), images)
        embeds = model.embed_image(images)
        order = torch.randperm(embeds["tokens"].shape[1])
        shuffled = model.infer(ids, masks, image_embeds={"tokens": embeds["tokens"][:, order], "masks": embeds["masks"]})
    assert torch.allclose(base["cls_feats"], padded["cls_feats"], atol=1e-5)
    assert torch.allclose(base["text_feats"], shuffled["text_feats"], atol=1e-5)


def test_mlm_decoder_is_tied_to_the_word_embeddings():
    model, _ = model_and_inputs()
    assert model.mlm_score.decoder.weight is model.text_encoder.embeddings.word_embeddings.weight


def outputs(model, ids, masks, images):
    with torch.no_grad():
        fused = model.infer(ids, masks, images)
        return {
            "itm": model.itm_score(fused["cls_feats"]),
            "mlm": model.mlm_score(fused["text_feats"]),
            "itc_text": model.itc_head.embed_text(model.text_only_feats(ids, masks)),
            "itc_image": model.itc_head.embed_image(model.image_only_feats(model.embed_image(images))),
            "scale": model.itc_head.logit_scale.detach(),
        }


def save_official(model, path, layout, momentum=True):
    state = to_albef(model.state_dict(), layout)
    if momentum:  # ALBEF's momentum copies and queues
        state.update({k.replace("visual_encoder.", "visual_encoder_m.", 1): v for k, v in state.items()
                      if k.startswith("visual_encoder.")})
        state["image_queue"] = torch.randn(16, 32)
        state["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"model": state, "optimizer": {}, "config": {"image_res": 64}, "epoch": 3}, path)


@pytest.mark.parametrize("layout", ["pretrain", "finetune"])
def test_official_checkpoint_round_trip_reproduces_the_outputs(tmp_path, layout):
    model, inputs = model_and_inputs()
    with torch.no_grad():
        model.itc_head.logit_scale.fill_(math.log(1 / 0.05))
    save_official(model, tmp_path / "albef.pth", layout)
    if layout == "pretrain":
        saved = torch.load(tmp_path / "albef.pth")["model"]
        assert "text_encoder.bert.encoder.layer.1.crossattention.self.key.weight" in saved
        assert saved["temp"].item() == pytest.approx(0.05)
        assert "text_encoder.cls.predictions.decoder.weight" in saved
    torch.manual_seed(1)
    loaded, reports = build_model_with_reports(albef_cfg(load_path=str(tmp_path / "albef.pth")))
    report = reports[0]
    assert report.format == "albef" and report.missing == []
    # a model built without momentum has no place for ALBEF's momentum copies and queues
    assert set(report.unexpected) >= {"itc_queue.image", "itc_queue.ptr", "momentum_model.visual_encoder.pos_embed"}
    expected, got = outputs(model, *inputs), outputs(loaded.eval(), *inputs)
    for key in expected:
        assert torch.allclose(expected[key], got[key], atol=1e-5), key


def test_checkpoint_from_another_image_size_has_its_positions_resampled(tmp_path):
    model, _ = model_and_inputs()
    save_official(model, tmp_path / "albef.pth", "pretrain", momentum=False)
    loaded, reports = build_model_with_reports(albef_cfg(image_size=96, load_path=str(tmp_path / "albef.pth")))
    assert "visual_encoder.pos_embed" in reports[0].resized
    assert loaded.visual_encoder.pos_embed.shape == (1, 1 + 36, 64)
    assert torch.equal(loaded.visual_encoder.pos_embed[:, 0], model.visual_encoder.pos_embed[:, 0])


def test_deit_weights_load_into_the_image_encoder(tmp_path):
    model, _ = model_and_inputs()
    deit = {k.removeprefix("visual_encoder."): v for k, v in model.state_dict().items() if k.startswith("visual_encoder.")}
    deit["head.weight"] = torch.zeros(10, 64)
    torch.save({"model": deit}, tmp_path / "deit.pth")
    loaded, reports = build_model_with_reports(albef_cfg(pretrain_path=str(tmp_path / "deit.pth")))
    assert reports[0].unexpected == ["visual_encoder.head.weight"] and reports[0].missing == []
    for key, value in model.visual_encoder.state_dict().items():
        assert torch.equal(loaded.visual_encoder.state_dict()[key], value), key
