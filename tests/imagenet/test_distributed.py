"""main_finetune.py under torchrun with two gloo processes: evaluation counts each of the 45
validation images once and gives the single-process numbers; training with half the batch per
process gives the single-process weights."""
import json
import os

import pytest
import torch

from conftest import HERE, REPO, VAL_IMAGES, parse, tiny_args
from vlkit.engine.logging import read_metrics
from vlkit.cli.imagenet import main
from vlkit.imagenet.models import HEAD_INIT_STD
from vlkit.utils.distributed import launch_local


def _eval_record(out):
    (record,) = [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == "eval"]
    return record


@pytest.mark.parametrize("sharded", [True, False], ids=["dist_eval", "every_rank_all"])
def test_two_processes_count_every_image_once_and_match_one_process(trained, tree, tmp_path, monkeypatch, sharded):
    checkpoint = trained[0] / "checkpoint-last.pth"
    flags = ["--eval", "--resume", checkpoint, "--batch_size", 4] + (["--dist_eval"] if sharded else [])
    single = main(parse(tiny_args(tree, tmp_path / "single", *flags)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(HERE)]))
    assert VAL_IMAGES % 2 == 1
    assert launch_local(2, [str(REPO / "main_finetune.py"), *tiny_args(tree, tmp_path / "ddp", *flags)]) == 0
    record = _eval_record(tmp_path / "ddp")
    assert record["val/count"] == single["count"] == VAL_IMAGES
    assert record["val/acc1"] == single["acc1"] and record["val/acc5"] == single["acc5"]
    assert record["val/loss"] == pytest.approx(single["loss"], rel=1e-6)
    assert 0 < single["acc1"] < 100


def test_two_processes_train_like_one_with_the_combined_batch(tree, tmp_path, monkeypatch):
    # Augmentations are seeded per sample and the two ranks' batches of 16 are the single process's
    # batch of 32 (same shuffled order), so with no drop path the weights must agree.
    flags = ["--epochs", 1, "--warmup_epochs", 0, "--lr", "1e-3", "--drop_path", 0, "--dist_eval"]
    main(parse(tiny_args(tree, tmp_path / "single", "--batch_size", 32, *flags)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(HERE)]))
    words = tiny_args(tree, tmp_path / "ddp", "--batch_size", 16, *flags)
    assert launch_local(2, [str(REPO / "main_finetune.py"), *words]) == 0
    logs = [json.loads((tmp_path / name / "log.txt").read_text()) for name in ("single", "ddp")]
    assert logs[1]["train_loss"] == pytest.approx(logs[0]["train_loss"], rel=1e-5)
    assert logs[1]["test_count"] == logs[0]["test_count"] == VAL_IMAGES
    weights = [torch.load(tmp_path / name / "checkpoint-last.pth", weights_only=True)["model"]
               for name in ("single", "ddp")]
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-4, atol=1e-6)
    assert weights[0]["head.weight"].abs().max() > 50 * HEAD_INIT_STD  # trained, not the fresh head
