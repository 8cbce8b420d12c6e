"""VQA targets and loss, and the ITC loss, against hand-computed values."""
import math

import pytest
import torch

from vlkit.objectives import itc_loss, vqa_loss, vqa_targets


def test_vqa_targets_place_soft_scores_at_the_labels():
    targets = vqa_targets([[2, 0], []], [[0.9, 0.3], []], num_classes=4)
    torch.testing.assert_close(targets, torch.tensor([[0.3, 0.0, 0.9, 0.0], [0.0, 0.0, 0.0, 0.0]]))


def test_vqa_targets_reject_labels_outside_the_vocabulary():
    with pytest.raises(ValueError, match="vqav2_label_size"):
        vqa_targets([[5]], [[1.0]], num_classes=4)


def test_vqa_loss_is_the_per_question_sum_of_bce_averaged_over_questions():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 0.0]])
    targets = torch.tensor([[0.0, 1.0, 0.3], [0.6, 0.0, 0.0]])

    def bce(x, t):
        p = 1 / (1 + math.exp(-x))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    per_question = [sum(bce(x, t) for x, t in zip(row_x, row_t)) for row_x, row_t in zip(logits.tolist(), targets.tolist())]
    assert vqa_loss(logits, targets).item() == pytest.approx(sum(per_question) / 2, rel=1e-6)


def test_itc_loss_matches_the_symmetric_cross_entropy_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    scale = 2.0
    out = itc_loss(image, text, torch.tensor(math.log(scale)))
    sims = [[0.6, 0.0], [0.8, 1.0]]  # image i · text j

    def ce(row, target):
        return -math.log(math.exp(scale * row[target]) / sum(math.exp(scale * v) for v in row))

    i2t = (ce(sims[0], 0) + ce(sims[1], 1)) / 2
    t2i = (ce([sims[0][0], sims[1][0]], 0) + ce([sims[0][1], sims[1][1]], 1)) / 2
    assert out.loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)
    assert out.correct.item() == 2 and out.total.item() == 2


def test_itc_loss_clamps_the_temperature_at_100():
    image = torch.eye(2)
    text = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    huge = itc_loss(image, text, torch.tensor(10.0)).loss
    at_cap = itc_loss(image, text, torch.tensor(math.log(100.0))).loss
    assert huge.item() == pytest.approx(at_cap.item(), rel=1e-4)


def test_albef_temperature_is_clamped_to_both_sides():
    """ALBEF clamps temp to [0.001, 0.5]: log-scale in [log 2, log 1000] (the albef preset)."""
    from vlkit.config.cli_with import resolve_config

    image = torch.eye(2)
    text = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    bounds = {"min_logit_scale": math.log(2), "max_logit_scale": math.log(1000)}
    warm = itc_loss(image, text, torch.tensor(math.log(1.0)), **bounds).loss  # temp 1 -> 0.5
    at_floor = itc_loss(image, text, torch.tensor(math.log(2.0))).loss
    assert warm.item() == pytest.approx(at_floor.item(), rel=1e-6)
    assert itc_loss(image, text, torch.tensor(0.0)).loss.item() != pytest.approx(at_floor.item())  # CLIP: no floor
    cold = itc_loss(image, text, torch.tensor(9.0), **bounds).loss
    assert cold.item() == pytest.approx(itc_loss(image, text, torch.tensor(math.log(1000)), **bounds).loss.item(), rel=1e-5)
    cfg = resolve_config(["with", "albef"])
    assert math.exp(-cfg["itc_min_logit_scale"]) == pytest.approx(0.5, rel=1e-5)
    assert math.exp(-cfg["itc_max_logit_scale"]) == pytest.approx(0.001, rel=1e-4)
