"""ELIP token pruning and merging (vlkit.models.token_reduction): selection, merging, scoring,
keep counts on the real grid, gradients, and configuration errors."""
import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from vlkit.models.backbones.vit import VisionTransformer, _blocks
from vlkit.models.token_reduction import (
    FUSED, PruneSchedule, TokenPruner, cls_attention_row, merge_tokens, select_tokens,
)


def schedule(begin=(1,), keep=(0.5,), act=(1,), **kw):
    return PruneSchedule(begin_layer=tuple(begin), keep_ratio=tuple(keep), num_act_layers=tuple(act), **kw)


def test_selection_keeps_the_best_tokens_in_original_order_and_merges_the_rest():
    # two rows of hand-built CLS attention over 6 patch tokens
    scores = torch.tensor([[0.05, 0.30, 0.10, 0.25, 0.20, 0.10],
                           [0.40, 0.02, 0.08, 0.05, 0.15, 0.30]])
    selection = select_tokens(scores, keep=3)
    assert selection.kept.tolist() == [[1, 3, 4], [0, 4, 5]]
    assert sorted(selection.dropped[0].tolist()) == [0, 2, 5] and sorted(selection.dropped[1].tolist()) == [1, 2, 3]

    x = torch.randn(2, 7, 4)  # CLS + 6 patches
    merged = merge_tokens(x, selection)
    assert merged.shape == (2, 5, 4)
    assert torch.equal(merged[:, 0], x[:, 0])
    assert torch.equal(merged[0, 1:4], x[0, [2, 4, 5]]) and torch.equal(merged[1, 1:4], x[1, [1, 5, 6]])
    # the fused token: weighted sum with the discarded scores renormalised (+1e-6 as the reference)
    w0 = torch.tensor([0.05, 0.10, 0.10]) / (0.25 + 1e-6)
    expected0 = w0[0] * x[0, 1] + w0[1] * x[0, 3] + w0[2] * x[0, 6]
    w1 = torch.tensor([0.02, 0.08, 0.05]) / (0.15 + 1e-6)
    expected1 = w1[0] * x[1, 2] + w1[1] * x[1, 3] + w1[2] * x[1, 4]
    assert torch.allclose(merged[0, 4], expected0, atol=1e-6)
    assert torch.allclose(merged[1, 4], expected1, atol=1e-6)


def test_merge_gradients_reach_kept_and_merged_states_with_constant_weights():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.1]], requires_grad=True)
    selection = select_tokens(scores, keep=2)  # keeps 1, 2; merges 0, 3 with weights 0.5, 0.5
    assert not selection.weights.requires_grad
    x = torch.randn(1, 5, 3, requires_grad=True)
    probe = torch.tensor([1.0, -2.0, 3.0])
    (merge_tokens(x, selection) @ probe).sum().backward()
    weight = 0.1 / (0.2 + 1e-6)
    expected = torch.stack([probe, probe, probe, probe, probe]) * torch.tensor([1, weight, 1, 1, weight])[:, None]
    assert torch.allclose(x.grad[0], expected) and scores.grad is None


def test_merge_leaves_the_tokens_before_the_image_alone():
    x = torch.randn(1, 3 + 1 + 4, 2)  # 3 text tokens, image CLS, 4 patches
    merged = merge_tokens(x, select_tokens(torch.tensor([[0.1, 0.6, 0.2, 0.1]]), keep=2), image_start=3)
    assert torch.equal(merged[:, :4], x[:, :4]) and torch.equal(merged[0, 4:6], x[0, [5, 6]])


def explicit_cls_row(block, x):
    """softmax(QK^T / sqrt(d)) of a timm Block written out in full: row 0, heads averaged."""
    attn = block.attn
    qkv = attn.qkv(block.norm1(x)).reshape(x.shape[0], x.shape[1], 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    full = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)  # (B, H, T, T)
    return full.mean(dim=1)[:, 0]


def test_cheap_scorer_row_equals_the_full_attention_maps_cls_row():
    torch.manual_seed(0)
    block = _blocks(32, 1, 4, 4.0, 0.0)[0].eval()
    x = torch.randn(2, 10, 32)
    assert torch.allclose(cls_attention_row(block, x, 0), explicit_cls_row(block, x), atol=1e-6)
    # open_clip's block: nn.MultiheadAttention's own (head-averaged) weights
    clip_block = ResidualAttentionBlock(32, 4).eval()
    _, weights = clip_block.attn(*(clip_block.ln_1(x),) * 3, need_weights=True, average_attn_weights=True)
    assert torch.allclose(cls_attention_row(clip_block, x, 0), weights[:, 0], atol=1e-6)
    # a padded key gets no attention
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[:, 7:] = 0
    assert torch.all(cls_attention_row(block, x, 0, mask)[:, 7:] == 0)


