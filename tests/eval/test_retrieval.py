"""Retrieval recall@K on small hand-computed score matrices, ties, several captions per image."""
import pytest
import torch

from vlkit.eval.retrieval import recall_at_k, scatter_candidate_scores, topk_candidates

# 3 images x 6 texts, two captions per image.
TEXT_IMAGES = [0, 0, 1, 1, 2, 2]
SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.8, 0.2, 0.3, 0.4],  # best own text 0.9, nothing above -> rank 0
        [0.7, 0.6, 0.5, 0.1, 0.2, 0.3],  # best own 0.5, two wrong above -> rank 2
        [0.1, 0.2, 0.3, 0.4, 0.05, 0.0],  # best own 0.05, four wrong above -> rank 4
    ]
)
# Image retrieval, wrong images ahead of the true one per column:
#   col0: 0 | col1: 2 | col2: 1 | col3: 2 | col4: 2 | col5: 2


def test_recall_hand_computed():
    r = recall_at_k(SCORES, TEXT_IMAGES)
    assert set(r) == {"ir_r1", "ir_r5", "ir_r10", "tr_r1", "tr_r5", "tr_r10", "r_mean"}
    assert r["tr_r1"] == pytest.approx(1 / 3)
    assert r["tr_r5"] == pytest.approx(1.0)
    assert r["tr_r10"] == pytest.approx(1.0)
    assert r["ir_r1"] == pytest.approx(1 / 6)
    assert r["ir_r5"] == pytest.approx(1.0)  # only 3 images: every text hits at 5
    assert r["ir_r10"] == pytest.approx(1.0)
    assert r["r_mean"] == pytest.approx((1 / 3 + 1 + 1 + 1 / 6 + 1 + 1) / 6)  # 0.75
    assert all(isinstance(v, float) for v in r.values())


def test_recall_custom_ks():
    r = recall_at_k(SCORES, TEXT_IMAGES, ks=(2, 3))
    assert r["tr_r2"] == pytest.approx(1 / 3)  # ranks 0, 2, 4
    assert r["tr_r3"] == pytest.approx(2 / 3)
    assert r["ir_r2"] == pytest.approx(2 / 6)  # ranks 0, 2, 1, 2, 2, 2
    assert r["ir_r3"] == pytest.approx(1.0)
    assert r["r_mean"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 6 + 1) / 4)


def test_any_caption_counts_for_text_retrieval():
    # Image 0 owns texts 0 and 2; only text 2 is at the top.
    scores = torch.tensor([[0.1, 0.5, 0.9], [0.0, 0.9, 0.1]])
    r = recall_at_k(scores, [0, 1, 0], ks=(1,))
    assert r["tr_r1"] == pytest.approx(1.0)
    # columns: text0 img0 0.1 vs 0.0 hit; text1 img1 0.9 vs 0.5 hit; text2 img0 0.9 vs 0.1 hit
    assert r["ir_r1"] == pytest.approx(1.0)


def test_ties_are_pessimistic():
    # All scores equal: each true item is ranked after every tied wrong item.
    r = recall_at_k(torch.ones(2, 2), [0, 1], ks=(1, 2), ties="pessimistic")
    assert r["tr_r1"] == 0.0 and r["ir_r1"] == 0.0
    assert r["tr_r2"] == 1.0 and r["ir_r2"] == 1.0

    scores = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    r = recall_at_k(scores, [0, 1], ks=(1,), ties="pessimistic")
    # tr: image0 true 1.0 tied with wrong text1 -> miss; image1 true 1.0 > 0.0 -> hit
    assert r["tr_r1"] == pytest.approx(0.5)
    # ir: text0 true 1.0 > 0.0 -> hit; text1 true 1.0 tied with wrong image0 -> miss
    assert r["ir_r1"] == pytest.approx(0.5)


def test_ties_do_not_depend_on_order():
    scores = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    flipped = recall_at_k(scores.flip(1), [1, 0], ks=(1,))
    assert flipped == recall_at_k(scores, [0, 1], ks=(1,))


def test_ties_among_true_captions_are_fine():
    # Both captions of image 0 tie at the top; no wrong text ties with them.
    scores = torch.tensor([[0.8, 0.8, 0.3], [0.1, 0.2, 0.9]])
    r = recall_at_k(scores, [0, 0, 1], ks=(1,))
    assert r["tr_r1"] == 1.0 and r["ir_r1"] == 1.0


def test_image_without_text_is_a_miss():
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.2, 0.9], [0.0, 0.0, 0.0]])
    r = recall_at_k(scores, [0, 0, 1], ks=(1, 5))
    assert r["tr_r1"] == pytest.approx(2 / 3)
    assert r["tr_r5"] == pytest.approx(2 / 3)  # k above the number of texts: still a miss
    assert r["ir_r1"] == pytest.approx(1.0)


