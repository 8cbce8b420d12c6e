"""Word-patch alignment: masks, cosine cost, IPOT plan and the WPA loss.

The references here work on one pair at a time, on the compacted valid positions only (no padding
logic), in float64, following the fact sheet's IPOT pseudo-code (plan laid out image x text).
"""
import numpy as np
import pytest
import torch

from vlkit.objectives import wpa_loss
from vlkit.objectives.wpa import alignment_masks, cosine_cost, ipot_plan, wpa_distances


def naive_valid_positions(text_mask, image_mask):
    """Text: real tokens minus position 0 and the last real one; image: real patches minus 0."""
    real_text = [i for i, m in enumerate(text_mask.tolist()) if m]
    text = [i for i in real_text if i != 0 and i != real_text[-1]] if real_text else []
    image = [j for j, m in enumerate(image_mask.tolist()) if m and j != 0]
    return (text, image) if text and image else ([], [])


def naive_cosine_cost(text, image):
    cost = np.zeros((len(text), len(image)))
    for i, t in enumerate(text):
        for j, v in enumerate(image):
            cost[i, j] = 1 - np.dot(t, v) / (max(np.linalg.norm(t), 1e-5) * max(np.linalg.norm(v), 1e-5))
    return cost


def naive_ipot(cost, beta=0.5, iterations=50):
    """IPOT with k=1 on an (n_text, n_image) cost; returns the plan as (n_text, n_image)."""
    n, m = cost.shape
    kernel = np.exp(-cost.T / beta)
    plan = np.ones((m, n))
    sigma = np.full(n, 1.0 / n)
    for _ in range(iterations):
        q = kernel * plan
        delta = 1.0 / (m * (q @ sigma))
        sigma = 1.0 / (n * (delta @ q))
        plan = delta[:, None] * q * sigma[None, :]
    return plan.T


def naive_pair_cost(b, text_feats, image_feats, text_masks, image_masks):
    """Cost between the valid positions of pair b, with those positions' indices."""
    text_idx, image_idx = naive_valid_positions(text_masks[b], image_masks[b])
    text = text_feats[b, text_idx].double().numpy()
    image = image_feats[b, image_idx].double().numpy()
    return naive_cosine_cost(text, image), text_idx, image_idx


def naive_distances(*batch):
    distances = []
    for b in range(batch[0].shape[0]):
        cost, text_idx, _ = naive_pair_cost(b, *batch)
        distances.append(float((cost * naive_ipot(cost)).sum()) if text_idx else 0.0)
    return torch.tensor(distances)


def make_batch(seed=0):
    """4 pairs: full text, padded text, padded image, and text with only [CLS] [SEP] (no words)."""
    gen = torch.Generator().manual_seed(seed)
    text_feats, image_feats = torch.randn(4, 7, 5, generator=gen), torch.randn(4, 6, 5, generator=gen)
    text_masks = torch.ones(4, 7, dtype=torch.long)
    text_masks[1, 4:] = 0
    text_masks[3, 2:] = 0
    image_masks = torch.ones(4, 6, dtype=torch.long)
    image_masks[2, 3:] = 0
    return text_feats, image_feats, text_masks, image_masks


def test_alignment_masks_drop_cls_last_token_padding_and_empty_pairs():
    text_masks = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    image_masks = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    text_valid, image_valid = alignment_masks(text_masks, image_masks)
    assert text_valid.int().tolist() == [[0, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
    assert image_valid.int().tolist() == [[0, 1, 1], [0, 1, 0], [0, 0, 0]]


def test_cosine_cost_hand_computed():
    # the norm floor 1e-5 makes [1e-6, 0] a vector of length 0.1 and [0, 0] one of length 0
    text = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [1e-6, 0.0]]])
    image = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]]])
    expected = [[0.0, 1.0, 2.0, 1 - 2**-0.5], [1.0, 1.0, 1.0, 1.0], [0.9, 1.0, 1.1, 1 - 0.1 * 2**-0.5]]
    assert torch.allclose(cosine_cost(text, image), torch.tensor([expected]), atol=1e-6)


def test_ipot_plan_matches_per_pair_reference_and_is_zero_on_padding():
    batch = make_batch()
    text_feats, image_feats, text_masks, image_masks = batch
    text_valid, image_valid = alignment_masks(text_masks, image_masks)
    plan = ipot_plan(cosine_cost(text_feats, image_feats), text_valid, image_valid)
    for b in range(4):
        cost, text_idx, image_idx = naive_pair_cost(b, *batch)
        expected = np.zeros((7, 6))
        if text_idx:
            expected[np.ix_(text_idx, image_idx)] = naive_ipot(cost)
        assert np.allclose(plan[b].numpy(), expected, atol=1e-6), b


