"""The parts of CLIP-ViL's checkpoint layout that ``model=clipvil`` does not have (clipvil.md §2.2,
§2.8, key lists in ``clipvil_keys/``), so exported files load in the reference's recipes.

The reference builds the whole OpenAI CLIP under ``bert.encoder.visual_model`` (it runs only the
ResNet trunk) and a box encoder ``bert.encoder.visn_fc.box_fc`` / ``box_layer_norm`` it never
calls; its VQA ``--loadLXMERTQA`` loader asserts that none of these ``bert.*`` keys is missing.
:func:`reference_only_parts` gives them, in the reference's names without the layout prefix
(``bert.encoder....``):

* carried over from a loaded checkpoint (``load_path``) that has them, at their shapes;
* otherwise as the reference initialises them: CLIP's own initialisation, then the CLIP file's
  values (``clip_path``), then LXMERT's BERT-style re-initialisation of every Linear, Embedding
  and LayerNorm (N(0, 0.02), bias 0; LayerNorm 1/0), which in the reference runs after CLIP is
  loaded. The box encoder is a BERT-initialised Linear(4, hidden) and LayerNorm.

The CLIP text tower and attention pool take ``clip_model_name``'s open_clip sizes; a custom ResNet
(``clip_layers`` / ``clip_width``, tiny test models) gets a one-layer, 64-wide text tower, as
there is no reference file to match.
"""
from __future__ import annotations

from typing import Any, Mapping

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch import nn

from vlkit.models.backbones.clip_resnet import named_resnet, resnet_shape
from vlkit.models.heads import bert_init
from vlkit.utils.seeding import seeded

BOX_PREFIX = "bert.encoder.visn_fc."
CLIP_PREFIX = "bert.encoder.visual_model."
CUSTOM_TEXT_TOWER = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}
CUSTOM_EMBED_DIM = 64
BERT_LAYER_NORM_EPS = 1e-12


def reference_name(key: str) -> str:
    """A key of either reference layout without its prefix (``module.``, ``lxrt_encoder.model.``)."""
    return key.removeprefix("module.").removeprefix("lxrt_encoder.model.")


def _clip_shell(cfg: Any) -> CLIP:
    """An open_clip CLIP of the model's ResNet trunk with ``clip_model_name``'s attention pool and text tower."""
    named_layers, named_width = resnet_shape(cfg.clip_model_name)
    layers, width = list(cfg.clip_layers) or named_layers, cfg.clip_width or named_width
    name = named_resnet(layers, width)
    if name is None:
        embed_dim, text, image_size = CUSTOM_EMBED_DIM, CUSTOM_TEXT_TOWER, 224
    else:
        config = open_clip.get_model_config(name)
        embed_dim, text, image_size = config["embed_dim"], config["text_cfg"], config["vision_cfg"]["image_size"]
    vision = CLIPVisionCfg(layers=layers, width=width, image_size=image_size)
    return CLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=CLIPTextCfg(**text))


def _fresh_parts(cfg: Any, clip_state: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    with seeded(cfg.seed):
        clip = _clip_shell(cfg)
        if clip_state:
            own = clip.state_dict()
            clip.load_state_dict({k: v for k, v in clip_state.items() if k in own and v.shape == own[k].shape},
                                 strict=False)
        clip.apply(bert_init)  # LXMERT re-initialises the CLIP module after loading it
        box = nn.ModuleDict({"box_fc": nn.Linear(4, cfg.hidden_size),
                             "box_layer_norm": nn.LayerNorm(cfg.hidden_size, eps=BERT_LAYER_NORM_EPS)})
        box.apply(bert_init)
    parts = {CLIP_PREFIX + key: value for key, value in clip.state_dict().items()
             if not key.startswith("visual.") or key.startswith("visual.attnpool.")}
    parts.update({BOX_PREFIX + key: value for key, value in box.state_dict().items()})
    return parts


def reference_only_parts(cfg: Any, loaded: Mapping[str, Any] | None = None,
                         clip_state: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The reference-only keys (``bert.encoder.visn_fc.box_*``, ``bert.encoder.visual_model.*``
    apart from the ResNet trunk) for a ``model=clipvil`` config: from ``loaded`` (a reference
    checkpoint's weights, either layout) where it has them at the same shape, else fresh."""
    parts = _fresh_parts(cfg, clip_state)
    carried = {reference_name(key): value for key, value in (loaded or {}).items() if torch.is_tensor(value)}
    for key, value in parts.items():
        if key in carried and carried[key].shape == value.shape:
            parts[key] = carried[key].detach().clone()
    return parts