def tower(image_size=64, patch=16, depth=3, dim=32):
    torch.manual_seed(0)
    return VisionTransformer(image_size=image_size, patch_size=patch, dim=dim, depth=depth, num_heads=2).eval()


def test_pruner_keeps_what_the_written_out_scores_say():
    vit = tower()
    x = vit.embed(torch.randn(2, 3, 64, 64))[0]
    text = torch.randn(2, 32)
    for scoring in ("cls_attention", "lookahead"):
        pruner = TokenPruner(schedule(begin=(1,), keep=(0.25,), act=(2,), scoring=scoring), vit.blocks, 16).eval()
        out, _ = pruner(vit.blocks, x, text_cls=text)
        with torch.no_grad():
            if scoring == "cls_attention":  # block 0 (just run) on its input, CLS mixed with the text
                z = x.clone()
                z[:, 0] = 0.8 * x[:, 0] + 0.2 * text
                row = explicit_cls_row(vit.blocks[0], z)
            else:  # blocks 1..2 at full length from the mixed state, row of the last
                z = vit.blocks[0](x)
                z[:, 0] = 0.8 * z[:, 0] + 0.2 * text
                row = explicit_cls_row(vit.blocks[2], vit.blocks[1](z))
        expected = row[:, 1:].topk(4, dim=1).indices.sort(dim=1).values
        stage = pruner.last_trace.stages[0]
        assert torch.equal(stage.kept, expected), scoring
        assert out.shape == (2, 1 + 4 + 1, 32)
        assert pruner.last_trace.tokens_per_block == [17, 6, 6]


