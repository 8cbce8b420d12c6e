"""The ALBEF/GRIT command lines (Pretrain.py, Retrieval.py) on the synthetic json files."""
import argparse
import os
from pathlib import Path

import pytest
import torch
import yaml

from vlkit.cli.albef import _paired_encoder, main, parse_bool, yaml_values
from vlkit.config import ConfigError, resolve_config
from vlkit.data.synthetic import write_synthetic
from vlkit.models.build import build_model
from vlkit.models.checkpoints.albef import to_albef
from vlkit.engine.logging import read_metrics

REPO = Path(__file__).resolve().parents[1]
TINY = ["tiny", "fusion_layer=1", "max_position_embeddings=0", "grit_queue_size=32", "grit_search_space=16",
        "per_gpu_batchsize=16", "batch_size=16", "warmup_steps=2", "progress_bar=False", "log_every_n_steps=1"]


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


def test_albef_yaml_keeps_its_momentum_model_queue_and_distillation():
    values = yaml_values(str(REPO / "configs" / "albef" / "Pretrain.yaml"))
    assert values["momentum"] == 0.995 and values["itc_queue_size"] == 65536
    assert values["distill_alpha"] == 0.4 and "train_sampler" not in values
    grit = yaml_values(str(REPO / "configs" / "Retrieval_coco.yaml"))  # momentum only fills the queue
    assert grit["momentum"] == 0.995 and grit["itc_queue_size"] == 65280 and grit["distill_alpha"] == 0.0


