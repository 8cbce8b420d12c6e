"""Bad raw input, interrupted and resumed conversions, ``vlkit data check``, the command line and
bounded memory."""
from __future__ import annotations

import json
import os
import tracemalloc

import pyarrow as pa
import pytest

import _raw_layouts as raw
from vlkit.cli import main
from vlkit.data.arrow import open_arrow
from vlkit.data.check import check_directory
from vlkit.data.convert import convert
from vlkit.data.convert.images import ImageReader
from vlkit.data.convert.inputs import RawInputError
from vlkit.data.convert.manifest import read_manifest, record_dataset
from vlkit.data.convert.writer import ArrowTableWriter
from vlkit.data.synthetic import CAPTION_SCHEMA


def sbu_root(path) -> str:
    """6 SBU inputs: image 2 missing, image 4 corrupt."""
    return raw.write_pairs_root(str(path), "annot.json", "images_train", 6, missing=2, corrupt=4)


# --- bad input ---


def test_missing_raw_file_names_it_where_it_was_expected_and_the_override(tmp_path):
    with pytest.raises(RawInputError) as err:
        convert("coco_karpathy", str(tmp_path), str(tmp_path / "out"), progress=False)
    expected = os.path.join(str(tmp_path), "karpathy", "dataset_coco.json")
    assert expected in str(err.value) and "--path karpathy=PATH" in str(err.value)
    with pytest.raises(RawInputError, match="unknown input key.*'karpathy'"):
        convert("coco_karpathy", str(tmp_path), str(tmp_path / "out"), paths={"karpaty": "x.json"})


def test_malformed_json_line_and_json_file_are_named(nlvr2_root, tmp_path):
    bad = tmp_path / "dev.json"
    bad.write_text(json.dumps(raw.nlvr_line("dev-8-0-0", "ok", "True")) + "\n{\"sentence\": oops\n")
    with pytest.raises(RawInputError, match=r"dev.json: line 2 is not valid json"):
        convert("nlvr2", nlvr2_root, str(tmp_path / "out"), paths={"dev": str(bad)}, progress=False)
    karpathy = tmp_path / "karpathy" / "dataset_coco.json"
    karpathy.parent.mkdir()
    karpathy.write_text('{"images": [\n  {"filename": "a.jpg",,}\n]}')
    with pytest.raises(RawInputError, match=r"dataset_coco.json: malformed json at line 2"):
        convert("coco_karpathy", str(tmp_path), str(tmp_path / "out"), progress=False)


def test_a_format_the_dataset_lacks_is_refused(nlvr2_root, tmp_path):
    with pytest.raises(ValueError, match="nlvr2 cannot emit format.*lxmert"):
        convert("nlvr2", nlvr2_root, str(tmp_path), formats=["arrow", "lxmert"])


def test_repeated_image_is_reported_as_a_duplicate_id(tmp_path):
    root = sbu_root(tmp_path / "raw")
    pairs = json.loads((tmp_path / "raw" / "annot.json").read_text())
    (tmp_path / "raw" / "annot.json").write_text(json.dumps(pairs + [pairs[0]]))
    section = convert("sbu", root, str(tmp_path / "out"), progress=False)
    assert section["tables"]["sbu_0"]["duplicate_ids"] == 1 and section["tables"]["sbu_0"]["rows"] == 5


# --- interruption ---


def interrupt_on_read(monkeypatch, call: int) -> None:
    original = ImageReader.read
    calls = {"n": 0}

    def read(self, path):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self, path)

    monkeypatch.setattr(ImageReader, "read", read)


def test_interrupted_run_leaves_no_loadable_half_table_and_resumes(tmp_path, monkeypatch):
    root, out = sbu_root(tmp_path / "raw"), str(tmp_path / "out")
    interrupt_on_read(monkeypatch, 4)  # during sbu_1 (inputs 2-3)
    with pytest.raises(KeyboardInterrupt):
        convert("sbu", root, out, shard_size=2, formats=["arrow", "albef"], progress=False)
    monkeypatch.undo()
    assert sorted(os.listdir(out)) == [".sbu.convert_state.json", "albef", "sbu_0.arrow"]
    assert os.listdir(os.path.join(out, "albef")) == [] and "sbu" not in read_manifest(out)["datasets"]
    before = os.stat(os.path.join(out, "sbu_0.arrow")).st_mtime_ns
    section = convert("sbu", root, out, shard_size=2, formats=["arrow", "albef"], resume=True, progress=False)
    assert section["resumed_tables"] == ["sbu_0"]
    assert os.stat(os.path.join(out, "sbu_0.arrow")).st_mtime_ns == before
    clean = convert("sbu", root, str(tmp_path / "clean"), shard_size=2, formats=["arrow", "albef"], progress=False)
    for name in ("sbu_0", "sbu_1", "sbu_2"):
        assert open_arrow(os.path.join(out, f"{name}.arrow")).equals(open_arrow(os.path.join(str(tmp_path / "clean"), f"{name}.arrow")))
    assert section["tables"] == clean["tables"] and section["skipped"] == clean["skipped"]
    assert json.load(open(os.path.join(out, "albef", "sbu.json"))) == json.load(
        open(os.path.join(str(tmp_path / "clean"), "albef", "sbu.json")))
    assert not os.path.exists(os.path.join(out, ".sbu.convert_state.json"))


