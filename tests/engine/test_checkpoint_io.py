"""Atomic checkpoint writing and validated reading."""
import os
import random
import re

import numpy as np
import pytest
import torch

from vlkit.engine.checkpoint import load_checkpoint, native_rng_state, portable_rng_state
from vlkit.utils.atomic import atomic_torch_save
from vlkit.utils.seeding import rng_state, seed_everything, set_rng_state


def test_a_write_failing_midway_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1, "weights": torch.ones(3)}, path)

    def save_half_then_fail(obj, handle):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"global_step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["last.ckpt"]
    old = load_checkpoint(path, required=("global_step",))
    assert old["global_step"] == 1 and torch.equal(old["weights"], torch.ones(3))


def test_stale_temp_files_from_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"left by kill -9")
    atomic_torch_save({"global_step": 3}, tmp_path / "last.ckpt")
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.ckpt"))):
        load_checkpoint(tmp_path / "none.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {corrupt} is corrupt")):
        load_checkpoint(corrupt)
    partial = tmp_path / "partial.ckpt"
    torch.save({"state_dict": {}}, partial)
    with pytest.raises(ValueError, match="lacks .*optimizer_states"):
        load_checkpoint(partial)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    seed_everything(7)
    state = portable_rng_state(rng_state())
    expected = (torch.rand(3), np.random.rand(), random.random())
    atomic_torch_save({"rng": state}, tmp_path / "rng.ckpt")
    loaded = load_checkpoint(tmp_path / "rng.ckpt", required=("rng",))
    seed_everything(99)
    set_rng_state(native_rng_state(loaded["rng"]))
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]
