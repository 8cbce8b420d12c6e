"""Two optimizers (AdamW for the transformer, SGD for the visual backbone): each steps its own
parameters, the SGD milestones, checkpoints holding both, resume and warm-start restoring them."""
import pytest
import torch
from torch import nn

from vlkit.engine.checkpoint import load_checkpoint
from vlkit.engine.optim import build_milestone_scheduler, build_optimizers
from vlkit.engine.trainer import Trainer

from tests.engine._engine_toy import ToyModel, ToyTask, toy_config


class TwoPartModel(ToyModel):
    """The toy MLP whose first layer plays the visual backbone."""

    visual_backbone_prefix = "net.0."


class TwoPartTask(ToyTask):
    def build_model(self) -> nn.Module:
        return TwoPartModel(self.dropout)


def visual_config(tmp_path, name, **overrides):
    return toy_config(tmp_path, run_name=name, visual_optimizer="sgd", visual_learning_rate=0.5,
                      visual_momentum=0.0, visual_weight_decay=0.0, visual_lr_milestones=[1], weight_decay=0.0,
                      **overrides)


def test_each_optimizer_steps_only_its_own_parameters(tmp_path):
    cfg = visual_config(tmp_path, "split")
    torch.manual_seed(0)
    model = TwoPartModel(0.0)
    adamw, sgd = build_optimizers(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    adam_names = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    sgd_names = {names[id(p)] for g in sgd.param_groups for p in g["params"]}
    assert sgd_names == {"net.0.weight", "net.0.bias"}
    assert adam_names == set(names.values()) - sgd_names and isinstance(adamw, torch.optim.AdamW)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(4, 8)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    sgd.step()  # only the backbone moves, by exactly -lr * grad
    for name, param in model.named_parameters():
        expected = before[name] - 0.5 * grads[name] if name in sgd_names else before[name]
        assert torch.allclose(param, expected), name
    adamw.step()
    assert set(adamw.state) == {p for g in adamw.param_groups for p in g["params"]}
    assert not any(sgd.state[p] for p in sgd.state if p in adamw.state)


def test_milestones_divide_the_visual_lr_by_ten_from_their_epoch():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.003)
    schedule = build_milestone_scheduler(optimizer, [4, 8], steps_per_epoch=3)
    lrs = []
    for _ in range(33):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    epoch_lrs = lrs[::3]
    assert all(abs(a - b) < 1e-12 for a, b in zip(epoch_lrs, [0.003] * 4 + [3e-4] * 4 + [3e-5] * 3))


def test_checkpoints_hold_both_optimizers_and_resume_restores_them(tmp_path):
    cfg = visual_config(tmp_path, "first", max_epoch=2)
    first = Trainer(cfg, TwoPartTask(cfg)).fit()
    saved = load_checkpoint(first["last_checkpoint"])
    assert len(saved["optimizer_states"]) == len(saved["lr_schedulers"]) == 2
    assert saved["optimizer_states"][1]["param_groups"][0]["lr"] == 0.05  # epoch 1: past milestone 1

    resumed_cfg = visual_config(tmp_path, "resumed", max_epoch=2, resume_from=first["last_checkpoint"])
    trainer = Trainer(resumed_cfg, TwoPartTask(resumed_cfg))
    trainer._prepare_training()
    trainer._resume(resumed_cfg.resume_from)
    for optimizer, state in zip(trainer.optimizers, saved["optimizer_states"]):
        restored = optimizer.state_dict()
        assert restored["param_groups"] == state["param_groups"]
        for key, values in state["state"].items():
            assert all(torch.equal(restored["state"][key][k], v) for k, v in values.items() if torch.is_tensor(v))
    assert [s.state_dict() for s in trainer.schedulers] == saved["lr_schedulers"]


def test_state_files_warm_start_one_optimizer_and_keep_the_other_fresh(tmp_path):
    cfg = visual_config(tmp_path, "source", max_epoch=1)
    source = load_checkpoint(Trainer(cfg, TwoPartTask(cfg)).fit()["last_checkpoint"])
    sgd_file = tmp_path / "sgd.pth"
    torch.save(source["optimizer_states"][1], sgd_file)
    warm_cfg = visual_config(tmp_path, "warm", max_epoch=1, load_optimizer_states=["", str(sgd_file)])
    trainer = Trainer(warm_cfg, TwoPartTask(warm_cfg))
    trainer._prepare_training()
    assert trainer.optimizers[0].state_dict()["state"] == {}  # fresh AdamW ("--not_load_adam_optimizer")
    assert trainer.optimizers[1].param_groups[0]["lr"] == 0.5  # the fresh milestone schedule sets the LR

    bad = tmp_path / "bad.pth"
    torch.save(source["optimizer_states"][0], bad)  # AdamW's state into the SGD optimizer: wrong parameters
    bad_cfg = visual_config(tmp_path, "bad", max_epoch=1, load_optimizer_states=["", str(bad)])
    with pytest.raises(ValueError, match="start that optimizer fresh"):
        Trainer(bad_cfg, TwoPartTask(bad_cfg))._prepare_training()
