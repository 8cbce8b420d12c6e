"""main_finetune.py --strategy fsdp on two gloo processes: the per-iteration losses, evaluation
and checkpoint of --strategy ddp (clipping, activation checkpointing, and accumulation over 4
micro-batches of the 18 per epoch, so 2 are left over in each); its checkpoint loads in one
process, a one-process checkpoint resumes under fsdp on two, and a sharded evaluation does not
hang where the processes hold different batch counts or one gets a batch of unreadable files."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import HERE, REPO, VAL_IMAGES, parse, run_crashing_in_epoch, tiny_args
from vlkit.cli.imagenet import _load_weights, _resume_training, main
from vlkit.engine.logging import read_metrics
from vlkit.imagenet.models import build_classifier
from vlkit.imagenet.recipe import build_optimizer

RECIPE = ["--epochs", 2, "--warmup_epochs", 1, "--lr", "1e-3", "--drop_path", 0, "--dist_eval", "--accum_iter", 4,
          "--clip_grad", "0.05"]
LAUNCH_TIMEOUT_S = 240


def _launch(runs, folder):
    """The runs (word lists) one after another in one torchrun job of two processes; a hang fails."""
    (folder / "runs.json").write_text(json.dumps([[str(word) for word in words] for words in runs]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                            str(HERE / "_fsdp_runs.py"), str(folder / "runs.json")], env=env)
    try:
        return job.wait(LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        job.terminate()  # torchrun stops its workers on SIGTERM
        job.wait()
        raise


def _records(out, event):
    return [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == event]


def _losses(out):
    return {r["step"]: r["train/loss"] for r in _records(out, "train")}


def _checkpoint(out):
    return torch.load(out / "checkpoint-last.pth", weights_only=True)


def _damaged_copy(tree, folder):
    """``tree`` with two unreadable validation files at positions 1 and 3 of the order: with
    --batch_size 2 and --dist_eval, the second process's first batch holds nothing readable."""
    shutil.copytree(tree / "val", folder / "val")
    (folder / "train").symlink_to(tree / "train")  # the class indices
    first_class = sorted((folder / "val").iterdir())[0]
    for image in sorted(first_class.iterdir())[:2]:
        (first_class / f"{image.stem}_bad.jpg").write_bytes(b"not an image")
    return folder


def _assert_states_close(got, expected):
    assert got["model"].keys() == expected["model"].keys()
    for key, value in expected["model"].items():
        torch.testing.assert_close(got["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    assert got["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]
    assert got["optimizer"]["state"].keys() == expected["optimizer"]["state"].keys()
    for index, state in expected["optimizer"]["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(got["optimizer"]["state"][index][name], value, rtol=1e-4, atol=1e-7)


def test_fsdp_trains_evaluates_and_checkpoints_as_ddp(tree, tmp_path, monkeypatch):
    # one process, batch 16: the two processes' batches of 8; stopped after epoch 0 of 2
    run_crashing_in_epoch(monkeypatch, tiny_args(tree, tmp_path / "single", *RECIPE, "--batch_size", 16), 1)
    single_epoch0 = tmp_path / "single" / "checkpoint-last.pth"

    runs = {"ddp": ["--strategy", "ddp"],
            "fsdp": ["--strategy", "fsdp", "--grad_checkpointing", -1],
            "fsdp_from_single": ["--strategy", "fsdp", "--resume", single_epoch0]}
    words = [tiny_args(tree, tmp_path / name, *RECIPE, "--batch_size", 8, *extra) for name, extra in runs.items()]
    eval_words = ["--eval", "--resume", tmp_path / "fsdp" / "checkpoint-last.pth", "--dist_eval", "--batch_size", 2]
    words.append(tiny_args(tree, tmp_path / "fsdp_eval", "--strategy", "fsdp", *eval_words))  # 12 and 11 batches
    damaged = _damaged_copy(tree, tmp_path / "damaged")
    words.append(tiny_args(damaged, tmp_path / "fsdp_eval_damaged", "--strategy", "fsdp", *eval_words))
    assert _launch(words, tmp_path) == 0

    ddp, fsdp = _losses(tmp_path / "ddp"), _losses(tmp_path / "fsdp")
    assert sorted(ddp) == list(range(1, 37)) and len(set(ddp.values())) > 30
    assert fsdp == pytest.approx(ddp, rel=1e-5, abs=1e-6)
    val = {name: _records(tmp_path / name, "val") for name in ("ddp", "fsdp")}
    assert [r["val/acc1"] for r in val["fsdp"]] == [r["val/acc1"] for r in val["ddp"]]
    assert [r["count"] for r in val["fsdp"]] == [VAL_IMAGES] * 2
    resumed = _losses(tmp_path / "fsdp_from_single")
    assert sorted(resumed) == list(range(19, 37))  # epoch 1 only
    assert resumed == pytest.approx({step: fsdp[step] for step in resumed}, rel=1e-5, abs=1e-6)

    # the gathered checkpoint: ddp's weights and optimizer state, loaded as they are by one process
    saved = _checkpoint(tmp_path / "fsdp")
    assert set(saved) >= {"model", "optimizer", "epoch", "scaler", "args"} and saved["epoch"] == 1
    _assert_states_close(saved, _checkpoint(tmp_path / "ddp"))
    args = parse(tiny_args(tree, tmp_path / "load", *RECIPE, "--epochs", 3, "--resume",
                           tmp_path / "fsdp" / "checkpoint-last.pth"))
    model = build_classifier(args)
    optimizer = build_optimizer(model, args, args.lr)
    _resume_training(_load_weights(model, args), model, optimizer, torch.amp.GradScaler(enabled=False), args)
    assert args.start_epoch == 2
    loaded = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    for key, value in saved["model"].items():
        assert torch.equal(loaded["model"][key], value), key
    for index, state in saved["optimizer"]["state"].items():
        assert all(torch.equal(loaded["optimizer"]["state"][index][k], v) for k, v in state.items()), index

    # a sharded evaluation with uneven batch counts: every image once, one process's numbers exactly
    (record,) = _records(tmp_path / "fsdp_eval", "eval")
    single = main(parse(tiny_args(tree, tmp_path / "single_eval", *eval_words)))
    assert record["val/count"] == single["count"] == VAL_IMAGES
    assert (record["val/acc1"], record["val/acc5"]) == (single["acc1"], single["acc5"])
    assert record["val/acc1"] == val["fsdp"][-1]["val/acc1"]
    assert record["val/loss"] == pytest.approx(single["loss"], rel=1e-6)
    (record,) = _records(tmp_path / "fsdp_eval_damaged", "eval")
    assert (record["val/count"], record["val/num_skipped"]) == (VAL_IMAGES, 2)
    assert (record["val/acc1"], record["val/acc5"]) == (single["acc1"], single["acc5"])
