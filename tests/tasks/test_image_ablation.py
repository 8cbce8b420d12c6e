"""The image-ablation baseline (``eval_image_ablation``): blank images, ``{metric}_blank`` and
``image_gain``, a model that ignores the image gains exactly 0 and one that looks does not."""
import json

import pytest
import torch
from torch import nn

from vlkit.cli.training import train_or_test
from vlkit.config import resolve_config
from vlkit.engine.logging import read_metrics
from vlkit.eval.retrieval_eval import RetrievalEvaluator, RetrievalTexts
from vlkit.tasks.ablation import BlankImages, blank_images, image_gain_metrics, with_image_ablation
from vlkit.tasks.classification import SnliVeTask

TINY_WORDS = ["tiny", "progress_bar=False"]


def test_blank_images_zero_every_image_and_nothing_else():
    batch = {"image": torch.randn(2, 3, 4, 4), "image_0": torch.randn(2, 3, 4, 4), "false_image_0": torch.randn(2, 3, 4, 4),
             "image_pixel_mask": torch.ones(2, 4, 4, dtype=torch.bool), "text_ids": torch.ones(2, 5, dtype=torch.long),
             "table_name": ["a", "b"]}
    blank = blank_images(batch)
    for key in ("image", "image_0", "false_image_0"):
        assert torch.equal(blank[key], torch.zeros(2, 3, 4, 4))
    for key in ("image_pixel_mask", "text_ids", "table_name"):
        assert blank[key] is batch[key]
    assert batch["image"].abs().sum() > 0  # the original batch is untouched


def test_gain_is_metric_minus_blank_and_the_first_metric_is_the_headline():
    out = image_gain_metrics({"dev_accuracy": 0.75, "accuracy": 0.5, "loss": 1.0},
                             {"dev_accuracy": 0.25, "accuracy": 0.5, "loss": 2.0},
                             ("dev_accuracy", "accuracy", "test_accuracy"))
    assert out == {"dev_accuracy_blank": 0.25, "dev_accuracy_image_gain": 0.5, "accuracy_blank": 0.5,
                   "accuracy_image_gain": 0.0, "image_gain": 0.5}


class _SnliStub(nn.Module):
    """3-way SNLI-VE logits: from the text only (``looks=False``) or from the first pixel's
    channels (``looks=True``)."""

    def __init__(self, looks: bool):
        super().__init__()
        self.looks = looks
        self.weight = nn.Parameter(torch.zeros(1))

    def infer(self, text_ids, text_masks, image):
        if self.looks:
            return {"cls_feats": image[:, :, 0, 0]}
        return {"cls_feats": nn.functional.one_hot(text_ids[:, 1] % 3, 3).float()}

    def snli_classifier(self, features):
        return features


def _snli_loader():
    """Labels = the text's token 1 mod 3 = the channel lit in each image, so both stubs are right."""
    batches = []
    for start in (0, 4):
        labels = torch.tensor([0, 1, 2, 1]) if start == 0 else torch.tensor([2, 2, 0, 1])
        images = torch.zeros(4, 3, 8, 8)
        images[torch.arange(4), labels] = 1.0
        ids = torch.stack([torch.zeros(4, dtype=torch.long), labels + 3], dim=1)
        batches.append({"text_ids": ids, "text_masks": torch.ones_like(ids), "image": images, "labels": labels,
                        "table_name": ["snli_dev"] * 4})
    return batches


@pytest.mark.parametrize("looks", [False, True])
def test_snli_image_gain_is_zero_exactly_when_the_model_ignores_the_image(looks, data_words):
    task = SnliVeTask(resolve_config(["task_finetune_snli_mae_randaug", *TINY_WORDS, *data_words]))
    model, loader = _SnliStub(looks), _snli_loader()
    metrics = with_image_ablation(task, model, loader, "val", task.evaluate(model, loader))
    assert metrics["dev_accuracy"] == 1.0
    if looks:  # blank images: every logit 0, argmax class 0, right on 2 of 8 examples
        assert metrics["dev_accuracy_blank"] == pytest.approx(2 / 8)
        assert metrics["image_gain"] == pytest.approx(6 / 8)
    else:
        assert metrics["dev_accuracy_blank"] == 1.0 and metrics["image_gain"] == 0.0


