"""ALBEF's momentum model and ITC queue: what is copied, the EMA, the queue ring, checkpoints."""
import pytest
import torch

from tests.models._model_toys import image_batch, text_batch, tiny_cfg
from vlkit.models.build import build_model, build_model_with_reports
from vlkit.models.checkpoints.albef import to_albef
from vlkit.models.momentum import FeatureQueue, momentum_update
from vlkit.tasks.pretrain import PretrainTask

ALBEF = dict(model="cross_attention", fusion_layer=1, max_position_embeddings=20, drop_rate=0.0, wpa_weight=0.0,
             itm_negatives="sampled", draw_false_image=0, momentum=0.9, itc_queue_size=6)


def albef_cfg(**overrides):
    return tiny_cfg({"itc": 1, "itm": 1, "mlm": 1}, **{**ALBEF, **overrides})


def test_the_momentum_model_copies_encoders_and_contrastive_heads_frozen():
    torch.manual_seed(0)
    model = build_model(albef_cfg())
    teacher = model.momentum_model
    assert {name for name, _ in teacher.named_children()} == {"visual_encoder", "text_encoder", "itc_head", "mlm_score"}
    assert not hasattr(teacher.itc_head, "logit_scale")  # one learnable temperature: the online one
    assert not any(p.requires_grad for p in teacher.parameters())
    assert teacher.mlm_score.decoder.weight is teacher.text_encoder.embeddings.word_embeddings.weight
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name
    assert model.itc_queue.image.shape == (6, 256) and model.itc_queue.index.eq(-100).all()


def test_momentum_update_is_the_exponential_moving_average():
    torch.manual_seed(0)
    model = build_model(albef_cfg())
    with torch.no_grad():
        for p in model.momentum_model.parameters():
            p.fill_(1.0)
        for name, p in model.named_parameters():
            if not name.startswith("momentum_model."):
                p.fill_(3.0)
    momentum_update(model, 0.9)
    for p in model.momentum_model.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.9 * 1.0 + 0.1 * 3.0))


def test_the_queue_is_a_ring_of_the_latest_rows():
    queue = FeatureQueue(size=5, dim=2)
    rows = torch.arange(12, dtype=torch.float).view(6, 2)
    queue.enqueue(rows[:3], -rows[:3], torch.tensor([0, 1, 2]))
    queue.enqueue(rows[3:], -rows[3:], torch.tensor([3, 4, 5]))
    assert queue.ptr.item() == 1
    assert queue.index.tolist() == [5, 1, 2, 3, 4]
    assert torch.equal(queue.image[0], rows[5]) and torch.equal(queue.text[4], -rows[4])


def test_a_training_step_queues_the_momentum_features_and_ramps_distillation():
    torch.manual_seed(0)
    cfg = albef_cfg(distill_alpha=0.4, distill_warmup=True)
    model, task = build_model(cfg), PretrainTask(cfg)
    ids, masks = text_batch(batch=4, real=(16, 9, 5, 12))
    labels = torch.where(torch.arange(16) % 3 == 1, ids, torch.full_like(ids, -100))
    batch = {"text_ids": ids, "text_masks": masks, "image": image_batch(batch=4), "text_ids_mlm": ids,
             "text_labels_mlm": labels, "img_index": torch.tensor([7, 8, 9, 10])}
    task.on_train_batch(epoch=0, batch_in_epoch=5, batches_per_epoch=10)
    assert task.alpha == pytest.approx(0.2)
    task.training_step(model, batch)
    assert model.itc_queue.ptr.item() == 4 and model.itc_queue.index[:4].tolist() == [7, 8, 9, 10]
    teacher = model.momentum_model
    with torch.no_grad():
        expected = teacher.itc_head.embed_text(teacher.text_only_feats(ids, masks))
    assert torch.allclose(model.itc_queue.text[:4], expected, atol=1e-6)
    task.on_train_batch(epoch=1, batch_in_epoch=0, batches_per_epoch=10)
    assert task.alpha == pytest.approx(0.4)


def test_albef_checkpoints_with_momentum_and_queues_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model(albef_cfg())
    with torch.no_grad():
        for p in model.momentum_model.parameters():
            p.add_(torch.randn_like(p))
        model.itc_queue.enqueue(torch.randn(4, 256), torch.randn(4, 256), torch.arange(4))
    state = to_albef(model.state_dict(), "pretrain")
    assert state["image_queue"].shape == (256, 6) and state["idx_queue"].shape == (1, 6)
    assert state["queue_ptr"].tolist() == [4]
    assert "text_encoder_m.bert.encoder.layer.1.crossattention.self.key.weight" in state
    assert "text_encoder_m.cls.predictions.decoder.bias" in state and "vision_proj_m.weight" in state
    torch.save({"model": state}, tmp_path / "albef.pth")
    torch.manual_seed(1)
    loaded, reports = build_model_with_reports(albef_cfg(load_path=str(tmp_path / "albef.pth")))
    assert reports[0].missing == [] and reports[0].unexpected == []
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_a_checkpoint_without_momentum_copies_starts_the_momentum_model_from_its_weights(tmp_path):
    """GRIT's retrieval started the momentum encoder from random weights without --copy_init."""
    torch.manual_seed(0)
    pretrained = build_model(albef_cfg(momentum=0.0, itc_queue_size=0))
    torch.save({"model": to_albef(pretrained.state_dict(), "pretrain")}, tmp_path / "grit.pth")
    torch.manual_seed(1)
    loaded = build_model(albef_cfg(load_path=str(tmp_path / "grit.pth")))
    for name, value in loaded.momentum_model.state_dict().items():
        assert torch.equal(value, pretrained.state_dict()[name]), name


def test_queue_and_distillation_without_momentum_are_refused():
    with pytest.raises(ValueError, match="momentum"):
        build_model(albef_cfg(momentum=0.0, itc_queue_size=8))
