"""The ALBEF / GRIT-VLP json datasets on the synthetic set's json files, and on small hand-written
json files for text cleaning, VQA targets, broken images and malformed entries."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil

import pytest
from omegaconf import OmegaConf

from vlkit.config.schema import defaults
from vlkit.data.collate import Collator
from vlkit.data.datasets import DATASETS, build_dataset
from vlkit.data.datasets.base import SplitUnavailableError
from vlkit.data.datasets.json_datasets import JsonPretrainDataset
from vlkit.data.json_ann import JsonAnnotationError, pre_caption, pre_question
from vlkit.data.synthetic import write_synthetic
from vlkit.data.tokenizer import load_tokenizer

NOT_AN_IMAGE = b"\xff\xd8\xff\xe0 these bytes are not a jpeg"
JSON_DATASETS = {
    # json name: (Arrow dataset of the same task, json files by split)
    "json_pretrain": ("coco", {"train": ["json_pretrain/pretrain.json"]}),
    "json_retrieval": ("coco", {"train": ["downstream_json/coco_train.json"], "val": ["downstream_json/coco_val.json"]}),
    "json_vqa": ("vqa", {"train": ["downstream_json/vqa_train.json", "downstream_json/vg_qa.json"],
                         "test": ["downstream_json/vqa_test.json"]}),
    "json_nlvr": ("nlvr2", {"train": ["downstream_json/nlvr_train.json"], "val": ["downstream_json/nlvr_dev.json"]}),
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict:
    out = str(tmp_path_factory.mktemp("synth_json"))
    return {**write_synthetic(out, num_images=24, seed=5, image_size=32), "out_dir": out}


@pytest.fixture(scope="module")
def synth_tokenizer(synth):
    return load_tokenizer(synth["tokenizer"])


def _cfg(root: str, **overrides):
    values = defaults()
    values.update(
        data_root=root, image_root=root, vqa_root=root, vg_root=root,
        answer_list="downstream_json/answer_list.json", image_size=32, max_text_len=24,
        draw_false_image=1, draw_false_text=1, train_transform_keys=["mae"], val_transform_keys=["mae_test"],
    )
    values.update(overrides)
    return OmegaConf.create(values)


def _files(files: dict) -> dict:
    return {f"{split}_file": paths for split, paths in files.items()}


@pytest.fixture
def build_synth(synth, synth_tokenizer):
    """``build_synth(name, split, **overrides)`` on the synthetic set (its json files for json names)."""

    def make(name, split, **overrides):
        files = _files(JSON_DATASETS[name][1]) if name in JSON_DATASETS else {}
        return build_dataset(name, split, _cfg(synth["out_dir"], **{**files, **overrides}), synth_tokenizer)

    return make


def _write_json(path, value) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return str(path)


# --- text cleaning ---


@pytest.mark.parametrize("text, max_words, expected", [
    ("A Man, riding a horse.", 30, "a man riding a horse"),
    ("  The dog's ball!  (red)  ", 30, "the dogs ball red"),
    ('He said: "hi"; ok? #1 *yes* ~fine~', 30, "he said hi ok 1 yes fine"),
    ("A well-known black/white cat", 30, "a well known black white cat"),
    ("<person> holding <PERSON>'s bag", 30, "person holding persons bag"),
    ("one two  three\tfour\nfive six", 4, "one two three four"),
])
def test_pre_caption(text, max_words, expected):
    assert pre_caption(text, max_words) == expected


@pytest.mark.parametrize("text, max_words, expected", [
    ("What color is the cat?", 30, "what color is the cat"),
    ("Is the <person> left-handed?  ", 30, "is the <person> left handed"),
    ("How many: dogs, cats / birds?", 3, "how many dogs"),
])
def test_pre_question(text, max_words, expected):
    assert pre_question(text, max_words) == expected


# --- registry and config ---


def test_json_datasets_are_registered_and_their_config_keys_have_defaults():
    assert {"json_pretrain", "json_retrieval", "json_vqa", "json_nlvr"} <= set(DATASETS)
    config = defaults()
    assert {key: config[key] for key in ("train_file", "val_file", "test_file", "image_root", "vqa_root",
                                         "vg_root", "answer_list", "max_words")} == {
        "train_file": [], "val_file": [], "test_file": [], "image_root": "", "vqa_root": "", "vg_root": "",
        "answer_list": "", "max_words": 30,
    }


@pytest.mark.parametrize("name", sorted(JSON_DATASETS))
def test_an_empty_file_list_means_no_such_split(build_synth, synth, synth_tokenizer, name):
    assert build_synth(name, "train", train_file=[]) is None
    with pytest.raises(SplitUnavailableError, match="train_file is empty"):
        DATASETS[name].from_config("train", _cfg(synth["out_dir"], train_file=[]), synth_tokenizer)


# --- the same samples as the Arrow datasets ---


@pytest.mark.parametrize("name", sorted(JSON_DATASETS))
@pytest.mark.parametrize("image_only", [False, True])
def test_json_samples_and_batches_have_the_arrow_datasets_keys(build_synth, synth_tokenizer, name, image_only):
    arrow_name, files = JSON_DATASETS[name]
    collate = Collator(synth_tokenizer)
    for split in files:
        if image_only and arrow_name == "vqa" and split == "test":
            continue  # the Arrow vqa dataset reads answers at slot -1 with image_only, which fails on test rows
        json_set = build_synth(name, split, image_only=image_only)
        arrow_set = build_synth(arrow_name, split, image_only=image_only)
        json_samples = [json_set[(index, 11)] for index in (0, len(json_set) - 1)]
        arrow_samples = [arrow_set[(index, 11)] for index in (0, len(arrow_set) - 1)]
        assert set(json_samples[0]) == set(arrow_samples[0]), split
        assert set(collate(json_samples)) == set(collate(arrow_samples)), split
        assert json_samples[0]["num_skipped_images"] == 0
        if not image_only:
            assert synth_tokenizer.unk_token_id not in json_samples[0]["text_ids"].tolist()


def test_pretrain_uses_list_and_single_captions_and_draws_one_per_sample_seed(build_synth, synth):
    dataset = build_synth("json_pretrain", "train")
    with open(os.path.join(synth["out_dir"], "json_pretrain/pretrain.json")) as handle:
        entries = json.load(handle)
    assert len(dataset) == len(entries)
    assert isinstance(entries[0]["caption"], list) and isinstance(entries[-1]["caption"], str)
    captions = entries[0]["caption"]
    drawn = {seed: dataset[(0, seed)] for seed in range(30)}
    for seed, sample in drawn.items():
        again = dataset[(0, seed)]
        assert (again["cap_index"], again["text"]) == (sample["cap_index"], sample["text"])
        assert sample["text"] == pre_caption(captions[sample["cap_index"]]) and sample["img_index"] == 0
    assert len({sample["cap_index"] for sample in drawn.values()}) > 1
    assert dataset[(len(dataset) - 1, 3)]["text"] == pre_caption(entries[-1]["caption"])


def test_retrieval_train_groups_captions_by_dense_image_id(build_synth, synth):
    dataset = build_synth("json_retrieval", "train")
    with open(os.path.join(synth["out_dir"], "downstream_json/coco_train.json")) as handle:
        entries = json.load(handle)
    dense = {}
    for entry in entries:
        dense.setdefault(entry["image_id"], len(dense))
    assert len(dataset) == len(entries) and dataset.tables.num_rows == len(dense)
    for index in (0, 7, len(dataset) - 1):
        sample = dataset[(index, 1)]
        captions = [pre_caption(e["caption"]) for e in entries if dense[e["image_id"]] == sample["img_index"]]
        assert sample["text"] == captions[sample["cap_index"]]


def test_retrieval_eval_mappings_agree_with_each_other_and_with_the_samples(build_synth, synth):
    dataset = build_synth("json_retrieval", "val")
    with open(os.path.join(synth["out_dir"], "downstream_json/coco_val.json")) as handle:
        entries = json.load(handle)
    text, img2txt, txt2img = dataset.text, dataset.img2txt, dataset.txt2img
    assert text == [pre_caption(caption) for entry in entries for caption in entry["caption"]]
    assert sorted(img2txt) == list(range(len(entries))) and sorted(txt2img) == list(range(len(text)))
    for image, positions in img2txt.items():
        assert len(positions) == len(entries[image]["caption"])
        assert all(txt2img[t] == image for t in positions)
    captions, image_rows = dataset.retrieval_captions()
    # what IRTRTask.recall_inputs computes from an Arrow split
    assert captions == [dataset.row_texts(int(r))[int(s)] for r, s in zip(dataset.text_rows, dataset.text_slots)]
    assert image_rows.tolist() == [txt2img[t] for t in range(len(text))]
    images = build_synth("json_retrieval", "val", image_only=True, draw_false_image=0, draw_false_text=0)
    assert [images[(i, 0)]["img_index"] for i in range(len(images))] == list(range(len(entries)))


def test_a_single_string_val_file_is_accepted(build_synth):
    dataset = build_synth("json_retrieval", "val", val_file="downstream_json/coco_val.json")
    assert len(dataset) > 0


# --- VQA and NLVR fields ---


@pytest.fixture
def vqa_files(tmp_path, synth):
    """A VQA train file (a vqa and a vg question) and an answer list without 'blue'."""
    image = os.path.join(synth["out_dir"], "images", "000000.jpg")
    train = _write_json(tmp_path / "vqa_train.json", [
        {"question": "What color?", "image": image, "dataset": "vqa", "question_id": 7,
         "answer": ["red", "red", "blue", "green"]},
        {"question": "Which shape is it?", "image": image, "dataset": "vg", "answer": "circle"},
    ])
    answers = _write_json(tmp_path / "answers.json", ["circle", "green", "red"])
    return train, answers


def test_vqa_targets_follow_the_answer_list_and_the_weights(build_synth, vqa_files):
    train, answers = vqa_files
    dataset = build_synth("json_vqa", "train", train_file=[train], answer_list=answers, draw_false_text=0)
    first, second = dataset[(0, 0)], dataset[(1, 0)]
    assert first["text"] == "what color" and first["qid"] == 7
    assert (first["vqa_answer"], first["vqa_labels"], first["vqa_scores"]) == (["red", "green"], [2, 1], [0.5, 0.25])
    assert (second["vqa_answer"], second["vqa_labels"], second["vqa_scores"]) == (["circle"], [0], [0.5])
    assert second["qid"] == 1  # no question_id: the position among the split's entries
    assert dataset.answers == ["circle", "green", "red"]


def test_vqa_needs_an_answer_list_once_the_split_exists(build_synth):
    with pytest.raises(ValueError, match="needs config key answer_list"):
        build_synth("json_vqa", "train", answer_list="")
    assert build_synth("json_vqa", "val", answer_list="") is None


def test_nlvr_labels_and_table_names(build_synth, synth):
    dataset = build_synth("json_nlvr", "val")
    with open(os.path.join(synth["out_dir"], "downstream_json/nlvr_dev.json")) as handle:
        entries = json.load(handle)
    for index in range(len(dataset)):
        sample = dataset[(index, 0)]
        assert sample["answers"] == int(entries[index]["label"] == "True")
        assert sample["table_name"] == "nlvr_dev" and sample["text"] == pre_caption(entries[index]["sentence"])
    assert {entry["label"] for entry in entries} == {"True", "False"}


# --- broken images ---


def test_missing_and_corrupt_images_are_replaced_counted_and_logged_once(build_synth, synth, tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir()
    for k in range(3):
        shutil.copy(os.path.join(synth["out_dir"], "images", f"{k:06d}.jpg"), images / f"good{k}.jpg")
    (images / "corrupt.jpg").write_bytes(NOT_AN_IMAGE)
    train = _write_json(tmp_path / "pretrain.json", [
        {"image": "images/good0.jpg", "caption": "a red circle"},
        {"image": "images/missing.jpg", "caption": "a blue square"},
        {"image": "images/corrupt.jpg", "caption": ["a green triangle", "a triangle"]},
        {"image": "images/good1.jpg", "caption": ["a yellow circle"]},
        {"image": "images/good2.jpg", "caption": "two shapes"},
    ])
    dataset = build_synth("json_pretrain", "train", train_file=[train], image_root=str(tmp_path), draw_false_image=0)
    with caplog.at_level(logging.WARNING):
        for broken in (1, 2):
            for seed in range(3):
                sample = dataset[(broken, seed)]
                assert sample["num_skipped_images"] >= 1 and sample["img_index"] in (0, 3, 4)
                assert dataset[(broken, seed)]["img_index"] == sample["img_index"]  # replay: same replacement
    for position, image in ((1, "missing.jpg"), (2, "corrupt.jpg")):  # each logged once, naming entry and file
        assert caplog.text.count(f"of {train}: entry {position} (") == 1 and image in caplog.text
    assert dataset[(0, 0)]["num_skipped_images"] == 0


def test_pretrain_image_paths_are_used_as_given_without_image_root(synth, synth_tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(synth["out_dir"])
    train = _write_json(tmp_path / "pretrain.json", [
        {"image": "images/000000.jpg", "caption": "a"}, {"image": "images/000001.jpg", "caption": "b"},
    ])
    cfg = _cfg("", train_file=[train], image_root="", draw_false_image=0, draw_false_text=0)
    dataset = JsonPretrainDataset.from_config("train", cfg, synth_tokenizer)
    assert dataset[(1, 0)]["num_skipped_images"] == 0


# --- malformed files ---


@pytest.mark.parametrize("name, entries, message", [
    ("json_pretrain", [{"image": "a.jpg", "caption": "x"}, {"image": "b.jpg"}], "entry 1 has no field 'caption'"),
    ("json_pretrain", [{"caption": "x"}], "entry 0 has no field 'image'"),
    ("json_pretrain", [{"image": "a.jpg", "caption": []}], "entry 0: field 'caption' must be a string or a non-empty list"),
    ("json_pretrain", [{"image": "a.jpg", "caption": "x"}, ["b.jpg", "y"]], "entry 1 is"),
    ("json_pretrain", {"image": "a.jpg", "caption": "x"}, "holds a JSON dict; expected a JSON list"),
    ("json_retrieval", [{"image": "a.jpg", "caption": "x", "image_id": 1}, {"image": "b.jpg", "caption": "y"}],
     "entry 1 has no field 'image_id'"),
    ("json_retrieval", [{"image": "a.jpg", "caption": "x", "image_id": 1}, {"image": "b.jpg", "caption": "y", "image_id": 1}],
     "entry 1: image_id 1 names image"),
    ("json_retrieval", [{"image": "a.jpg", "caption": ["x"], "image_id": 1}], "entry 0: field 'caption' must be a string"),
    ("json_vqa", [{"question": "q", "image": "a.jpg", "dataset": "coco", "answer": "x"}], "field 'dataset' is 'coco'"),
    ("json_vqa", [{"question": "q", "image": "a.jpg", "dataset": "vqa"}], "entry 0 has no field 'answer'"),
    ("json_nlvr", [{"images": ["a.jpg"], "sentence": "s", "label": "True"}], "field 'images' must be a list of two paths"),
    ("json_nlvr", [{"images": ["a.jpg", "b.jpg"], "sentence": "s", "label": "yes"}], "field 'label' must be 'True' or 'False'"),
])
def test_malformed_entries_name_the_file_and_the_position(build_synth, tmp_path, name, entries, message):
    path = _write_json(tmp_path / "bad.json", entries)
    with pytest.raises(JsonAnnotationError) as error:
        build_synth(name, "train", train_file=[path])
    assert path in str(error.value) and message in str(error.value)


def test_invalid_json_and_missing_files_are_reported_with_their_path(build_synth, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image": "a.jpg", "caption": "x"},')
    with pytest.raises(JsonAnnotationError, match=re.escape(f"{broken}: not valid JSON")):
        build_synth("json_pretrain", "train", train_file=[str(broken)])
    with pytest.raises(JsonAnnotationError, match="train_file: json file 'nowhere.json' not found"):
        build_synth("json_pretrain", "train", train_file=["nowhere.json"])


# --- the synthetic generator ---


def test_synthetic_json_files_are_listed_in_the_summary_and_point_at_existing_images(synth):
    root, listed = synth["json"]["root"], synth["json"]["files"]
    assert root == synth["out_dir"] and synth["json"]["answer_list"] == os.path.join(root, "downstream_json/answer_list.json")
    expected = {"json_pretrain/pretrain.json", "downstream_json/answer_list.json"} | {
        f"downstream_json/{name}.json" for name in (
            "coco_train", "coco_val", "coco_test", "vqa_train", "vqa_val", "vqa_test", "vg_qa",
            "nlvr_train", "nlvr_dev", "nlvr_test")
    }
    assert set(listed) == expected
    for path, count in listed.items():
        with open(os.path.join(root, path)) as handle:
            entries = json.load(handle)
        assert len(entries) == count > 0
        for entry in entries if isinstance(entries[0], dict) else []:
            for image in entry.get("images", [entry.get("image")]):
                assert not os.path.isabs(image) and os.path.isfile(os.path.join(root, image))
