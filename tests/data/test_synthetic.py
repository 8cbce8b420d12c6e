"""The synthetic dataset: reference Arrow layout, scene round trip, determinism, tokenizer, task
balance, and every registered dataset class loading it.

Scenes are read from ``scenes.json``; answers, statements and hypotheses are re-derived from them
here with an independent parser of the generated wording, not with the generator's own functions.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from transformers import AutoTokenizer

from vlkit.config.schema import defaults
from vlkit.data.datasets import DATASETS, build_dataset
from vlkit.data.synthetic import MIN_IMAGES, write_synthetic
from vlkit.data.synthetic_scenes import BACKGROUND, COLORS, hypothesis, sample_scene
from vlkit.data.tokenizer import load_tokenizer

NUM_IMAGES = 60
IMAGE_SIZE = 64
SEED = 3

# --- the reference layout (vilt_vlc.md §4.2, meter_elip.md §4.1) ---
TEXTS = pa.list_(pa.string())
INTS = pa.list_(pa.int64())
CAPTION_LAYOUT = [("image", pa.binary()), ("caption", TEXTS), ("image_id", pa.string()), ("split", pa.string())]
VG_LAYOUT = [
    ("image", pa.binary()), ("caption", TEXTS), ("width", INTS), ("height", INTS), ("x", INTS), ("y", INTS),
    ("image_id", pa.string()),
]
VQA_LAYOUT = [
    ("image", pa.binary()), ("questions", TEXTS), ("answers", pa.list_(TEXTS)), ("answer_labels", pa.list_(INTS)),
    ("answer_scores", pa.list_(pa.list_(pa.float64()))), ("image_id", pa.int64()), ("question_id", INTS),
    ("split", pa.string()),
]
VQA_TEST_LAYOUT = [
    (name, pa.list_(pa.null()) if name in ("answers", "answer_labels", "answer_scores") else kind)
    for name, kind in VQA_LAYOUT
]
NLVR2_LAYOUT = [
    ("image_0", pa.binary()), ("image_1", pa.binary()), ("questions", TEXTS), ("answers", TEXTS),
    ("identifier", pa.string()),
]
SNLI_LAYOUT = [("image", pa.binary()), ("sentences", pa.list_(TEXTS)), ("labels", INTS)]
LAYOUTS = {
    **{f"coco_caption_karpathy_{s}": CAPTION_LAYOUT for s in ("train", "restval", "val", "test")},
    **{f"f30k_caption_karpathy_{s}": CAPTION_LAYOUT for s in ("train", "val", "test")},
    "vg": VG_LAYOUT,
    **{f"sbu_{k}": CAPTION_LAYOUT for k in range(9)},
    **{f"conceptual_caption_train_{k}": CAPTION_LAYOUT for k in range(31)},
    "conceptual_caption_val_0": CAPTION_LAYOUT,
    **{f"vqav2_{s}": VQA_LAYOUT for s in ("train", "val", "trainable_val", "rest_val")},
    "vqav2_test": VQA_TEST_LAYOUT,
    "vqav2_test-dev": VQA_TEST_LAYOUT,
    "vgqa_train": VQA_LAYOUT,
    **{f"nlvr2_{s}": NLVR2_LAYOUT for s in ("train", "dev", "test1")},
    **{f"snli_{s}": SNLI_LAYOUT for s in ("train", "dev", "test")},
}
EVAL_FILES = {
    "coco_caption_karpathy_val", "coco_caption_karpathy_test", "f30k_caption_karpathy_val",
    "f30k_caption_karpathy_test", "conceptual_caption_val_0", "vqav2_val", "vqav2_trainable_val",
    "vqav2_rest_val", "vqav2_test", "vqav2_test-dev", "nlvr2_dev", "nlvr2_test1", "snli_dev", "snli_test",
}
SPLIT_COLUMN = {
    **{f"coco_caption_karpathy_{s}": s for s in ("train", "restval", "val", "test")},
    **{f"f30k_caption_karpathy_{s}": s for s in ("train", "val", "test")},
    **{f"sbu_{k}": "train" for k in range(9)},
    **{f"conceptual_caption_train_{k}": "train" for k in range(31)},
    "conceptual_caption_val_0": "val",
    **{f"vqav2_{s}": "val" for s in ("val", "trainable_val", "rest_val")},
    "vqav2_train": "train", "vqav2_test": "test", "vqav2_test-dev": "test-dev", "vgqa_train": "train",
}
"""The ``split`` column of each file that has one."""
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
SOFT_SCORE_COUNTS = {0.3: 1, 0.6: 2, 0.9: 3}


# --- fixtures and readers ---


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("synth"))
    return out, write_synthetic(out, NUM_IMAGES, seed=SEED, image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def out(synth) -> str:
    return synth[0]


@pytest.fixture(scope="module")
def scenes(out) -> dict:
    with open(os.path.join(out, "scenes.json")) as handle:
        return json.load(handle)


def read(out: str, name: str) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(os.path.join(out, f"{name}.arrow"), "r")).read_all()


def column(out: str, name: str, key: str) -> list:
    return read(out, name).column(key).to_pylist()


def shapes_of(scenes: dict, name: str) -> list:
    """The scene (list of shape dicts) behind each row of ``name``; a pair of scenes for NLVR2."""
    index = scenes["rows"][name]
    return [[scenes["scenes"][i] for i in row] if isinstance(row, list) else scenes["scenes"][row] for row in index]


def only(shapes: list[dict], **attributes) -> dict:
    """The single shape with ``attributes``."""
    found = [s for s in shapes if all(s[k] == v for k, v in attributes.items())]
    assert len(found) == 1, (attributes, shapes)
    return found[0]


def exists(shapes: list[dict], **attributes) -> bool:
    return any(all(s[k] == v for k, v in attributes.items()) for s in shapes)


def place(phrase: str) -> str:
    """``"at the top left"`` → ``"top left"``."""
    return re.fullmatch(r"(?:at|on|in) the (.+)", phrase).group(1)


# --- an independent reading of the generated wording ---


def vqa_truth(question: str, shapes: list[dict]) -> str:
    if m := re.fullmatch(r"what color is the (\w+)\?", question):
        return only(shapes, kind=m[1])["color"]
    if m := re.fullmatch(r"what color is the shape ((?:at|on|in) the [\w ]+)\?", question):
        return only(shapes, position=place(m[1]))["color"]
    if m := re.fullmatch(r"what shape is ((?:at|on|in) the [\w ]+)\?", question):
        return only(shapes, position=place(m[1]))["kind"]
    if question == "how many shapes are there?":
        return str(len(shapes))
    if m := re.fullmatch(r"is there an? (\w+) (\w+)\?", question):
        return "yes" if exists(shapes, color=m[1], kind=m[2]) else "no"
    if m := re.fullmatch(r"what size is the (\w+) (\w+)\?", question):
        return only(shapes, color=m[1], kind=m[2])["size"]
    if m := re.fullmatch(r"where is the (\w+) (\w+)\?", question):
        return only(shapes, color=m[1], kind=m[2])["position"]
    raise AssertionError(f"unknown question {question!r}")


def nlvr2_truth(statement: str, left: list[dict], right: list[dict]) -> bool:
    side = {"left": left, "right": right}
    if m := re.fullmatch(r"the (left|right) image has more shapes than the (left|right) image", statement):
        return len(side[m[1]]) > len(side[m[2]])
    if statement == "both images have the same number of shapes":
        return len(left) == len(right)
    if m := re.fullmatch(r"both images contain an? (\w+) shape", statement):
        return exists(left, color=m[1]) and exists(right, color=m[1])
    if m := re.fullmatch(r"exactly one of the images contains an? (\w+) shape", statement):
        return exists(left, color=m[1]) != exists(right, color=m[1])
    if m := re.fullmatch(r"there is an? (\w+) in the (left|right) image", statement):
        return exists(side[m[2]], kind=m[1])
    if m := re.fullmatch(r"the (left|right) image contains exactly (\w+) shapes?", statement):
        return len(side[m[1]]) == NUMBERS[m[2]]
    if m := re.fullmatch(r"there are (\w+) shapes in total", statement):
        return len(left) + len(right) == NUMBERS[m[1]]
    raise AssertionError(f"unknown statement {statement!r}")


def snli_truth(hypothesis: str, shapes: list[dict]) -> bool | None:
    """True / False for a hypothesis about a shape in the image, None for one about an absent shape."""
    if m := re.fullmatch(r"the (\w+) (\w+) is (small|large)", hypothesis):
        found = [s for s in shapes if s["color"] == m[1] and s["kind"] == m[2]]
        return found[0]["size"] == m[3] if found else None
    if m := re.fullmatch(r"the (\w+) (\w+) is ((?:at|on|in) the [\w ]+)", hypothesis):
        found = [s for s in shapes if s["color"] == m[1] and s["kind"] == m[2]]
        return found[0]["position"] == place(m[3]) if found else None
    if m := re.fullmatch(r"the (\w+) ((?:at|on|in) the [\w ]+) is (\w+)", hypothesis):
        found = [s for s in shapes if s["kind"] == m[1] and s["position"] == place(m[2])]
        return found[0]["color"] == m[3] if found else None
    raise AssertionError(f"unknown hypothesis {hypothesis!r}")


def colors_named(text: str) -> set[str]:
    return {word for word in re.findall(r"\w+", text) if word in COLORS}


# --- layout ---


def test_every_reference_file_exists_with_the_reference_layout(out, synth):
    for name, layout in LAYOUTS.items():
        schema = read(out, name).schema
        assert [(field.name, field.type) for field in schema] == layout, name
    arrow_files = {f[: -len(".arrow")] for f in os.listdir(out) if f.endswith(".arrow")}
    assert arrow_files == set(LAYOUTS)
    assert synth[1]["files"] == {name: read(out, name).num_rows for name in LAYOUTS}


def test_files_have_rows_and_split_columns_name_their_split(out):
    for name in LAYOUTS:
        table = read(out, name)
        assert table.num_rows >= (2 if name.startswith("nlvr2") else 1), name
        if "split" in table.column_names:
            assert set(table.column("split").to_pylist()) == {SPLIT_COLUMN[name]}, name
    assert set(SPLIT_COLUMN) == {name for name, layout in LAYOUTS.items() if layout[-1][0] == "split"}


def test_summary_is_written_and_records_sizes_and_chance(out, synth):
    info = synth[1]
    with open(os.path.join(out, "synth_info.json")) as handle:
        assert json.load(handle) == info
    assert (info["seed"], info["num_images"], info["image_size"]) == (SEED, NUM_IMAGES, IMAGE_SIZE)
    assert info["chance"]["nlvr2"] == 0.5 and info["chance"]["itm"] == 0.5
    assert info["chance"]["snli"] == pytest.approx(1 / 3)
    assert 0 <= info["chance"]["vqa"] < 0.5
    assert info["tokenizer"] == os.path.join(out, "tokenizer")


def test_evaluation_images_never_appear_in_training_files(scenes):
    def images(names):
        return {i for name in names for row in scenes["rows"][name] for i in (row if isinstance(row, list) else [row])}

    evaluation = images(EVAL_FILES)
    assert evaluation and not evaluation & images(set(LAYOUTS) - EVAL_FILES)
    for dataset_files in (("coco_caption_karpathy_val", "coco_caption_karpathy_test"), ("nlvr2_dev", "nlvr2_test1")):
        assert not images(dataset_files[:1]) & images(dataset_files[1:])


# --- round trip ---


def test_pixels_at_shape_centres_have_the_named_color(out, scenes):
    palette = np.array(list(COLORS.values()), dtype=np.float32)
    checked = 0
    name = "coco_caption_karpathy_train"
    for data, shapes in zip(column(out, name, "image"), shapes_of(scenes, name)):
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
        assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        cell = IMAGE_SIZE / 3
        for cell_index in range(9):
            row, col = divmod(cell_index, 3)
            y, x = int((row + 0.5) * cell), int((col + 0.5) * cell)
            colour = pixels[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(axis=0)
            shape = next((s for s in shapes if s["cell"] == cell_index), None)
            if shape is None:
                assert np.abs(colour - BACKGROUND).max() < 25, (cell_index, colour)
                continue
            nearest = list(COLORS)[int(np.argmin(((palette - colour) ** 2).sum(axis=1)))]
            assert nearest == shape["color"] and np.abs(colour - COLORS[shape["color"]]).max() < 40
            checked += 1
    assert checked >= NUM_IMAGES // 2


def test_captions_describe_their_scene(out, scenes):
    for name in ("coco_caption_karpathy_train", "f30k_caption_karpathy_test", "sbu_0", "conceptual_caption_val_0"):
        per_image = 5 if name.startswith(("coco", "f30k")) else 1
        table = read(out, name)
        rows = zip(table.column("caption").to_pylist(), table.column("image_id").to_pylist(), scenes["rows"][name])
        for captions, image_id, index in rows:
            shapes = scenes["scenes"][index]
            assert len(set(captions)) == per_image
            named = set().union(*map(colors_named, captions))
            assert named <= {s["color"] for s in shapes}
            if per_image == 5:
                assert named == {s["color"] for s in shapes}
            assert int(re.findall(r"\d+", image_id)[-1]) == index


def test_vg_regions_are_the_shape_boxes(out, scenes):
    table = read(out, "vg").to_pylist()
    for row, shapes in zip(table, shapes_of(scenes, "vg")):
        assert len(row["caption"]) == 2 * len(shapes)
        for k, phrase in enumerate(row["caption"]):
            (color,) = colors_named(phrase)
            shape = next(s for s in shapes if s["color"] == color and s["kind"] in phrase)
            centre = (row["x"][k] + row["width"][k] / 2, row["y"][k] + row["height"][k] / 2)
            cell = IMAGE_SIZE / 3
            assert divmod(shape["cell"], 3) == (int(centre[1] // cell), int(centre[0] // cell))


# --- determinism and arguments ---


def _output_bytes(out: str) -> dict[str, bytes]:
    files = {}
    for root, _, names in os.walk(out):
        for name in names:
            if name != "synth_info.json":  # it records out_dir
                with open(os.path.join(root, name), "rb") as handle:
                    files[os.path.relpath(os.path.join(root, name), out)] = handle.read()
    return files


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(out, tmp_path):
    write_synthetic(str(tmp_path / "again"), NUM_IMAGES, seed=SEED, image_size=IMAGE_SIZE)
    write_synthetic(str(tmp_path / "other"), NUM_IMAGES, seed=SEED + 1, image_size=IMAGE_SIZE)
    first, again, other = (_output_bytes(path) for path in (out, str(tmp_path / "again"), str(tmp_path / "other")))
    assert first == again
    assert not any(f.endswith(".tmp") for f in first)
    for name in LAYOUTS:
        assert other[f"{name}.arrow"] != first[f"{name}.arrow"], name


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"num_images": MIN_IMAGES - 1}, ValueError, f"minimum is {MIN_IMAGES}"),
        ({"image_size": 8}, ValueError, "image_size=8"),
        ({"seed": -1}, ValueError, "seed"),
        ({"num_images": 40.0}, TypeError, "num_images"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_error(tmp_path, arguments, error, message):
    with pytest.raises(error, match=message):
        write_synthetic(str(tmp_path / "bad"), **arguments)
    assert not (tmp_path / "bad").exists()


def test_the_minimum_size_still_fills_every_file(tmp_path, capsys):
    info = write_synthetic(str(tmp_path / "small"), MIN_IMAGES, image_size=32, progress=True)
    assert "wrote nlvr2_train.arrow" in capsys.readouterr().err
    assert set(info["files"]) == set(LAYOUTS)
    assert min(info["files"].values()) >= 1
    assert min(info["files"][f"nlvr2_{s}"] for s in ("train", "dev", "test1")) >= 2


# --- tokenizer ---


def test_tokenizer_loads_offline_as_a_fast_bert_tokenizer(out, synth):
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(out, "tokenizer"))
    assert tokenizer.is_fast and load_tokenizer(os.path.join(out, "tokenizer")).is_fast
    assert tokenizer.pad_token_id == 0 and tokenizer.mask_token == "[MASK]"
    assert tokenizer.mask_token_id is not None and len(tokenizer) == synth[1]["vocab_size"] <= 1000
    texts = [c for captions in column(out, "coco_caption_karpathy_train", "caption") for c in captions]
    texts += [q for questions in column(out, "vqav2_train", "questions") for q in questions]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    ids = tokenizer("A Large RED circle")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a large red circle"


# --- VQA ---


def _questions(out: str, scenes: dict, name: str):
    """``(question, answers, labels, scores, scene)`` of every question in ``name``."""
    table = read(out, name).to_pylist()
    for row, shapes in zip(table, shapes_of(scenes, name)):
        columns = (row["questions"], row["answers"], row["answer_labels"], row["answer_scores"])
        for question, answers, labels, scores in zip(*columns):
            yield question, answers, labels, scores, shapes


def test_answer_vocabulary_files_agree(out, synth):
    with open(os.path.join(out, "vqa_answer_vocab.json")) as handle:
        vocab = json.load(handle)
    with open(os.path.join(out, "coco_vqa_label_info.pkl"), "rb") as handle:
        info = pickle.load(handle)
    assert info["ans2label"] == vocab and [info["label2ans"][i] for i in vocab.values()] == list(vocab)
    assert sorted(vocab.values()) == list(range(len(vocab))) == list(range(synth[1]["answer_vocab_size"]))


def test_vqa_targets_follow_the_vocabulary_the_counts_and_the_scene(out, scenes):
    with open(os.path.join(out, "vqa_answer_vocab.json")) as handle:
        vocab = json.load(handle)
    noisy = 0
    for name in ("vqav2_train", "vqav2_val", "vqav2_rest_val"):
        for question, answers, labels, scores, shapes in _questions(out, scenes, name):
            assert labels == [vocab[a] for a in answers] and len(set(answers)) == len(answers)
            assert scores.count(1.0) == 1 and set(scores) <= {1.0, *SOFT_SCORE_COUNTS}
            assert sum(SOFT_SCORE_COUNTS.get(s, 4) for s in scores) <= 10  # 1.0 means 4 or more of 10
            assert answers[scores.index(1.0)] == vqa_truth(question, shapes), question
            noisy += len(scores) > 1
    assert noisy > 0
    for question, answers, labels, scores, shapes in _questions(out, scenes, "vgqa_train"):
        assert (scores, answers) == ([1.0], [vqa_truth(question, shapes)])
    test_rows = read(out, "vqav2_test").to_pylist()
    assert all(row["answers"] == [] and len(row["question_id"]) == len(row["questions"]) for row in test_rows)


def test_question_text_alone_does_not_give_the_answer(out, scenes):
    """Majority answer per question string, fit on train, scores far below the scene's 100%."""
    by_question = defaultdict(Counter)
    for question, answers, _, scores, _ in _questions(out, scenes, "vqav2_train"):
        by_question[question][answers[scores.index(1.0)]] += 1
    overall = sum(by_question.values(), Counter()).most_common(1)[0][0]
    prior, truth = [], []
    for question, answers, _, scores, shapes in _questions(out, scenes, "vqav2_val"):
        guess = by_question[question].most_common(1)[0][0] if question in by_question else overall
        prior.append(dict(zip(answers, scores)).get(guess, 0.0))
        truth.append(dict(zip(answers, scores)).get(vqa_truth(question, shapes), 0.0))
    assert np.mean(truth) == 1.0
    assert np.mean(prior) < 0.6