@pytest.mark.parametrize("image_size,patch", [(32, 16), (64, 16), (48, 8), (64, 8)])
def test_keep_counts_follow_the_real_patch_grid(image_size, patch):
    vit = tower(image_size, patch, depth=4)
    grid = (image_size // patch) ** 2
    vit.token_pruner = TokenPruner(schedule(begin=(1, 3), keep=(0.9, 0.45), act=(1, 1)), vit.blocks, grid)
    vit(torch.randn(1, 3, image_size, image_size))
    k1, k2 = int(grid * 0.9), int(grid * 0.45)
    assert vit.token_pruner.last_trace.tokens_per_block == [1 + grid, 1 + k1 + 1, 1 + k1 + 1, 1 + k2 + 1]


def test_reference_keep_counts_on_their_grids():
    meter = schedule(begin=(2, 4, 9), keep=(0.9, 0.7, 0.45), act=(2, 5, 2))
    albef = schedule(begin=(2, 4, 10), keep=(0.9, 0.65, 0.4), act=(2, 6, 2))
    assert meter.keep_counts(49) == [44, 34, 22]  # B/32 at 224, the reference's fixed N0
    assert meter.keep_counts(324) == [291, 226, 145]  # B/16 at 288: the real grid, not 44/34/22
    assert albef.keep_counts(256) == [230, 166, 102] and albef.keep_counts(196) == [176, 127, 78]


def test_keep_ratio_one_appends_no_zero_token():
    vit = tower()
    vit.token_pruner = TokenPruner(schedule(keep=(1.0,)), vit.blocks, 16)
    x = vit.embed(torch.randn(1, 3, 64, 64))[0]
    assert torch.equal(vit.encode(x, image_start=0), vit.encode(x))
    assert vit.token_pruner.last_trace.tokens_per_block == [17, 17, 17]


def test_no_gradient_reaches_the_selection_but_kept_and_merged_states_get_one():
    vit = tower()
    vit.token_pruner = TokenPruner(schedule(begin=(1,), keep=(0.25,)), vit.blocks, 16)
    x = vit.embed(torch.randn(2, 3, 64, 64))[0].detach().requires_grad_(True)
    text = torch.randn(2, 32, requires_grad=True)
    out = vit.encode(x, image_start=0, text_cls=text)
    probe = torch.randn(32)  # (a plain sum of a LayerNorm output has no gradient)
    (out[:, -1] @ probe).sum().backward()  # the fused token only
    assert text.grad is None  # the text vector only steers the (gradient-free) scores
    stage = vit.token_pruner.last_trace.stages[0]
    assert not stage.weights.requires_grad
    patch_grad = x.grad[:, 1:].abs().sum(-1)  # (B, 16)
    for row in range(2):  # every patch reaches the fused token through block 0 and the merge
        assert torch.all(patch_grad[row] > 0)
    # a kept token's gradient: its own state (and, through block 0, the others')
    x.grad = None
    (vit.encode(x, image_start=0, text_cls=text)[:, 1] @ probe).sum().backward()
    kept = stage.kept[0, 0] + 1
    assert x.grad[0, kept].abs().sum() > 0 and text.grad is None


def test_earlier_fused_token_is_merged_again_and_tracked():
    vit = tower(depth=3)
    vit.token_pruner = TokenPruner(schedule(begin=(1, 2), keep=(0.5, 0.125), act=(1, 1)), vit.blocks, 16).eval()
    vit(torch.randn(3, 3, 64, 64))
    first, second = vit.token_pruner.last_trace.stages
    assert first.kept.shape == (3, 8) and first.merged.shape == (3, 8)
    assert second.kept.shape == (3, 2) and second.merged.shape == (3, 7)  # 8 kept + fused - 2
    for row in range(3):  # stage 2 chooses among stage 1's kept patches and its fused token
        assert set(second.kept[row].tolist() + second.merged[row].tolist()) == set(first.kept[row].tolist()) | {FUSED}
        assert torch.equal(first.kept[row], first.kept[row].sort().values)


@pytest.mark.parametrize("spec,key", [
    (dict(begin=(1, 5), keep=(0.9, 0.5), act=(1, 1)), "img_prune.begin_layer"),
    (dict(begin=(1,), keep=(1.2,)), "img_prune.keep_ratio"),
    (dict(begin=(1,), keep=(0.0,)), "img_prune.keep_ratio"),
    (dict(begin=(1, 2), keep=(0.9,), act=(1, 1)), "img_prune.keep_ratio"),
    (dict(begin=(1, 2), keep=(0.9, 0.5), act=(1,)), "img_prune.num_act_layers"),
    (dict(begin=(2,), keep=(0.5,), act=(2,)), "img_prune.num_act_layers"),
    (dict(begin=(1, 2), keep=(0.5, 0.9), act=(1, 1)), "img_prune.keep_ratio"),
])
def test_bad_schedules_name_the_key(spec, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        TokenPruner(schedule(**spec), _blocks(16, 3, 2, 2.0, 0.0), 16)


def test_a_tower_that_cannot_prune_says_so():
    convs = nn.ModuleList([nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)])
    with pytest.raises(TypeError, match="cannot prune"):
        TokenPruner(schedule(begin=(1,)), convs, 16)
    vit = tower()
    vit.token_pruner = TokenPruner(schedule(), vit.blocks, 16)
    dropped = vit.embed(torch.randn(1, 3, 64, 64), mask_ratio=0.5)[0]
    with pytest.raises(ValueError, match="patch dropping"):
        vit.encode(dropped, image_start=0)


def test_open_clip_blocks_prune_too():
    torch.manual_seed(0)
    blocks = nn.ModuleList(ResidualAttentionBlock(32, 2) for _ in range(3)).eval()
    x = torch.randn(2, 17, 32)
    pruner = TokenPruner(schedule(begin=(1,), keep=(0.5,), act=(2,)), blocks, 16).eval()
    out, _ = pruner(blocks, x, text_cls=torch.zeros(2, 32))
    assert out.shape == (2, 1 + 8 + 1, 32)



def test_reference_keep_counts_switch_reproduces_elip_meter():
    """img_prune_keep_from=resolution_before: ELIP-METER's int((resolution_before // 32)^2 * ratio)."""
    from vlkit.config.cli_with import resolve_config
    from vlkit.models.token_reduction import schedule_from_config

    cfg = resolve_config(["with", "elip_meter", "img_prune_keep_from=resolution_before", "resolution_before=224"])
    released = schedule_from_config(cfg)
    assert released.keep_counts(324) == [44, 34, 22]  # B/16 at 288 keeps what the reference keeps
    assert released.keep_counts(49) == [44, 34, 22]
    cfg_384 = resolve_config(["with", "elip_meter", "img_prune_keep_from=resolution_before", "resolution_before=384"])
    assert schedule_from_config(cfg_384).keep_counts(576) == [129, 100, 64]  # (384 // 32)^2 = 144
    with pytest.raises(ValueError, match="keeps 129 patches but the image has only 49"):
        schedule_from_config(cfg_384).keep_counts(49)
    default = schedule_from_config(resolve_config(["with", "elip_meter"]))
    assert default.keep_counts(324) == [291, 226, 145]  # the real grid stays the default
    with pytest.raises(ValueError, match="img_prune_keep_from='fixed'"):
        schedule_from_config(resolve_config(["with", "elip_meter", "img_prune_keep_from=fixed"]))
