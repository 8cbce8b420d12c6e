"""ALBEF's text-assignment pre-training (``nlvr_ta``) and NLVR2 on a paired model."""
import math

import pytest
import torch

from vlkit.config import resolve_config
from vlkit.models.build import build_model
from vlkit.tasks import build_task, task_name
from vlkit.tasks.classification import Nlvr2Task
from vlkit.tasks.nlvr_ta import TA_TEMPERATURE, assign_images

TINY = ["tiny", "hidden_size=32", "num_layers=3", "vision_layers=2", "fusion_layer=1", "image_size=32",
        "max_position_embeddings=0", "drop_rate=0.0", "progress_bar=False"]
PARTNER = [1, 0, 3, 2]


def partner_similarity() -> torch.Tensor:
    """Images 0-1 and 2-3 are alike; every image is most similar to itself (to be ignored)."""
    similarity = torch.zeros(4, 4)
    for row, partner in enumerate(PARTNER):
        similarity[row, partner] = 30.0
    return similarity + 100.0 * torch.eye(4)


def test_assignment_puts_the_true_image_in_the_labelled_slot_and_a_similar_one_beside_it():
    for seed in range(50):
        first, second, labels = assign_images(partner_similarity(), torch.Generator().manual_seed(seed))
        for row in range(4):
            slots = (first[row].item(), second[row].item())
            if labels[row] == 0:
                assert slots == (row, PARTNER[row])
            elif labels[row] == 1:
                assert slots == (PARTNER[row], row)
            else:
                assert labels[row] == 2 and row not in slots and slots[0] != slots[1]
                assert PARTNER[row] in slots  # the most similar other image is drawn first


def test_labels_are_a_third_each_and_others_follow_the_softmax_over_other_images():
    generator = torch.Generator().manual_seed(0)
    similarity = torch.zeros(5, 5)
    similarity[0, 1] = math.log(3.0)  # image 0: image 1 three times as likely as 2, 3 or 4
    similarity[0, 0] = 50.0
    counts, others = torch.zeros(3), torch.zeros(5)
    for _ in range(3000):
        first, second, labels = assign_images(similarity, generator)
        counts += torch.bincount(labels, minlength=3)
        if labels[0] < 2:
            others[(second if labels[0] == 0 else first)[0]] += 1
    shares = counts / counts.sum()
    assert torch.allclose(shares, torch.full((3,), 1 / 3), atol=0.015), shares
    others /= others.sum()
    assert others[0] == 0 and abs(others[1].item() - 0.5) < 0.03  # 3 / (3 + 1 + 1 + 1)
    assert torch.allclose(others[2:], torch.full((3,), 1 / 6), atol=0.03)


def test_assignment_is_reproducible_and_handles_small_batches():
    draws = [assign_images(torch.randn(6, 6, generator=torch.Generator().manual_seed(1)),
                           torch.Generator().manual_seed(seed)) for seed in (7, 7, 8)]
    assert all(torch.equal(a, b) for a, b in zip(draws[0], draws[1]))
    assert not all(torch.equal(a, b) for a, b in zip(draws[0], draws[2]))
    first, second, labels = assign_images(torch.zeros(2, 2), torch.Generator().manual_seed(3))
    neither = labels == 2
    assert torch.equal(first[neither], 1 - torch.arange(2)[neither])  # the one other image, twice
    assert torch.equal(second[neither], first[neither])
    with pytest.raises(ValueError, match="at least 2 images"):
        assign_images(torch.zeros(1, 1), torch.Generator())


def ta_config(*words):
    return resolve_config(["grit_nlvr_pretrain", *TINY, "vocab_size=120", *words])


def ta_batch(size=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(size, 3, 32, 32, generator=generator),
            "text_ids": torch.randint(1, 120, (size, 8), generator=generator),
            "text_masks": torch.ones(size, 8, dtype=torch.long)}


def test_ta_preset_selects_the_task_and_bad_configs_are_refused():
    assert task_name(ta_config()) == "nlvr_ta"
    with pytest.raises(ValueError, match="pair_fusion=True"):
        build_task(ta_config("pair_fusion=False"))
    with pytest.raises(ValueError, match="loss_names.itc=0.5"):
        build_task(ta_config("loss_names.itc=1"))
    with pytest.raises(ValueError, match="itm"):
        build_task(ta_config("loss_names.itm=1"))


