"""Training runs with the performance options on: the accounting fields a run logs, and exact
resume with compilation and activation checkpointing."""
import functools
import json
import math

import pytest

from tests.tasks._runs import crash_and_resume, train_losses
from tests.tasks.test_pretrain_runs import run
from vlkit.engine.logging import read_metrics
from vlkit.tasks.pretrain import PretrainTask

ACCOUNTING = ("model_flops_per_sample", "tflops", "mfu", "step_time_s", "peak_memory_mb", "samples_per_s",
              "data_wait_frac")


def train_records(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"]


def test_every_interval_logs_flops_mfu_step_time_and_memory(data_words, tmp_path):
    common = ["datasets=[coco]", "max_steps=2", "val_check_interval=2", "peak_tflops=0.5"]
    checkpointed = run(data_words, tmp_path / "ac", *common, "grad_checkpointing=True")
    plain = run(data_words, tmp_path / "plain", *common)
    for record in train_records(checkpointed):
        for key in ACCOUNTING:
            assert math.isfinite(record[key]) and record[key] > 0, key
        assert record["mfu"] == pytest.approx(record["tflops"] / 0.5)
        assert record["compile_graphs"] == 0  # compile is off by default on CPU
    setup = next(r for r in read_metrics(checkpointed / "metrics.jsonl") if r["event"] == "setup")
    assert setup["checkpointed_blocks"] == 2 + 1  # two encoder blocks and the MAE decoder's one
    assert setup["optimizer_kernels"] == ["foreach"] and setup["finite_check"] == "step"
    # model FLOPs do not count what checkpointing recomputes
    flops = {train_records(d)[0]["model_flops_per_sample"] for d in (checkpointed, plain)}
    assert len(flops) == 1
    summary = json.loads((checkpointed / "metrics.json").read_text())["performance"]
    assert summary["model_flops_per_sample"] == flops.pop() and "mfu" in summary
    # the whole training step compiled (graph capture through aot_eager) trains as eager does
    whole_step = run(data_words, tmp_path / "model", *common, "compile=model", "compile_backend=aot_eager")
    expected, compiled = train_losses(plain), train_losses(whole_step)
    assert sorted(compiled) == sorted(expected) == [1, 2]
    for step in expected:
        assert compiled[step] == pytest.approx(expected[step], abs=1e-4)
    assert train_records(whole_step)[-1]["compile_graphs"] >= 1


def test_no_mfu_without_a_known_peak_and_interval_finite_checks(data_words, tmp_path):
    run_dir = run(data_words, tmp_path, "datasets=[coco]", "max_steps=2", "val_check_interval=2",
                  "finite_check=interval")
    record = train_records(run_dir)[-1]
    assert "mfu" not in record and record["tflops"] > 0


@pytest.mark.slow
def test_resume_is_exact_with_compile_and_checkpointing(data_words, tmp_path, monkeypatch):
    common = ["datasets=[coco]", "val_check_interval=2", "run_name=r", "max_steps=4", "compile=True",
              "compile_backend=aot_eager", "grad_checkpointing=True"]
    whole, _, resumed = crash_and_resume(functools.partial(run, data_words), tmp_path, monkeypatch,
                                         PretrainTask, 4, *common)
    expected = train_losses(whole)
    assert sorted(expected) == [1, 2, 3, 4]
    resumed_losses = train_losses(resumed)
    assert sorted(resumed_losses) == [3, 4]
    for step, loss in resumed_losses.items():
        assert loss == pytest.approx(expected[step], abs=1e-6)
    setup = next(r for r in read_metrics(whole / "metrics.jsonl") if r["event"] == "setup")
    assert setup["compiled_modules"] == 3
    last = train_records(whole)[-1]
    assert last["compile_graphs"] >= 1
