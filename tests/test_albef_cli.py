"""The ALBEF/GRIT command lines (Pretrain.py, Retrieval.py) on the synthetic json files."""
import argparse
import os
from pathlib import Path

import pytest
import torch
import yaml

from vlkit.albef_cli import main, parse_bool, yaml_values
from vlkit.config import ConfigError
from vlkit.data.synthetic import write_synthetic

REPO = Path(__file__).resolve().parents[1]
TINY = ["tiny", "fusion_layer=1", "max_position_embeddings=0", "grit_queue_size=32", "grit_search_space=16",
        "per_gpu_batchsize=16", "batch_size=16", "warmup_steps=2", "progress_bar=False"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_json")
    info = write_synthetic(str(out), num_images=60, seed=0, image_size=64)
    return str(out), info


def data_words(root, info):
    return [f"image_root={root}", f"vocab_size={info['vocab_size']}"]


@pytest.mark.parametrize("text,value", [("true", True), ("False", False), ("0", False), ("yes", True)])
def test_boolean_flags_mean_what_they_say(text, value):
    assert parse_bool(text) is value
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bool("maybe")


def test_grit_pretrain_yaml_becomes_the_grit_recipe():
    values = yaml_values(str(REPO / "configs" / "Pretrain.yaml"))
    assert values["train_sampler"] == "grit" and values["grit_queue_size"] == 48000
    assert values["grit_search_space"] == 1920 and values["mlm_prob"] == 0.5
    assert values["per_gpu_batchsize"] == 128 and values["image_size"] == 256
    assert values["max_epoch"] == 20 and values["warmup_steps"] == 2000  # 20 "epochs" of 100 iterations
    assert values["fusion_layer"] == 6 and values["num_layers"] == 12 and values["hidden_size"] == 768


def test_unknown_yaml_keys_and_albef_distillation_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"image_res": 256, "imgae_root": "x"}))
    with pytest.raises(ConfigError, match="imgae_root"):
        yaml_values(str(bad))
    with pytest.raises(ConfigError, match="distillation"):
        yaml_values(str(REPO / "configs" / "albef" / "Pretrain.yaml"))


def test_pretrain_then_retrieval_command_lines_run_on_json_data(synthetic, tmp_path, monkeypatch):
    root, info = synthetic
    monkeypatch.chdir(tmp_path)
    pretrain_json = os.path.join(root, "json_pretrain", "pretrain.json")
    code = main("Pretrain.py", [
        "--config", str(REPO / "configs" / "Pretrain.yaml"), "--output_dir", "output/Pretrain",
        "--text_encoder", info["tokenizer"], "--device", "cpu", "--distributed", "false",
        *TINY, *data_words(root, info), f"train_file=[{pretrain_json}]", "max_epoch=2",
    ])
    assert code == 0
    run_dir = tmp_path / "output" / "Pretrain" / "version_0"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["train_sampler"] == "grit" and config["mlm_prob"] == 0.5 and config["hidden_size"] == 64
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    order = checkpoint["vlkit"]["sampler"]["order"]  # the second epoch trained on GRIT's order
    assert sorted(order.tolist()) == list(range(checkpoint["vlkit"]["sampler"]["dataset_size"]))

    downstream = os.path.join(root, "downstream_json")
    code = main("Retrieval.py", [
        "--config", str(REPO / "configs" / "Retrieval_coco.yaml"), "--output_dir", "output/Retrieval_coco",
        "--checkpoint", str(run_dir / "checkpoints" / "last.ckpt"), "--text_encoder", info["tokenizer"],
        "--device", "cpu", *TINY, *data_words(root, info), "image_size=64", "k_test=4", "max_steps=4",
        f"train_file=[{downstream}/coco_train.json]", f"val_file={downstream}/coco_val.json",
        f"test_file={downstream}/coco_test.json",
    ])
    assert code == 0
    evaluations = list((tmp_path / "output" / "Retrieval_coco" / "version_0" / "evaluations").glob("val_step*.json"))
    record = yaml.safe_load(evaluations[-1].read_text())
    assert record["protocol"] == "fast" and record["k_test"] == 4
    assert 0 <= record["metrics"]["ir_r1"] <= 1