def test_ta_training_step_trains_the_fusion_pairs_and_ta_head_but_not_the_itc_projection():
    cfg = ta_config()
    torch.manual_seed(0)
    model, task = build_model(cfg), build_task(cfg)
    torch.manual_seed(1)
    out = task.training_step(model, ta_batch())
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and 0 <= out["nlvr_ta_accuracy"] <= 1
    assert out["nlvr_ta_loss"] == pytest.approx(out["loss"].item())
    assert model.ta_head.weight.grad.abs().sum() > 0
    for index in (1, 2):
        assert model.text_encoder.encoder.layer[index].crossattention.self.query.weight.grad.abs().sum() > 0
    assert model.itc_head.image_proj.weight.grad is None
    torch.manual_seed(1)
    again = task.training_step(model, ta_batch())
    assert again["loss"].item() == out["loss"].item()  # draws follow the global seed
    lone = task.training_step(model, ta_batch(size=1))
    assert lone["loss"].item() == 0.0 and lone["loss"].requires_grad


def test_ta_evaluation_is_repeatable_and_counts_what_the_head_predicts():
    cfg = ta_config()
    torch.manual_seed(0)
    model, task = build_model(cfg).eval(), build_task(cfg)
    with torch.no_grad():  # always predicts "neither image"
        model.ta_head.weight.zero_()
        model.ta_head.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    loader = [ta_batch(seed=s) for s in range(4)] + [ta_batch(size=1, seed=9)]
    with torch.no_grad():
        first, second = task.evaluate(model, loader), task.evaluate(model, loader)
    assert first == second and first["the_metric"] == first["nlvr_ta_accuracy"]
    generator, neither, total = torch.Generator().manual_seed(cfg.seed), 0, 0
    with torch.no_grad():  # the same draws, replayed: accuracy is the share of label 2
        for batch in loader[:4]:
            features = model.itc_head.embed_image(model.image_only_feats(model.embed_image(batch["image"])))
            labels = assign_images(features @ features.t() / TA_TEMPERATURE, generator)[2]
            neither, total = neither + (labels == 2).sum().item(), total + len(labels)
    assert first["nlvr_ta_accuracy"] == pytest.approx(neither / total)
    assert first["nlvr_ta_chance"] >= first["nlvr_ta_accuracy"] and first["nlvr_ta_chance"] >= 1 / 3


def nlvr_batch(answers, tables, seed=0):
    generator = torch.Generator().manual_seed(seed)
    size = len(answers)
    return {"text_ids": torch.randint(1, 120, (size, 8), generator=generator),
            "text_masks": torch.ones(size, 8, dtype=torch.long),
            "image_0": torch.randn(size, 3, 32, 32, generator=generator),
            "image_1": torch.randn(size, 3, 32, 32, generator=generator),
            "answers": torch.tensor(answers), "table_name": tables}


def test_nlvr2_on_json_data_runs_one_paired_pass_and_reports_dev_and_test():
    cfg = resolve_config(["grit_nlvr", *TINY, "vocab_size=120"])
    assert list(cfg.datasets) == ["json_nlvr"]
    torch.manual_seed(0)
    model, task = build_model(cfg).eval(), Nlvr2Task(cfg)
    passes = []
    model.text_encoder.encoder.layer[-1].register_forward_hook(lambda *args: passes.append(1))
    batch = nlvr_batch([1, 0, 1, 1, 0], ["nlvr_dev", "nlvr_dev", "nlvr_test", "nlvr_test", "nlvr_test"])
    with torch.no_grad():
        features = task.features(model, batch)
        assert len(passes) == 1
        expected = model.infer(batch["text_ids"], batch["text_masks"], (batch["image_0"], batch["image_1"]))
    assert features.shape == (5, 32) and torch.equal(features, expected["cls_feats"])
    with torch.no_grad():  # predicts class 1 whatever the pair
        model.nlvr2_classifier[2].weight.zero_()
        model.nlvr2_classifier[2].bias.copy_(torch.tensor([0.0, 1.0]))
        metrics = task.evaluate(model, [batch])
    assert metrics["dev_accuracy"] == pytest.approx(1 / 2) and metrics["test_accuracy"] == pytest.approx(2 / 3)
    assert metrics["accuracy"] == pytest.approx(3 / 5) and metrics["the_metric"] == metrics["dev_accuracy"]
    with pytest.raises(ValueError, match=r"datasets=\['nlvr2'\] or datasets=\['json_nlvr'\]"):
        Nlvr2Task(resolve_config(["grit_nlvr", *TINY, "datasets=[json_vqa]"]))