def test_unknown_yaml_keys_and_distillation_without_momentum_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"image_res": 256, "imgae_root": "x"}))
    with pytest.raises(ConfigError, match="imgae_root"):
        yaml_values(str(bad))
    albef_nlvr = tmp_path / "NLVR.yaml"
    albef_nlvr.write_text(yaml.safe_dump({"alpha": 0.4, "distill": True, "warm_up": True}))
    with pytest.raises(ConfigError, match="distill"):
        yaml_values(str(albef_nlvr))


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
    assert config["lr_schedule_epochs"] == 30 and config["end_lr"] == 1e-5
    lrs = [r["lr"] for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"]
    assert lrs[-1] > 0.95e-4  # 2 epochs into GRIT's 30-epoch cosine from 1e-4: barely decayed
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    order = checkpoint["vlkit"]["sampler"]["order"]  # the second epoch trained on GRIT's order
    assert sorted(order.tolist()) == list(range(checkpoint["vlkit"]["sampler"]["dataset_size"]))

    downstream = os.path.join(root, "downstream_json")
    code = main("Retrieval.py", [
        "--config", str(REPO / "configs" / "Retrieval_coco.yaml"), "--output_dir", "output/Retrieval_coco",
        "--checkpoint", str(run_dir / "checkpoints" / "last.ckpt"), "--text_encoder", info["tokenizer"],
        "--device", "cpu", *TINY, *data_words(root, info), "image_size=64", "k_test=4", "max_steps=4",
        "itc_queue_size=48", f"train_file=[{downstream}/coco_train.json]", f"val_file={downstream}/coco_val.json",
        f"test_file={downstream}/coco_test.json",
    ])
    assert code == 0
    retrieval_dir = tmp_path / "output" / "Retrieval_coco" / "version_0"
    evaluations = list((retrieval_dir / "evaluations").glob("val_step*.json"))
    record = yaml.safe_load(evaluations[-1].read_text())
    assert record["task"] == "albef_retrieval" and record["protocol"] == "fast" and record["k_test"] == 4
    assert record["recall_ties"] == "expected"
    assert 0 <= record["metrics"]["ir_r1"] <= 1
    state = torch.load(retrieval_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["itc_queue.ptr"].item() == 4 * 16 % 48  # GRIT's config keeps a momentum queue
    assert "momentum_model.visual_encoder.pos_embed" in state


def test_vqa_yaml_becomes_the_answer_decoder_recipe(tmp_path):
    values = yaml_values(str(REPO / "configs" / "VQA.yaml"))
    assert values["answer_list"] == "dataset/downstream_json/answer_list.json" and values["vqa_root"] == "dataset/coco/"
    assert values["vg_root"] == "dataset/vg/" and values["k_test"] == 128 and values["per_gpu_batchsize"] == 32
    assert values["learning_rate"] == 2e-5 and values["warmup_steps"] == 400 and values["max_epoch"] == 8
    other_eos = tmp_path / "VQA.yaml"
    other_eos.write_text(yaml.safe_dump({"eos": "[EOS]"}))
    with pytest.raises(ConfigError, match="eos"):
        yaml_values(str(other_eos))


def test_vqa_command_line_trains_then_answers_every_test_question_once(synthetic, tmp_path, monkeypatch):
    from vlkit.config import resolve_config
    from vlkit.models.build import build_model
    from vlkit.models.checkpoints.albef import to_albef

    root, info = synthetic
    monkeypatch.chdir(tmp_path)
    small = [*TINY, *data_words(root, info), "hidden_size=32", "image_size=32"]
    pretrained = build_model(resolve_config(["grit_pretrain", *small]))
    torch.save({"model": to_albef(pretrained.state_dict(), "pretrain")}, tmp_path / "grit.pth")
    downstream = os.path.join(root, "downstream_json")
    code = main("VQA.py", [
        "--config", str(REPO / "configs" / "VQA.yaml"), "--output_dir", "output/vqa", "--checkpoint",
        str(tmp_path / "grit.pth"), "--text_encoder", info["tokenizer"], "--device", "cpu", *small,
        "answer_decoder_layers=1", "k_test=4", "max_steps=3", f"vqa_root={root}", f"vg_root={root}",
        f"answer_list={info['json']['answer_list']}", f"test_file=[{downstream}/vqa_test.json]",
        f"train_file=[{downstream}/vqa_train.json,{downstream}/vg_qa.json]",
    ])
    assert code == 0
    train_dir, test_dir = (tmp_path / "output" / "vqa" / f"version_{k}" for k in (0, 1))
    config = yaml.safe_load((train_dir / "config.yaml").read_text())
    assert config["loss_names"]["vqa_decoder"] == 1 and config["datasets"] == ["json_vqa"] and config["seed"] == 0
    assert yaml.safe_load((train_dir / "metrics.json").read_text())["global_step"] == 3
    entries = yaml.safe_load((test_dir / "result" / "vqa_result.json").read_text())
    test_questions = yaml.safe_load(Path(downstream, "vqa_test.json").read_text())
    assert [entry["question_id"] for entry in entries] == [entry["question_id"] for entry in test_questions]
    answers = set(yaml.safe_load(Path(info["json"]["answer_list"]).read_text()))
    assert all(entry["answer"] in answers for entry in entries)
    record = yaml.safe_load((test_dir / "metrics.json").read_text())
    assert record["task"] == "vqa_decoder" and record["checkpoint"] == str(train_dir / "checkpoints" / "last.ckpt")
    assert record["metrics"] == {"questions": len(test_questions), "unanswered": 0.0}


NLVR_TINY = ["tiny", "hidden_size=32", "num_layers=3", "vision_layers=2", "fusion_layer=1", "image_size=32",
             "max_position_embeddings=0", "per_gpu_batchsize=8", "batch_size=8", "warmup_steps=1", "max_steps=3",
             "progress_bar=False"]


def test_nlvr_yamls_pair_the_fusion_layers_of_config_bert():
    for name in ("NLVR_pretrain.yaml", "NLVR.yaml"):
        values = yaml_values(str(REPO / "configs" / name))
        assert _paired_encoder(values) == {"pair_fusion": True, "vision_layers": 12, "num_layers": 18}


def _layer(state, index, part="attention.self.query.weight"):
    return state[f"text_encoder.encoder.layer.{index}.{part}"]


def test_pretrain_nlvr_then_nlvr_command_lines_run_on_json_data(synthetic, tmp_path, monkeypatch):
    root, info = synthetic
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dataset").symlink_to(root)  # where configs/NLVR.yaml's relative paths point
    words = ["--text_encoder", info["tokenizer"], "--device", "cpu", *NLVR_TINY, *data_words(root, info)]
    torch.manual_seed(0)  # a 2-layer GRIT pre-training checkpoint, official layout
    pretrained = build_model(resolve_config(
        ["grit_pretrain", *NLVR_TINY, "num_layers=2", f"vocab_size={info['vocab_size']}"])).state_dict()
    torch.save({"model": to_albef(pretrained, "pretrain"), "epoch": 0}, tmp_path / "grit.pth")

    pretrain_json = os.path.join(root, "json_pretrain", "pretrain.json")
    code = main("Pretrain_nlvr.py", [
        "--config", str(REPO / "configs" / "NLVR_pretrain.yaml"), "--output_dir", "output/NLVR_pretrain",
        "--checkpoint", "grit.pth", *words, f"train_file=[{pretrain_json}]", f"val_file=[{pretrain_json}]",
    ])
    assert code == 0
    ta_dir = tmp_path / "output" / "NLVR_pretrain" / "version_0"
    config = yaml.safe_load((ta_dir / "config.yaml").read_text())
    assert config["pair_fusion"] and config["loss_names"]["nlvr_ta"] == 1 and config["seed"] == 0
    ta = torch.load(ta_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for index, source in ((0, 0), (1, 1), (2, 1)):  # 3 steps at lr 2e-5 moved them by < 1e-3
        assert torch.allclose(_layer(ta, index), _layer(pretrained, source), atol=1e-3), index
    assert not torch.allclose(_layer(ta, 2), _layer(pretrained, 0), atol=1e-2)
    key = "crossattention.self.key.weight"
    assert torch.equal(_layer(ta, 1, key), _layer(ta, 2, key)) and "ta_head.weight" in ta
    record = yaml.safe_load(sorted((ta_dir / "evaluations").glob("val_step*.json"))[-1].read_text())
    assert record["task"] == "nlvr_ta" and record["metrics"]["the_metric"] == record["metrics"]["nlvr_ta_accuracy"]
    assert 1 / 3 <= record["metrics"]["nlvr_ta_chance"] <= 1

    code = main("NLVR.py", [
        "--config", str(REPO / "configs" / "NLVR.yaml"), "--output_dir", "output/NLVR",
        "--checkpoint", str(ta_dir / "checkpoints" / "last.ckpt"), *words,
    ])
    assert code == 0
    nlvr_dir = tmp_path / "output" / "NLVR" / "version_0"
    nlvr = torch.load(nlvr_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.allclose(_layer(nlvr, 2), _layer(ta, 2), atol=1e-3)
    assert nlvr["nlvr2_classifier.2.weight"].shape == (2, 32) and "ta_head.weight" not in nlvr
    record = yaml.safe_load(sorted((nlvr_dir / "evaluations").glob("val_step*.json"))[-1].read_text())
    metrics = record["metrics"]
    assert record["task"] == "nlvr2" and metrics["the_metric"] == metrics["dev_accuracy"]
    dev, test = (len(yaml.safe_load(Path(root, "downstream_json", f"nlvr_{split}.json").read_text()))
                 for split in ("dev", "test"))  # validation read both files: accuracy per file and overall
    overall = (metrics["dev_accuracy"] * dev + metrics["test_accuracy"] * test) / (dev + test)
    assert metrics["accuracy"] == pytest.approx(overall)
    assert {"dev_chance", "test_chance"} <= set(metrics)

    code = main("NLVR.py", [  # vlkit's --evaluate: the same numbers from the saved checkpoint
        "--config", str(REPO / "configs" / "NLVR.yaml"), "--output_dir", "output/NLVR_test", "--evaluate",
        "--checkpoint", str(nlvr_dir / "checkpoints" / "last.ckpt"), *words,
    ])
    assert code == 0
    tested = yaml.safe_load((tmp_path / "output" / "NLVR_test" / "version_0" / "metrics.json").read_text())
    assert tested["split"] == "test"
    for name in ("dev_accuracy", "test_accuracy"):
        assert tested["metrics"][name] == pytest.approx(metrics[name])


def test_albef_pretraining_under_torchrun_queues_the_features_of_both_ranks(synthetic, tmp_path):
    """`python -m torch.distributed.run --nproc_per_node=2 Pretrain.py --config configs/albef/...`:
    the momentum queue holds every rank's rows (16 per step), not only this rank's 8."""
    import subprocess
    import sys

    root, info = synthetic
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(REPO / "Pretrain.py"),
        "--config", str(REPO / "configs" / "albef" / "Pretrain.yaml"), "--output_dir", str(tmp_path / "albef"),
        "--text_encoder", info["tokenizer"], "--device", "cpu", *TINY, *data_words(root, info),
        "per_gpu_batchsize=8", "batch_size=16", "itc_queue_size=40", "max_steps=3", "num_workers=0",
        f"train_file=[{os.path.join(root, 'json_pretrain', 'pretrain.json')}]",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "albef" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["itc_queue.ptr"].item() == 3 * 16 % 40  # a rank-local queue would be at 3 * 8
    assert (state["itc_queue.index"] >= 0).all()  # 48 rows written: every slot holds an example
