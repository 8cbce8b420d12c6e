"""Dataset classes on the tiny conftest tables, against hand-computed expectations.

Layout of the conftest tables used below (see ``conftest._write_all_datasets``):

* coco train: ``coco_caption_karpathy_train`` (6 rows; row 0 has 5 captions of which 3 are
  distinct; row 2 is not a JPEG) + ``coco_caption_karpathy_restval`` (3 rows; row 1 empty image);
  every other row has 3 distinct captions.
* sbu: only ``sbu_0`` and ``sbu_3`` exist, 2 rows of 1 caption each.
* vqa: ``vqav2_train`` (key 13, 3 rows), ``vqav2_trainable_val`` (14, 2 rows), ``vqav2_rest_val``
  (15, 2 rows), ``vqav2_test`` (16, 2 rows, no answers), ``vgqa_train`` (17, 2 rows); 2 questions
  per row, question ``q`` of row ``r`` has id ``(key * 100 + r) * 10 + q``.
* nlvr2: ``nlvr2_train`` (3 rows), ``nlvr2_dev`` (key 19) and ``nlvr2_test1`` (key 20), 2 rows each;
  answers ``["True", "False"]`` per row.
* snli: ``snli_train`` (3 rows), ``snli_dev`` and ``snli_test`` (2 rows each), 3 pairs per row.
"""
import io
import logging
import random

import numpy as np
import pytest
import torch
from PIL import Image

from vlkit.data.arrow import MissingArrowFilesError
from vlkit.data.collate import IGNORE_INDEX, Collator
from vlkit.data.datasets import DATASETS, build_dataset

COCO_TRAIN_ROW_0 = ["a dog on grass", "a cat", "two birds"]
"""Distinct captions of coco train row 0, first occurrences in file order (5 captions in the file)."""
NOT_AN_IMAGE = b"\xff\xd8\xff\xe0 these bytes are not a jpeg"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def colour(key: int) -> tuple[int, int, int]:
    """The solid colour conftest gives the image with key ``key``: (37k, 91k, 173k) mod 256."""
    return (37 * key % 256, 91 * key % 256, 173 * key % 256)


def mean_rgb(image: torch.Tensor) -> torch.Tensor:
    """Mean colour in 0..255 of an ImageNet-normalised (3, H, W) tensor."""
    return (image * IMAGENET_STD + IMAGENET_MEAN).mean(dim=(1, 2)) * 255


