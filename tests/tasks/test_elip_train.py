"""ELIP in training: a tiny VLC pre-training with pruning on learns, and `vlkit viz elip` draws
its stages from the saved checkpoint."""
import itertools

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from vlkit.cli import main
from vlkit.config import resolve_config
from vlkit.tasks.pretrain import PretrainTask


def test_pretraining_with_elip_learns_and_its_stages_can_be_drawn(synthetic, tmp_path, capsys):
    cfg = resolve_config([
        "task_mlm_itm_mae", "tiny", "elip_tiny", "img_prune_scoring=cls_attention", "loss_names.mae=0",
        "use_mae=False", "mae_patch_drop=False", "datasets=[coco]", f"data_root={synthetic['out_dir']}",
        f"tokenizer={synthetic['tokenizer']}", f"vocab_size={synthetic['vocab_size']}", "drop_rate=0",
    ])
    torch.manual_seed(0)
    task = PretrainTask(cfg)
    model = task.build_model().train()
    loader = DataLoader(task.build_dataset("train"), batch_size=16, shuffle=False, collate_fn=task.collate_fn("train"))
    batches = list(itertools.islice(loader, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for batch in batches * 5:
        loss = task.training_step(model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    pruner = model.transformer.token_pruner
    assert pruner.last_trace.tokens_per_block == [17, 10]  # 16 patches, then 8 kept + fused
    assert sum(losses[-2:]) < sum(losses[:2]) - 0.5

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": model.state_dict()}, run / "checkpoints" / "last.ckpt")
    OmegaConf.save(cfg, run / "config.yaml")
    image = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "elip.png"
    assert main(["viz", "elip", "--image", str(image), "--text", "a red circle", "--checkpoint",
                 str(run / "checkpoints" / "last.ckpt"), "--out", str(out), "with", "elip_cheap"]) == 0
    assert "block 1: 8 kept" in capsys.readouterr().out
    picture = np.asarray(Image.open(out))
    assert picture.shape[1] > 1.5 * picture.shape[0]  # two panels side by side: the input, one stage
