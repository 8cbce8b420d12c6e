"""GRIT-VLP pre-training runs: grouped epochs after the first, exact resume across them."""
from pathlib import Path

import pytest
import torch

from tests.tasks._runs import crash_at_training_step, train_losses
from vlkit.cli import main
from vlkit.tasks.pretrain import PretrainTask

GRIT_TINY = ["model=cross_attention", "fusion_layer=1", "max_position_embeddings=0", "image_size=64",
             "per_gpu_batchsize=32", "batch_size=32", "grit_queue_size=64", "grit_search_space=32",
             "datasets=[coco]", "warmup_steps=2", "learning_rate=5e-4", "progress_bar=False",
             "log_every_n_steps=1", "run_name=r"]


def run(data_words, log_dir, *words):
    assert main(["run", "with", "grit_pretrain", "tiny", *GRIT_TINY, *data_words, f"log_dir={log_dir}", *words]) == 0
    return next(Path(log_dir).glob("r/version_*"))


def test_second_epoch_trains_on_grouped_batches_and_resumes_exactly(data_words, tmp_path, monkeypatch):
    steps = []
    original_step = PretrainTask.training_step

    def record(self, model, batch):
        steps.append(batch["sample_index"].tolist())
        return original_step(self, model, batch)

    monkeypatch.setattr(PretrainTask, "training_step", record)
    common = ["max_steps=18", "val_check_interval=16"]
    whole = run(data_words, tmp_path / "whole", *common)
    checkpoint = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    sampler = checkpoint["vlkit"]["sampler"]
    order = sampler["order"]
    size = sampler["dataset_size"]
    per_epoch = -(-size // 32)
    assert per_epoch < 16  # the checkpoint at step 16 is inside the grouped epoch
    assert sorted(order.tolist()) == list(range(size))  # every example, once
    # epoch 1 (the second) is the grouped order, one chunk per batch
    for step, indices in enumerate(steps[per_epoch:18]):
        assert indices == order[step * 32:(step + 1) * 32].tolist()
    assert sorted(sum(steps[:per_epoch], [])) == list(range(size))  # epoch 0: a shuffle of everything

    crash_at_training_step(monkeypatch, PretrainTask, 17)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(data_words, tmp_path / "crashed", *common)
    monkeypatch.setattr(PretrainTask, "training_step", record)
    crashed = next((tmp_path / "crashed").glob("r/version_0"))
    whole_batches = list(steps[16:18])
    del steps[:]
    resumed = run(data_words, tmp_path / "resumed", *common, f"resume_from={crashed / 'checkpoints' / 'last.ckpt'}")
    assert steps == whole_batches  # the same grouped batches after the resume
    expected = train_losses(whole)
    # equal up to BLAS summation order (MKL's results vary in the last bits between processes)
    assert train_losses(resumed) == pytest.approx({step: expected[step] for step in (17, 18)}, rel=1e-5)


def test_a_last_batch_of_one_trains_without_itm_instead_of_failing(data_words):
    from vlkit.config import resolve_config

    cfg = resolve_config(["grit_pretrain", "tiny", *GRIT_TINY, *data_words])
    task = PretrainTask(cfg)
    model = task.build_model()
    dataset = task.build_dataset("train")
    batch = task.collate_fn("train")([dataset[(0, 0)]])
    step = task.training_step(model, batch)
    assert "itm_loss" not in step and torch.isfinite(step["loss"])
    metrics = task.evaluate(model, [batch, task.collate_fn("val")([dataset[(1, 0)], dataset[(2, 0)]])])
    assert metrics["itm_chance"] == pytest.approx(2 / 3)  # the pair batch: 2 positives of 6 rows