def test_ipot_plan_has_uniform_marginals():
    text_feats, image_feats, text_masks, image_masks = make_batch(1)
    text_valid, image_valid = alignment_masks(text_masks, image_masks)
    plan = ipot_plan(cosine_cost(text_feats, image_feats), text_valid, image_valid)
    for b in range(3):
        n_text, n_image = int(text_valid[b].sum()), int(image_valid[b].sum())
        assert torch.allclose(plan[b].sum(1)[text_valid[b]], torch.full((n_text,), 1 / n_text), atol=1e-6)
        assert torch.allclose(plan[b].sum(0)[image_valid[b]], torch.full((n_image,), 1 / n_image), atol=1e-3)
        assert plan[b].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert plan[3].abs().sum().item() == 0.0


def test_ipot_distance_approaches_exact_optimal_transport():
    ot = pytest.importorskip("ot")
    batch = make_batch(2)
    distances = wpa_distances(*batch)
    for b in range(3):
        cost, _, _ = naive_pair_cost(b, *batch)
        n_text, n_image = cost.shape
        exact = ot.emd2(np.full(n_text, 1 / n_text), np.full(n_image, 1 / n_image), cost)
        assert distances[b].item() == pytest.approx(exact, abs=1e-3)


def test_wpa_distances_match_per_pair_reference():
    batch = make_batch(3)
    assert torch.allclose(wpa_distances(*batch), naive_distances(*batch).float(), atol=1e-5)


def test_wpa_loss_is_positive_minus_negative_sum_over_batch():
    batch = make_batch(4)
    labels = torch.tensor([1, 0, 1, 0])
    d = naive_distances(*batch)
    expected = (d[0] + d[2] - d[1] - d[3]) / 4
    assert wpa_loss(*batch, labels).item() == pytest.approx(expected.item(), abs=1e-5)


def test_gradients_flow_through_the_cost_only():
    text_feats, image_feats, text_masks, image_masks = make_batch(5)
    text_feats.requires_grad_(True)
    image_feats.requires_grad_(True)
    labels = torch.tensor([1, 0, 1, 1])
    wpa_loss(text_feats, image_feats, text_masks, image_masks, labels).backward()

    text_valid, image_valid = alignment_masks(text_masks, image_masks)
    text_copy = text_feats.detach().clone().requires_grad_(True)
    image_copy = image_feats.detach().clone().requires_grad_(True)
    cost = cosine_cost(text_copy, image_copy)
    frozen_plan = ipot_plan(cost, text_valid, image_valid)
    assert not frozen_plan.requires_grad
    sign = torch.tensor([1.0, -1.0, 1.0, 1.0])
    ((cost * frozen_plan).sum(dim=(1, 2)) * sign).sum().div(4).backward()
    assert text_feats.grad.abs().sum() > 0
    assert torch.allclose(text_feats.grad, text_copy.grad, atol=1e-6)
    assert torch.allclose(image_feats.grad, image_copy.grad, atol=1e-6)


def test_excluded_positions_change_nothing():
    text_feats, image_feats, text_masks, image_masks = make_batch(6)
    labels = torch.tensor([1, 0, 1, 0])
    text_feats.requires_grad_(True)
    loss = wpa_loss(text_feats, image_feats, text_masks, image_masks, labels)
    loss.backward()
    text_valid, image_valid = alignment_masks(text_masks, image_masks)
    assert torch.all(text_feats.grad[~text_valid] == 0)

    changed_text, changed_image = text_feats.detach().clone(), image_feats.clone()
    changed_text[~text_valid] = 1e3 * torch.randn(int((~text_valid).sum()), 5)
    changed_image[~image_valid] = -1e3
    changed = wpa_loss(changed_text, changed_image, text_masks, image_masks, labels)
    assert changed.item() == pytest.approx(loss.item(), abs=1e-6)
    changed_text[~text_valid], changed_image[~image_valid] = float("nan"), float("inf")
    non_finite = wpa_loss(changed_text, changed_image, text_masks, image_masks, labels)
    assert non_finite.item() == pytest.approx(loss.item(), abs=1e-6)


def test_result_is_fp32_and_unaffected_by_autocast():
    batch = make_batch(7)
    labels = torch.tensor([1, 1, 0, 0])
    plain = wpa_loss(*batch, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = wpa_loss(*batch, labels)
    assert autocast.dtype == torch.float32
    assert autocast.item() == plain.item()


def test_label_shape_error_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(4,\).*\(3,\)"):
        wpa_loss(*make_batch(), torch.ones(3, dtype=torch.long))
