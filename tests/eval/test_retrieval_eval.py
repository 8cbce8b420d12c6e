"""The retrieval evaluator: exact scores every pair once, fast re-ranks ITC candidates, and two
gloo processes give the single-process numbers."""
import json
import os
from pathlib import Path

import pytest
import torch

from _retrieval_fakes import (
    CAPTIONS_PER_IMAGE, IMAGES, NUM_IMAGES, TEXTS, FakeCrossEncoder, image_batches, pair_score, texts,
)
from vlkit.eval.retrieval import recall_at_k
from vlkit.eval.retrieval_eval import RetrievalEvaluator, _pair_chunks
from vlkit.utils.distributed import launch_local

HERE = Path(__file__).parent
REPO = HERE.parent.parent
TEXT_IMAGES = torch.arange(NUM_IMAGES).repeat_interleave(CAPTIONS_PER_IMAGE)
CROSS = IMAGES @ TEXTS.t()
ITC = torch.nn.functional.normalize(IMAGES, dim=-1) @ FakeCrossEncoder().itc_head.embed_text(TEXTS).t()
RECALLS = ("ir_r1", "ir_r5", "ir_r10", "tr_r1", "tr_r5", "tr_r10", "r_mean")


def evaluate(protocol, k_test=3, pairs_per_batch=4, rows=range(NUM_IMAGES)):
    model = FakeCrossEncoder()
    evaluator = RetrievalEvaluator(model, pair_score, protocol, k_test, pairs_per_batch, progress=False)
    return evaluator.evaluate(image_batches(rows), texts()), model.pairs_seen


def test_exact_scores_every_pair_once_and_matches_brute_force_recall():
    metrics, pairs = evaluate("exact")
    assert pairs == metrics["pairs_scored"] == NUM_IMAGES * len(TEXTS)
    expected = recall_at_k(CROSS, TEXT_IMAGES)
    assert {k: metrics[k] for k in RECALLS} == pytest.approx(expected)
    assert metrics["num_images"] == NUM_IMAGES and metrics["num_texts"] == len(TEXTS)


def test_fast_reranks_only_the_itc_candidates():
    k = 3
    metrics, pairs = evaluate("fast", k_test=k)
    tr_keep = torch.zeros_like(ITC, dtype=torch.bool).scatter(1, ITC.topk(k, dim=1).indices, True)
    ir_keep = torch.zeros_like(ITC, dtype=torch.bool).scatter(0, ITC.topk(k, dim=0).indices, True)
    assert pairs == int((tr_keep | ir_keep).sum()) < NUM_IMAGES * len(TEXTS)
    neg = torch.tensor(float("-inf"))
    tr = recall_at_k(torch.where(tr_keep, CROSS, neg), TEXT_IMAGES)
    ir = recall_at_k(torch.where(ir_keep, CROSS, neg), TEXT_IMAGES)
    for key in RECALLS[:3]:
        assert metrics[key] == pytest.approx(ir[key])
    for key in RECALLS[3:6]:
        assert metrics[key] == pytest.approx(tr[key])
    assert metrics["itc_ir_r1"] == pytest.approx(recall_at_k(ITC, TEXT_IMAGES)["ir_r1"])


def test_fast_with_every_candidate_equals_exact():
    exact, _ = evaluate("exact")
    fast, _ = evaluate("fast", k_test=len(TEXTS))
    assert {k: fast[k] for k in RECALLS} == pytest.approx({k: exact[k] for k in RECALLS})


def test_an_image_seen_twice_counts_once():
    once, _ = evaluate("exact")
    twice, _ = evaluate("exact", rows=[*range(NUM_IMAGES), 3])
    assert {k: twice[k] for k in RECALLS} == pytest.approx({k: once[k] for k in RECALLS})


def test_pair_chunks_cover_every_candidate_in_fixed_size_chunks():
    candidates = {0: torch.arange(5), 1: torch.tensor([], dtype=torch.long), 2: torch.tensor([1, 3])}
    chunks = list(_pair_chunks(candidates.__getitem__, 3, size=3))
    assert [len(images) for images, _ in chunks] == [3, 3, 1]
    pairs = [(int(i), int(t)) for images, chosen in chunks for i, t in zip(images, chosen)]
    assert pairs == [(0, t) for t in range(5)] + [(2, 1), (2, 3)]


def test_fast_without_an_itc_head_names_the_fix():
    model = FakeCrossEncoder()
    del model.itc_head
    with pytest.raises(ValueError, match="loss_names.itc=1"):
        RetrievalEvaluator(model, pair_score, "fast")
    with pytest.raises(ValueError, match="exact"):
        RetrievalEvaluator(FakeCrossEncoder(), pair_score, "approximate")


def test_two_gloo_processes_give_the_single_process_recall(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(HERE)]))
    out = tmp_path / "recall.json"
    assert launch_local(2, [str(HERE / "retrieval_worker.py"), str(out)]) == 0
    distributed = json.loads(out.read_text())
    for protocol in ("exact", "fast"):
        single, _ = evaluate(protocol, k_test=3, pairs_per_batch=5)
        assert {k: distributed[protocol][k] for k in RECALLS} == pytest.approx({k: single[k] for k in RECALLS})
        assert distributed[protocol]["pairs_scored"] == single["pairs_scored"]
