"""Caption converters (COCO / F30K Karpathy, VG, SBU, CC3M): schemas, rows, skips and manifest."""
from __future__ import annotations

import hashlib
import os

import pyarrow as pa

import _raw_layouts as raw
from vlkit.data.arrow import open_arrow
from vlkit.data.convert import convert
from vlkit.data.datasets import build_dataset
from vlkit.data.synthetic import CAPTION_SCHEMA, VG_SCHEMA


def table(out: str, name: str) -> pa.Table:
    return open_arrow(os.path.join(out, f"{name}.arrow"))


def test_coco_karpathy_tables_match_the_reference_layout_and_skip_bad_images(coco_out, coco_root):
    out, section = coco_out
    rows = {"train": 2, "restval": 1, "val": 1, "test": 1}
    for split, count in rows.items():
        written = table(out, f"coco_caption_karpathy_{split}")
        assert written.schema.equals(CAPTION_SCHEMA)
        assert written.num_rows == count == section["tables"][f"coco_caption_karpathy_{split}"]["rows"]
        assert set(written.column("split").to_pylist()) == {split}
    train = table(out, "coco_caption_karpathy_train").to_pylist()
    assert [r["image_id"] for r in train] == ["COCO_train2014_000000000009.jpg", "COCO_train2014_000000000025.jpg"]
    assert train[0]["caption"] == ["A dog number 9.", "A cat near 9."]
    with open(os.path.join(coco_root, "train2014", train[0]["image_id"]), "rb") as handle:
        assert train[0]["image"] == handle.read()
    skipped = {(s["table"], s["key"], s["reason"]) for s in section["skipped"]}
    assert skipped == {("coco_caption_karpathy_train", raw.MISSING_COCO, "missing image"),
                       ("coco_caption_karpathy_test", raw.CORRUPT_COCO, "corrupt image")}
    assert section["totals"] == {"inputs": 7, "rows": 5, "skipped": 2, "images_present": 5, "images_missing": 1,
                                 "images_corrupt": 1, "duplicate_ids": 0}
    karpathy = section["sources"]["karpathy"]
    with open(karpathy["path"], "rb") as handle:
        data = handle.read()
    assert karpathy["size"] == len(data) and karpathy["sha256"] == hashlib.sha256(data).hexdigest()
    assert section["vlkit_version"]


def test_converted_coco_loads_through_the_coco_dataset(coco_out, make_cfg, tokenizer):
    out, _ = coco_out
    dataset = build_dataset("coco", "train", make_cfg(data_root=out), tokenizer)
    assert len(dataset) == 3 * 2  # train (2 images) + restval (1), two captions each
    sample = dataset[0]
    assert sample["image"].shape == (3, 32, 32) and sample["text"] == "A dog number 9."


def test_f30k_karpathy(tmp_path):
    root = raw.write_f30k_root(str(tmp_path / "raw"))
    section = convert("f30k_karpathy", root, str(tmp_path / "out"), progress=False)
    assert {name: t["rows"] for name, t in section["tables"].items()} == {
        "f30k_caption_karpathy_train": 2, "f30k_caption_karpathy_val": 0, "f30k_caption_karpathy_test": 1}
    assert table(str(tmp_path / "out"), "f30k_caption_karpathy_test").column("image_id").to_pylist() == ["1005.jpg"]
    assert section["skipped_by_reason"] == {"missing image": 1, "corrupt image": 1}
    unchecked = convert("f30k_karpathy", root, str(tmp_path / "unchecked"), verify_images=False, progress=False)
    assert unchecked["skipped_by_reason"] == {"missing image": 1}  # without decoding, 1004 passes
    assert table(str(tmp_path / "unchecked"), "f30k_caption_karpathy_test").column("image").to_pylist()[0] == raw.CORRUPT


def test_vg_regions_become_captions_with_their_boxes(vg_root, tmp_path):
    section = convert("vg", vg_root, str(tmp_path), progress=False)
    vg = table(str(tmp_path), "vg")
    assert vg.schema.equals(VG_SCHEMA)
    first = vg.to_pylist()[0]
    assert {k: first[k] for k in ("caption", "x", "y", "width", "height", "image_id")} == {
        "caption": ["a red ball", "green grass"], "x": [0, 1], "y": [0, 2], "width": [10, 11], "height": [5, 6],
        "image_id": "1"}
    assert vg.column("image_id").to_pylist() == ["1", "2"]  # 2 is found in VG_100K_2
    assert section["images_without_regions"] == 1
    assert {s["key"]: s["reason"] for s in section["skipped"]} == {"3": "missing image", "4": "corrupt image"}


def test_sbu_is_sharded_by_inputs(tmp_path):
    root = raw.write_pairs_root(str(tmp_path / "raw"), "annot.json", "images_train", 6, missing=2, corrupt=4)
    section = convert("sbu", root, str(tmp_path / "out"), shard_size=4, workers=3, progress=False)
    assert {n: (t["inputs"], t["rows"]) for n, t in section["tables"].items()} == {"sbu_0": (4, 3), "sbu_1": (2, 1)}
    sbu_0 = table(str(tmp_path / "out"), "sbu_0")
    assert sbu_0.schema.equals(CAPTION_SCHEMA)
    assert sbu_0.column("image_id").to_pylist() == ["img_00000.jpg", "img_00001.jpg", "img_00003.jpg"]
    assert sbu_0.column("caption").to_pylist()[0] == ["caption number 0"]
    assert set(sbu_0.column("split").to_pylist()) == {"train"}
    one_thread = convert("sbu", root, str(tmp_path / "serial"), shard_size=4, workers=1, progress=False)
    assert one_thread["tables"] == section["tables"] and one_thread["skipped"] == section["skipped"]
    assert table(str(tmp_path / "serial"), "sbu_0").equals(sbu_0)


def test_cc3m_json_train_and_official_tsv_val(tmp_path):
    root = raw.write_pairs_root(str(tmp_path / "raw"), "train_annot.json", "images_train", 5, missing=1, corrupt=3)
    raw.write_cc3m_tsv_root(root)
    section = convert("cc3m", root, str(tmp_path / "out"), shard_size=2, progress=False, formats=["arrow", "albef"])
    assert {n: t["rows"] for n, t in section["tables"].items()} == {
        "conceptual_caption_train_0": 1, "conceptual_caption_train_1": 1, "conceptual_caption_train_2": 1,
        "conceptual_caption_val_0": 1, "conceptual_caption_val_1": 1}
    val = [row for k in range(2) for row in table(str(tmp_path / "out"), f"conceptual_caption_val_{k}").to_pylist()]
    assert [(r["image_id"], r["caption"]) for r in val] == [("0.jpg", ["a photo of a dog"]),
                                                          ("000002.png", ["sunset over hills"])]
    assert section["json_files"] == {"albef/cc3m_train.json": 3, "albef/cc3m_val.json": 2}
    assert section["splits_absent"] == []