# --- NLVR2 and SNLI-VE ---


def test_nlvr2_statements_are_true_of_their_pair_and_balanced(out, scenes):
    truths = []
    for name in ("nlvr2_train", "nlvr2_dev", "nlvr2_test1"):
        table = read(out, name).to_pylist()
        for row, (left, right) in zip(table, shapes_of(scenes, name)):
            assert row["image_0"] != row["image_1"]
            for statement, answer in zip(row["questions"], row["answers"]):
                assert answer in ("True", "False")
                assert nlvr2_truth(statement, left, right) == (answer == "True"), statement
                truths.append(answer == "True")
    assert 0.35 < np.mean(truths) < 0.65


def test_snli_labels_match_the_scene_and_are_balanced(out, scenes):
    labels_seen = Counter()
    for name in ("snli_train", "snli_dev", "snli_test"):
        table = read(out, name).to_pylist()
        for row, shapes in zip(table, shapes_of(scenes, name)):
            for (premise, hypothesis), label in zip(row["sentences"], row["labels"]):
                assert colors_named(premise) <= {s["color"] for s in shapes}
                assert snli_truth(hypothesis, shapes) == {0: False, 1: None, 2: True}[label], hypothesis
                labels_seen[label] += 1
    assert labels_seen[0] == labels_seen[1] == labels_seen[2] > 0


