"""Smoke test of ``benchmarks/data_pipeline.py`` on a few small JPEGs (main process only)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.benchmarks._scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("data_pipeline.py")


def test_photo_jpeg_is_a_compressible_photo_sized_jpeg(bench):
    data = bench.photo_jpeg(np.random.default_rng(0), 96, 64)
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size, image.mode) == ("JPEG", (96, 64), "RGB")
    assert len(data) < 96 * 64 * 3 / 2  # smooth content: JPEG compresses it


def test_every_transform_reports_a_rate_and_the_workers_it_needs(bench, tmp_path):
    out = tmp_path / "result.json"
    bench.main(["--workers", "0", "--images", "4", "--passes", "1", "--batch-size", "1", "--width", "80",
                "--height", "60", "--decode-images", "2", "--decode-repeats", "1",
                "--gpu-samples-per-s", "pixelbert=100", "--json", str(out)])
    result = json.loads(out.read_text())
    rows = {(row["transform"], row["source"]): row for row in result["pipeline"]}
    expected = {(key, source) for key, family in bench.FAMILIES.items() for source in family.sources}
    assert set(rows) == expected
    for row in rows.values():
        assert row["images_per_s"] > 0
        assert row["images_per_cpu_s"] > 0
        assert row["workers_needed"] == pytest.approx(row["gpu_samples_per_s"] / row["images_per_cpu_s"])
    assert rows["pixelbert", "arrow"]["gpu_samples_per_s"] == 100
    assert rows["clipvil_canvas", "json"]["dataset"] == "LxmertVqaDataset"
    assert rows["imagenet_timm", "json"]["dataset"] == "SafeImageFolder"
    decode = result["decode"]
    assert all(ms > 0 for ms in decode["ms_per_image"].values())
    assert all(diff >= 0 for diff in decode["max_abs_pixel_difference"].values())


def test_workers_needed_uses_the_one_worker_rate(bench, tmp_path):
    out = tmp_path / "result.json"
    bench.main(["--transforms", "albef_test", "--source", "json", "--workers", "0,1", "--images", "4",
                "--passes", "1", "--batch-size", "1", "--width", "80", "--height", "60",
                "--decode-images", "1", "--decode-repeats", "1", "--json", str(out)])
    rows = json.loads(out.read_text())["pipeline"]
    assert [row["workers"] for row in rows] == [0, 1]
    one_worker = rows[1]["images_per_cpu_s"]
    assert all(row["workers_needed"] == pytest.approx(row["gpu_samples_per_s"] / one_worker) for row in rows)


def test_unknown_transform_names_the_valid_keys(bench):
    with pytest.raises(SystemExit, match="unknown transform 'nope'.*pixelbert"):
        bench.main(["--transforms", "nope", "--workers", "0"])
