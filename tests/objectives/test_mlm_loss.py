"""MLM cross-entropy and the LossOutput counts."""
import math

import pytest
import torch

from vlkit.objectives import LossOutput, mlm_loss


def log_softmax_at(row, index):
    return row[index] - math.log(sum(math.exp(x) for x in row))


def test_mlm_loss_matches_hand_computed_values():
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [5.0, 1.0, 1.0]]])
    labels = torch.tensor([[-100, 2, 1]])
    out = mlm_loss(logits, labels)
    expected = -(log_softmax_at([0.0, 0.0, 3.0], 2) + log_softmax_at([5.0, 1.0, 1.0], 1)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert (out.correct.item(), out.total.item()) == (1, 2)
    assert out.accuracy.item() == pytest.approx(0.5)


def test_mlm_loss_matches_naive_loop_over_labelled_positions():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7)
    labels = torch.randint(0, 7, (3, 5))
    labels[torch.rand(3, 5) < 0.5] = -100
    terms, correct = [], 0
    for b in range(3):
        for i in range(5):
            if labels[b, i] != -100:
                row = logits[b, i].tolist()
                terms.append(-log_softmax_at(row, int(labels[b, i])))
                correct += int(max(range(7), key=row.__getitem__) == labels[b, i])
    out = mlm_loss(logits, labels)
    assert out.loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert (out.correct.item(), out.total.item()) == (correct, len(terms))


def test_batch_without_labels_gives_zero_loss_that_backpropagates():
    logits = torch.randn(2, 4, 6, requires_grad=True)
    out = mlm_loss(logits, torch.full((2, 4), -100))
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    assert (out.total.item(), out.accuracy.item()) == (0, 0.0)


def test_counts_aggregate_to_the_accuracy_of_the_joined_batch():
    torch.manual_seed(1)
    logits = torch.randn(4, 6, 5)
    labels = torch.randint(0, 5, (4, 6))
    labels[torch.rand(4, 6) < 0.4] = -100
    halves = [mlm_loss(logits[:2], labels[:2]), mlm_loss(logits[2:], labels[2:])]
    joined = mlm_loss(logits, labels)
    summed = LossOutput(joined.loss, sum(h.correct for h in halves), sum(h.total for h in halves))
    assert summed.accuracy.item() == pytest.approx(joined.accuracy.item())


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        mlm_loss(torch.zeros(2, 4, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="B, L, V"):
        mlm_loss(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
