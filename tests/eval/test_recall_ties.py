"""Recall@K with ties at the cut: expected (uniform random tie-breaking), pessimistic, optimistic."""
import itertools

import pytest
import torch

from vlkit.eval.retrieval import recall_at_k


def test_duplicate_caption_oracle():
    # Images 0 and 1 share the caption string "a dog" (texts 0 and 1): an oracle scores both
    # texts alike for each image, so each image's true text ties with the other's.
    scores = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    expected = recall_at_k(scores, [0, 1], ks=(1, 2))
    assert expected["tr_r1"] == pytest.approx(0.5) and expected["ir_r1"] == pytest.approx(0.5)
    assert expected["tr_r2"] == 1.0
    assert recall_at_k(scores, [0, 1], ks=(1,), ties="pessimistic")["tr_r1"] == 0.0
    assert recall_at_k(scores, [0, 1], ks=(1,), ties="optimistic")["tr_r1"] == 1.0


def test_expected_recall_by_hand():
    # Image 0: one wrong text above (text 0), its two texts (1, 2) tied at 3 with two wrong ones
    # (3, 4). Places of the tied group inside k: k - 1. P(hit) = 1 - C(2, m) / C(4, m):
    # k=1: m=0 -> 0; k=2: m=1 -> 1 - 2/4; k=3: m=2 -> 1 - 1/6; k=5: m=4 > 2 wrong -> 1.
    # Image 1 (texts 0, 3, 4, 5) has its text 0 strictly first: always a hit.
    scores = torch.tensor([[5.0, 3.0, 3.0, 3.0, 3.0, 1.0], [9.0, 0.0, 0.5, 8.0, 7.0, 6.0]])
    owners = [1, 0, 0, 1, 1, 1]
    r = recall_at_k(scores, owners, ks=(1, 2, 3, 5))
    assert r["tr_r1"] == pytest.approx((0 + 1) / 2)
    assert r["tr_r2"] == pytest.approx((0.5 + 1) / 2)
    assert r["tr_r3"] == pytest.approx((5 / 6 + 1) / 2)
    assert r["tr_r5"] == pytest.approx(1.0)
    pessimistic = recall_at_k(scores, owners, ks=(1, 3, 4), ties="pessimistic")
    assert pessimistic["tr_r3"] == pytest.approx(0.5) and pessimistic["tr_r4"] == pytest.approx(1.0)
    optimistic = recall_at_k(scores, owners, ks=(1, 2), ties="optimistic")
    assert optimistic["tr_r1"] == pytest.approx(0.5) and optimistic["tr_r2"] == pytest.approx(1.0)


def _mean_over_tie_orders(scores, owners, ks):
    """Exact expectation: the mean recall over every order of breaking ties (texts for text
    retrieval, images for image retrieval), each order a strict perturbation of the scores."""
    num_images, num_texts = scores.shape
    sums = {}
    for axis, n, prefix in ((1, num_texts, "tr"), (0, num_images, "ir")):
        orders = list(itertools.permutations(range(n)))
        for order in orders:
            nudge = torch.tensor(order, dtype=torch.float64) * 1e-3
            shifted = scores + (nudge[None, :] if axis == 1 else nudge[:, None])
            r = recall_at_k(shifted, owners, ks=ks, ties="pessimistic")
            for k in ks:
                key = f"{prefix}_r{k}"
                sums[key] = sums.get(key, 0.0) + r[key] / len(orders)
    return sums


def test_expected_equals_mean_over_all_tie_orders():
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        scores = torch.randint(0, 3, (4, 5), generator=generator).double()
        owners = [0, 1, 2, 3, 0]
        exact = _mean_over_tie_orders(scores, owners, ks=(1, 2, 3))
        got = recall_at_k(scores, owners, ks=(1, 2, 3))
        for key, value in exact.items():
            assert got[key] == pytest.approx(value, abs=1e-9), key


def test_without_ties_all_conventions_agree():
    scores = torch.randn(6, 9, generator=torch.Generator().manual_seed(1))
    owners = [i % 6 for i in range(9)]
    results = [recall_at_k(scores, owners, ties=t) for t in ("expected", "pessimistic", "optimistic")]
    assert results[0] == results[1] == results[2]


def test_unknown_convention():
    with pytest.raises(ValueError, match="recall_ties='random'"):
        recall_at_k(torch.ones(2, 2), [0, 1], ties="random")


def test_convention_is_recorded_with_every_retrieval_evaluation():
    from types import SimpleNamespace

    from vlkit.config.schema import Config
    from vlkit.tasks.irtr import RecallEvaluation

    task = SimpleNamespace(cfg=Config(recall_ties="optimistic"))
    assert RecallEvaluation.evaluation_info(task)["recall_ties"] == "optimistic"
    assert Config().recall_ties == "expected"