def test_killed_writer_leaves_only_a_partial_file_that_check_flags_and_a_rerun_replaces(tmp_path, monkeypatch):
    root, out = sbu_root(tmp_path / "raw"), str(tmp_path / "out")
    interrupt_on_read(monkeypatch, 4)
    monkeypatch.setattr(ArrowTableWriter, "abort", lambda self: None)  # as if the process were killed
    with pytest.raises(KeyboardInterrupt):
        convert("sbu", root, out, shard_size=2, progress=False)
    monkeypatch.undo()
    assert os.path.exists(os.path.join(out, "sbu_1.arrow.partial")) and not os.path.exists(os.path.join(out, "sbu_1.arrow"))
    report = check_directory(out, progress=False)
    assert not report["ok"] and any("sbu_1.arrow.partial" in p for p in report["problems"])
    section = convert("sbu", root, out, shard_size=2, progress=False)  # no resume: starts over
    assert section["resumed_tables"] == [] and sorted(section["tables"]) == ["sbu_0", "sbu_1", "sbu_2"]
    assert check_directory(out, progress=False)["ok"]


# --- check ---


def test_check_reports_counts_coverage_and_problems(vqa_out, tmp_path):
    out, section = vqa_out
    report = check_directory(out, progress=False)
    assert report["ok"], report["problems"]
    train = report["tables"]["vqav2_train"]
    assert (train["rows"], train["images_present"], train["questions"], train["duplicate_ids"]) == (3, 3, 4, 0)
    assert train["vqa"] == {"questions_with_answer": 4, "questions": 4, "labels_used": 3, "vocabulary_size": 3,
                            "vocabulary_coverage": 1.0}
    bad = str(tmp_path)
    writer = ArrowTableWriter(os.path.join(bad, "coco_caption_karpathy_train.arrow"), CAPTION_SCHEMA)
    for image, image_id in ((raw.image_bytes(1), "a.jpg"), (b"", "b.jpg"), (raw.CORRUPT, "a.jpg")):
        writer.add({"image": image, "caption": ["x"], "image_id": image_id, "split": "train"})
    writer.close()
    record_dataset(bad, "coco_karpathy", {"tables": {"coco_caption_karpathy_train": {"file": "x", "rows": 4},
                                                     "coco_caption_karpathy_val": {"file": "y", "rows": 1}}})
    report = check_directory(bad, progress=False)
    table = report["tables"]["coco_caption_karpathy_train"]
    assert (table["images_present"], table["images_missing"], table["images_corrupt"]) == (1, 1, 1)
    assert table["duplicate_ids"] == 1 and table["duplicate_id_examples"] == ["a.jpg"]
    assert sorted(report["problems"]) == [
        "coco_caption_karpathy_train: 1 duplicate ids", "coco_caption_karpathy_train: 1 empty image cells",
        "coco_caption_karpathy_train: 1 images that do not decode",
        "coco_caption_karpathy_train: 3 rows, manifest.json (coco_karpathy) says 4",
        "coco_caption_karpathy_val: listed in manifest.json (coco_karpathy) but absent"]


def test_command_line_convert_and_check(tmp_path, capsys):
    root, out = sbu_root(tmp_path / "raw"), str(tmp_path / "out")
    assert main(["data", "convert", "sbu", "--root", root, "--out", out, "--shard-size", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "sbu_0" in printed and "'missing image': 1" in printed
    assert main(["data", "check", out, "--no-progress"]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert main(["data", "convert", "sbu", "--root", str(tmp_path / "nowhere"), "--out", out]) == 2
    assert "annot.json not found" in capsys.readouterr().err


# --- memory ---


def peak_python_bytes(root: str, out: str) -> int:
    tracemalloc.start()
    try:
        convert("sbu", root, out, progress=False, batch_rows=16, batch_bytes=2**18)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_the_dataset_grows(tmp_path):
    small = raw.write_pairs_root(str(tmp_path / "small"), "annot.json", "images_train", 40, -1, -1, noise_size=96)
    large = raw.write_pairs_root(str(tmp_path / "large"), "annot.json", "images_train", 400, -1, -1, noise_size=96)
    image_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(os.path.join(large, "images_train"))
                      for f in files)
    peak_python_bytes(small, str(tmp_path / "warm"))  # first-use allocations (imports, caches) out of the way
    growth = peak_python_bytes(large, str(tmp_path / "out_large")) - peak_python_bytes(small, str(tmp_path / "out_small"))
    assert image_bytes > 3 * 2**20
    assert growth < image_bytes / 4, (growth, image_bytes)
    assert open_arrow(os.path.join(str(tmp_path / "out_large"), "sbu_0.arrow")).num_rows == 400
    assert pa.total_allocated_bytes() < image_bytes / 4


def test_check_accepts_a_vqa_test_split_without_answers(tmp_path):
    """Test splits have no answers: rows whose answer lists are empty are fine there, not in val."""
    from vlkit.data.synthetic import VQA_SCHEMA

    for name in ("vqav2_test", "vqav2_test-dev", "vqav2_val"):
        writer = ArrowTableWriter(os.path.join(str(tmp_path), f"{name}.arrow"), VQA_SCHEMA)
        writer.add({"image": raw.image_bytes(1), "questions": ["what?"], "answers": [[]], "answer_labels": [[]],
                    "answer_scores": [[]], "image_id": 1, "question_id": [7], "split": name.split("_")[1]})
        writer.close()
    report = check_directory(str(tmp_path), progress=False)
    assert report["tables"]["vqav2_test"]["vqa"]["questions_with_answer"] == 0
    assert report["problems"] == ["vqav2_val: 1 questions without an answer label"]
