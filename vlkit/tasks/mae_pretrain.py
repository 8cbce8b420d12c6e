"""MAE image-only pre-training of the vision tower (He et al. 2022; VLC starts from such a ViT).

The recipe is MAE's: ``mask_ratio`` (0.75 in ``task_mae_pretrain``) of the patches dropped before
the encoder, a narrow decoder (``mae_decoder_*``) fed the kept tokens and mask tokens, and the
mean squared error on the removed patches only, against per-patch normalised pixels
(``norm_pix_loss``). The model is the vision tower that ``vit``/``hidden_size``/... describe
(VLC's ``mae_vit_*``), alone.

Images come from ``datasets`` (any Arrow or json+image-folder dataset; only the images are
used), or, with ``mae_image_folder``, from an ImageFolder tree (``train/`` and ``val/``, class
folders ignored). Every checkpoint is also written in MAE's own layout, ``{"model": tower
weights}`` under MAE's key names, to ``mae_checkpoint``: ``pretrain_path=`` loads it into any
run's vision tower (VLC's recipe: MAE, then vision-language pre-training, then fine-tuning).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset

from vlkit.data.datasets import build_datasets
from vlkit.data.transforms import build_transform
from vlkit.engine.logging import run_name
from vlkit.eval.metrics import SumMeter, ratio
from vlkit.imagenet.data import SafeImageFolder
from vlkit.models.backbones.vit import VisionTransformer, build_vision_tower
from vlkit.objectives import mae_loss
from vlkit.tasks.arrow_task import ArrowTask
from vlkit.utils.atomic import atomic_torch_save
from vlkit.utils.seeding import seeded
from vlkit.utils.tensors import move_to_device

log = logging.getLogger(__name__)

MAE_CHECKPOINT_FILE = "mae_pretrain.pth"


def mae_forward(tower: VisionTransformer, images: torch.Tensor, mask_ratio: float, norm_pix: bool) -> torch.Tensor:
    """MAE's loss on a batch: drop ``mask_ratio`` of the patches, encode, decode, compare the
    removed patches with their (per-patch normalised when ``norm_pix``) pixels."""
    tokens, mask, ids_restore = tower.embed(images, mask_ratio=mask_ratio)
    prediction = tower.decode(tower.encode(tokens), ids_restore)
    return mae_loss(prediction, tower.patchify(images).to(prediction.dtype), mask, norm_pix)


def mae_checkpoint_path(cfg: Any) -> str:
    """``mae_checkpoint``, else ``{log_dir}/{run name}/mae_pretrain.pth``."""
    return cfg.mae_checkpoint or os.path.join(cfg.log_dir, run_name(cfg), MAE_CHECKPOINT_FILE)


class _FolderImages(Dataset):
    """``{"image": tensor}`` samples of an ImageFolder split (unreadable files replaced)."""

    def __init__(self, root: str, transform: Callable):
        self.folder = SafeImageFolder(root, transform, replace_unreadable=True)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, key) -> dict[str, Any]:
        image, _, skipped = self.folder[key]
        return {"image": image, "num_skipped_images": skipped}


def _collate_images(samples: list[dict]) -> dict[str, Any]:
    return {"image": torch.stack([s["image"] for s in samples]),
            "num_skipped_images": sum(s["num_skipped_images"] for s in samples)}


class MaePretrainTask(ArrowTask):
    """Image-only MAE on the vision tower; ``the_metric`` is minus the validation MAE loss."""

    name = "mae_pretrain"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        if not 0 < cfg.mask_ratio < 1:
            raise ValueError(f"mask_ratio={cfg.mask_ratio}: MAE drops a fraction in (0, 1) of the patches (MAE: 0.75)")
        if cfg.mae_decoder_dim <= 0 or cfg.mae_decoder_depth <= 0:
            raise ValueError(f"mae_decoder_dim={cfg.mae_decoder_dim} and mae_decoder_depth={cfg.mae_decoder_depth} "
                             "must be > 0: MAE reconstructs pixels with its decoder")
        if cfg.mae_image_folder and not os.path.isdir(os.path.join(cfg.mae_image_folder, "train")):
            raise FileNotFoundError(f"mae_image_folder={cfg.mae_image_folder!r} has no train/ folder; give an "
                                    "ImageFolder tree (train/CLASS/*.jpg, val/CLASS/*.jpg)")

    def build_model(self) -> nn.Module:
        if self.cfg.load_path or self.cfg.pretrain_path:
            raise ValueError("task_mae_pretrain starts from random weights; continue a run with resume_from=")
        return build_vision_tower(OmegaConf.merge(self.cfg, {"loss_names": {"mae": 1}}))

    def build_dataset(self, split: str) -> Dataset | None:
        if self.cfg.mae_image_folder:
            root = os.path.join(self.cfg.mae_image_folder, split)
            if not os.path.isdir(root):
                return None
            keys = self.cfg.train_transform_keys if split == "train" else self.cfg.val_transform_keys
            return _FolderImages(root, build_transform(keys[0], self.cfg.image_size))
        images_only = OmegaConf.merge(self.cfg, {"image_only": True, "draw_false_image": 0, "draw_false_text": 0})
        return build_datasets(list(self.cfg.datasets), split, images_only, self.tokenizer)

    def collate_fn(self, split: str) -> Callable[[list], dict]:
        return _collate_images if self.cfg.mae_image_folder else super().collate_fn(split)

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        loss = mae_forward(model, batch["image"], self.cfg.mask_ratio, self.cfg.norm_pix_loss)
        return {"loss": loss, "mae_loss": loss.detach()}

    def evaluate(self, model: nn.Module, loader, split: str = "val") -> dict[str, float]:
        """Mean MAE loss over the split, the masks drawn under ``seed`` (the same every time)."""
        device = next(model.parameters()).device
        meter = SumMeter(device)
        meter.add("samples", 0.0)
        meter.add("loss", 0.0)
        with seeded(self.cfg.seed, devices=[device] if device.type == "cuda" else []):
            for batch in loader:
                images = move_to_device(batch, device)["image"]
                loss = mae_forward(model, images, self.cfg.mask_ratio, self.cfg.norm_pix_loss)
                meter.add("samples", len(images))
                meter.add("loss", loss * len(images))
        mean = ratio(meter.reduce(), "loss", "samples")
        return {"mae_loss": mean, "the_metric": -mean}

    def on_checkpoint(self, checkpoint: dict[str, Any], is_best: bool, end_of_epoch: bool) -> None:
        """The tower's weights in MAE's layout, ``{"model": ...}``, at ``mae_checkpoint_path``."""
        path = mae_checkpoint_path(self.cfg)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_torch_save({"model": checkpoint["state_dict"]}, path)
        log.info("MAE-layout checkpoint: %s", path)