def noise_jpeg(seed: int, width: int = 64, height: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def build(make_cfg, tokenizer):
    """``build(name, split, **cfg_overrides)``: ``build_dataset`` on the conftest tables."""

    def make(name, split, **overrides):
        return build_dataset(name, split, make_cfg(**overrides), tokenizer)

    return make


def rows_and_slots(dataset):
    return list(zip(dataset.sample_rows.tolist(), dataset.sample_slots.tolist()))


# --- captions: files, indexing ---


def test_coco_train_is_train_plus_restval_one_sample_per_distinct_caption(build, caption_table):
    dataset = build("coco", "train")
    assert dataset.tables.names == ["coco_caption_karpathy_train", "coco_caption_karpathy_restval"]
    assert dataset.tables.num_rows == 6 + 3
    assert len(dataset) == 3 + 5 * 3 + 3 * 3  # row 0: 3 distinct of 5 captions
    assert dataset.row_texts(0) == COCO_TRAIN_ROW_0
    expected = [(0, 0), (0, 1), (0, 2)] + [(row, slot) for row in range(1, 9) for slot in range(3)]
    assert rows_and_slots(dataset) == expected

    train, restval = caption_table(1, 6)["caption"], caption_table(2, 3)["caption"]
    expected_text = {0: "a dog on grass", 1: "a cat", 2: "two birds", 3: train[1][0], 5: train[1][2],
                     17: train[5][2], 18: restval[0][0], 26: restval[2][2]}
    expected_place = {0: (0, 0), 1: (0, 1), 2: (0, 2), 3: (1, 0), 5: (1, 2), 17: (5, 2), 18: (6, 0), 26: (8, 2)}
    for index, text in expected_text.items():
        sample = dataset[(index, 0)]
        assert sample["text"] == text
        assert (sample["img_index"], sample["cap_index"]) == expected_place[index]
        assert sample["raw_index"] == index
        assert sample["num_skipped_images"] == 0
        assert dataset.tables.table_name(sample["img_index"]) == (
            "coco_caption_karpathy_train" if index < 18 else "coco_caption_karpathy_restval")


def test_image_only_gives_one_sample_per_row(build):
    dataset = build("coco", "test", image_only=True)
    assert len(dataset) == 3
    sample = dataset[1]
    assert sample["img_index"] == 1 and sample["cap_index"] == -1
    assert "text" not in sample and "text_ids" not in sample


def test_eval_splits_read_their_own_files(build):
    assert build("coco", "val").tables.names == ["coco_caption_karpathy_val"]
    assert build("coco", "test").tables.names == ["coco_caption_karpathy_test"]
    assert len(build("coco", "val")) == 9
    assert build("f30k", "train").tables.names == ["f30k_caption_karpathy_train"]
    assert build("gcc", "test").tables.names == ["conceptual_caption_val_0"]


def test_vg_and_sbu_have_no_eval_split(build):
    for name in ("vg", "sbu"):
        assert build(name, "val") is None
        assert build(name, "test") is None
    assert len(build("vg", "train")) == 3 * 3


def test_unknown_dataset_or_split_is_an_error(build):
    with pytest.raises(KeyError, match="unknown dataset 'cocoo'"):
        build("cocoo", "train")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        build("coco", "dev")
    assert set(DATASETS) == {"coco", "f30k", "vg", "sbu", "gcc", "vqa", "nlvr2", "snli",
                             "json_pretrain", "json_retrieval", "json_vqa", "json_nlvr"}


def test_missing_sbu_shards_are_skipped_with_a_warning(build, data_root, caption_table, caplog):
    with caplog.at_level(logging.WARNING):
        dataset = build("sbu", "train")
    assert dataset.tables.names == ["sbu_0", "sbu_3"]
    assert len(dataset) == 4
    assert "7 Arrow file(s) missing" in caplog.text
    for k in (1, 2, 4, 5, 6, 7, 8):
        assert f"{data_root}/sbu_{k}.arrow" in caplog.text
    assert f"{data_root}/sbu_0.arrow" not in caplog.text
    sample = dataset[2]
    assert sample["text"] == caption_table(10, 2, captions_per_row=1)["caption"][0][0]
    assert dataset.tables.table_name(sample["img_index"]) == "sbu_3"


# --- sample keys and token fields ---


def test_sample_keys_and_token_fields(build, tokenizer):
    dataset = build("coco", "train", draw_false_image=1, draw_false_text=1)
    sample = dataset[(0, 11)]
    token_fields = ("ids", "masks", "special_tokens_mask", "word_ids")
    assert set(sample) == {
        "image", "img_index", "cap_index", "raw_index", "num_skipped_images", "seed",
        "text", *(f"text_{f}" for f in token_fields),
        "false_image_0", "false_text_0", *(f"false_text_0_{f}" for f in token_fields),
    }
    assert sample["seed"] == 11
    assert sample["image"].shape == sample["false_image_0"].shape == (3, 32, 32)
    assert sample["text"] == "a dog on grass"

    ids, masks = sample["text_ids"], sample["text_masks"]
    assert ids.shape == masks.shape == (16,) and ids.dtype == masks.dtype == torch.long
    real = int(masks.sum())
    assert masks.tolist() == [1] * real + [0] * (16 - real)
    assert real == len(tokenizer("a dog on grass")["input_ids"])
    assert ids[0] == tokenizer.cls_token_id and ids[real - 1] == tokenizer.sep_token_id
    assert (ids[real:] == tokenizer.pad_token_id).all()
    assert tokenizer.decode(ids[:real], skip_special_tokens=True) == "a dog on grass"
    assert sample["text_special_tokens_mask"].tolist() == [1] + [0] * (real - 2) + [1] * (16 - real + 1)
    assert (sample["text_word_ids"][1:real - 1] >= 0).all() and sample["text_word_ids"][0] == -1
    assert sample["false_text_0"] not in COCO_TRAIN_ROW_0
    assert sample["false_text_0_ids"].shape == sample["false_text_0_masks"].shape == (16,)
    assert sample["false_text_0_ids"][0] == tokenizer.cls_token_id


def test_long_text_is_truncated_to_max_text_len(build):
    dataset = build("coco", "train", max_text_len=6)
    sample = dataset[(3, 0)]  # 8 words: more than 4 tokens
    assert sample["text_ids"].shape == (6,) and sample["text_masks"].all()


def test_collated_caption_batch(build, tokenizer):
    dataset = build("coco", "train", draw_false_image=1, draw_false_text=1)
    batch = Collator(tokenizer)([dataset[(0, 1)], dataset[(4, 2)], dataset[(18, 3)]])
    assert batch["text"][0] == "a dog on grass"
    assert batch["image"].shape == batch["false_image_0"].shape == (3, 3, 32, 32)
    for key in ("text_ids", "text_masks", "text_labels", "text_ids_mlm", "text_labels_mlm",
                "false_text_0_ids", "false_text_0_masks"):
        assert batch[key].shape == (3, 16), key
    assert (batch["text_labels"] == IGNORE_INDEX).all()
    assert batch["img_index"].tolist() == [0, 1, 6]
    assert batch["cap_index"].tolist() == [0, 1, 0]
    assert batch["raw_index"].tolist() == [0, 4, 18]


# --- negatives ---


def test_draw_false_image_is_the_image_of_another_row(build):
    dataset = build("vg", "train", draw_false_image=1, train_transform_keys=["mae_test"])
    own = [dataset.load_image("image", row) for row in range(3)]
    assert not any(torch.equal(own[a], own[b]) for a in range(3) for b in range(a + 1, 3))
    drawn_for_row_0 = set()
    for seed in range(40):
        index = seed % len(dataset)
        sample = dataset[(index, seed)]
        matches = [row for row in range(3) if torch.equal(sample["false_image_0"], own[row])]
        assert len(matches) == 1
        assert matches[0] != sample["img_index"]
        if sample["img_index"] == 0:
            drawn_for_row_0.add(matches[0])
    assert drawn_for_row_0 == {1, 2}


def test_draw_false_text_is_never_one_of_the_rows_own_texts(tmp_path, make_cfg, tokenizer, write_table, jpeg_bytes):
    # "a cat" is a text of rows 0 and 1: it must never be a negative for row 0 although row 1 holds it
    captions = [["a cat", "a dog", "a cat"], ["a cat", "red bird"], ["a dog"], ["two birds"]]
    write_table(str(tmp_path), "vg", {
        "image": [jpeg_bytes(32, 32, (10 * r, 0, 0)) for r in range(4)],
        "caption": captions,
        "image_id": [str(r) for r in range(4)],
    })
    dataset = build_dataset("vg", "train", make_cfg(data_root=str(tmp_path), draw_false_text=2), tokenizer)
    assert len(dataset) == 2 + 2 + 1 + 1
    negatives_of_row_0 = set()
    for seed in range(60):
        sample = dataset[(seed % 2, seed)]  # indices 0 and 1: row 0
        assert sample["img_index"] == 0
        for k in range(2):
            negatives_of_row_0.add(sample[f"false_text_{k}"])
    assert negatives_of_row_0 == {"red bird", "two birds"}
    for seed in range(30):
        sample = dataset[(4, seed)]  # row 2 ("a dog")
        assert sample["false_text_0"] in {"a cat", "red bird", "two birds"}


def test_false_texts_need_texts_in_two_rows(tmp_path, make_cfg, tokenizer, write_table, jpeg_bytes):
    write_table(str(tmp_path), "vg", {
        "image": [jpeg_bytes(32, 32, (0, 0, 0))] * 2, "caption": [["a cat"], []], "image_id": ["0", "1"],
    })
    with pytest.raises(ValueError, match="negative texts must come from another row"):
        build_dataset("vg", "train", make_cfg(data_root=str(tmp_path), draw_false_text=1), tokenizer)


# --- VQA ---


def test_cached_images_equal_decoded_ones_and_are_decoded_once(build, monkeypatch):
    plain = build("vg", "train", train_transform_keys=["mae_test"])
    expected = [plain.load_image("image", row) for row in range(3)]
    cached = build("vg", "train", train_transform_keys=["mae_test"], cache_images=True)
    decoded = []
    original = type(cached).decode_image

    def count(self, column, row):
        decoded.append(row)
        return original(self, column, row)

    monkeypatch.setattr(type(cached), "decode_image", count)
    for _ in range(3):
        for row in range(3):
            assert torch.equal(cached.load_image("image", row), expected[row])
    assert sorted(decoded) == [0, 1, 2]


def test_caching_a_random_transform_is_refused(build):
    with pytest.raises(ValueError, match="transform 'mae' is random"):
        build("vg", "train", train_transform_keys=["mae"], cache_images=True)


def test_vqa_train_questions_and_targets(build):
    dataset = build("vqa", "train")
    assert dataset.tables.names == ["vqav2_train", "vqav2_trainable_val"]
    assert len(dataset) == 3 * 2 + 2 * 2
    assert [dataset[(i, 0)]["qid"] for i in range(len(dataset))] == [
        13000, 13001, 13010, 13011, 13020, 13021, 14000, 14001, 14010, 14011]
    first, second, trainable_val = dataset[(0, 0)], dataset[(1, 0)], dataset[(6, 0)]
    # question q of row r in the table with key k: "what is the {WORDS[(k + r + q) % 47]} doing"
    assert first["text"] == "what is the blue doing"  # WORDS[13]
    assert (first["vqa_answer"], first["vqa_labels"], first["vqa_scores"]) == (["yes", "no"], [0, 1], [1.0, 0.3])
    assert second["text"] == "what is the green doing"  # WORDS[14]
    assert (second["vqa_answer"], second["vqa_labels"], second["vqa_scores"]) == (["two"], [2], [0.6])
    assert trainable_val["text"] == "what is the green doing"  # key 14, row 0, question 0
    assert trainable_val["img_index"] == 3 and trainable_val["cap_index"] == 0
    assert "table_name" not in first


def test_vqa_use_vgqa_adds_vgqa_train(build):
    dataset = build("vqa", "train", vqa_use_vgqa=True)
    assert dataset.tables.names == ["vqav2_train", "vqav2_trainable_val", "vgqa_train"]
    assert len(dataset) == 10 + 2 * 2
    assert [dataset[(i, 0)]["qid"] for i in range(10, 14)] == [17000, 17001, 17010, 17011]
    assert build("vqa", "val", vqa_use_vgqa=True).tables.names == ["vqav2_rest_val"]


def test_vqa_eval_splits(build, tokenizer):
    val = build("vqa", "val")
    assert [val[i]["qid"] for i in range(len(val))] == [15000, 15001, 15010, 15011]
    test = build("vqa", "test")
    assert test.tables.names == ["vqav2_test"]
    samples = [test[i] for i in range(len(test))]
    assert [s["qid"] for s in samples] == [16000, 16001, 16010, 16011]
    for sample in samples:
        assert sample["vqa_answer"] == sample["vqa_labels"] == sample["vqa_scores"] == []
        assert sample["text"].startswith("what is the ")
    batch = Collator(tokenizer)(samples[:2])
    assert batch["qid"].tolist() == [16000, 16001]
    assert batch["vqa_labels"] == [[], []]


# --- NLVR2 ---


def test_nlvr2_pairs_answers_and_table_names(build, tokenizer):
    train = build("nlvr2", "train")
    assert len(train) == 3 * 2
    samples = [train[(i, 0)] for i in range(len(train))]
    assert [s["answers"] for s in samples] == [1, 0, 1, 0, 1, 0]
    assert "image" not in samples[0]
    assert {"image_0", "image_1", "answers", "table_name", "text"} <= set(samples[0])

    val = build("nlvr2", "val")
    assert build("nlvr2", "test").tables.names == val.tables.names == ["nlvr2_dev", "nlvr2_test1"]
    samples = [val[i] for i in range(len(val))]
    assert [s["table_name"] for s in samples] == ["nlvr2_dev"] * 4 + ["nlvr2_test1"] * 4
    # val sample 5: nlvr2_test1 (key 20) row 0: image_0 has colour key 2000, image_1 key 2050
    assert torch.allclose(mean_rgb(samples[5]["image_0"]), torch.tensor(colour(2000), dtype=torch.float), atol=3)
    assert torch.allclose(mean_rgb(samples[5]["image_1"]), torch.tensor(colour(2050), dtype=torch.float), atol=3)
    assert torch.allclose(mean_rgb(samples[2]["image_0"]), torch.tensor(colour(1901), dtype=torch.float), atol=3)
    batch = Collator(tokenizer)(samples[3:6])
    assert batch["image_0"].shape == batch["image_1"].shape == (3, 3, 32, 32)
    assert batch["answers"].tolist() == [0, 1, 0]
    assert batch["table_name"] == ["nlvr2_dev", "nlvr2_test1", "nlvr2_test1"]


# --- SNLI-VE ---


def test_snli_hypothesis_stripped_premise_never_used(build):
    train = build("snli", "train", draw_false_text=1)
    assert len(train) == 3 * 3
    premises, hypotheses = set(), []
    for row in range(3):
        pairs = train.tables.value("sentences", row)
        premises.update(pair[0] for pair in pairs)
        hypotheses.extend(pair[1] for pair in pairs)
    assert all(h != h.strip() for h in hypotheses)  # the file pads them with spaces
    assert not premises & {h.strip() for h in hypotheses}
    for index in range(len(train)):
        sample = train[(index, index)]
        assert sample["text"] == hypotheses[index].strip()
        assert sample["labels"] == index % 3  # labels [0, 1, 2] per row
        assert sample["table_name"] == "snli_train"
        assert sample["false_text_0"] in {h.strip() for h in hypotheses[:3 * sample["img_index"]]
                                          + hypotheses[3 * sample["img_index"] + 3:]}
        assert sample["false_text_0"] not in premises

    val = build("snli", "val")
    assert [val[i]["table_name"] for i in range(len(val))] == ["snli_dev"] * 6 + ["snli_test"] * 6


# --- augmentation determinism ---


@pytest.fixture
def noise_root(tmp_path, write_table):
    """``vg.arrow`` with 4 rows of noise JPEGs (so crops and RandAugment ops show), 2 captions each."""
    write_table(str(tmp_path), "vg", {
        "image": [noise_jpeg(r) for r in range(4)],
        "caption": [[f"a dog on grass {r}", f"the red bird {r}"] for r in range(4)],
        "image_id": [str(r) for r in range(4)],
    })
    return str(tmp_path)


def assert_same_sample(a, b):
    assert set(a) == set(b)
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


def test_same_sample_key_gives_the_same_sample(noise_root, make_cfg, tokenizer):
    cfg = make_cfg(data_root=noise_root, train_transform_keys=["mae_randaug"], draw_false_image=1, draw_false_text=1)
    dataset = build_dataset("vg", "train", cfg, tokenizer)
    first = dataset[(3, 1234)]
    torch.manual_seed(99)  # the global RNG state must not matter ...
    random.seed(99)
    np.random.seed(99)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    assert_same_sample(first, dataset[(3, 1234)])
    # ... and is left as it was
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])
    assert_same_sample(first, build_dataset("vg", "train", cfg, tokenizer)[(3, 1234)])


