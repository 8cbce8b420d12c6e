"""Checkpoints in the layouts other code bases write, built by hand from the fact sheet.

The key lists here are written out from ``/work/shared/reference/vilt_vlc.md`` §2.4 (VLC and
ViLT Lightning state dicts) for any depth, not derived from vlkit's model, so a renamed or missing
module in vlkit shows up as a failed test instead of a silently matching round trip.
"""
import sys
import types
from collections import OrderedDict
from contextlib import contextmanager

import torch
from omegaconf import OmegaConf

from vlkit.config.schema import Config


def _block_keys(prefix, dim, hidden):
    """One pre-LN ViT block: {key: shape}, timm / MAE names (fact sheet §2.4)."""
    return OrderedDict([
        (f"{prefix}.norm1.weight", (dim,)), (f"{prefix}.norm1.bias", (dim,)),
        (f"{prefix}.attn.qkv.weight", (3 * dim, dim)), (f"{prefix}.attn.qkv.bias", (3 * dim,)),
        (f"{prefix}.attn.proj.weight", (dim, dim)), (f"{prefix}.attn.proj.bias", (dim,)),
        (f"{prefix}.norm2.weight", (dim,)), (f"{prefix}.norm2.bias", (dim,)),
        (f"{prefix}.mlp.fc1.weight", (hidden, dim)), (f"{prefix}.mlp.fc1.bias", (hidden,)),
        (f"{prefix}.mlp.fc2.weight", (dim, hidden)), (f"{prefix}.mlp.fc2.bias", (dim,)),
    ])


def reference_shapes(
    *, hidden, vocab, text_len, grid, patch, depth, decoder_dim=0, decoder_depth=0,
    mlm=True, itm=True, token_types=2, mlp_ratio=4, nlvr2=False,
):
    """{key: shape} of a VLC (``decoder_dim`` > 0) or ViLT ``VLCTransformer`` /
    ``ViLTransformerSS`` ``ckpt['state_dict']``, in the order PyTorch writes it (§2.4).

    ``text_embeddings.position_ids`` is the transformers-4.x buffer that official files carry.
    """
    H, G = hidden, grid
    keys = OrderedDict([
        ("text_embeddings.position_ids", (1, text_len)),
        ("text_embeddings.word_embeddings.weight", (vocab, H)),
        ("text_embeddings.position_embeddings.weight", (text_len, H)),
        ("text_embeddings.token_type_embeddings.weight", (2, H)),
        ("text_embeddings.LayerNorm.weight", (H,)),
        ("text_embeddings.LayerNorm.bias", (H,)),
        ("token_type_embeddings.weight", (token_types, H)),
        ("transformer.cls_token", (1, 1, H)),
        ("transformer.pos_embed", (1, 1 + G * G, H)),
    ])
    if decoder_dim:
        keys["transformer.mask_token"] = (1, 1, decoder_dim)
        keys["transformer.decoder_pos_embed"] = (1, 1 + G * G, decoder_dim)
    keys["transformer.patch_embed.proj.weight"] = (H, 3, patch, patch)
    keys["transformer.patch_embed.proj.bias"] = (H,)
    for i in range(depth):
        keys.update(_block_keys(f"transformer.blocks.{i}", H, mlp_ratio * H))
    keys["transformer.norm.weight"] = (H,)
    keys["transformer.norm.bias"] = (H,)
    if decoder_dim:
        keys["transformer.decoder_embed.weight"] = (decoder_dim, H)
        keys["transformer.decoder_embed.bias"] = (decoder_dim,)
        for j in range(decoder_depth):
            keys.update(_block_keys(f"transformer.decoder_blocks.{j}", decoder_dim, mlp_ratio * decoder_dim))
        keys["transformer.decoder_norm.weight"] = (decoder_dim,)
        keys["transformer.decoder_norm.bias"] = (decoder_dim,)
        keys["transformer.decoder_pred.weight"] = (patch * patch * 3, decoder_dim)
        keys["transformer.decoder_pred.bias"] = (patch * patch * 3,)
    keys["pooler.dense.weight"] = (H, H)
    keys["pooler.dense.bias"] = (H,)
    if mlm:
        keys["mlm_score.bias"] = (vocab,)
        keys["mlm_score.transform.dense.weight"] = (H, H)
        keys["mlm_score.transform.dense.bias"] = (H,)
        keys["mlm_score.transform.LayerNorm.weight"] = (H,)
        keys["mlm_score.transform.LayerNorm.bias"] = (H,)
        keys["mlm_score.decoder.weight"] = (vocab, H)
    if itm:
        keys["itm_score.fc.weight"] = (2, H)
        keys["itm_score.fc.bias"] = (2,)
    if nlvr2:  # §2.3: Linear 2H→2H, LayerNorm(2H), GELU (no parameters), Linear 2H→2
        keys.update({"nlvr2_classifier.0.weight": (2 * H, 2 * H), "nlvr2_classifier.0.bias": (2 * H,),
                     "nlvr2_classifier.1.weight": (2 * H,), "nlvr2_classifier.1.bias": (2 * H,),
                     "nlvr2_classifier.3.weight": (2, 2 * H), "nlvr2_classifier.3.bias": (2,)})
    return keys


