"""ITM labels and loss."""
import math

import pytest
import torch

from vlkit.objectives import itm_labels, itm_loss


@pytest.mark.parametrize("batch_size", [1, 2, 5, 8])
def test_itm_labels_hold_floor_half_ones(batch_size):
    labels = itm_labels(batch_size, torch.Generator().manual_seed(0))
    assert labels.dtype == torch.long and labels.shape == (batch_size,)
    assert set(labels.tolist()) <= {0, 1}
    assert int(labels.sum()) == batch_size // 2


def test_itm_labels_order_is_random_and_reproducible():
    draws = {tuple(itm_labels(8, torch.Generator().manual_seed(seed)).tolist()) for seed in range(20)}
    assert len(draws) > 1
    same_seed = [itm_labels(8, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*same_seed)


def test_itm_labels_reject_empty_batch():
    with pytest.raises(ValueError, match="got 0"):
        itm_labels(0)


def test_itm_loss_matches_hand_computed_values():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]])
    labels = torch.tensor([1, 1, 0])
    out = itm_loss(logits, labels)
    expected = (math.log(1 + math.exp(2)) + math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2))) / 3
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert (out.correct.item(), out.total.item()) == (1, 3)


def test_itm_loss_rejects_non_binary_logits():
    with pytest.raises(ValueError, match=r"\(B, 2\).*\(4, 3\)"):
        itm_loss(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
