"""A toy task for the engine tests: a dropout MLP on two learnable Gaussian classes.

Each sample's seed jitters its features (the "augmentation"), so sample keys matter; dropout
makes the model-side RNG matter. Indices divisible by 10 count as skipped (replaced) images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset

from vlkit.config.schema import defaults
from vlkit.tasks.base import Task
from vlkit.utils import distributed
from vlkit.utils.seeding import seeded, split_key

FEATURES = 8


class ToyDataset(Dataset):
    def __init__(self, size: int, data_seed: int):
        direction = torch.randn(FEATURES, generator=torch.Generator().manual_seed(0))
        generator = torch.Generator().manual_seed(data_seed)
        self.labels = torch.arange(size) % 2
        noise = 2.0 * torch.randn(size, FEATURES, generator=generator)
        self.features = (self.labels.float() * 2 - 1)[:, None] * direction + noise

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key) -> dict:
        index, seed = split_key(key)
        with seeded(seed):
            jitter = 0.1 * torch.randn(FEATURES)
        return {"x": self.features[index] + jitter, "y": self.labels[index], "index": index}


def collate(samples: list[dict]) -> dict:
    return {
        "x": torch.stack([s["x"] for s in samples]),
        "y": torch.stack([s["y"] for s in samples]),
        "raw_index": torch.tensor([s["index"] for s in samples]),
        "num_skipped_images": sum(s["index"] % 10 == 0 for s in samples),
    }


class ToyModel(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ToyTask(Task):
    name = "toy"

    def __init__(self, cfg, train_size: int = 64, val_size: int = 30, dropout: float = 0.1):
        super().__init__(cfg)
        self.sizes = {"train": train_size, "val": val_size, "test": val_size}
        self.dropout = dropout
        self.training_calls = 0
        self.autocast_dtypes: set[torch.dtype] = set()

    def build_model(self) -> nn.Module:
        return ToyModel(self.dropout)

    def build_dataset(self, split: str):
        size = self.sizes[split]
        return ToyDataset(size, data_seed={"train": 1, "val": 2, "test": 3}[split]) if size else None

    def collate_fn(self, split: str):
        return collate

    def training_step(self, model: nn.Module, batch: dict) -> dict:
        self.training_calls += 1
        logits = model(batch["x"])
        self.autocast_dtypes.add(logits.dtype)
        loss = F.cross_entropy(logits.float(), batch["y"])
        accuracy = (logits.argmax(-1) == batch["y"]).float().mean()
        return {"loss": loss, "accuracy": accuracy}

    def evaluate(self, model: nn.Module, loader, split: str = "val") -> dict:
        totals = torch.zeros(3, dtype=torch.float64)
        for batch in loader:
            logits = model(batch["x"]).float()
            totals += torch.tensor([
                (logits.argmax(-1) == batch["y"]).sum().item(),
                F.cross_entropy(logits, batch["y"], reduction="sum").item(),
                len(batch["y"]),
            ], dtype=torch.float64)
        correct, loss_sum, count = distributed.all_reduce_sum(totals).tolist()
        return {"the_metric": correct / count, "accuracy": correct / count, "loss": loss_sum / count,
                "count": count}


def toy_config(log_dir, **overrides):
    """A CPU config for the toy task: fp32, no workers, no warm-up, a log record every step."""
    values = defaults()
    values.update(
        log_dir=str(log_dir), run_name="toy", device="cpu", precision=32, num_workers=0,
        batch_size=8, per_gpu_batchsize=8, max_steps=None, max_epoch=2, warmup_steps=0,
        learning_rate=0.01, val_check_interval=1.0, log_every_n_steps=1, progress_bar=False,
    )
    values.update(overrides)
    return OmegaConf.create(values)