def shapes_for(cfg, **extra):
    """``reference_shapes`` for a vlkit config (the sizes a reference run with it would have)."""
    mae = cfg.loss_names.mae > 0
    return reference_shapes(
        hidden=cfg.hidden_size, vocab=cfg.vocab_size, text_len=cfg.max_text_len,
        grid=cfg.image_size // cfg.patch_size, patch=cfg.patch_size, depth=cfg.num_layers,
        decoder_dim=cfg.mae_decoder_dim if mae else 0,
        decoder_depth=cfg.mae_decoder_depth if mae else 0,
        mlm=cfg.loss_names.mlm > 0, itm=cfg.loss_names.itm > 0,
        mlp_ratio=int(cfg.mlp_ratio), **extra,
    )


# Metric modules' states, present in some Lightning versions' files (§2.4 "Other contents").
METRIC_STATES = {
    "train_mlm_accuracy.correct": torch.tensor(123),
    "train_mlm_accuracy.total": torch.tensor(456),
    "train_mlm_loss.total_loss": torch.tensor(7.5),
    "val_itm_accuracy.correct": torch.tensor(3),
    "dev_nlvr2_accuracy.total": torch.tensor(9),
    "test_vqa_score.score": torch.tensor(1.5),
}

REFERENCE_CONFIG_KEYS = [f for f in Config.__dataclass_fields__][: list(Config.__dataclass_fields__).index("model")]


def lightning_checkpoint(model, cfg, *, shapes=None, callback_type=None):
    """An official-looking PL 1.1.4 checkpoint of ``model`` as VLC/ViLT's ``run.py`` writes it.

    The state dict is assembled key by key from the fact-sheet list (``shapes``, default
    ``shapes_for(cfg)``), values taken from ``model``; plus the ``position_ids`` buffer, metric
    states, optimizer / scheduler / AMP state and the sacred config under
    ``hyper_parameters.config``. ``callback_type`` keys the callback state by a class, as
    PL 1.1 does (``callbacks: {ModelCheckpoint: {...}}``).
    """
    shapes = shapes_for(cfg) if shapes is None else shapes
    ours = model.state_dict()
    state = OrderedDict()
    for key, shape in shapes.items():
        if key == "text_embeddings.position_ids":
            state[key] = torch.arange(shape[1]).unsqueeze(0)
            continue
        value = ours[key]
        assert tuple(value.shape) == shape, (key, tuple(value.shape), shape)
        state[key] = value.clone()
    state.update(METRIC_STATES)
    plain = OmegaConf.to_container(cfg)
    config = {key: plain[key] for key in REFERENCE_CONFIG_KEYS}
    callback_state = {
        "monitor": "val/the_metric", "best_model_score": torch.tensor(0.7),
        "best_model_path": "result/vlc_seed0/version_0/checkpoints/epoch=9.ckpt",
    }
    return {
        "epoch": 9,
        "global_step": 25000,
        "pytorch-lightning_version": "1.1.4",
        "callbacks": {callback_type or "ModelCheckpoint": callback_state},
        "optimizer_states": [{
            "state": {0: {"step": 25000, "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
            "param_groups": [{"lr": 0.0, "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.01,
                              "correct_bias": True, "params": [0]}],
        }],
        "lr_schedulers": [{"base_lrs": [1e-4], "last_epoch": 25000, "_step_count": 25001,
                           "verbose": False, "_last_lr": [0.0], "lr_lambdas": [None]}],
        "native_amp_scaling_state": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                     "growth_interval": 2000, "_growth_tracker": 17},
        "state_dict": state,
        "hparams_name": "config",
        "hyper_parameters": {"config": config},
    }


@contextmanager
def fake_module_class(module_name, class_name, bases=()):
    """A class importable as ``module_name.class_name`` while the block runs (and gone after),
    so a pickle can refer to a library this environment does not have, as files written by
    PyTorch Lightning 1.1 refer to ``pytorch_lightning.callbacks.model_checkpoint``."""
    parts = module_name.split(".")
    assert parts[0] not in sys.modules, f"{parts[0]} is installed; pick a module that is not"
    added = []
    parent = None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        module = sys.modules.get(name)
        if module is None:
            module = types.ModuleType(name)
            sys.modules[name] = module
            added.append(name)
            if parent is not None:
                setattr(parent, parts[depth - 1], module)
        parent = module
    cls = type(class_name, bases, {"__module__": module_name})
    setattr(parent, class_name, cls)
    try:
        yield cls
    finally:
        for name in reversed(added):
            del sys.modules[name]