class _PairScorer(nn.Module):
    """Images are vectors; caption ``t`` (token 1) is image ``t``'s vector; a pair scores their
    dot product (``looks=True``) or the caption's norm alone (``looks=False``)."""

    VECTORS = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))

    def __init__(self, looks: bool):
        super().__init__()
        self.looks = looks
        self.weight = nn.Parameter(torch.zeros(1))

    def embed_image(self, image, mask_image=None):
        return {"vector": image.flatten(1)}

    def infer(self, text_ids, text_masks, image_embeds):
        text = self.VECTORS[text_ids[:, 1]]
        score = (text * image_embeds["vector"]).sum(-1) if self.looks else text.norm(dim=-1)
        return {"score": score}


def test_retrieval_of_a_blind_model_gains_nothing_and_a_seeing_one_does():
    rows = torch.arange(6)
    pixels = _PairScorer.VECTORS.view(6, 1, 1, 4)  # "images" of one pixel and four channels
    images = [{"image": pixels[rows[i:i + 3]], "img_index": rows[i:i + 3]} for i in (0, 3)]
    ids = torch.stack([torch.zeros(6, dtype=torch.long), rows], dim=1)
    texts = RetrievalTexts(ids, torch.ones_like(ids), rows)
    seeing = RetrievalEvaluator(_PairScorer(True), lambda features: features["score"], progress=False)
    blind = RetrievalEvaluator(_PairScorer(False), lambda features: features["score"], progress=False)
    for evaluator, gains in ((seeing, True), (blind, False)):
        full = evaluator.evaluate(images, texts)
        blank = evaluator.evaluate(BlankImages(images), texts)
        gain = image_gain_metrics(full, blank, ("r_mean",))["image_gain"]
        assert (gain > 0.2) if gains else (gain == 0.0)


def test_a_run_logs_and_records_the_blank_baseline(tmp_path, data_words):
    """A 2-step SNLI-VE run with ``eval_image_ablation=True``: ``metrics.jsonl`` and the evaluation
    record hold ``dev_accuracy_blank`` and ``image_gain`` (their difference) beside ``dev_chance``."""
    cfg = resolve_config(["task_finetune_snli_mae_randaug", *TINY_WORDS, *data_words, f"log_dir={tmp_path}",
                          "max_steps=2", "val_check_interval=2", "eval_image_ablation=True"])
    summary = train_or_test(cfg)
    val = summary["val"]
    assert val["image_gain"] == pytest.approx(val["dev_accuracy"] - val["dev_accuracy_blank"])
    assert "dev_chance" in val
    run_dir = tmp_path / summary["run_dir"].split(str(tmp_path) + "/")[1]
    logged = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "val"][-1]
    assert logged["val/dev_accuracy_blank"] == val["dev_accuracy_blank"]
    record = json.loads(next((run_dir / "evaluations").glob("val_step*.json")).read_text())
    assert record["metrics"]["image_gain"] == val["image_gain"]


class _ClipVilStub(nn.Module):
    """CLIP-ViL's ``infer`` and heads on hand-made batches. Text token 1 names a class c in {0, 1, 2};
    the image lights channel k. MLM predicts token 1 from the text; ITM says "match" with logit
    ``image[c] - 0.5`` (``looks=True``) or 0.5 (blind); QA and VQA answer the lit channel (``looks``)
    or the text's class (blind)."""

    def __init__(self, looks: bool):
        super().__init__()
        self.looks = looks
        self.weight = nn.Parameter(torch.zeros(1))

    def infer(self, text_ids, text_masks, image, pixel_mask=None):
        named = nn.functional.one_hot(text_ids[:, 1] % 3, 3).float()
        lit = image[:, :, 0, 0]
        text_feats = nn.functional.one_hot(text_ids, 8).float()
        return {"text_feats": text_feats, "cls_feats": torch.cat([named, lit], dim=1)}

    def mlm_score(self, text_feats):
        return text_feats

    def itm_score(self, cls_feats):
        named, lit = cls_feats[:, :3], cls_feats[:, 3:]
        match = (named * lit).sum(1) - 0.5 if self.looks else torch.full_like(named[:, 0], 0.5)
        return torch.stack([torch.zeros_like(match), match], dim=1)

    def qa_head(self, cls_feats):
        return cls_feats[:, 3:] if self.looks else cls_feats[:, :3]

    vqa_classifier = qa_head


