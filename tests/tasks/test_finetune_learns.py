"""Each downstream task trains on the synthetic set from scratch: its loss falls and its metric
beats chance. (Whether pre-training helps is the quickstart's table.)

NLVR2 compares two images, which a tiny model from scratch does not learn to generalise within a
test's budget (dev accuracy stays near chance for 400 steps; pre-trained it passes chance, see the
quickstart), so for it the check is on the training accuracy: the model fits the task. SNLI-VE's
hypotheses need the image since issue 22 (before, "neutral" ones were recognisable from their words
and a text-only model reached about 0.66); from scratch its loss stays at ln 3 for 200 steps, so
the check is that the model fits a fixed batch (its learning from pre-training is docs/results.md).
"""
from pathlib import Path

import pytest

import torch

from vlkit.cli import main
from vlkit.config import resolve_config
from vlkit.engine.optim import build_optimizer
from vlkit.tasks import build_task
from vlkit.data.synthetic import write_synthetic
from vlkit.engine.logging import read_metrics

TASKS = {
    # preset: (steps, extra words, metric, chance key or a fixed chance)
    "task_finetune_vqa_mae_randaug": (300, [], "score", "chance"),
    "task_finetune_nlvr2_mae_randaug": (300, [], "train/nlvr2_accuracy", 0.5),
    "task_finetune_irtr_f30k_mae_randaug": (200, ["draw_false_text=3", "loss_names.itc=1"], "ir_r10", 10 / 90),
}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("finetune_scenes")
    return {**write_synthetic(str(out), num_images=600, seed=2), "out_dir": str(out)}


def records(run_dir: Path, event: str) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == event]


@pytest.mark.parametrize("preset", TASKS)
def test_task_learns_from_scratch(preset, scenes, tmp_path):
    steps, extra, metric, chance = TASKS[preset]
    code = main([
        "run", "with", preset, "tiny", f"data_root={scenes['out_dir']}", f"tokenizer={scenes['tokenizer']}",
        f"vocab_size={scenes['vocab_size']}", f"vqav2_label_size={scenes['vqav2_label_size']}",
        f"log_dir={tmp_path}", "progress_bar=False", f"max_steps={steps}", f"val_check_interval={steps}",
        "warmup_steps=0.1", "learning_rate=1e-3", "layer_decay=1", "train_transform_keys=[mae_test]", *extra,
    ])
    assert code == 0
    run_dir = next(tmp_path.glob("*/version_0"))
    losses = [r["train/loss"] for r in records(run_dir, "train")]
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    val = records(run_dir, "val")[-1]
    level = val[f"val/{chance}"] if isinstance(chance, str) else chance
    if metric.startswith("train/"):
        value = sum(r[metric] for r in records(run_dir, "train")[-5:]) / 5
    else:
        value = val[f"val/{metric}"]
    assert value > level + 0.05, (metric, value, level)


def test_snli_fits_a_fixed_batch(scenes):
    cfg = resolve_config(["task_finetune_snli_mae_randaug", "tiny", f"data_root={scenes['out_dir']}",
                          f"tokenizer={scenes['tokenizer']}", f"vocab_size={scenes['vocab_size']}",
                          "learning_rate=1e-3", "layer_decay=1", "train_transform_keys=[mae_test]"])
    torch.manual_seed(0)
    task = build_task(cfg)
    model = task.build_model().train()
    dataset = task.build_dataset("train")
    batch = task.collate_fn("train")([dataset[(i, 0)] for i in range(16)])
    optimizer = build_optimizer(model, cfg)
    losses = []
    for _ in range(40):
        loss = task.training_step(model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
