"""Memory-mapped Arrow access: round trip, lazy concatenation, missing shards, list lengths."""
import logging
import os
import pickle

import pyarrow as pa
import pytest

from vlkit.data.arrow import ArrowTables, MissingArrowFilesError, open_arrow

COLUMNS = {
    "image": [b"\x00\x01", b"", b"jpeg-bytes", None, b"\xff" * 10],
    "caption": [["a", "b", "a"], [], None, ["c"], ["d", "d", "d", "e"]],
    "image_id": [10, 11, 12, 13, 14],
}


def test_round_trip_values_equal_across_record_batches(tmp_path, write_table):
    write_table(str(tmp_path), "t", COLUMNS, rows_per_batch=2)
    tables = ArrowTables(str(tmp_path), ["t"])
    assert tables.num_rows == 5
    for column, values in COLUMNS.items():
        assert [tables.value(column, row) for row in range(5)] == values
    assert tables.list_lengths("caption").tolist() == [3, 0, 0, 1, 4]
    assert tables.distinct_list_lengths("caption").tolist() == [2, 0, 0, 1, 2]


def test_open_is_memory_mapped_not_copied(tmp_path, write_table):
    write_table(str(tmp_path), "big", {"image": [os.urandom(4096) for _ in range(2000)]})
    before = pa.total_allocated_bytes()
    tables = ArrowTables(str(tmp_path), ["big"])
    assert tables.value("image", 1999) is not None
    assert pa.total_allocated_bytes() - before < 100_000  # the 8 MB of image bytes stay on disk


def test_multi_file_concat_knows_each_rows_table(tmp_path, write_table, caption_table):
    write_table(str(tmp_path), "first", caption_table(1, 3))
    write_table(str(tmp_path), "second", caption_table(2, 2))
    tables = ArrowTables(str(tmp_path), ["first", "second"])
    assert tables.num_rows == 5
    assert [tables.table_name(row) for row in range(5)] == ["first"] * 3 + ["second"] * 2
    assert tables.value("image_id", 3) == "img_2_0.jpg"
    assert tables.locate(4) == (1, 1)
    with pytest.raises(IndexError, match="row 5"):
        tables.value("image_id", 5)


def test_missing_shard_is_skipped_with_a_warning(tmp_path, write_table, caption_table, caplog):
    write_table(str(tmp_path), "shard_0", caption_table(1, 2))
    write_table(str(tmp_path), "shard_2", caption_table(2, 3))
    with caplog.at_level(logging.WARNING):
        tables = ArrowTables(str(tmp_path), ["shard_0", "shard_1", "shard_2"])
    assert str(tmp_path / "shard_1.arrow") in caplog.text
    assert tables.names == ["shard_0", "shard_2"]
    assert tables.table_name(2) == "shard_2"  # the reference misaligned names after a gap


def test_no_file_at_all_names_the_paths_and_the_synth_command(tmp_path):
    with pytest.raises(MissingArrowFilesError) as info:
        ArrowTables(str(tmp_path), ["coco_caption_karpathy_train", "coco_caption_karpathy_restval"])
    message = str(info.value)
    assert str(tmp_path / "coco_caption_karpathy_train.arrow") in message
    assert str(tmp_path / "coco_caption_karpathy_restval.arrow") in message
    assert "vlkit data synth --out DIR" in message


def test_pickle_reopens_by_path_instead_of_copying_data(tmp_path, write_table):
    write_table(str(tmp_path), "big", {"image": [os.urandom(4096) for _ in range(500)]})
    tables = ArrowTables(str(tmp_path), ["big"])
    payload = pickle.dumps(tables)
    assert len(payload) < 1000
    assert pickle.loads(payload).value("image", 7) == tables.value("image", 7)


def test_missing_column_and_unreadable_file_are_named(tmp_path, write_table):
    path = write_table(str(tmp_path), "t", {"image": [b"x"]})
    with pytest.raises(ValueError, match=r"t\.arrow lacks column\(s\) \['caption'\]"):
        ArrowTables(str(tmp_path), ["t"]).require_columns(["image", "caption"])
    with open(path, "wb") as broken:
        broken.write(b"not arrow at all")
    with pytest.raises(ValueError, match="t.arrow is not a readable Arrow IPC file"):
        open_arrow(path)


def test_distinct_lengths_step_through_long_columns(tmp_path, write_table, monkeypatch):
    import vlkit.data.arrow as arrow

    monkeypatch.setattr(arrow, "ROWS_PER_DISTINCT_STEP", 3)
    captions = [[str(r % 4)] * (r % 3) + ["x"] for r in range(10)]
    write_table(str(tmp_path), "t", {"caption": captions})
    expected = [len(set(row)) for row in captions]
    assert ArrowTables(str(tmp_path), ["t"]).distinct_list_lengths("caption").tolist() == expected
