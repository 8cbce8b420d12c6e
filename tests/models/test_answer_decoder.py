"""ALBEF's VQA answer decoder (``text_decoder``) and its checkpoints in ALBEF's layouts."""
import pytest
import torch
from transformers import BertConfig, BertLMHeadModel

from tests.models._model_toys import text_batch, tiny_cfg
from vlkit.models.build import build_model, build_model_with_reports
from vlkit.models.checkpoints.albef import to_albef

SMALL = dict(model="cross_attention", hidden_size=32, num_heads=2, num_layers=2, fusion_layer=1,
             image_size=32, patch_size=16, max_position_embeddings=20, drop_rate=0.0, answer_decoder_layers=1)


def vqa_model(loss_names=None, **overrides):
    torch.manual_seed(0)
    loss_names = loss_names or {"vqa_decoder": 1, "itm": 0, "mlm": 0}
    return build_model(tiny_cfg(loss_names, **{**SMALL, **overrides})).eval()


def question(batch=2):
    ids, masks = text_batch(batch=batch, length=8, real=(8, 5)[:batch])
    return torch.randn(batch, 8, 32, generator=torch.Generator().manual_seed(3)), masks


def answers():
    ids = torch.tensor([[2, 17, 44, 3, 0], [2, 9, 3, 0, 0]])  # [CLS] a b [SEP] pad, [CLS] c [SEP] pad pad
    return ids, (ids != 0).long()


def test_a_later_answer_token_leaves_earlier_predictions_unchanged():
    decoder = vqa_model().text_decoder
    states, masks = question()
    ids, answer_masks = answers()
    changed = ids.clone()
    changed[0, 2] = 77
    with torch.no_grad():
        before = decoder.lm_head(decoder(ids, answer_masks, states, masks))
        after = decoder.lm_head(decoder(changed, answer_masks, states, masks))
    assert torch.allclose(before[0, :2], after[0, :2], atol=1e-6)
    assert not torch.allclose(before[0, 2], after[0, 2], atol=1e-3)
    assert torch.equal(before[1], after[1])


def test_decoder_computes_what_transformers_bert_lm_head_model_computes():
    decoder = vqa_model().text_decoder
    reference = BertLMHeadModel(BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=20, is_decoder=True, add_cross_attention=True,
    )).eval()
    albef_keys = to_albef({f"text_decoder.{k}": v for k, v in decoder.state_dict().items()}, layout="finetune")
    missing, unexpected = reference.load_state_dict(
        {k.removeprefix("text_decoder."): v for k, v in albef_keys.items()}, strict=False)
    assert unexpected == [] and all("position_ids" in key for key in missing)  # ALBEF's layout is HF's
    states, masks = question()
    ids, answer_masks = answers()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=answer_masks, encoder_hidden_states=states,
                             encoder_attention_mask=masks).logits
        ours = decoder.lm_head(decoder(ids, answer_masks, states, masks))
    real = answer_masks.bool()
    assert torch.allclose(ours[real], expected[real], atol=1e-4)


def test_predictions_read_the_question_states_but_not_their_padding():
    decoder = vqa_model().text_decoder
    states, masks = question()
    ids, answer_masks = answers()
    padded = states.clone()
    padded[1, 5:] = 100.0  # question 1 has 5 real tokens
    other = states.clone()
    other[1, :5] = torch.randn(5, 32)
    with torch.no_grad():
        base = decoder(ids, answer_masks, states, masks)
        assert torch.allclose(base, decoder(ids, answer_masks, padded, masks), atol=1e-5)
        assert not torch.allclose(base[1], decoder(ids, answer_masks, other, masks)[1], atol=1e-3)


def test_sequence_log_prob_sums_each_real_token_once():
    decoder = vqa_model().text_decoder
    states, masks = question()
    ids, answer_masks = answers()
    with torch.no_grad():
        log_probs = decoder.lm_head(decoder(ids, answer_masks, states, masks)).log_softmax(dim=-1)
        expected = torch.stack([
            log_probs[0, 0, 17] + log_probs[0, 1, 44] + log_probs[0, 2, 3],
            log_probs[1, 0, 9] + log_probs[1, 1, 3],
        ])
        got = decoder.sequence_log_probs(ids, answer_masks, states, masks)
    assert torch.allclose(got, expected, atol=1e-5)


