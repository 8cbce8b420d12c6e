"""GRIT-VLP / ALBEF loss pieces against hand computations."""
import math

import pytest
import torch

from vlkit.objectives import in_batch_negatives, itc_loss


def test_hardest_negatives_pick_the_most_similar_other_pair():
    similarity = torch.tensor([   # rows: images, columns: texts
        [0.9, 0.8, 0.1],
        [0.2, 0.9, 0.7],
        [0.6, 0.3, 0.9],
    ])
    image_for_text, text_for_image = in_batch_negatives(similarity)
    assert text_for_image.tolist() == [1, 2, 0]   # row-wise, diagonal excluded
    assert image_for_text.tolist() == [2, 0, 1]   # column-wise


def test_hardest_negatives_skip_excluded_pairs_and_fall_back_when_all_are():
    similarity = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.9, 0.7], [0.6, 0.3, 0.9]])
    same_image = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)  # 0 and 1 share an image
    image_for_text, text_for_image = in_batch_negatives(similarity, same_image)
    assert text_for_image.tolist() == [2, 2, 0]
    assert image_for_text.tolist() == [2, 2, 1]
    everything = torch.ones(3, 3, dtype=torch.bool)
    _, fallback = in_batch_negatives(similarity, everything)
    assert fallback.tolist() == [1, 2, 0]  # nothing allowed: any other pair, never the positive


def test_sampled_negatives_never_draw_the_positive_and_follow_the_softmax():
    similarity = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([in_batch_negatives(similarity, sample=True, generator=generator)[1] for _ in range(2000)])
    assert (draws != torch.arange(3)).all()
    share = (draws[:, 0] == 1).float().mean().item()
    assert share == pytest.approx(math.exp(3) / (math.exp(3) + 1), abs=0.03)


def test_in_batch_negatives_need_two_pairs():
    with pytest.raises(ValueError, match="per_gpu_batchsize"):
        in_batch_negatives(torch.ones(1, 1))


def test_grit_itc_with_consistency_matches_a_hand_computation():
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(4, 5), dim=1).requires_grad_()
    text = torch.nn.functional.normalize(torch.randn(4, 5), dim=1).requires_grad_()
    temp = 0.07
    out = itc_loss(image, text, torch.tensor(math.log(1 / temp)), max_logit_scale=math.log(1000),
                   in_batch=True, consistency_weight=0.2)

    i2t, t2i = (image @ text.t() / temp).detach(), (text @ image.t() / temp).detach()
    def ce(logits):  # one-hot diagonal targets
        return -torch.log_softmax(logits, 1).diagonal().mean()
    def soft(logits, targets):
        return -(torch.softmax(targets, 1) * torch.log_softmax(logits, 1)).sum(1).mean()
    expected = (ce(i2t) + ce(t2i)) / 2 + 0.2 * (soft(i2t, t2i) + soft(t2i, i2t)) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_grit_itc_back_propagates_through_the_query_side_only():
    image = torch.nn.functional.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    text = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    scale = torch.tensor(math.log(1 / 0.07))
    # text detached as a key: only the t2i direction (text as query) can move text; so with text a
    # constant, image's gradient equals that of the i2t half alone
    in_batch = itc_loss(image, text, scale, in_batch=True)
    in_batch.loss.backward()
    grad = image.grad.clone()
    image.grad = None
    i2t = torch.exp(scale) * image @ text.t()
    half = torch.nn.functional.cross_entropy(i2t, torch.arange(3)) / 2
    half.backward()
    assert torch.allclose(grad, image.grad, atol=1e-6)
