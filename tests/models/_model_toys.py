"""Tiny configs and inputs shared by the model tests."""
import torch
from omegaconf import OmegaConf

from vlkit.config.schema import defaults

TINY = dict(
    hidden_size=64, num_layers=2, num_heads=2, mlp_ratio=4, image_size=64, patch_size=16,
    max_text_len=16, vocab_size=120, mae_decoder_dim=32, mae_decoder_depth=1, mae_decoder_heads=2,
)


def tiny_cfg(loss_names=None, **overrides):
    """The default config shrunk to CPU size; ``loss_names`` entries override the defaults."""
    cfg = OmegaConf.create(defaults())
    cfg.merge_with({**TINY, **overrides})
    for name, value in (loss_names or {}).items():
        cfg.loss_names[name] = value
    return cfg


def vilt_cfg(**overrides):
    """A tiny ViLT-flavour config: learned positions, 32-px patches, no MAE decoder, no patch
    dropping (as the `vilt` preset)."""
    return tiny_cfg(**{"vit": "vit_base_patch32_384", "patch_size": 32, "mae_patch_drop": False, **overrides})


def text_batch(batch=2, length=16, real=(16, 9), vocab=120, seed=0):
    """(ids, masks): ``real[b]`` real tokens per row, the rest zero-id padding with mask 0."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, length), generator=generator)
    masks = torch.zeros(batch, length, dtype=torch.long)
    for row, count in enumerate(real):
        masks[row, :count] = 1
        ids[row, count:] = 0
    return ids, masks


def image_batch(batch=2, size=64, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
