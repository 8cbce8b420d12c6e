"""Smoke test of ``benchmarks/clipvil_synthetic.run_seed`` (the learning benchmark's CLIP-ViL entry)
at a tiny scale on a small synthetic set (the contrastive warm-up and four short runs: about 50 s of CPU)."""
from __future__ import annotations

import pytest

from tests.benchmarks._scripts import load_benchmark
from vlkit.data.synthetic import write_synthetic


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("clipvil_synthetic.py")


@pytest.mark.slow
def test_run_seed_reports_warmup_both_stages_and_vqa_with_blank_baselines(bench, tmp_path):
    data = write_synthetic(str(tmp_path / "data"), num_images=60, seed=0, image_size=64)
    result = bench.run_seed(data, str(tmp_path / "runs"), seed=3, scale=0.01)
    pretrain, vqa, clip = result["pretrain"], result["VQAv2"], result["clip"]
    assert set(clip) == {"first_loss", "loss", "text_to_image", "image_to_text", "chance"}
    assert clip["loss"] > 0 and 0 <= clip["text_to_image"] <= 1 and 0 < clip["chance"] < 1
    assert pretrain["itm_chance"] == 0.5
    for name in ("itm_accuracy", "qa_accuracy", "mlm_accuracy", "stage_one_itm_accuracy"):
        assert 0 <= pretrain[name] <= 1 and 0 <= pretrain[f"{name}_blank"] <= 1
    assert set(vqa) == {"pretrained", "pretrained_blank", "scratch", "scratch_blank", "chance"}
    assert 0 < vqa["chance"] <= 1 and result["seconds"] > 0
    clip_path = tmp_path / "runs/seed3/clip/tiny_clip.pt"
    for run in ("one", "two", "vqa", "vqa_scratch"):
        config = (tmp_path / f"runs/seed3/{run}/version_0/config.yaml").read_text().splitlines()
        assert "seed: 3" in config  # the seed reaches every run
        assert (f"clip_path: {clip_path}" in config) == (run != "vqa_scratch")  # scratch keeps a random ResNet
