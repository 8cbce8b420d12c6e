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
