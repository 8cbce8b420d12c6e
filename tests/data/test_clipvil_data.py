"""CLIP-ViL's data: answer normalisation, LXMERT json, the resize/pad canvas and aspect-ratio groups."""
import json
from collections import Counter

import pytest
import torch
from PIL import Image

from vlkit.data.canvas import ResizePadNormalize, resized_size
from vlkit.data.lxmert import AnswerTable, LxmertFormatError, image_path, normalize_answer, pretrain_sentences
from vlkit.data.transforms import CLIP_MEAN, CLIP_STD
from vlkit.data.samplers import AspectRatioGroupedSampler, aspect_ratio_groups


@pytest.mark.parametrize("raw,normal", [("The Man.", "man"), ("a woman", "woman"), ("Two", "2"), ("grey", "gray"),
                                        ("an apple.", "apple"), ("the red one", "red one"), ("ten", "10")])
def test_answers_are_normalised_as_lxmert(raw, normal):
    assert normalize_answer(raw) == normal


def test_pretraining_json_is_flattened_with_normalised_labels(tmp_path):
    path = tmp_path / "mscoco_train.json"
    path.write_text(json.dumps([{"img_id": "COCO_train2014_000000000007",
                                 "sentf": {"mscoco": ["a cat"], "vqa": ["how many?", "what color?"]},
                                 "labelf": {"vqa": [{"Two": 1.0, "unknown": 0.3}, {"grey": 0.6}]}}]))
    table = AnswerTable(["gray", "2"])
    sentences = pretrain_sentences([str(path)], table)
    assert [(s.uid, s.label) for s in sentences] == [
        ("COCO_train2014_000000000007_mscoco_000", None), ("COCO_train2014_000000000007_vqa_000", {1: 1.0}),
        ("COCO_train2014_000000000007_vqa_001", {0: 0.6})]
    assert len(pretrain_sentences([str(path)], table, skip_sources=["vqa"])) == 1
    assert image_path("COCO_val2014_000000000042", "data") == "data/mscoco/val2014/COCO_val2014_000000000042.jpg"
    assert image_path("2345", "data") == "data/vg_raw_images/VG_100K/2345.jpg"
    path.write_text(json.dumps([{"img_id": "x", "sentf": {"vqa": ["q"]}, "labelf": {"vqa": []}}]))
    with pytest.raises(LxmertFormatError, match="entry 0.*1 sentences"):
        pretrain_sentences([str(path)], table)


@pytest.mark.parametrize("size,resized", [((500, 300), (640, 384)), ((300, 500), (384, 640)), ((800, 400), (640, 320)),
                                          ((1000, 200), (640, 128)), ((100, 100), (384, 384))])
def test_resize_keeps_the_short_side_at_min_and_the_long_side_within_max(size, resized):
    assert resized_size(*size, 384, 640) == resized


def test_images_are_padded_onto_the_canvas_of_their_orientation():
    transform = ResizePadNormalize(64, 96)
    wide, mask = transform(Image.new("RGB", (120, 60), (255, 255, 255)))
    assert wide.shape == (3, 64, 96) and mask.shape == (64, 96)
    assert mask.sum() == 48 * 96 and mask[:8].sum() == 0 and mask[8:56].all()  # 96x48 centred: 8 rows above
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    assert torch.allclose(wide[:, 30, 50], (1 - mean) / std) and torch.allclose(wide[:, 0, 0], -mean / std)
    tall, tall_mask = transform(Image.new("RGB", (50, 50)))
    assert tall.shape == (3, 96, 64) and tall_mask.sum() == 64 * 64  # square: portrait canvas
    with pytest.raises(ValueError, match="multiples of 32"):
        ResizePadNormalize(60, 96)


def test_group_edges_follow_the_factor():
    assert aspect_ratio_groups([0.5, 0.99, 1.0, 2.0], 0).tolist() == [0, 0, 1, 1]
    assert aspect_ratio_groups([0.4, 0.5, 1.0, 1.9, 2.0, 3.0], 5).tolist() == [0, 1, 6, 10, 11, 11]


def _batches(sampler, batch):
    keys = [index for index, _ in sampler]
    return [keys[i:i + batch] for i in range(0, len(keys), batch)]


@pytest.mark.parametrize("world", [1, 2])
def test_grouped_batches_have_one_orientation_and_cover_every_example(world):
    groups = [0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1]  # 4 landscape, 7 portrait
    seen = Counter()
    for rank in range(world):
        sampler = AspectRatioGroupedSampler(list(range(11)), batch_size=3, groups=groups, num_replicas=world,
                                            rank=rank, seed=5)
        sampler.set_epoch(2)
        batches = _batches(sampler, 3)
        assert len(sampler) == 3 * len(batches) == sampler.samples_per_epoch
        for batch in batches:
            assert len(batch) == 3 and len({groups[i] for i in batch}) == 1
        seen.update(i for batch in batches for i in batch)
    assert set(seen) == set(range(11))
    assert sum(seen.values()) == (15 if world == 1 else 18)  # groups topped up to 6 + 9, then chunks for 2 ranks


def test_grouped_sampler_resumes_mid_epoch():
    groups = [0, 1] * 10
    full = AspectRatioGroupedSampler(list(range(20)), batch_size=4, groups=groups, seed=1)
    full.set_epoch(1)
    order = [index for index, _ in full]
    full.mark_consumed(8)
    resumed = AspectRatioGroupedSampler(list(range(20)), batch_size=4, groups=groups, seed=1)
    resumed.load_state_dict(full.state_dict())
    assert [index for index, _ in resumed] == order[8:]
