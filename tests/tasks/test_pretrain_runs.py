"""Whole pre-training runs through the command line, on the synthetic set."""
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from tests.tasks._runs import crash_and_resume, train_losses
from vlkit.cli import main
from vlkit.engine.logging import read_metrics
from vlkit.tasks.pretrain import PretrainTask

REPO = Path(__file__).resolve().parents[2]


def run(data_words, log_dir, *words):
    """``vlkit run with task_mlm_itm_mae tiny ...``; returns the run folder."""
    code = main(["run", "with", "task_mlm_itm_mae", "tiny", *data_words, f"log_dir={log_dir}",
                 "progress_bar=False", "log_every_n_steps=1", "per_gpu_batchsize=8", "batch_size=8",
                 "warmup_steps=1", "learning_rate=1e-3", *words])
    assert code == 0
    return sorted(Path(log_dir).glob("*/version_*"))[-1]


def test_resumed_run_continues_the_loss_sequence_exactly(data_words, tmp_path, monkeypatch):
    common = ["datasets=[coco]", "val_check_interval=3", "run_name=r", "max_steps=6"]
    whole, crashed, resumed = crash_and_resume(functools.partial(run, data_words), tmp_path, monkeypatch,
                                               PretrainTask, 5, *common)
    expected = train_losses(whole)
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]
    assert train_losses(crashed) == {step: expected[step] for step in (1, 2, 3, 4)}
    assert train_losses(resumed) == {step: expected[step] for step in (4, 5, 6)}


def corrupt_first_image(src: str, dst: Path, table: str) -> int:
    """Copy the synthetic set to ``dst`` with row 0 of ``table`` made undecodable; returns the
    number of captions of that row (the samples that point at it)."""
    dst.mkdir()
    for name in os.listdir(src):
        if name.endswith(".arrow"):
            os.symlink(os.path.join(src, name), dst / name)
    original = pa.ipc.open_file(pa.memory_map(os.path.join(src, f"{table}.arrow"))).read_all()
    images = original.column("image").to_pylist()
    images[0] = images[0][:40]  # a truncated JPEG
    broken = original.set_column(0, "image", pa.array(images, pa.binary()))
    os.remove(dst / f"{table}.arrow")
    with pa.OSFile(str(dst / f"{table}.arrow"), "wb") as sink, pa.ipc.new_file(sink, broken.schema) as writer:
        writer.write_table(broken)
    return len(set(original.column("caption")[0].as_py()))


def test_corrupt_jpeg_is_skipped_and_counted_in_the_run_metrics(synthetic, tmp_path, caplog):
    data = tmp_path / "data"
    captions = corrupt_first_image(synthetic["out_dir"], data, "coco_caption_karpathy_train")
    words = [f"data_root={data}", f"tokenizer={synthetic['tokenizer']}", f"vocab_size={synthetic['vocab_size']}"]
    # One epoch of MLM only (no negatives): every caption of the broken row is visited once.
    run_dir = run(words, tmp_path / "runs", "datasets=[coco]", "max_steps=None", "max_epoch=1",
                  "loss_names.itm=0", "loss_names.mae=0", "use_mae=False", "draw_false_image=0")
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["num_skipped_images"] >= captions
    logged = [r["num_skipped_images"] for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"]
    assert logged[-1] == summary["num_skipped_images"]
    assert "coco_caption_karpathy_train' row 0" in caplog.text


def test_entry_points_reject_an_unknown_key_before_running(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for command in ([sys.executable, "run.py"], [sys.executable, "-m", "vlkit", "run"]):
        done = subprocess.run([*command, "with", "tiny", f"log_dir={tmp_path}", "learnig_rate=1e-4"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2
        assert "did you mean 'learning_rate'" in done.stderr
    assert list(tmp_path.iterdir()) == []