# --- the dataset classes ---


@pytest.fixture(scope="module")
def tokenizer(out):
    return load_tokenizer(os.path.join(out, "tokenizer"))


def _cfg(out: str, **overrides):
    values = defaults()
    values.update(
        data_root=out, tokenizer=os.path.join(out, "tokenizer"), image_size=32, max_text_len=40,
        draw_false_image=1, draw_false_text=1, train_transform_keys=["mae"], val_transform_keys=["mae_test"],
    )
    values.update(overrides)
    return OmegaConf.create(values)


JSON_FILES = {  # the synthetic json files of each json dataset: (train, val, test)
    "json_pretrain": (["json_pretrain/pretrain.json"], [], []),
    "json_retrieval": (["downstream_json/coco_train.json"], "downstream_json/coco_val.json", "downstream_json/coco_test.json"),
    "json_vqa": (["downstream_json/vqa_train.json", "downstream_json/vg_qa.json"], [], ["downstream_json/vqa_test.json"]),
    "json_nlvr": (["downstream_json/nlvr_train.json"], ["downstream_json/nlvr_dev.json"], ["downstream_json/nlvr_test.json"]),
}


def _json_options(out: str, name: str) -> dict:
    if name not in JSON_FILES:
        return {}
    train, val, test = JSON_FILES[name]
    return dict(train_file=train, val_file=val, test_file=test, image_root=out, vqa_root=out, vg_root=out,
                answer_list=os.path.join(out, "downstream_json", "answer_list.json"))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_class_builds_its_splits_and_returns_samples(out, tokenizer, name):
    built = {}
    for split in ("train", "val", "test"):
        dataset = build_dataset(name, split, _cfg(out, vqa_use_vgqa=True, **_json_options(out, name)), tokenizer)
        if dataset is None:
            continue
        built[split] = len(dataset)
        for index in (0, len(dataset) - 1):
            sample = dataset[(index, 7)]
            assert sample["num_skipped_images"] == 0
            assert tokenizer.unk_token_id not in sample["text_ids"].tolist()
            assert "false_image_0" in sample and "false_text_0" in sample
            image = sample[DATASETS[name].image_columns[0]]
            assert tuple(image.shape[-2:]) == (32, 32)
    assert "train" in built and min(built.values()) > 0


