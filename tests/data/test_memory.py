"""Host memory does not grow with the size of the Arrow files or the number of data-loader workers.

A ~40 MB caption table is opened, indexed and read. Memory-mapped file pages are counted by the
kernel as file-backed (``RssFile``), shared with the page cache and every worker; a copy of the
data into the process would show up as anonymous memory (``RssAnon``), which is what is checked.
"""
import gc
import io
import os
import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vlkit.data.datasets import build_dataset

ROWS = 2000
PADDING_BYTES = 16_000
"""Random bytes after each JPEG's end marker (decoders ignore them): ~20 KB per image cell."""
MAPPING_CHECK_EVERY = 150
"""Keys whose index is a multiple of this also report the worker's mapping of the file (smaps)."""

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")


def rss() -> dict[str, int]:
    """``RssAnon`` and ``RssFile`` of this process in bytes, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def mapped(path: str) -> dict[str, int]:
    """``Rss`` and ``Anonymous`` (private copies) in bytes of this process's mappings of ``path``."""
    values = {"Rss": 0, "Anonymous": 0}
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                inside = line.rstrip("\n").endswith(path)
            elif inside and first[:-1] in values:
                values[first[:-1]] += int(line.split()[1]) * 1024
    return values


def noise_jpeg(seed: int, side: int = 64) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def big_root(tmp_path_factory):
    """``vg.arrow`` with ``ROWS`` rows of unique ~20 KB image cells, one caption each."""
    root = tmp_path_factory.mktemp("big")
    bases = [noise_jpeg(seed) for seed in range(16)]
    rng = np.random.default_rng(0)
    schema = pa.schema([("image", pa.binary()), ("caption", pa.list_(pa.string())), ("image_id", pa.string())])
    with pa.OSFile(os.path.join(root, "vg.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for start in range(0, ROWS, 250):  # batch by batch: this process never holds the whole table
            rows = range(start, min(start + 250, ROWS))
            writer.write_batch(pa.record_batch([
                pa.array([bases[row % 16] + rng.bytes(PADDING_BYTES) for row in rows], pa.binary()),
                pa.array([[f"a dog on grass number {row}"] for row in rows]),
                pa.array([str(row) for row in rows]),
            ], schema=schema))
    gc.collect()
    pa.default_memory_pool().release_unused()
    return str(root)


@pytest.fixture(scope="module")
def big_file(big_root):
    return os.path.join(big_root, "vg.arrow")


@pytest.fixture(scope="module")
def file_size(big_file):
    size = os.path.getsize(big_file)
    assert size > ROWS * PADDING_BYTES
    return size


@pytest.fixture
def big_cfg(make_cfg, big_root):
    return make_cfg(data_root=big_root, train_transform_keys=["mae_test"])


def test_opening_indexing_and_reading_does_not_copy_the_file(make_cfg, big_cfg, tokenizer, big_file, file_size):
    # first-use allocations (torch, PIL, tokenizer) on the small conftest table, not the big file,
    # whose copy, if any, must not land in memory an allocator keeps from a warm-up
    small_cfg = make_cfg(train_transform_keys=["mae_test"])
    build_dataset("vg", "train", small_cfg, tokenizer)[(0, 0)]
    gc.collect()

    before, arrow_before = rss(), pa.total_allocated_bytes()
    dataset = build_dataset("vg", "train", big_cfg, tokenizer)
    assert len(dataset) == ROWS
    read = sum(len(dataset.tables.value("image", row)) for row in range(ROWS))  # every image cell
    assert read > ROWS * PADDING_BYTES
    for index in range(0, ROWS, 100):
        assert dataset[(index, index)]["text"] == f"a dog on grass number {index}"
    after, arrow_after = rss(), pa.total_allocated_bytes()

    assert after["RssAnon"] - before["RssAnon"] < file_size / 8
    assert arrow_after - arrow_before < file_size / 100  # Arrow's own pools: no buffer was copied
    # the cells were read through the mapping: its pages are resident, none privately copied
    mapping = mapped(big_file)
    assert mapping["Rss"] >= read and mapping["Anonymous"] == 0
    assert after["RssFile"] - before["RssFile"] >= read


class RssProbe(Dataset):
    """Wraps a dataset; each item reports its worker's RSS growth since the worker's first item, and
    now and then how much of ``path`` the worker has read and has resident through its mapping."""

    def __init__(self, dataset, path: str):
        self.dataset = dataset
        self.path = path
        self.start = None  # set in each worker process (forked copies start from None)
        self.read = 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        if self.start is None:
            self.start = rss()
        sample = self.dataset[key]
        self.read += len(self.dataset.tables.value("image", sample["img_index"]))
        now = rss()
        item = {
            "pid": os.getpid(),
            "img_index": sample["img_index"],
            "image_sum": float(sample["image"].sum()),
            "anon": now["RssAnon"],
            "anon_growth": now["RssAnon"] - self.start["RssAnon"],
            "arrow_allocated": pa.total_allocated_bytes(),
        }
        if key[0] % MAPPING_CHECK_EVERY == 0:  # reading smaps takes tens of ms: only sometimes
            item.update(read=self.read, mapping=mapped(self.path))
        return item


def as_list(batch):
    return batch


def test_loader_workers_share_the_mapping(make_cfg, big_root, tokenizer, big_file, file_size):
    parent_start, arrow_start = rss()["RssAnon"], pa.total_allocated_bytes()
    cfg = make_cfg(data_root=big_root, train_transform_keys=["mae_randaug"])
    dataset = build_dataset("vg", "train", cfg, tokenizer)
    keys = [(index, index) for index in range(0, ROWS, 3)]  # a subset spread over the whole file
    loader = DataLoader(RssProbe(dataset, big_file), batch_size=50, sampler=keys, num_workers=2,
                        multiprocessing_context="fork", collate_fn=as_list)
    parent_before = rss()
    items = [item for batch in loader for item in batch]
    parent_growth = rss()["RssAnon"] - parent_before["RssAnon"]

    assert [item["img_index"] for item in items] == [index for index, _ in keys]
    pids = {item["pid"] for item in items}
    assert len(pids) == 2 and os.getpid() not in pids
    for pid in pids:
        own = [item for item in items if item["pid"] == pid]
        assert len(own) > len(keys) / 3
        assert max(item["anon_growth"] for item in own) < file_size / 8
        # nor did the worker inherit a copy: forked, it starts with the parent's anonymous memory
        assert max(item["anon"] for item in own) - parent_start < file_size / 8
        assert max(item["arrow_allocated"] for item in own) - arrow_start < file_size / 100
        checks = [item for item in own if "mapping" in item]
        assert checks and checks[-1]["read"] > file_size / 10
        for item in checks:  # what the worker read is resident in the shared mapping, not copied
            assert item["mapping"]["Rss"] >= item["read"] and item["mapping"]["Anonymous"] == 0
    assert parent_growth < file_size / 8

    # the workers built exactly what this process builds for the same keys (augmentation included)
    for position in (0, 333, len(keys) - 1):
        assert items[position]["image_sum"] == float(dataset[keys[position]]["image"].sum())


def test_pickled_dataset_is_small_and_equivalent(big_cfg, tokenizer, file_size):
    """What a spawn / forkserver worker receives: paths and the index, not the image bytes."""
    dataset = build_dataset("vg", "train", big_cfg, tokenizer)
    payload = pickle.dumps(dataset)
    assert len(payload) < file_size / 100
    copy = pickle.loads(payload)
    assert len(copy) == ROWS
    for key in ((5, 1), (1999, 2)):
        original, restored = dataset[key], copy[key]
        assert torch.equal(original["image"], restored["image"])
        assert original["text"] == restored["text"]
        assert torch.equal(original["text_ids"], restored["text_ids"])
