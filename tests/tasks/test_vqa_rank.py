"""ALBEF's VQA by answer generation: ranking, the weighted answer loss, evaluation and the json
data for both VQA tasks."""
import json
import os

import pytest
import torch
from torch.utils.data import DataLoader

from tests.models._model_toys import tiny_cfg
from vlkit.config import resolve_config
from vlkit.models.build import build_model
from vlkit.tasks import build_task
from vlkit.tasks.vqa_rank import AnswerTokens, VqaRankTask, rank_answers, tokenize_answers

SMALL = dict(hidden_size=32, num_heads=2, num_layers=2, fusion_layer=1, image_size=32, patch_size=16,
             max_position_embeddings=20, drop_rate=0.0, answer_decoder_layers=1)
# [CLS]=2, [SEP]=3: answers of 1 to 3 wordpieces, two sharing their first wordpiece
CANDIDATES = AnswerTokens(
    ids=torch.tensor([[2, 10, 3, 0, 0], [2, 11, 12, 3, 0], [2, 11, 3, 0, 0], [2, 13, 14, 15, 3], [2, 16, 3, 0, 0]]),
    masks=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
)


def decoder_and_questions(model="cross_attention", batch=3):
    torch.manual_seed(0)
    net = build_model(tiny_cfg({"vqa_decoder": 1, "itm": 0, "mlm": 0}, model=model, **SMALL)).eval()
    states = torch.randn(batch, 6, 32, generator=torch.Generator().manual_seed(1))
    masks = torch.ones(batch, 6, dtype=torch.long)
    masks[1, 4:] = 0
    return net, states, masks


def hand_log_prob(decoder, states, masks, ids):
    """log p of one answer's tokens after [CLS], each from the full vocabulary distribution."""
    answer_masks = (ids != 0).long()[None]
    log_probs = decoder.lm_head(decoder(ids[None], answer_masks, states[None], masks[None]))[0].log_softmax(-1)
    length = int(answer_masks.sum())
    return sum(log_probs[t, ids[t + 1]] for t in range(length - 1))


def test_ranking_every_candidate_equals_scoring_each_by_its_log_probability():
    model, states, masks = decoder_and_questions()
    decoder = model.text_decoder
    with torch.no_grad():
        ranked, scores = rank_answers(decoder, states, masks, CANDIDATES, k=128)
        brute = torch.tensor([[hand_log_prob(decoder, states[b], masks[b], ids) for ids in CANDIDATES.ids]
                              for b in range(len(states))])
    assert ranked.shape == (3, 5)  # k is capped at the number of candidates
    assert torch.equal(ranked[:, 0], brute.argmax(dim=1))
    assert torch.allclose(scores, brute.gather(1, ranked), atol=1e-5)  # each token counted once
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_ranking_scores_in_full_only_the_k_likeliest_first_wordpieces():
    model, states, masks = decoder_and_questions()
    decoder = model.text_decoder
    with torch.no_grad():
        first = decoder.lm_head(decoder(torch.full((3, 1), 2), torch.ones(3, 1, dtype=torch.long), states, masks))
        first = first[:, 0].log_softmax(-1)[:, CANDIDATES.ids[:, 1]]
        ranked, _ = rank_answers(decoder, states, masks, CANDIDATES, k=2)
    assert ranked.shape == (3, 2)
    assert all(set(ranked[b].tolist()) == set(first[b].topk(2).indices.tolist()) for b in range(3))


def rank_task(**overrides):
    cfg = tiny_cfg({"vqa_decoder": 1, "itm": 0, "mlm": 0}, datasets=["vqa"], model="cross_attention", **SMALL)
    cfg.merge_with(overrides)
    task = VqaRankTask(cfg)
    task.__dict__["candidates"] = CANDIDATES  # labels 0..4 are the rows of CANDIDATES
    return task


def test_training_loss_is_the_weighted_answer_log_likelihood_over_the_questions():
    task = rank_task()
    model, states, masks = decoder_and_questions()
    batch = {"vqa_labels": [[0, 3], [], [1]], "vqa_scores": [[0.6, 0.3], [], [1.0]]}
    features = {"text_feats": states, "text_masks": masks}
    loss = task.answer_loss(model, batch, features)
    with torch.no_grad():
        pairs = [(0, 0, 0.6), (0, 3, 0.3), (2, 1, 1.0)]
        expected = -sum(w * hand_log_prob(model.text_decoder, states[q], masks[q], CANDIDATES.ids[a])
                        for q, a, w in pairs) / 3
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert model.text_decoder.encoder.layer[0].crossattention.self.key.weight.grad.abs().sum() > 0


def test_a_batch_without_answers_has_zero_loss():
    task = rank_task()
    model, states, masks = decoder_and_questions()
    loss = task.answer_loss(model, {"vqa_labels": [[], [], []], "vqa_scores": [[], [], []]},
                            {"text_feats": states.requires_grad_(), "text_masks": masks})
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(states.grad, torch.zeros_like(states))