def _clipvil_batches():
    """Two batches of four: image k lit in channel ``lit``, text of class ``named`` (token 1 = 3 + class,
    MLM label at position 1), ``itm_labels`` = (named == lit), QA / VQA answer = ``lit``."""
    batches = []
    for lit, named in (([0, 1, 2, 1], [0, 2, 2, 1]), ([2, 0, 0, 1], [2, 0, 1, 0])):
        lit, named = torch.tensor(lit), torch.tensor(named)
        images = torch.zeros(4, 3, 8, 8)
        images[torch.arange(4), lit] = 1.0
        ids = torch.stack([torch.zeros(4, dtype=torch.long), named + 3], dim=1)
        mlm_labels = torch.stack([torch.full((4,), -100), named + 3], dim=1)
        batches.append({"text_ids": ids, "text_ids_mlm": ids, "text_labels_mlm": mlm_labels,
                        "text_masks": torch.ones_like(ids), "image": images,
                        "image_pixel_mask": torch.ones(4, 8, 8, dtype=torch.uint8),
                        "itm_labels": (named == lit).long(), "qa_labels": lit,
                        "vqa_labels": [[int(k)] for k in lit], "vqa_scores": [[1.0]] * 4, "qid": torch.arange(4)})
    return batches


@pytest.mark.parametrize("looks", [False, True])
def test_clipvil_pretraining_and_vqa_gain_nothing_exactly_when_the_model_ignores_pixels(looks, synthetic):
    """CLIP-ViL's two tasks on the hand-made batches: blind stubs gain exactly 0 on every metric;
    the looking stub is right on all 8 examples and, with blank images, only where the answer is
    "no match" or 0 (3 of 8 each)."""
    from vlkit.tasks.clipvil import ClipVilPretrainTask, ClipVilVqaTask

    model, loader = _ClipVilStub(looks), _clipvil_batches()
    pretrain = ClipVilPretrainTask(resolve_config(["clipvil_pretrain", "clipvil_tiny", "qa_label_size=3"]))
    out = with_image_ablation(pretrain, model, loader, "val", pretrain.evaluate(model, loader))
    vqa = ClipVilVqaTask(resolve_config(["clipvil_vqa", "clipvil_tiny", f"data_root={synthetic['clipvil']['root']}",
                                         "vqav2_label_size=25"]))
    out_vqa = with_image_ablation(vqa, model, loader, "val", vqa.evaluate(model, loader))
    assert out["mlm_accuracy"] == out["mlm_accuracy_blank"] == 1.0 and out["mlm_accuracy_image_gain"] == 0.0
    if looks:  # blank: ITM says "no match" (right on the 3 mismatched), QA and VQA answer 0 (right on 3)
        assert (out["itm_accuracy"], out["qa_accuracy"], out_vqa["score"]) == (1.0, 1.0, 1.0)
        assert out["itm_accuracy_blank"] == pytest.approx(3 / 8) and out["image_gain"] == pytest.approx(5 / 8)
        assert out["qa_accuracy_blank"] == pytest.approx(3 / 8)
        assert out_vqa["score_blank"] == pytest.approx(3 / 8) and out_vqa["image_gain"] == pytest.approx(5 / 8)
    else:
        for name in ("itm_accuracy", "qa_accuracy", "mlm_accuracy"):
            assert out[f"{name}_blank"] == out[name] and out[f"{name}_image_gain"] == 0.0
        assert out_vqa["score_blank"] == out_vqa["score"] and out_vqa["image_gain"] == 0.0