def test_image_ids_mapping():
    # Same as SCORES, rows labelled by dataset ids instead of row indices.
    ids = [100, 7, 42]
    texts = [ids[i] for i in TEXT_IMAGES]
    assert recall_at_k(SCORES, texts, image_ids=ids) == recall_at_k(SCORES, TEXT_IMAGES)
    # Row order does not matter when ids are given.
    perm = [2, 0, 1]
    assert recall_at_k(SCORES[perm], texts, image_ids=[ids[p] for p in perm]) == recall_at_k(
        SCORES, TEXT_IMAGES
    )


def _reference_topk(scores, tiids, ks=(1, 5, 10)):
    """The fact sheet §6.3 procedure with torch.topk (valid without ties)."""
    tiids = torch.as_tensor(tiids)
    iids = torch.arange(scores.shape[0])
    out = {}
    for k in ks:
        topk = scores.topk(min(k, scores.shape[0]), dim=0).indices  # (k, T)
        out[f"ir_r{k}"] = (iids[topk] == tiids[None]).any(0).float().mean().item()
    for k in ks:
        topk = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (I, k)
        out[f"tr_r{k}"] = (tiids[topk] == iids[:, None]).any(1).float().mean().item()
    return out


def test_matches_topk_reference_without_ties():
    gen = torch.Generator().manual_seed(0)
    for n_img, per in [(7, 3), (20, 5), (12, 1)]:
        tiids = torch.arange(n_img).repeat_interleave(per)[torch.randperm(n_img * per, generator=gen)]
        scores = torch.randn(n_img, n_img * per, generator=gen)
        scores[tiids, torch.arange(len(tiids))] += 1.0  # make recalls non-trivial
        got = recall_at_k(scores, tiids)
        ref = _reference_topk(scores, tiids)
        for key, val in ref.items():
            assert got[key] == pytest.approx(val), key


def test_integer_and_half_scores():
    r = recall_at_k(torch.tensor([[3, 1], [0, 2]]), [0, 1], ks=(1,))
    assert r["tr_r1"] == 1.0 and r["ir_r1"] == 1.0
    r = recall_at_k(SCORES.half(), TEXT_IMAGES)
    assert r["tr_r1"] == pytest.approx(1 / 3)


def test_errors():
    with pytest.raises(ValueError):
        recall_at_k(torch.zeros(3), [0, 1, 2])
    with pytest.raises(ValueError):
        recall_at_k(SCORES, TEXT_IMAGES[:-1])  # wrong length
    with pytest.raises(ValueError):
        recall_at_k(SCORES, [0, 0, 1, 1, 2, 3])  # row 3 does not exist
    with pytest.raises(ValueError):
        recall_at_k(SCORES, [5, 5, 5, 5, 5, 5], image_ids=[1, 2, 3])
    with pytest.raises(ValueError):
        recall_at_k(SCORES, TEXT_IMAGES, ks=(0,))
    bad = SCORES.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError):
        recall_at_k(bad, TEXT_IMAGES)


# ---------------------------------------------------------------- re-ranking helpers
def test_topk_candidates_deterministic_ties():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2]])
    values, idx = topk_candidates(scores, 3)
    assert idx.tolist() == [[1, 0, 2], [0, 1, 2]]  # equal scores: lower index first
    assert torch.allclose(values, torch.tensor([[0.9, 0.5, 0.5], [0.2, 0.2, 0.2]]))
    values, idx = topk_candidates(scores, 1, dim=0)
    assert idx.tolist() == [[0, 0, 0, 1]]
    assert topk_candidates(scores, 10)[1].shape == (2, 4)  # k clipped


def test_rerank_round_trip():
    # Coarse scores pick candidates; the re-ranker rescores them; recall runs on the full matrix.
    coarse = SCORES
    _, idx = topk_candidates(coarse, 2, dim=1)  # per image its 2 best texts
    rerank = torch.ones_like(idx, dtype=torch.float32)
    for i in range(idx.shape[0]):
        for j in range(idx.shape[1]):
            rerank[i, j] = 10.0 if TEXT_IMAGES[idx[i, j]] == i else 1.0
    full = scatter_candidate_scores(coarse.shape, idx, rerank, dim=1)
    assert torch.isinf(full).sum() == coarse.numel() - idx.numel()
    r = recall_at_k(full, TEXT_IMAGES, ks=(1,))
    # image0 candidates {0, 2}: own text 0 -> 10 -> hit; image1 {0, 1}: no own text -> miss;
    # image2 {3, 2}: no own text -> miss
    assert r["tr_r1"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        scatter_candidate_scores(coarse.shape, idx, rerank[:, :1])