def test_lm_head_is_tied_to_the_decoders_own_word_embeddings():
    model = vqa_model({"vqa_decoder": 1, "mlm": 1, "itm": 0})
    decoder = model.text_decoder
    assert decoder.lm_head.decoder.weight is decoder.embeddings.word_embeddings.weight
    assert decoder.embeddings.word_embeddings.weight is not model.text_encoder.embeddings.word_embeddings.weight
    assert len(decoder.encoder.layer) == 1 and decoder.encoder.layer[0].has_cross_attention


def decoder_outputs(model):
    states, masks = question()
    ids, answer_masks = answers()
    with torch.no_grad():
        image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
        fused = model.infer(*text_batch(batch=2, length=8, real=(8, 5)), image)
        return fused["text_feats"], model.text_decoder.sequence_log_probs(ids, answer_masks, states, masks)


def test_albef_vqa_checkpoint_round_trip(tmp_path):
    model = vqa_model()
    saved = to_albef(model.state_dict(), layout="vqa")
    assert "text_decoder.bert.encoder.layer.0.crossattention.self.key.weight" in saved
    assert "text_decoder.bert.embeddings.word_embeddings.weight" in saved
    assert torch.equal(saved["text_decoder.cls.predictions.decoder.bias"], saved["text_decoder.cls.predictions.bias"])
    assert "text_encoder.encoder.layer.1.crossattention.self.query.weight" in saved  # no bert. infix
    assert not any(key.startswith("text_encoder.bert.") for key in saved)
    torch.save({"model": saved, "config": {}, "epoch": 7}, tmp_path / "vqa.pth")
    torch.manual_seed(1)
    loaded, reports = build_model_with_reports(tiny_cfg({"vqa_decoder": 1, "itm": 0, "mlm": 0},
                                                        **SMALL, load_path=str(tmp_path / "vqa.pth")))
    assert reports[0].format == "albef" and reports[0].missing == [] and reports[0].unexpected == []
    for expected, got in zip(decoder_outputs(model), decoder_outputs(loaded.eval())):
        assert torch.allclose(expected, got, atol=1e-6)


def test_vqa_layout_needs_the_decoder():
    with pytest.raises(ValueError, match="vqa_decoder"):
        to_albef(build_model(tiny_cfg({"itm": 1}, **SMALL)).state_dict(), layout="vqa")


def test_decoder_starts_from_the_fusion_layers_of_a_pretraining_checkpoint(tmp_path):
    torch.manual_seed(0)
    pretrained = build_model(tiny_cfg({"itc": 1, "itm": 1, "mlm": 1}, **SMALL))
    torch.save({"model": to_albef(pretrained.state_dict(), layout="pretrain")}, tmp_path / "grit.pth")
    cfg = tiny_cfg({"vqa_decoder": 1, "itm": 0, "mlm": 0}, **SMALL, load_path=str(tmp_path / "grit.pth"))
    model, reports = build_model_with_reports(cfg)
    assert reports[0].missing == []
    assert {key for key in reports[0].unexpected if key.startswith("mlm_score.")}  # no MLM head in the VQA model
    source = pretrained.state_dict()
    for key, value in model.text_decoder.encoder.layer[0].state_dict().items():
        assert torch.equal(value, source[f"text_encoder.encoder.layer.1.{key}"]), key  # fusion_layer + 0
    for key, value in model.text_decoder.embeddings.state_dict().items():
        assert torch.equal(value, source[f"text_encoder.embeddings.{key}"]), key
    for key, value in model.text_decoder.lm_head.state_dict().items():
        assert torch.equal(value, source[f"mlm_score.{key}"]), key
    assert torch.equal(model.text_encoder.encoder.layer[0].attention.self.query.weight,
                       pretrained.text_encoder.encoder.layer[0].attention.self.query.weight)


def test_decoder_layers_beyond_the_fusion_layers_are_reported_missing(tmp_path):
    torch.manual_seed(0)
    pretrained = build_model(tiny_cfg({"itm": 1, "mlm": 1}, **SMALL))
    torch.save({"model": to_albef(pretrained.state_dict(), layout="pretrain")}, tmp_path / "grit.pth")
    cfg = tiny_cfg({"vqa_decoder": 1}, **{**SMALL, "answer_decoder_layers": 2}, load_path=str(tmp_path / "grit.pth"))
    _, reports = build_model_with_reports(cfg)
    assert reports[0].missing and all(key.startswith("text_decoder.encoder.layer.1.") for key in reports[0].missing)