def test_different_seeds_give_different_augmentations(noise_root, make_cfg, tokenizer):
    cfg = make_cfg(data_root=noise_root, train_transform_keys=["mae_randaug"])
    dataset = build_dataset("vg", "train", cfg, tokenizer)
    images = [dataset[(3, seed)]["image"] for seed in range(5)]
    distinct = [image for n, image in enumerate(images) if not any(torch.equal(image, o) for o in images[:n])]
    assert len(distinct) >= 4
    assert dataset[3]["seed"] is None


# --- broken images ---


def test_corrupt_jpeg_is_replaced_logged_and_counted(build, tokenizer, caplog):
    dataset = build("coco", "train")
    with caplog.at_level(logging.WARNING):
        sample = dataset[(6, 5)]  # train row 2, slot 0: not a JPEG
    assert sample["num_skipped_images"] >= 1
    assert sample["img_index"] not in (2, 7)
    assert sample["text"] == dataset.row_texts(sample["img_index"])[sample["cap_index"]]
    assert "table 'coco_caption_karpathy_train' row 2" in caplog.text
    assert "img_1_2.jpg" in caplog.text
    replay = dataset[(6, 5)]
    assert (replay["img_index"], replay["cap_index"], replay["num_skipped_images"]) == (
        sample["img_index"], sample["cap_index"], sample["num_skipped_images"])

    caplog.clear()
    dataset = build("coco", "train")  # a fresh dataset: each broken image is logged once per dataset
    with caplog.at_level(logging.WARNING):
        empty = dataset[(22, 5)]  # restval row 1 (global row 7), slot 1: empty image cell
    assert empty["num_skipped_images"] >= 1 and empty["img_index"] not in (2, 7)
    assert "table 'coco_caption_karpathy_restval' row 1" in caplog.text
    assert "img_2_1.jpg" in caplog.text and "empty" in caplog.text

    healthy = dataset[(0, 5)]
    assert healthy["num_skipped_images"] == 0
    batch = Collator(tokenizer)([sample, empty, healthy])
    assert batch["num_skipped_images"] == sample["num_skipped_images"] + empty["num_skipped_images"]
    assert 2 not in batch["img_index"].tolist() and 7 not in batch["img_index"].tolist()