def _bag_of_words(texts: list[str], vocabulary: dict[str, int]) -> torch.Tensor:
    """Counts of every word and word pair (bigram) of each text over ``vocabulary``."""
    counts = torch.zeros(len(texts), len(vocabulary))
    for row, text in enumerate(texts):
        words = text.split()
        for term in [*words, *zip(words, words[1:])]:
            if term in vocabulary:
                counts[row, vocabulary[term]] += 1
    return counts


def test_a_text_only_model_cannot_tell_snli_labels_from_the_hypotheses():
    """A bag-of-words (and bigrams) logistic regression on 6000 hypotheses stays at chance (1/3) on
    3000 others; the old wording ("made of glass" = neutral) gave it about 0.66."""
    rng = np.random.default_rng(0)

    def draw(count):
        labels = rng.integers(3, size=count)
        return [hypothesis(sample_scene(rng), int(label), rng) for label in labels], torch.as_tensor(labels)

    (train_texts, train_labels), (test_texts, test_labels) = draw(6000), draw(3000)
    terms = sorted({term for text in train_texts for term in [*text.split(), *zip(text.split(), text.split()[1:])]}, key=str)
    vocabulary = {term: i for i, term in enumerate(terms)}
    train_x, test_x = _bag_of_words(train_texts, vocabulary), _bag_of_words(test_texts, vocabulary)
    classifier = torch.nn.Linear(len(vocabulary), 3)
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(classifier(train_x), train_labels) + 1e-3 * classifier.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        train_accuracy = (classifier(train_x).argmax(1) == train_labels).float().mean().item()
        test_accuracy = (classifier(test_x).argmax(1) == test_labels).float().mean().item()
    assert train_accuracy < 0.42 and test_accuracy < 0.38, (train_accuracy, test_accuracy)
