"""ALBEF's ITC against momentum keys and its distilled MLM, against hand computations."""
import math

import pytest
import torch

from vlkit.objectives import distilled_mlm_loss, momentum_itc_loss


def unit(*angles):
    return torch.tensor([[math.cos(a), math.sin(a)] for a in angles])


def ce(logits, target):
    """Cross-entropy of one row of logits against a target distribution, by hand."""
    log_norm = math.log(sum(math.exp(x) for x in logits))
    return -sum(t * (x - log_norm) for x, t in zip(logits, target))


def softmax(logits):
    total = sum(math.exp(x) for x in logits)
    return [math.exp(x) / total for x in logits]


def cosines(queries, keys):
    return [[float(q @ k) for k in keys] for q in queries]


IMAGES, TEXTS = unit(0.0, 1.0), unit(0.2, 1.3)
IMAGE_KEYS, TEXT_KEYS = unit(0.1, 0.9, 2.5), unit(0.3, 1.1, -2.0)  # batch rows, then one queued
SCALE = 10.0


def hand_loss(positives, alpha=0.0):
    i2t, t2i = cosines(IMAGES, TEXT_KEYS), cosines(TEXTS, IMAGE_KEYS)
    m_i2t, m_t2i = cosines(IMAGE_KEYS[:2], TEXT_KEYS), cosines(TEXT_KEYS[:2], IMAGE_KEYS)
    total = 0.0
    for b in range(2):
        hard = [p / sum(positives[b]) for p in positives[b]]
        for logits, teacher in ((i2t[b], m_i2t[b]), (t2i[b], m_t2i[b])):
            soft = softmax([SCALE * x for x in teacher])
            target = [alpha * s + (1 - alpha) * h for s, h in zip(soft, hard)]
            total += ce([SCALE * x for x in logits], target)
    return total / 4


@pytest.mark.parametrize("positives,alpha", [
    ([[1, 0, 0], [0, 1, 0]], 0.0),  # pre-training: the paired row only
    ([[1, 1, 0], [1, 1, 1]], 0.0),  # retrieval: every key of the same image
    ([[1, 0, 0], [0, 1, 0]], 0.4),  # distilled from the momentum model's own similarities
])
def test_momentum_itc_matches_a_hand_computation(positives, alpha):
    out = momentum_itc_loss(IMAGES, TEXTS, IMAGE_KEYS, TEXT_KEYS, torch.tensor(positives, dtype=torch.bool),
                            torch.tensor(math.log(SCALE)), alpha=alpha)
    assert out.loss.item() == pytest.approx(hand_loss(positives, alpha), rel=1e-5)


def test_momentum_itc_accuracy_counts_a_positive_best_text_and_grads_reach_queries_only():
    images = IMAGES.clone().requires_grad_()
    keys = TEXT_KEYS.clone().requires_grad_()
    # image 0's best text is key 0 (a positive), image 1's is key 1 (not a positive here)
    positives = torch.tensor([[1, 0, 0], [1, 0, 1]], dtype=torch.bool)
    out = momentum_itc_loss(images, TEXTS, IMAGE_KEYS, keys, positives, torch.tensor(2.0))
    out.loss.backward()
    assert out.correct.item() == 1 and out.total.item() == 2
    assert images.grad.abs().sum() > 0
    assert keys.grad is None or keys.grad.abs().sum() == 0


def test_momentum_itc_rejects_positives_of_the_wrong_shape():
    with pytest.raises(ValueError, match="positives"):
        momentum_itc_loss(IMAGES, TEXTS, IMAGE_KEYS, TEXT_KEYS, torch.ones(2, 2, dtype=torch.bool), torch.tensor(1.0))


def test_distilled_mlm_mixes_hard_and_soft_targets_over_masked_positions():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [1.0, -1.0, 3.0]]])
    teacher = torch.tensor([[[0.0, 1.0, 0.0], [9.0, 9.0, 9.0], [1.0, 1.0, 2.0]]])
    labels = torch.tensor([[0, -100, 2]])
    alpha = 0.3
    rows = [(logits[0, 0].tolist(), teacher[0, 0].tolist(), 0), (logits[0, 2].tolist(), teacher[0, 2].tolist(), 2)]
    hard = sum(ce(row, [float(i == label) for i in range(3)]) for row, _, label in rows) / 2
    soft = sum(ce(row, softmax(target)) for row, target, _ in rows) / 2
    out = distilled_mlm_loss(logits, labels, teacher, alpha)
    assert out.loss.item() == pytest.approx((1 - alpha) * hard + alpha * soft, rel=1e-6)
    assert out.correct.item() == 2 and out.total.item() == 2
    assert distilled_mlm_loss(logits, labels, None, 0.0).loss.item() == pytest.approx(hard, rel=1e-6)
