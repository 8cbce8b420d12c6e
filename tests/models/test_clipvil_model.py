"""CLIP-ViL's model: grid features, row/column embeddings, sub-sampling, padded-cell masks, and
the reference's checkpoint layouts (built from tiny random models) and CLIP ResNet files."""
import pytest
import torch
from omegaconf import OmegaConf
from open_clip.modified_resnet import ModifiedResNet

from vlkit.config.schema import defaults, loss_names
from vlkit.models.backbones.clip_resnet import (
    ClipResNetGrid, GridPositionEmbedding, cell_mask, resnet_shape, sub_sample_cells,
)
from vlkit.models.build import build_model
from vlkit.models.checkpoints import load_checkpoint
from vlkit.models.checkpoints.clipvil import to_clipvil, transplant_answer_head, write_pretrain_files


def tiny(**overrides):
    values = {**defaults(), "model": "clipvil", "clip_layers": [1, 1, 1, 1], "clip_width": 8, "hidden_size": 32,
              "num_layers": 2, "num_heads": 2, "vocab_size": 50, "max_text_len": 8, "drop_rate": 0.0,
              "loss_names": loss_names(mlm=1, itm=1), "qa_label_size": 5}
    values.update(overrides)
    return OmegaConf.create(values)


def inputs(batch=2, height=64, width=96):
    torch.manual_seed(1)
    pixel_mask = torch.ones(batch, height, width, dtype=torch.uint8)
    pixel_mask[:, :, :32] = 0  # the left cell column is padding
    return torch.randint(5, 50, (batch, 8)), torch.ones(batch, 8, dtype=torch.long), torch.randn(batch, 3, height, width), pixel_mask


def test_named_resnets_have_their_published_shapes():
    assert resnet_shape("RN50") == ([3, 4, 6, 3], 64) and resnet_shape("RN50x4") == ([4, 6, 10, 6], 80)
    assert ClipResNetGrid(*resnet_shape("RN50x4")).out_channels == 2560
    with pytest.raises(ValueError, match="not a CLIP ResNet"):
        resnet_shape("ViT-B/32")


@pytest.mark.parametrize("height,width,grid", [(64, 96, (2, 3)), (96, 64, (3, 2))])
def test_grid_features_for_both_orientations(height, width, grid):
    backbone = ClipResNetGrid([1, 1, 1, 1], 8).eval()
    assert not hasattr(backbone, "attnpool")
    assert backbone(torch.randn(2, 3, height, width)).shape == (2, 256, *grid)
    with pytest.raises(ValueError, match="multiples of 32"):
        backbone(torch.randn(1, 3, 70, 96))