def test_whole_epoch_over_coco_train_skips_exactly_the_broken_rows(build):
    dataset = build("coco", "train")
    samples = [dataset[(index, 100 + index)] for index in range(len(dataset))]
    broken = {index for index in range(len(dataset)) if int(dataset.sample_rows[index]) in (2, 7)}
    assert broken == {6, 7, 8, 21, 22, 23}
    for index, sample in enumerate(samples):
        assert sample["img_index"] not in (2, 7)
        if index in broken:
            assert sample["num_skipped_images"] >= 1
        else:
            assert sample["num_skipped_images"] == 0 and sample["raw_index"] == index


def test_broken_negative_images_are_replaced_and_counted(build, caplog):
    dataset = build("coco", "train", draw_false_image=1, train_transform_keys=["mae_test"])
    broken_rows = {2, 7}
    good = {row: dataset.load_image("image", row) for row in range(9) if row not in broken_rows}
    skipped = []
    with caplog.at_level(logging.WARNING):
        for seed in range(40):
            sample = dataset[(0, seed)]  # row 0 is fine: skips come from negatives only
            assert sample["img_index"] == 0
            assert any(torch.equal(sample["false_image_0"], image) for row, image in good.items() if row != 0)
            skipped.append(sample["num_skipped_images"])
    assert sum(skipped) > 0  # 2 of the 8 other rows are broken: about 1 draw in 4
    assert 1 <= caplog.text.count("cannot decode") <= len(broken_rows)  # each logged once, all counted


