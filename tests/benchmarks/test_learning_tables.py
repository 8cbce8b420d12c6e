"""``benchmarks/learning.py``'s bookkeeping: steps to the ITM target from a run's validation
records, mean ± std with runs that never got there, and the comparison rows of the table."""
from __future__ import annotations

import json
import math

import pytest

from tests.benchmarks._scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("learning.py")


def write_run(folder, itm_by_step):
    folder.mkdir(parents=True)
    records = [{"event": "train", "step": 50, "train/itm_accuracy": 0.99}]  # training records do not count
    records += [{"event": "val", "step": step, "val/itm_accuracy": itm} for step, itm in itm_by_step]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_steps_to_itm_is_the_first_validation_at_the_target(bench, tmp_path):
    run = write_run(tmp_path / "a", [(100, 0.55), (200, 0.69), (300, 0.70), (400, 0.8)])
    assert bench.steps_to_itm(run) == 300
    assert bench.steps_to_itm(write_run(tmp_path / "b", [(100, 0.5), (200, 0.6)])) == math.inf


def test_mean_std_counts_the_runs_that_never_reached_it(bench):
    assert bench.mean_std([200.0, 400.0]) == "300.000 ± 141.421"
    assert bench.mean_std([200.0, math.inf, 400.0]) == "300.000 ± 141.421 (1 never)"
    assert bench.mean_std([math.inf]) == "never"


def test_table_compares_steps_to_itm_from_a_random_and_an_mae_vit(bench):
    def seed(steps, itm):
        return {"pretrain": {"steps_to_itm": steps, "itm_accuracy": itm, "itm_accuracy_blank": 0.5,
                             "itm_chance": 0.5}}

    table = bench.table({"vlc": [seed(300, 0.75), seed(400, 0.77)], "vlc_mae": [seed(200, 0.76), seed(200, 0.78)]})
    assert "| VLC pre-training steps to ITM 0.7 (validation every 100) | random ViT | 350.000 ± 70.711 | MAE ViT | " \
           "200.000 ± 0.000 | -150.000 ± 70.711 |" in table
    assert "| vlc | pre-training ITM | 0.760 ± 0.014 |" in table
    assert "vlc_mae |" not in table  # a comparison job has no rows of its own
