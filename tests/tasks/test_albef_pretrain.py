"""ALBEF pre-training with its momentum model, queue and distillation: it learns, and a resumed
run continues exactly (the momentum model and the queue travel in the checkpoint)."""
from pathlib import Path

import pytest
import torch

from tests.tasks._runs import crash_at_training_step, train_losses
from vlkit.cli import main
from vlkit.tasks.pretrain import PretrainTask

ALBEF_TINY = ["model=cross_attention", "fusion_layer=1", "max_position_embeddings=0", "image_size=64",
              "per_gpu_batchsize=16", "batch_size=16", "itc_queue_size=40", "datasets=[coco]",
              "warmup_steps=2", "learning_rate=5e-4", "progress_bar=False", "log_every_n_steps=1", "run_name=r",
              "max_steps=8", "val_check_interval=6"]


def run(data_words, log_dir, *words):
    assert main(["run", "with", "albef_pretrain", "tiny", *ALBEF_TINY, *data_words, f"log_dir={log_dir}", *words]) == 0
    return next(Path(log_dir).glob("r/version_*"))


def test_albef_pretraining_resumes_exactly_with_its_momentum_model_and_queue(data_words, tmp_path, monkeypatch):
    whole = run(data_words, tmp_path / "whole")
    state = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["itc_queue.ptr"].item() == 8 * 16 % 40
    online, teacher = state["text_encoder.encoder.layer.0.output.dense.weight"], \
        state["momentum_model.text_encoder.encoder.layer.0.output.dense.weight"]
    assert not torch.equal(online, teacher)  # the momentum model lags behind the trained weights

    original_step = crash_at_training_step(monkeypatch, PretrainTask, 7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(data_words, tmp_path / "crashed")
    monkeypatch.setattr(PretrainTask, "training_step", original_step)
    crashed = next((tmp_path / "crashed").glob("r/version_0"))
    resumed = run(data_words, tmp_path / "resumed", f"resume_from={crashed / 'checkpoints' / 'last.ckpt'}")
    expected = train_losses(whole)
    assert train_losses(resumed) == pytest.approx({step: expected[step] for step in (7, 8)}, rel=1e-5)