def test_row_and_column_embeddings_are_added_out_of_place_and_backward_works_under_autocast():
    backbone, pos = ClipResNetGrid([1, 1, 1, 1], 8), GridPositionEmbedding(25, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grid = backbone(torch.randn(2, 3, 64, 96))
        out = pos(grid)
        out.float().square().sum().backward()  # the reference's in-place add fails here
    assert torch.allclose(out[1, :, 1, 2].float(),
                          (grid[1, :, 1, 2] + (pos.row.weight[1] + pos.col.weight[2]).to(grid.dtype)).float())
    assert pos.row.weight.grad is not None and backbone.conv1.weight.grad is not None


def test_cells_over_padding_only_are_masked():
    mask = torch.zeros(1, 64, 96, dtype=torch.uint8)
    mask[0, 10:40, 40:50] = 1  # touches cells (0, 1) and (1, 1)
    assert cell_mask(mask, 2, 3).tolist() == [[[False, True, False], [False, True, False]]]


def test_sub_sampling_keeps_exactly_the_asked_number_of_distinct_cells():
    tokens = torch.arange(2 * 12, dtype=torch.float32).view(2, 12, 1).expand(2, 12, 3)
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[:, 8:] = False
    picked, kept_valid = sub_sample_cells(tokens, valid, 6, generator=torch.Generator().manual_seed(0))
    for row in range(2):
        cells = picked[row, :, 0].long() - 12 * row
        assert len(set(cells.tolist())) == 6 and cells.max() < 8  # real cells first
    assert kept_valid.all()
    picked, kept_valid = sub_sample_cells(tokens, valid, 10, generator=torch.Generator().manual_seed(0))
    assert kept_valid.sum(1).tolist() == [8, 8]  # all 8 real cells, then 2 padded ones (masked)
    with pytest.raises(ValueError, match="sub_feat_num"):
        sub_sample_cells(tokens, valid, 13)


def test_model_masks_padding_unless_asked_and_subsamples_only_in_training():
    ids, masks, image, pixel_mask = inputs()
    model = build_model(tiny(sub_sampling=True, sub_feat_num=4)).eval()
    out = model.infer(ids, masks, image, pixel_mask)
    assert out["image_feats"].shape == (2, 6, 32) and out["image_masks"].tolist() == [[0, 1, 1, 0, 1, 1]] * 2
    assert model.mlm_score.decoder.weight is model.text_embeddings.word_embeddings.weight
    assert torch.allclose(out["cls_feats"], model.pooler(out["text_feats"][:, 0]))  # no tanh
    model.train()
    assert model.infer(ids, masks, image, pixel_mask)["image_masks"].tolist() == [[1, 1, 1, 1]] * 2
    open_model = build_model(tiny(attend_padded_cells=True)).eval()
    assert open_model.infer(ids, masks, image, pixel_mask)["image_masks"].all()


def test_lxmert_two_stream_layout_runs():
    model = build_model(tiny(cross_layers=1, relation_layers=1, num_layers=1)).eval()
    ids, masks, image, pixel_mask = inputs()
    out = model.infer(ids, masks, image, pixel_mask)
    assert out["text_feats"].shape == (2, 8, 32) and out["image_feats"].shape == (2, 6, 32)
    assert "encoder.cross_layers.0.cross_attention.self.query.weight" in model.state_dict()


def _roundtrip(tmp_path, cfg, layout, name):
    torch.manual_seed(0)
    source = build_model(cfg).eval()
    state = to_clipvil(source.state_dict(), layout)
    extras = {"module.bert.encoder.visn_fc.box_fc.weight": torch.zeros(32, 4),
              "module.bert.encoder.visual_model.visual.attnpool.c_proj.weight": torch.zeros(4, 4),
              "module.bert.encoder.visual_model.transformer.resblocks.0.ln_1.weight": torch.ones(4)}
    if layout == "vqa":
        extras = {key.replace("module.bert.", "module.lxrt_encoder.model.bert."): v for key, v in extras.items()}
    path = tmp_path / name
    torch.save({**state, **extras}, path)
    torch.manual_seed(1)
    target = build_model(cfg).eval()
    report = load_checkpoint(target, str(path))
    return source, target, state, report, extras


@pytest.mark.parametrize("layout,heads", [("pretrain", {}), ("vqa", {"loss_names": loss_names(vqa=1), "qa_label_size": 0})])
def test_reference_layouts_round_trip(tmp_path, layout, heads):
    cfg = tiny(**heads)
    source, target, state, report, extras = _roundtrip(tmp_path, cfg, layout, f"{layout}.pth")
    if layout == "pretrain":
        assert {"module.bert.encoder.visual_model.visual.layer1.0.downsample.0.weight", "module.cls.seq_relationship.weight",
                "module.bert.encoder.visual_pos.x_position_embedding.weight", "module.answer_head.logit_fc.3.weight",
                "module.cls.predictions.decoder.weight", "module.bert.pooler.dense.weight"} <= set(state)
    else:
        assert {"module.lxrt_encoder.model.bert.encoder.layer.1.output.LayerNorm.bias",
                "module.logit_fc.3.weight"} <= set(state) and not any(k.startswith("module.cls.") for k in state)
    assert report.format == "clipvil" and report.missing == [] and sorted(report.unexpected) == sorted(extras)
    ids, masks, image, pixel_mask = inputs()
    a, b = source.infer(ids, masks, image, pixel_mask), target.infer(ids, masks, image, pixel_mask)
    assert torch.equal(a["cls_feats"], b["cls_feats"]) and torch.equal(a["image_feats"], b["image_feats"])
    head = "qa_head" if layout == "pretrain" else "vqa_classifier"
    assert torch.equal(getattr(source, head)(a["cls_feats"]), getattr(target, head)(b["cls_feats"]))


@pytest.mark.parametrize("epoch, batch_in_epoch, end_of_epoch, name", [
    (0, 5, True, "Epoch01"),        # validated as the first epoch's last batch finished
    (2, 0, True, "Epoch02"),        # written after the loop, the counter already moved on
    (1, 3, False, "Epoch02Step13"),  # --save_step within the second epoch
])
def test_pretrain_files_are_named_as_the_reference(tmp_path, epoch, batch_in_epoch, end_of_epoch, name):
    model = build_model(tiny())
    adam, sgd, schedule = {"state": {}, "param_groups": []}, {"state": {1: {}}, "param_groups": []}, {"last_epoch": 13}
    checkpoint = {"state_dict": model.state_dict(), "epoch": epoch, "global_step": 13,
                  "vlkit": {"batch_in_epoch": batch_in_epoch}, "optimizer_states": [adam, sgd], "lr_schedulers": [schedule]}
    written = write_pretrain_files(checkpoint, str(tmp_path), end_of_epoch)
    assert [p.rsplit("/", 1)[1] for p in written] == [
        f"{name}_LXRT.pth", f"{name}_LXRT_AdamOptim.pth", f"{name}_LXRT_SGDOptim.pth", f"{name}_LXRT_Scheduler.pth"]
    assert torch.load(written[2]) == sgd and torch.load(written[3]) == schedule
    assert torch.equal(torch.load(written[0])["module.bert.pooler.dense.weight"], model.state_dict()["pooler.weight"])


def test_checkpoint_of_another_clip_resnet_is_refused(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "Epoch01_LXRT.pth"
    torch.save(to_clipvil(build_model(tiny(clip_width=16)).state_dict()), path)
    with pytest.raises(ValueError, match="clip_model_name"):
        load_checkpoint(build_model(tiny()), str(path))


def test_qa_head_rows_move_to_matching_vqa_answers():
    torch.manual_seed(0)
    state = {f"qa_head.{k}": torch.randn(4, 2) if k.endswith("weight") and k.startswith("3") else torch.randn(4 if k.startswith("3") else 2)
             for k in ("0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias")}
    out, mapped = transplant_answer_head(state, ["blue", "2", "yes", "red"], ["yes", "green", "2"])
    assert mapped == 2 and not any(k.startswith("qa_head.") for k in out)
    assert torch.equal(out["vqa_classifier.3.weight"][0], state["qa_head.3.weight"][2])
    assert torch.equal(out["vqa_classifier.3.weight"][2], state["qa_head.3.weight"][1])
    assert out["vqa_classifier.3.weight"][1].abs().sum() == 0 and out["vqa_classifier.3.bias"][1] == 0
    assert torch.equal(out["vqa_classifier.0.weight"], state["qa_head.0.weight"])


def test_openai_clip_resnet_weights_load_from_a_local_file(tmp_path):
    torch.manual_seed(3)
    clip = ModifiedResNet([1, 1, 1, 1], output_dim=64, heads=4, image_size=64, width=8)
    path = tmp_path / "RN_tiny.pt"
    torch.save({**{f"visual.{k}": v for k, v in clip.state_dict().items()}, "token_embedding.weight": torch.zeros(3, 4),
                "input_resolution": torch.tensor(64)}, path)
    model = build_model(tiny(clip_path=str(path)))
    assert torch.equal(model.backbone.layer4[0].conv3.weight, clip.layer4[0].conv3.weight)
    report = model.backbone.load_clip(str(path))
    assert report.missing == [] and "visual.attnpool.c_proj.weight" in report.ignored
    assert "token_embedding.weight" in report.ignored
    with pytest.raises(ValueError, match="set clip_model_name"):
        build_model(tiny(clip_path=str(path), clip_width=16))


def test_position_and_token_type_row_zero_never_trains():
    """LXMERT's position and token-type tables have padding_idx=0 (clipvil.md §2.6)."""
    ids, masks, image, pixel_mask = inputs()
    model = build_model(tiny())
    model.infer(ids, masks, image, pixel_mask)["cls_feats"].pow(2).sum().backward()
    embeddings = model.text_embeddings
    for table in (embeddings.position_embeddings, embeddings.token_type_embeddings):
        assert table.padding_idx == 0
        assert torch.count_nonzero(table.weight.grad[0]) == 0
    assert torch.count_nonzero(embeddings.position_embeddings.weight.grad[1]) > 0
    assert torch.count_nonzero(embeddings.position_embeddings.weight[0]) > 0  # initialised, not zeroed
