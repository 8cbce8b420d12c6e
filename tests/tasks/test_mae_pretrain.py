"""``task_mae_pretrain``: image-only MAE learns, and its MAE-layout checkpoint fills a VLC model's
vision tower through ``pretrain_path=``."""
import numpy as np
import pytest
import torch
from PIL import Image

from vlkit.cli.training import train_or_test
from vlkit.config import resolve_config
from vlkit.engine.logging import read_metrics
from vlkit.models.build import build_model_with_reports
from vlkit.tasks import build_task
from vlkit.tasks.mae_pretrain import mae_forward

WORDS = ["task_mae_pretrain", "tiny", "progress_bar=False", "datasets=[coco]"]


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory, synthetic):
    """60 steps of tiny MAE on the synthetic COCO images; (summary, MAE-layout checkpoint path)."""
    out = tmp_path_factory.mktemp("mae")
    words = [*WORDS, f"data_root={synthetic['out_dir']}", f"tokenizer={synthetic['tokenizer']}",
             f"vocab_size={synthetic['vocab_size']}", f"log_dir={out}", "max_steps=60", "val_check_interval=60",
             "learning_rate=1e-3", "warmup_steps=5", f"mae_checkpoint={out / 'mae.pth'}"]
    return train_or_test(resolve_config(words)), out / "mae.pth"


def test_mae_loss_falls_on_synthetic_images(mae_run):
    summary, _ = mae_run
    losses = [r["train/loss"] for r in read_metrics(f"{summary['run_dir']}/metrics.jsonl") if r["event"] == "train"]
    # random scenes leave most masked patches unpredictable from the kept ones: per-patch normalised
    # background noise has variance 1, so the loss falls from ~1.07 to just under 1 (docs/results.md)
    assert losses[-1] < 0.95 * losses[0], losses
    assert summary["val"]["mae_loss"] < 0.95 * losses[0]


def test_the_checkpoint_is_mae_layout_and_fills_the_whole_vision_tower(mae_run, data_words):
    _, path = mae_run
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"model"}
    assert {"cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.weight",
            "mask_token", "decoder_pred.weight"} <= set(saved["model"])
    cfg = resolve_config(["task_mlm_itm_mae", "tiny", "progress_bar=False", *data_words, f"pretrain_path={path}"])
    model, reports = build_model_with_reports(cfg)
    assert reports[0].missing == [] and reports[0].unexpected == []
    assert torch.equal(model.transformer.blocks[1].mlp.fc2.weight, saved["model"]["blocks.1.mlp.fc2.weight"])
    assert torch.equal(model.transformer.decoder_pred.weight, saved["model"]["decoder_pred.weight"])


def test_mae_masks_three_quarters_and_scores_only_removed_patches(data_words):
    """Changing the pixels of kept patches only leaves the loss's target untouched: the loss moves
    only through the encoder, while a fully visible image (mask 0) would score nothing."""
    cfg = resolve_config([*WORDS, *data_words])
    tower = build_task(cfg).build_model()
    images = torch.randn(2, 3, 64, 64)
    torch.manual_seed(0)
    tokens, mask, _ = tower.embed(images, mask_ratio=cfg.mask_ratio)
    assert cfg.mask_ratio == 0.75 and tokens.shape[1] == 1 + 4 and mask.sum(1).tolist() == [12, 12]
    torch.manual_seed(0)
    loss = mae_forward(tower, images, cfg.mask_ratio, norm_pix=True)
    assert torch.isfinite(loss) and loss > 0


def test_mae_reads_an_image_folder(tmp_path, data_words):
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        folder = tmp_path / "images" / split / "any_class"
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    words = [*WORDS, *data_words, f"mae_image_folder={tmp_path / 'images'}", f"log_dir={tmp_path / 'runs'}",
             "max_steps=2", "val_check_interval=2", "per_gpu_batchsize=4", "batch_size=4", "warmup_steps=0.1"]
    summary = train_or_test(resolve_config(words))
    assert summary["global_step"] == 2 and summary["val"]["mae_loss"] > 0
    assert (tmp_path / "runs" / "mae_pretrain_seed0_from_" / "mae_pretrain.pth").is_file()


def test_mae_refuses_a_folder_without_train(tmp_path, data_words):
    with pytest.raises(FileNotFoundError, match="mae_image_folder"):
        build_task(resolve_config([*WORDS, *data_words, f"mae_image_folder={tmp_path}"]))
