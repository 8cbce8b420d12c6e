"""CLIP-ViL's command lines on the synthetic LXMERT-format set: stage one, stage two from stage
one's EpochNN files, VQA from the QA head, the leaderboard file; and the bash launcher."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlkit.cli.clipvil import build_parser, pretrain_values, run
from vlkit.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def flags(synthetic, *extra):
    root = synthetic["clipvil"]["root"]
    return ["--llayers", "2", "--xlayers", "0", "--rlayers", "0", "--visualbert_style", "--input_raw_images",
            "--use_clip", "--vqa_style_transform", "--clip_model_name", "RN50", "--use_positional_embedding",
            "--use_separate_optimizer_for_visual", "--sgd_lr", "0.01", "--batchSize", "16", "--lr", "1e-3",
            "--epochs", "1", "--warmup_ratio", "0.1", "--data_root", root, "--tokenizer", synthetic["tokenizer"],
            "--device", "cpu", "--image_size_min", "64", "--image_size_max", "96", *extra,
            "clipvil_tiny", f"vocab_size={synthetic['vocab_size']}", "per_gpu_batchsize=16", "batch_size=16"]


def test_two_stage_pretraining_then_vqa_and_test_predictions(synthetic, tmp_path):
    snap = tmp_path / "snap"
    stage = ["--taskMaskLM", "--taskMatched", "--train", "mscoco_nominival", "--valid", "mscoco_minival",
             "--objMaskRate", "0.0", "--sub_sampling", "--sub_feat_num", "4", "--aspect_ratio_group_factor", "0"]
    run("pretrain", flags(synthetic, *stage, "--output", str(snap / "pretrain/one")))
    one = snap / "pretrain/one/Epoch01"
    assert all(Path(f"{one}_LXRT{s}.pth").is_file() for s in ("", "_AdamOptim", "_SGDOptim", "_Scheduler"))
    assert "module.answer_head.logit_fc.3.weight" not in torch.load(f"{one}_LXRT.pth")

    two = run("pretrain", flags(synthetic, *stage, "--taskQA", "--load", str(one), "--not_load_scheduler",
                                "--not_load_adam_optimizer", "--output", str(snap / "pretrain/two"),
                                "eval_image_ablation=True"))
    assert {"mlm_accuracy", "itm_accuracy", "qa_accuracy"} <= set(two["val"])
    for name in ("mlm_accuracy", "itm_accuracy", "qa_accuracy"):  # the blank-image baseline, an override word
        assert two["val"][f"{name}_image_gain"] == pytest.approx(two["val"][name] - two["val"][f"{name}_blank"])
    two_state = torch.load(snap / "pretrain/two/Epoch01_LXRT.pth")
    assert two_state["module.answer_head.logit_fc.3.weight"].shape[0] == synthetic["clipvil"]["qa_label_size"]

    vqa = run("vqa", flags(synthetic, "--train", "nominival", "--valid", "minival", "--loss_scale", "500",
                           "--loadLXMERTQA", str(snap / "pretrain/two/Epoch01"), "--output", str(snap / "vqa/ft"),
                           "eval_image_ablation=True"))
    assert 0 <= vqa["val"]["score"] <= 1
    assert vqa["val"]["image_gain"] == pytest.approx(vqa["val"]["score"] - vqa["val"]["score_blank"])
    best = torch.load(snap / "vqa/ft/BEST.pth")
    assert "module.logit_fc.3.weight" in best and "module.lxrt_encoder.model.bert.pooler.dense.weight" in best
    # every reference key, those the model lacks carried over from the loaded stage-two file
    box = "bert.encoder.visn_fc.box_fc.weight"
    assert torch.equal(best[f"module.lxrt_encoder.model.{box}"], two_state[f"module.{box}"])
    assert "module.lxrt_encoder.model.bert.encoder.visual_model.token_embedding.weight" in best

    result = run("vqa", flags(synthetic, "--load", str(snap / "vqa/ft/BEST"), "--test", "test",
                              "--output", str(snap / "vqa/test")))
    predictions = json.loads((snap / "vqa/test/test_predict.json").read_text())
    questions = json.loads(Path(synthetic["clipvil"]["root"], "vqa/test.json").read_text())
    answers = set(json.loads(Path(synthetic["clipvil"]["root"], "vqa/trainval_label2ans.json").read_text()))
    assert sorted(p["question_id"] for p in predictions) == sorted(q["question_id"] for q in questions)
    assert all(p["answer"] in answers for p in predictions) and result["questions"] == len(questions)


def test_flags_map_as_the_reference_and_broken_ones_are_refused(synthetic, tmp_path):
    prefix = tmp_path / "Epoch09"
    for suffix in ("_LXRT", "_LXRT_AdamOptim", "_LXRT_SGDOptim", "_LXRT_Scheduler"):
        torch.save({}, f"{prefix}{suffix}.pth")
    args = build_parser("pretrain").parse_intermixed_args(flags(synthetic, "--load", str(prefix), "--taskQA", "--objMaskRate", "0", "--epoch",
                                                                "5", "--schedule", "4,8", "--not_load_adam_optimizer",
                                                                "--output", "snap/pretrain/x"))
    values = pretrain_values(args)
    assert values["load_optimizer_states"] == ["", f"{prefix}_LXRT_SGDOptim.pth"]
    assert values["load_scheduler_states"] == [f"{prefix}_LXRT_Scheduler.pth"]
    assert values["max_epoch"] == 5 and values["visual_lr_milestones"] == [4, 8] and values["visual_optimizer"] == "sgd"
    assert values["qa_label_size"] == synthetic["clipvil"]["qa_label_size"] and values["run_name"] == "x"
    for bad, match in ((["--clip_model_name", "ViT-B/32"], "CLIP ResNets"), (["--taskObjPredict"], "not supported"),
                       (["--objMaskRate", "0.15"], "objMaskRate")):
        with pytest.raises(ConfigError, match=match):
            pretrain_values(build_parser("pretrain").parse_intermixed_args(flags(synthetic, *bad)))


def test_pretrain_script_launches_through_torchrun(synthetic, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    command = ["bash", str(REPO / "scripts/pretrain.bash"), "cpu", "tiny_run", "29631", "1",
               *flags(synthetic, "--train", "mscoco_nominival", "--valid", "", "--skip_training")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:]
    records = [json.loads(line) for line in (tmp_path / "snap/pretrain/tiny_run/version_0/metrics.jsonl").open()]
    assert records[0]["event"] == "setup" and records[0]["total_steps"] == 4  # --skip_training: 4 batches
    assert (tmp_path / "snap/pretrain/tiny_run/log.log").is_file()
