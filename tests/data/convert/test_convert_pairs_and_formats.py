"""NLVR2, SNLI-VE and the ImageFolder check; the ALBEF and LXMERT json formats read back."""
from __future__ import annotations

import json
import os

import _raw_layouts as raw
from vlkit.data.arrow import open_arrow
from vlkit.data.convert import convert
from vlkit.data.datasets import build_dataset
from vlkit.data.json_ann import (
    load_answer_list,
    nlvr_rows,
    pretrain_rows,
    read_entries,
    retrieval_eval_rows,
    retrieval_train_rows,
    vqa_rows,
)
from vlkit.data.synthetic import NLVR2_SCHEMA, SNLI_SCHEMA


def load(path: str):
    with open(path) as handle:
        return json.load(handle)


def test_nlvr2_pairs_grouped_with_their_images(nlvr2_root, tmp_path, make_cfg, tokenizer):
    out = str(tmp_path)
    section = convert("nlvr2", nlvr2_root, out, progress=False, formats=["arrow", "albef"])
    train = open_arrow(os.path.join(out, "nlvr2_train.arrow"))
    assert train.schema.equals(NLVR2_SCHEMA)
    (row,) = train.to_pylist()
    assert (row["identifier"], row["questions"], row["answers"]) == ("train-1-0", ["Two dogs.", "No dog."], ["True", "False"])
    with open(os.path.join(nlvr2_root, "images", "train", "3", "train-1-0-img1.png"), "rb") as handle:
        assert row["image_1"] == handle.read()
    assert {s["key"]: s["reason"] for s in section["skipped"]} == {"train-2-1": "missing image", "dev-7-0": "corrupt image"}
    assert {n: t["rows"] for n, t in section["tables"].items()} == {"nlvr2_train": 1, "nlvr2_dev": 1, "nlvr2_test1": 1}
    assert len(section["optional_files_absent"]) == 4
    dataset = build_dataset("nlvr2", "val", make_cfg(data_root=out), tokenizer)
    assert [dataset[i]["answers"] for i in range(len(dataset))] == [1, 1]  # dev-8-0 and test1-3-0, both "True"
    entries = nlvr_rows(read_entries([os.path.join(out, "albef", "nlvr_train.json")]), nlvr2_root)
    assert [(r.texts, r.fields["label"]) for r in entries] == [(["Two dogs."], 1), (["No dog."], 0)]
    assert all(os.path.isfile(path) for r in entries for path in r.images)


def test_snli_ve_groups_hypotheses_per_image(snli_root, tmp_path, make_cfg, tokenizer):
    out = str(tmp_path)
    section = convert("snli_ve", snli_root, out, progress=False, formats=["arrow", "albef"])
    train = open_arrow(os.path.join(out, "snli_train.arrow"))
    assert train.schema.equals(SNLI_SCHEMA)
    (row,) = train.to_pylist()
    assert row["sentences"] == [["A man rides.", "A person rides."], ["A man rides.", "A woman sleeps."]]
    assert row["labels"] == [2, 0]
    assert section["snli_ve"]["train"] == {"hypotheses": 4, "dropped_without_gold_label": 1}
    assert section["skipped_by_reason"] == {"missing image": 1, "corrupt image": 1}
    dataset = build_dataset("snli", "train", make_cfg(data_root=out), tokenizer)
    assert [dataset[i]["text"] for i in range(2)] == ["A person rides.", "A woman sleeps."]
    assert load(os.path.join(out, "albef", "ve_dev.json")) == [
        {"image": "14", "sentence": "Cats sleep.", "label": "neutral"}]


def test_imagenet_passthrough_counts_undecodable_files(tmp_path):
    root = raw.write_imagefolder_root(str(tmp_path / "raw"))
    section = convert("imagenet", root, str(tmp_path / "out"), progress=False)
    assert section["tables"]["imagenet_train"] == {
        "file": None, "inputs": 4, "rows": 3, "images_present": 3, "images_missing": 0, "images_corrupt": 1,
        "duplicate_ids": 0, "skipped": 1}
    assert section["skipped"][0]["key"] == os.path.join("cat", "1.jpg")
    assert section["imagefolder"] == {"classes": 2, "train": {"images": 4, "classes_with_images": 2, "fewest_per_class": 2},
                                      "val": {"images": 2, "classes_with_images": 2, "fewest_per_class": 1}}
    assert not [name for name in os.listdir(tmp_path / "out") if name.endswith(".arrow")]
    from vlkit.data.convert.images import UNREADABLE
    from vlkit.imagenet.data import UNREADABLE as IMAGENET_UNREADABLE

    assert UNREADABLE == IMAGENET_UNREADABLE  # the converter rejects exactly what the classifier's loader skips


