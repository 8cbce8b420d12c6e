"""The task methods of ``VLModel``: values against the heads computed by hand, and bad input."""
import json
import logging

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import vlkit
from tests.api._api_runs import data_words
from vlkit.api import Gallery, MissingHeadError, export
from vlkit.config import resolve_config
from vlkit.models.build import build_model

HEADS = ["loss_names.mlm=1", "loss_names.itm=1", "loss_names.itc=1", "loss_names.nlvr2=1", "loss_names.snli=1"]


@pytest.fixture(scope="module")
def many_heads(scenes, tmp_path_factory):
    """A tiny VLC model with the MLM, ITM, ITC, NLVR2 and SNLI-VE heads, exported and loaded."""
    torch.manual_seed(0)
    cfg = resolve_config(["tiny", "task=pretrain", *HEADS, *data_words(scenes)])
    folder = tmp_path_factory.mktemp("many_heads")
    torch.save({"state_dict": build_model(cfg).state_dict(), "vlkit": {},
                "hyper_parameters": {"config": OmegaConf.to_container(cfg, resolve=True)}}, folder / "m.ckpt")
    return vlkit.load(export(folder / "m.ckpt", folder / "model"))


@pytest.fixture
def pictures(tmp_path):
    paths = []
    for i, colour in enumerate(("red", "blue", "green")):
        paths.append(tmp_path / f"{colour}.png")
        Image.new("RGB", (80, 60), colour).save(paths[-1])
    return [str(path) for path in paths]


def test_match_is_the_itm_probability_and_the_itc_cosine(many_heads, pictures):
    result = many_heads.match(pictures[:2], ["a red square", "a blue circle"])
    batch = many_heads.preprocess.images(pictures[:2])
    ids, masks = many_heads.preprocess.texts(["a red square", "a blue circle"])
    model = many_heads.model
    with torch.no_grad():
        itm = model.itm_score(model.infer(ids, masks, batch.pixels)["cls_feats"]).softmax(-1)[:, 1]
    assert [row["itm"] for row in result] == pytest.approx(itm.tolist(), abs=1e-6)
    images = torch.tensor(many_heads.embed_images(pictures[:2]))
    texts = torch.tensor(many_heads.embed_texts(["a red square", "a blue circle"]))
    assert [row["itc"] for row in result] == pytest.approx((images * texts).sum(-1).tolist(), abs=1e-5)
    assert images.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    json.dumps(result)  # plain values


def test_one_image_pairs_with_every_text(many_heads, pictures):
    one = many_heads.match(pictures[0], ["a red square", "a blue circle"])
    each = [many_heads.match([pictures[0]], [text])[0] for text in ("a red square", "a blue circle")]
    assert [r["itm"] for r in one] == pytest.approx([r["itm"] for r in each], abs=1e-6)


def test_nlvr2_entailment_and_fill_mask(many_heads, pictures):
    true = many_heads.nlvr2(pictures[0], pictures[1], ["the left image is red", "both are blue"])
    assert len(true) == 2 and all(0 <= row["true"] <= 1 for row in true)
    model, pre = many_heads.model, many_heads.preprocess
    ids, masks = pre.texts(["the left image is red"])
    with torch.no_grad():
        first = model.infer(ids, masks, pre.images([pictures[0]]).pixels, image_token_type_idx=1)["cls_feats"]
        second = model.infer(ids, masks, pre.images([pictures[1]]).pixels, image_token_type_idx=2)["cls_feats"]
        expected = model.nlvr2_classifier(torch.cat([first, second], -1)).softmax(-1)[0, 1]
    assert true[0]["true"] == pytest.approx(float(expected), abs=1e-6)
    entail = many_heads.entailment(pictures[:2], "a red shape")
    assert [sum(row.values()) for row in entail] == pytest.approx([1.0, 1.0])
    assert list(entail[0]) == ["contradiction", "neutral", "entailment"]
    filled = many_heads.fill_mask(pictures[0], "a [MASK] circle on the [MASK]", top_k=3)
    assert len(filled) == 2 and all(len(tokens) == 3 for tokens in filled)


def test_gallery_saved_and_reused_gives_the_same_ranking(many_heads, pictures, tmp_path):
    gallery = many_heads.index_images(pictures)
    gallery.save(tmp_path / "gallery.safetensors")
    again = Gallery.load(tmp_path / "gallery.safetensors")
    texts = ["a green square", "a red circle"]
    assert many_heads.retrieve(texts=texts, gallery=again, k=2) == many_heads.retrieve(texts=texts, images=pictures, k=2)
    assert len(many_heads.retrieve(images=pictures[:1], texts=texts, query="images", k=5)[0]) == 2


def test_bad_input_is_refused_with_the_reason(many_heads, pictures, caplog):
    with pytest.raises(TypeError, match="image 0: expected a PIL image, a file path or a"):
        many_heads.match([42], ["a red square"])
    with pytest.raises(ValueError, match="images: the list is empty"):
        many_heads.match([], ["a red square"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        many_heads.match(["missing.png"], ["a red square"])
    with pytest.raises(ValueError, match="got 2 items for 3 pairs"):
        many_heads.match(pictures, ["a", "b"])
    with pytest.raises(MissingHeadError, match="no vqa_classifier head; it is trained by VQAv2 fine-tuning"):
        many_heads.vqa(pictures[0], "what colour?")
    with pytest.raises(MissingHeadError, match="no ImageNet classification head; it is trained by `vlkit imagenet"):
        many_heads.classify(pictures)
    with pytest.raises(ValueError, match="must hold at least one \\[MASK\\]"):
        many_heads.fill_mask(pictures[0], "no mask here")
    long_text = " ".join(["red circle"] * 40)
    with caplog.at_level(logging.WARNING, logger="vlkit.api"):
        result = many_heads.match(pictures[0], long_text)
    assert "truncated to max_text_len" in caplog.text and 0 <= result[0]["itm"] <= 1


def test_vqa_needs_its_head_and_answers(vqa_run, pictures):
    model = vlkit.load(vqa_run)
    answers = model.vqa(pictures[:2], ["what colour is the shape?"], top_k=4)
    assert [len(top) for top in answers] == [4, 4]
    assert all(top[0]["score"] >= top[-1]["score"] and top[0]["answer"] in model.answers for top in answers)
    with pytest.raises(MissingHeadError, match="no itm_score head; it is trained by pre-training with loss_names.itm=1"):
        model.match(pictures[0], "a red square")
    with pytest.raises(MissingHeadError, match="itc_head"):
        model.embed_texts(["a red square"])
