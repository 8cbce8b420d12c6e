"""CLIP-ViL export: every key of the reference layout (clipvil_keys/), the parts vlkit's model
lacks carried over from a loaded checkpoint or initialised as the reference does."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vlkit.config.cli_with import resolve_config
from vlkit.config.schema import defaults, loss_names
from vlkit.models.build import build_model
from vlkit.models.checkpoints.clipvil import to_clipvil
from vlkit.models.checkpoints.clipvil_parts import reference_only_parts

KEYS = Path("/work/shared/reference/clipvil_keys")
if not KEYS.is_dir():
    KEYS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "clipvil_keys"


def _reference_layout(name):
    rows = [line.split("\t") for line in (KEYS / name).read_text().splitlines() if line.strip()]
    return {key: tuple(int(n) for n in shape.strip("()").split(",") if n.strip()) for key, shape, _ in rows}


# From the fact sheet (clipvil.md §2.8): key counts and the reference-only keys' shapes.
KEY_COUNTS = {("RN50", "pretrain"): 712, ("RN50x4", "pretrain"): 892, ("RN50", "vqa"): 704, ("RN50x4", "vqa"): 884}
REFERENCE_ONLY = {  # under bert.encoder.; C = 2048 (RN50) or 2560 (RN50x4)
    "visn_fc.box_fc.weight": lambda c: (768, 4), "visn_fc.box_layer_norm.bias": lambda c: (768,),
    "visual_model.visual.attnpool.c_proj.weight": lambda c: ({2048: 1024, 2560: 640}[c], c),
    "visual_model.token_embedding.weight": lambda c: (49408, {2048: 512, 2560: 640}[c]),
    "visual_model.positional_embedding": lambda c: (77, {2048: 512, 2560: 640}[c]),
    "visual_model.logit_scale": lambda c: (),
    "visual_model.transformer.resblocks.11.attn.in_proj_weight": lambda c: (3 * {2048: 512, 2560: 640}[c],
                                                                           {2048: 512, 2560: 640}[c]),
}


@pytest.mark.parametrize("backbone", ["RN50", "RN50x4"])
@pytest.mark.parametrize("layout", ["pretrain", "vqa"])
def test_export_has_every_key_of_the_reference_layout(backbone, layout):
    heads = (["loss_names.mlm=1", "loss_names.itm=1", "qa_label_size=9500"] if layout == "pretrain"
             else ["loss_names.vqa=1", "vqav2_label_size=3129"])
    cfg = resolve_config(["with", "clipvil", f"clip_model_name={backbone}", *heads])
    with torch.device("meta"):  # shapes only: no memory for a BERT-base and a CLIP
        model = build_model(cfg)
        exported = to_clipvil(model.state_dict(), layout, reference_only_parts(cfg))
    shapes = {key: tuple(value.shape) for key, value in exported.items()}
    assert len(shapes) == KEY_COUNTS[backbone, layout]
    prefix = "module.bert.encoder." if layout == "pretrain" else "module.lxrt_encoder.model.bert.encoder."
    channels = {"RN50": 2048, "RN50x4": 2560}[backbone]
    for key, shape in REFERENCE_ONLY.items():
        assert shapes[prefix + key] == shape(channels), key
    if KEYS.is_dir():  # the generated key lists themselves, where the fact sheets are at hand
        assert shapes == _reference_layout(f"{backbone}_{layout}.tsv")


def tiny(**overrides):
    values = {**defaults(), "model": "clipvil", "clip_layers": [1, 1, 1, 1], "clip_width": 8, "hidden_size": 32,
              "num_layers": 1, "num_heads": 2, "vocab_size": 50, "max_text_len": 8,
              "loss_names": loss_names(vqa=1), "vqav2_label_size": 4}
    values.update(overrides)
    return OmegaConf.create(values)


def test_parts_are_carried_over_from_the_loaded_checkpoint_or_initialised_as_the_reference():
    cfg = tiny()
    fresh = reference_only_parts(cfg)
    assert torch.equal(fresh["bert.encoder.visn_fc.box_layer_norm.weight"], torch.ones(32))
    assert torch.equal(fresh["bert.encoder.visn_fc.box_fc.bias"], torch.zeros(32))
    box = fresh["bert.encoder.visn_fc.box_fc.weight"]
    assert box.shape == (32, 4) and 0.005 < box.std().item() < 0.05  # N(0, 0.02), BERT-style
    assert torch.equal(fresh["bert.encoder.visual_model.ln_final.weight"], torch.ones(64))
    assert torch.equal(fresh["bert.encoder.visual_model.visual.attnpool.c_proj.bias"], torch.zeros(64))
    assert abs(fresh["bert.encoder.visual_model.token_embedding.weight"].std().item() - 0.02) < 0.002
    assert torch.equal(reference_only_parts(cfg)["bert.encoder.visn_fc.box_fc.weight"], box)  # seeded

    loaded = {"module.lxrt_encoder.model.bert.encoder.visn_fc.box_fc.weight": torch.full((32, 4), 3.0),
              "module.lxrt_encoder.model.bert.encoder.visual_model.logit_scale": torch.tensor(1.5),
              "module.bert.encoder.visn_fc.box_fc.bias": torch.full((7,), 2.0)}  # wrong shape: not taken
    carried = reference_only_parts(cfg, loaded)
    assert torch.equal(carried["bert.encoder.visn_fc.box_fc.weight"], torch.full((32, 4), 3.0))
    assert carried["bert.encoder.visual_model.logit_scale"].item() == 1.5
    assert torch.equal(carried["bert.encoder.visn_fc.box_fc.bias"], torch.zeros(32))


def test_the_clip_file_fills_parameters_the_bert_reinit_leaves_alone():
    cfg = tiny()
    clip_state = {"positional_embedding": torch.full((77, 64), 0.5), "visual.attnpool.k_proj.weight": torch.ones(256, 256)}
    parts = reference_only_parts(cfg, clip_state=clip_state)
    assert torch.equal(parts["bert.encoder.visual_model.positional_embedding"], torch.full((77, 64), 0.5))
    assert not torch.equal(parts["bert.encoder.visual_model.visual.attnpool.k_proj.weight"], torch.ones(256, 256))


def test_vqa_export_round_trips_and_keeps_the_parts(tmp_path):
    from vlkit.models.checkpoints import load_checkpoint

    cfg = tiny()
    model = build_model(cfg)
    path = tmp_path / "BEST.pth"
    parts = reference_only_parts(cfg)
    torch.save(to_clipvil(model.state_dict(), "vqa", parts), path)
    saved = torch.load(path, weights_only=True)
    assert "module.lxrt_encoder.model.bert.encoder.visn_fc.box_fc.weight" in saved
    target = build_model(cfg)
    report = load_checkpoint(target, str(path))
    assert report.missing == [] and len(report.unexpected) == len(parts)
