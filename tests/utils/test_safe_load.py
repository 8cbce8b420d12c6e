"""Reading user files without running their code: weights-only by default, full unpickling only
with trust_checkpoint, and errors that name the file, the setting and what is wrong."""
import argparse
import os
import sys
from pathlib import Path

import pytest
import torch

from vlkit.models.checkpoints import read_checkpoint
from vlkit.utils.safe_load import CheckpointReadError, UntrustedCheckpointError, safe_jit_state_dict, safe_torch_load

sys.path.insert(0, str(Path(__file__).parent.parent / "models"))

UNPICKLED = []


def _record(tag):
    UNPICKLED.append(tag)
    return tag


class Recorder:
    """Records being unpickled: rebuilding it calls ``_record``."""

    def __reduce__(self):
        return _record, ("ran",)


@pytest.fixture()
def files(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": Recorder()}, hostile)
    namespace = tmp_path / "mae.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1), "epoch": 3}, namespace)
    return {name: str(path) for name, path in locals().items() if isinstance(path, Path)}


def test_a_pickled_object_is_refused_without_trust_and_not_run(files):
    UNPICKLED.clear()
    with pytest.raises(UntrustedCheckpointError) as error:
        read_checkpoint(files["hostile"], "load_path")
    message = str(error.value)
    assert files["hostile"] in message and "load_path=" in message
    assert "_record" in message and "trust_checkpoint=true" in message
    assert UNPICKLED == []


def test_trust_checkpoint_unpickles_it(files):
    UNPICKLED.clear()
    checkpoint = read_checkpoint(files["hostile"], "load_path", trust_checkpoint=True)
    assert UNPICKLED == ["ran"] and checkpoint["extra"] == "ran"
    assert torch.equal(checkpoint["state_dict"]["w"], torch.ones(2))


def test_harmless_known_types_load_without_trust(files):
    checkpoint = safe_torch_load(files["namespace"], "pretrain_path")
    assert checkpoint["args"].lr == 0.1 and checkpoint["epoch"] == 3


@pytest.mark.parametrize("name, why", [
    ("truncated", "truncated or corrupt"),
    ("text", "is not a PyTorch checkpoint (it starts with b'not '"),
    ("empty", "is empty"),
])
def test_damaged_files_name_the_file_the_key_and_the_problem(files, name, why):
    with pytest.raises(CheckpointReadError) as error:
        read_checkpoint(files[name], "load_path")
    message = str(error.value)
    assert f"load_path={files[name]!r}" in message and why in message
    assert "PytorchStreamReader" not in message.split("(")[0]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain_path=.*no such file"):
        safe_torch_load(tmp_path / "absent.pth", "pretrain_path")


def test_a_truncated_load_path_fails_clearly_when_building_a_model(files):
    from _model_toys import tiny_cfg
    from vlkit.models.build import build_model

    with pytest.raises(CheckpointReadError, match=r"load_path='.*truncated.ckpt' \(\d+ bytes\) is not a readable"):
        build_model(tiny_cfg(load_path=files["truncated"]))


def test_damaged_torchscript_archive(files, tmp_path):
    module = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "RN50.pt"
    module.save(str(path))
    assert set(safe_jit_state_dict(path, "clip_path")) == {"weight", "bias"}
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(CheckpointReadError, match="clip_path=.*RN50.pt"):
        safe_jit_state_dict(path, "clip_path")
