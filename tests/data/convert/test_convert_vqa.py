"""VQAv2 and VG-QA converters: the answer vocabulary, soft scores and filters against hand
computation (see ``_raw_layouts.VQA_QUESTIONS``), the held-out val draw, and a training step."""
from __future__ import annotations

import json
import os
import pickle

import torch

import _raw_layouts as raw
from vlkit.config import resolve_config
from vlkit.data.arrow import open_arrow
from vlkit.data.convert import convert
from vlkit.data.synthetic import VQA_SCHEMA, VQA_TEST_SCHEMA
from vlkit.tasks import build_task


def rows(out: str, name: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "image"} for r in open_arrow(os.path.join(out, f"{name}.arrow")).to_pylist()]


def test_vocabulary_is_the_normalised_answers_seen_min_count_times_in_first_seen_order(vqa_out):
    out, section = vqa_out
    with open(os.path.join(out, "coco_vqa_label_info.pkl"), "rb") as handle:
        info = pickle.load(handle)
    assert info["label2ans"] == raw.VQA_VOCAB == ["yes", "2", "no"]
    assert info["ans2label"] == {"yes": 0, "2": 1, "no": 2}
    with open(os.path.join(out, "vqa_answer_vocab.json")) as handle:
        assert json.load(handle) == info["ans2label"]
    assert section["vqa"]["vocabulary_size"] == 3
    train = section["vqa"]["coverage"]["train"]
    assert train == {"questions": 7, "questions_kept": 6, "questions_without_vocabulary_answer": 1,
                     "human_answers": 70, "human_answers_in_vocabulary": 25, "images_kept": 4}


def test_soft_scores_count_raw_answers_as_the_reference(vqa_out):
    out, section = vqa_out
    train = rows(out, "vqav2_train")
    assert [r["image_id"] for r in train] == [9, 25, 30]  # 34 is missing on disk
    image_9 = train[0]
    assert image_9["question_id"] == [90, 91]
    assert image_9["answers"] == [["yes", "no", "2"], ["2"]]  # "Yes" (raw) is not a vocabulary answer
    assert image_9["answer_labels"] == [[0, 2, 1], [1]]
    assert image_9["answer_scores"] == [[1.0, 0.6, 0.9], [0.3]]
    assert train[1]["question_id"] == [250]  # 251 ("red" x10) has no vocabulary answer: dropped
    assert train[2]["answer_scores"] == [[0.9]] and train[2]["split"] == "train"
    assert {s["key"]: s["reason"] for s in section["skipped"] if s["table"] == "vqav2_train"} == {"34": "missing image"}


def test_normalize_raw_answers_counts_them_normalised(coco_root, tmp_path):
    convert("vqav2", coco_root, str(tmp_path), progress=False, min_answer_count=3, normalize_raw_answers=True)
    image_9 = rows(str(tmp_path), "vqav2_train")[0]
    assert image_9["answers"] == [["yes", "no", "2"], ["2"]]
    assert image_9["answer_scores"] == [[1.0, 0.6, 0.9], [1.0]]  # "two" x7 + "2" counts 8


def test_val_split_test_layouts_and_seeded_rest_val(vqa_out, coco_root, tmp_path):
    out, section = vqa_out
    tables = {name: open_arrow(os.path.join(out, f"{name}.arrow")) for name in section["tables"]}
    for name in ("vqav2_train", "vqav2_val", "vqav2_trainable_val", "vqav2_rest_val"):
        assert tables[name].schema.equals(VQA_SCHEMA)
    for name in ("vqav2_test", "vqav2_test-dev"):
        assert tables[name].schema.equals(VQA_TEST_SCHEMA)
    test = rows(out, "vqav2_test")
    assert [(r["image_id"], r["question_id"], r["answers"], r["split"]) for r in test] == [
        (1, [10, 11], [], "test"), (2, [20], [], "test")]
    assert rows(out, "vqav2_test-dev")[0]["split"] == "test-dev"
    val = [r["image_id"] for r in rows(out, "vqav2_val")]
    assert val == [42, 73]  # 74 is corrupt
    rest = [r["image_id"] for r in rows(out, "vqav2_rest_val")]
    trainable = [r["image_id"] for r in rows(out, "vqav2_trainable_val")]
    assert rest == [73] and trainable == [42] and section["vqa"]["rest_val_images"] == 1
    again = convert("vqav2", coco_root, str(tmp_path), progress=False, min_answer_count=3, rest_val_images=1, seed=1)
    assert [r["image_id"] for r in rows(str(tmp_path), "vqav2_rest_val")] == rest
    assert again["tables"]["vqav2_trainable_val"]["inputs"] == 2  # 42 and the corrupt 74
    convert("vqav2", coco_root, str(tmp_path), progress=False, min_answer_count=3, rest_val_images=1, seed=0)
    assert rows(str(tmp_path), "vqav2_rest_val") == []  # seed 0 draws 74, which is corrupt


def test_vgqa_keeps_coco_images_of_vqav2_and_vocabulary_answers(vg_root, coco_root, tmp_path):
    paths = {f"vqa_{split}_annotations": os.path.join(coco_root, f"v2_mscoco_{split}2014_annotations.json")
             for split in ("train", "val")}
    section = convert("vgqa", vg_root, str(tmp_path), paths=paths, min_answer_count=3, progress=False,
                      formats=["arrow", "albef"])
    assert {k: v for k, v in section["vgqa"].items()} == {
        "questions": 7, "dropped_answer_not_in_vocabulary": 1, "questions_kept": 4, "dropped_image_not_in_coco": 1,
        "dropped_image_not_in_vqav2_trainval": 1, "vocabulary_size": 3, "images_kept": 3}
    table = open_arrow(os.path.join(str(tmp_path), "vgqa_train.arrow"))
    assert table.schema.equals(VQA_SCHEMA)
    first, second = rows(str(tmp_path), "vgqa_train")
    assert first == {"questions": ["Is it yes?", "How many?"], "answers": [["yes"], ["2"]],
                     "answer_labels": [[0], [1]], "answer_scores": [[1.0], [1.0]], "image_id": 1,
                     "question_id": [12, 13], "split": "train"}
    assert second["image_id"] == 2
    assert section["skipped"][0]["key"] == "4" and section["skipped"][0]["reason"] == "corrupt image"
    with open(os.path.join(str(tmp_path), "albef", "vg_qa.json")) as handle:
        assert json.load(handle)[0] == {"question_id": 12, "question": "Is it yes?",
                                         "image": "images/VG_100K/1.jpg", "dataset": "vg", "answer": "yes"}


def test_tiny_vqa_model_trains_on_the_converted_tables(vqa_out, tokenizer_dir, tokenizer):
    out, _ = vqa_out
    cfg = resolve_config(["task_finetune_vqa_mae_randaug", "tiny", f"data_root={out}", f"tokenizer={tokenizer_dir}",
                          f"vocab_size={len(tokenizer)}", "vqav2_label_size=3", "image_size=32", "max_text_len=16",
                          "train_transform_keys=[mae_test]"])
    task = build_task(cfg)
    dataset = task.build_dataset("train")
    assert len(dataset) == 4 + 2  # questions of vqav2_train, then of vqav2_trainable_val (image 42)
    batch = task.collate_fn("train")([dataset[i] for i in range(len(dataset))])
    assert batch["vqa_labels"][0] == [0, 2, 1] and batch["vqa_scores"][0] == [1.0, 0.6, 0.9]
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = task.training_step(model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
