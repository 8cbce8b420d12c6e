"""A short CPU run of the recipe on the synthetic ImageFolder: it learns, writes the reference's
outputs, ``--eval --resume`` reproduces its evaluation, and a resumed run continues exactly."""
import json

import pytest
import torch
from PIL import Image

from conftest import EPOCHS, NUM_CLASSES, VAL_IMAGES, parse, run_crashing_in_epoch, tiny_args
from vlkit.cli import main as vlkit_main
from vlkit.engine.logging import read_metrics
from vlkit.cli.imagenet import main

REFERENCE_LOG_KEYS = {"train_lr", "train_loss", "test_loss", "test_acc1", "test_acc5", "epoch", "n_parameters"}


def _log(out):
    return [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]


def test_a_short_run_reaches_top1_well_above_chance(trained):
    out, summary = trained
    chance = 100.0 / NUM_CLASSES
    log = _log(out)
    assert summary["max_accuracy"] >= 4 * chance, log
    assert log[-1]["test_loss"] < log[0]["test_loss"] < log[0]["train_loss"] + 1
    assert log[-1]["train_loss"] < log[0]["train_loss"]


def test_outputs_log_every_epoch_keep_best_and_last_and_plot_the_curves(trained):
    out, summary = trained
    log = _log(out)
    assert [entry["epoch"] for entry in log] == list(range(EPOCHS))
    assert all(REFERENCE_LOG_KEYS <= set(entry) and entry["test_count"] == VAL_IMAGES for entry in log)
    val = [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == "val"]
    assert [r["val/acc1"] for r in val] == [entry["test_acc1"] for entry in log]
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == "train"]
    assert train and all(0 < r["train/lr"] <= 3e-3 for r in train)
    best = torch.load(out / "checkpoint-best.pth", weights_only=True)
    last = torch.load(out / "checkpoint-last.pth", weights_only=True)
    best_epoch = max(range(EPOCHS), key=lambda e: (log[e]["test_acc1"], -e))
    assert best["epoch"] == best_epoch and best["test_stats"]["acc1"] == summary["max_accuracy"]
    assert last["epoch"] == EPOCHS - 1 and set(last) >= {"model", "optimizer", "epoch", "scaler", "args"}
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    with Image.open(out / "plots" / "curves.png") as plot:
        assert plot.format == "PNG" and plot.width > 400


def test_eval_resume_through_vlkit_imagenet_reproduces_the_last_evaluation(trained, tree, tmp_path):
    out, _ = trained
    words = tiny_args(tree, tmp_path / "eval", "--eval", "--resume", out / "checkpoint-last.pth", "--batch_size", 7)
    assert vlkit_main(["imagenet", *words]) == 0
    (record,) = [r for r in read_metrics(tmp_path / "eval" / "metrics.jsonl") if r["event"] == "eval"]
    last = _log(out)[-1]
    assert (record["val/count"], record["val/num_skipped"]) == (VAL_IMAGES, 0)
    assert record["val/acc1"] == pytest.approx(last["test_acc1"], abs=1e-9)
    assert record["val/acc5"] == pytest.approx(last["test_acc5"], abs=1e-9)
    assert record["val/loss"] == pytest.approx(last["test_loss"], rel=1e-5)
    assert not (tmp_path / "eval" / "checkpoint-last.pth").exists()


def test_eval_with_finetune_keeps_the_checkpoints_head(trained, tree, tmp_path):
    out, _ = trained
    stats = main(parse(tiny_args(tree, tmp_path, "--eval", "--finetune", out / "checkpoint-last.pth")))
    assert stats["acc1"] == pytest.approx(_log(out)[-1]["test_acc1"], abs=1e-9)


def test_a_run_resumed_after_a_crash_continues_exactly(tree, tmp_path, monkeypatch):
    words = ("--batch_size", 32, "--epochs", 3, "--warmup_epochs", 1, "--lr", "2e-3", "--mixup", 0.8,
             "--cutmix", 1.0, "--accum_iter", 2)
    straight = main(parse(tiny_args(tree, tmp_path / "straight", *words)))

    run_crashing_in_epoch(monkeypatch, tiny_args(tree, tmp_path / "crashed", *words), 2)
    assert torch.load(tmp_path / "crashed" / "checkpoint-last.pth", weights_only=True)["epoch"] == 1
    resumed = main(parse(tiny_args(tree, tmp_path / "crashed", *words, "--resume",
                                   tmp_path / "crashed" / "checkpoint-last.pth")))
    assert resumed["acc1"] == straight["acc1"]
    assert resumed["loss"] == pytest.approx(straight["loss"], rel=1e-5)
    logs = [_log(tmp_path / name) for name in ("straight", "crashed")]
    assert [entry["epoch"] for entry in logs[1]] == [0, 1, 2]
    assert logs[1][2]["train_loss"] == pytest.approx(logs[0][2]["train_loss"], rel=1e-5)
    assert logs[1][2]["train_lr"] == pytest.approx(logs[0][2]["train_lr"], rel=1e-9)