def test_albef_json_reads_back_through_json_ann(coco_out, vqa_out, coco_root):
    coco, section = coco_out
    assert section["json_files"] == {"albef/coco_train.json": 6, "albef/coco_val.json": 1, "albef/coco_test.json": 1,
                                     "lxmert/mscoco_train.json": 2, "lxmert/mscoco_restval.json": 1,
                                     "lxmert/mscoco_val.json": 1, "lxmert/mscoco_test.json": 1}
    train = retrieval_train_rows(read_entries([os.path.join(coco, "albef", "coco_train.json")]), coco_root)
    assert [(os.path.basename(r.images[0]), r.texts) for r in train][0] == (
        "COCO_train2014_000000000009.jpg", ["A dog number 9.", "A cat near 9."])
    assert len(train) == 3 and all(os.path.isfile(r.images[0]) for r in train)  # train + restval, valid images
    test = retrieval_eval_rows(read_entries([os.path.join(coco, "albef", "coco_test.json")]), coco_root)
    assert [os.path.basename(r.images[0]) for r in test] == ["COCO_val2014_000000000073.jpg"]
    assert pretrain_rows(read_entries([os.path.join(coco, "albef", "coco_train.json")]), coco_root)[0].texts == ["A dog number 9."]
    vqa, _ = vqa_out
    answers = load_answer_list(os.path.join(vqa, "albef", "answer_list.json"))
    assert answers == {"yes": 0, "2": 1, "no": 2}
    questions = vqa_rows(read_entries([os.path.join(vqa, "albef", "vqa_train.json")]), {"vqa": coco_root}, answers, True)
    assert [r.fields["qid"] for r in questions] == [90, 91, 250, 300]
    first = questions[0].fields
    assert first["answers"] == ["yes", "no", "2"] and first["scores"] == [0.4, 0.2, 0.3]  # ALBEF's count / 10
    test_entries = load(os.path.join(vqa, "albef", "vqa_test.json"))
    assert test_entries[0] == {"question_id": 10, "question": "what is it?",
                               "image": "test2015/COCO_test2015_000000000001.jpg", "dataset": "vqa"}


def test_lxmert_json_holds_img_id_sentences_and_soft_labels(coco_out, vqa_out):
    coco, _ = coco_out
    assert load(os.path.join(coco, "lxmert", "mscoco_train.json"))[0] == {
        "img_id": "COCO_train2014_000000000009", "sentf": {"mscoco": ["A dog number 9.", "A cat near 9."]}, "labelf": {}}
    vqa, section = vqa_out
    train = load(os.path.join(vqa, "lxmert", "vqa", "train.json"))
    assert train[0] == {"question_id": 90, "img_id": "COCO_train2014_000000000009", "sent": "is it a dog?",
                        "label": {"yes": 1.0, "no": 0.6, "2": 0.9}}
    assert [q["question_id"] for q in load(os.path.join(vqa, "lxmert", "vqa", "minival.json"))] == [730]
    assert [q["question_id"] for q in load(os.path.join(vqa, "lxmert", "vqa", "nominival.json"))] == [420, 421]
    assert "label" not in load(os.path.join(vqa, "lxmert", "vqa", "test.json"))[0]
    assert load(os.path.join(vqa, "lxmert", "vqa", "trainval_label2ans.json")) == ["yes", "2", "no"]
    assert load(os.path.join(vqa, "lxmert", "vqa", "trainval_ans2label.json")) == {"yes": 0, "2": 1, "no": 2}


def test_lxmert_json_loads_through_the_clipvil_reader(coco_out, vqa_out):
    from vlkit.data.lxmert import pretrain_sentences, read_answer_list, vqa_questions

    coco, _ = coco_out
    sentences = pretrain_sentences([os.path.join(coco, "lxmert", "mscoco_train.json")], None)
    assert [(s.uid, s.text, s.label) for s in sentences[:2]] == [
        ("COCO_train2014_000000000009_mscoco_000", "A dog number 9.", None),
        ("COCO_train2014_000000000009_mscoco_001", "A cat near 9.", None)]
    vqa, _ = vqa_out
    answers = read_answer_list(os.path.join(vqa, "lxmert", "vqa", "trainval_label2ans.json"))
    index = {answer: label for label, answer in enumerate(answers)}
    questions = vqa_questions([os.path.join(vqa, "lxmert", "vqa", "train.json")], index, require_labels=True)
    assert (questions[0].question_id, questions[0].labels, questions[0].scores) == (90, [0, 2, 1], [1.0, 0.6, 0.9])
    test = vqa_questions([os.path.join(vqa, "lxmert", "vqa", "test.json")], index, require_labels=False)
    assert [(q.question_id, q.labels) for q in test] == [(10, []), (11, []), (20, [])]
