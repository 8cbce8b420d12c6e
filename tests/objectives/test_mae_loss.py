"""MAE reconstruction loss."""
import pytest
import torch

from vlkit.objectives import mae_loss


def naive_mae_loss(pred, target, mask, norm_pix):
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for n in range(pred.shape[1]):
            if not mask[b, n]:
                continue
            t = target[b, n].tolist()
            if norm_pix:
                mean = sum(t) / len(t)
                var = sum((x - mean) ** 2 for x in t) / (len(t) - 1)
                t = [(x - mean) / (var + 1e-6) ** 0.5 for x in t]
            p = pred[b, n].tolist()
            total += sum((pi - ti) ** 2 for pi, ti in zip(p, t)) / len(t)
            count += 1
    return total / count


def test_normalised_target_uses_unbiased_variance():
    target = torch.tensor([[[1.0, 2.0, 3.0]]])
    loss = mae_loss(torch.zeros(1, 1, 3), target, torch.ones(1, 1))
    # mean 2, unbiased variance 1: target (-1, 0, 1)/sqrt(1 + 1e-6); a biased variance would give 1.0
    assert loss.item() == pytest.approx((2 / 3) / (1 + 1e-6), rel=1e-6)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_loss_matches_naive_loop(norm_pix):
    torch.manual_seed(0)
    pred, target = torch.randn(2, 5, 6), torch.randn(2, 5, 6) * 3 + 1
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 1, 0, 1]])
    expected = naive_mae_loss(pred, target, mask, norm_pix)
    assert mae_loss(pred, target, mask, norm_pix=norm_pix).item() == pytest.approx(expected, rel=1e-5)


def test_kept_patches_do_not_matter():
    torch.manual_seed(1)
    pred, target = torch.randn(2, 4, 6, requires_grad=True), torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]])
    loss = mae_loss(pred, target, mask)
    loss.backward()
    kept = mask == 0
    assert torch.all(pred.grad[kept] == 0) and torch.all(pred.grad[~kept].abs().sum(-1) > 0)
    changed_pred, changed_target = pred.detach().clone(), target.clone()
    changed_pred[kept] += 100.0
    changed_target[kept] -= 50.0
    assert mae_loss(changed_pred, changed_target, mask).item() == pytest.approx(loss.item(), rel=1e-6)


def test_no_removed_patch_gives_zero_loss_that_backpropagates():
    pred = torch.randn(1, 3, 4, requires_grad=True)
    loss = mae_loss(pred, torch.randn(1, 3, 4), torch.zeros(1, 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_shape_error_names_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        mae_loss(torch.zeros(2, 4, 5), torch.zeros(2, 4, 5), torch.zeros(2, 3))