def test_every_image_broken_raises_instead_of_looping(tmp_path, make_cfg, tokenizer, write_table):
    write_table(str(tmp_path), "vg", {
        "image": [NOT_AN_IMAGE, b"", b"\x89PNG\r\n\x1a\n truncated"],
        "caption": [["a cat"], ["a dog"], ["two birds"]],
        "image_id": ["0", "1", "2"],
    })
    dataset = build_dataset("vg", "train", make_cfg(data_root=str(tmp_path)), tokenizer)
    with pytest.raises(RuntimeError, match="could not be decoded"):
        dataset[(0, 1)]


def test_all_negative_images_broken_raises(tmp_path, make_cfg, tokenizer, write_table, jpeg_bytes):
    write_table(str(tmp_path), "vg", {
        "image": [jpeg_bytes(32, 32, (1, 2, 3)), NOT_AN_IMAGE, b""],
        "caption": [["a cat"], ["a dog"], ["two birds"]],
        "image_id": ["0", "1", "2"],
    })
    dataset = build_dataset("vg", "train", make_cfg(data_root=str(tmp_path), draw_false_image=1), tokenizer)
    with pytest.raises(RuntimeError, match="could not be decoded"):
        dataset[(0, 1)]


# --- configuration errors ---


def test_missing_data_root_names_expected_paths_and_synth(tmp_path, make_cfg, tokenizer, monkeypatch):
    absent = tmp_path / "absent"
    with pytest.raises(MissingArrowFilesError) as info:
        build_dataset("coco", "train", make_cfg(data_root=str(absent)), tokenizer)
    message = str(info.value)
    assert str(absent / "coco_caption_karpathy_train.arrow") in message
    assert str(absent / "coco_caption_karpathy_restval.arrow") in message
    assert "vlkit data synth" in message

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="data_root is not set") as info:
        build_dataset("vqa", "train", make_cfg(data_root=""), tokenizer)
    assert "vqav2_train.arrow" in str(info.value) and "vlkit data synth" in str(info.value)


def test_wrong_column_layout_names_the_file_and_columns(tmp_path, make_cfg, tokenizer, write_table, jpeg_bytes):
    path = write_table(str(tmp_path), "vg", {
        "image": [jpeg_bytes(32, 32, (0, 0, 0))], "captions": [["a cat"]], "image_id": ["0"],
    })
    with pytest.raises(ValueError) as info:
        build_dataset("vg", "train", make_cfg(data_root=str(tmp_path)), tokenizer)
    message = str(info.value)
    assert path in message and "['caption']" in message and "'captions'" in message

    path = write_table(str(tmp_path), "vqav2_train", {
        "image": [jpeg_bytes(32, 32, (0, 0, 0))], "questions": [["why"]], "answers": [[["yes"]]],
        "answer_labels": [[[0]]], "question_id": [[1]],
    })
    with pytest.raises(ValueError) as info:
        build_dataset("vqa", "train", make_cfg(data_root=str(tmp_path)), tokenizer)
    assert path in str(info.value) and "['answer_scores']" in str(info.value)