@pytest.mark.parametrize("family", ["single_stream", "cross_attention"])
def test_training_step_trains_the_decoder_and_the_question_encoder_of_any_family(family):
    task = rank_task(model=family)
    model, _, _ = decoder_and_questions(model=family)
    model.train()
    batch = {
        "text_ids": torch.randint(4, 100, (2, 7), generator=torch.Generator().manual_seed(2)),
        "text_masks": torch.ones(2, 7, dtype=torch.long), "image": torch.randn(2, 3, 32, 32),
        "vqa_labels": [[4], [2, 1]], "vqa_scores": [[1.0], [0.5, 0.5]],
    }
    out = task.training_step(model, batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    grads = {name: param.grad for name, param in model.named_parameters()}
    assert grads["text_decoder.lm_head.bias"].abs().sum() > 0
    encoder = [g for name, g in grads.items() if not name.startswith("text_decoder.") and g is not None]
    assert encoder and sum(g.abs().sum() for g in encoder) > 0


def test_answers_are_tokenised_as_cls_answer_sep(synthetic):
    from vlkit.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(synthetic["tokenizer"])
    tokens = tokenize_answers(tokenizer, ["red", "two", "top left"], max_len=20)
    lengths = tokens.masks.sum(dim=1)
    assert (tokens.ids[:, 0] == tokenizer.cls_token_id).all()
    assert all(tokens.ids[row, lengths[row] - 1] == tokenizer.sep_token_id for row in range(3))
    assert tokenizer.decode(tokens.ids[2, 1:lengths[2] - 1]) == "top left"


def json_words(synthetic):
    root = synthetic["out_dir"]
    return [
        "tiny", "progress_bar=False", "hidden_size=32", "num_layers=2", "fusion_layer=1", "image_size=32",
        "max_position_embeddings=0", "answer_decoder_layers=1", f"data_root={root}", f"vqa_root={root}",
        f"vg_root={root}", f"tokenizer={synthetic['tokenizer']}", f"vocab_size={synthetic['vocab_size']}",
        f"answer_list={synthetic['json']['answer_list']}", "train_file=[downstream_json/vqa_train.json]",
        "val_file=downstream_json/vqa_val.json", "test_file=downstream_json/vqa_test.json",
    ]


def loader(task, split):
    return DataLoader(task.build_dataset(split), batch_size=8, collate_fn=task.collate_fn(split))


def test_evaluation_reports_the_soft_score_of_the_ranked_answer(synthetic):
    task = build_task(resolve_config(["grit_vqa", *json_words(synthetic), "k_test=3"]))
    assert isinstance(task, VqaRankTask)
    torch.manual_seed(0)
    model = task.build_model().eval()
    batches = list(loader(task, "val"))[:2]
    with torch.no_grad():
        metrics = task.evaluate(model, batches)
        expected_score, expected_loss, questions = 0.0, 0.0, 0
        for batch in batches:
            features = model.infer(batch["text_ids"], batch["text_masks"], batch["image"])
            ranked, _ = rank_answers(model.text_decoder, features["text_feats"], features["text_masks"],
                                     task.candidates, 3)
            for label, labels, scores in zip(ranked[:, 0].tolist(), batch["vqa_labels"], batch["vqa_scores"]):
                expected_score += dict(zip(labels, scores)).get(label, 0.0)
            expected_loss += task.answer_loss(model, batch, features).item() * len(ranked)
            questions += len(ranked)
    assert metrics["score"] == pytest.approx(expected_score / questions)
    assert metrics["loss"] == pytest.approx(expected_loss / questions, rel=1e-5)
    assert 0 < metrics["chance"] <= 1 and metrics["the_metric"] == metrics["score"]
    assert task.evaluation_info() == {"k_test": 3, "candidates": len(task.answers)}


def test_classifier_vqa_reads_the_json_files(synthetic, tmp_path):
    words = ["task_finetune_vqa_mae_randaug", *json_words(synthetic), "datasets=[json_vqa]", f"log_dir={tmp_path}"]
    answer_list = json.load(open(synthetic["json"]["answer_list"]))
    with pytest.raises(ValueError, match=f"set vqav2_label_size={len(answer_list)}"):
        build_task(resolve_config([*words, "vqav2_label_size=7"]))
    task = build_task(resolve_config([*words, f"vqav2_label_size={len(answer_list)}"]))
    assert task.name == "vqa" and task.answers == answer_list
    torch.manual_seed(0)
    model = task.build_model().eval()
    with torch.no_grad():
        counts = task.test(model, loader(task, "test"), str(tmp_path))
    entries = json.load(open(os.path.join(tmp_path, "vqa_submit_untrained.json")))
    question_ids = task.build_dataset("test").datasets[0].question_ids()
    assert [entry["question_id"] for entry in entries] == question_ids
    assert counts == {"questions": len(question_ids), "unanswered": 0.0}
    assert all(entry["answer"] in answer_list for entry in entries)
