"""ELIP vision-token pruning and merging (meter_elip.md §3), an option of any ViT vision tower.

Before each stage block ``begin_layer[s]`` the image patch tokens are scored by the image [CLS]
query's attention (averaged over heads), with the text [CLS] mixed into the image CLS state
(``text_weight``: ELIP's 0.2). The ``keep`` best tokens stay, in their original order; all the
others (an earlier stage's fused token included) collapse into one token appended at the end, the
sum of their hidden states weighted by their renormalised scores. Selection and weights carry no
gradient; the kept and merged hidden states do. There are no parameters.

Two scorers:

* ``lookahead`` (ELIP): a detached copy of the sequence runs the next ``num_act_layers`` blocks at
  full length without gradients; the last of them gives the CLS-query row. About 40% more ViT
  forward compute (fact sheet §3.5).
* ``cls_attention`` (cheap): the CLS-query row of the block just run (block 0 when a stage starts
  before any block), recomputed as one extra query row from that block's normalised input and its
  query/key projections, so the blocks themselves keep the fused SDPA kernel.

Keep counts are fractions of the real patch grid, ``floor(num_patches * keep_ratio)`` (the
reference's fixed 49 / 256 is a bug). ``img_prune_keep_from=resolution_before`` reproduces
ELIP-METER's counts instead, fractions of a fixed ``(resolution_before // 32)^2`` grid (44/34/22
at 224), to evaluate released ELIP-METER checkpoints as they were trained. A stage that would discard nothing (``keep_ratio=1.0``) is
skipped instead of appending a zero token. Blocks may be timm ``Block``s or open_clip
``ResidualAttentionBlock``s (batch first); ``block_view`` is the one place that knows both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlkit.utils import distributed

SCORERS = ("lookahead", "cls_attention")
PHASES = ("pretrain", "finetune", "eval")
MERGE_EPS = 1e-6
"""Added to the sum of the discarded tokens' scores before renormalising (as the reference)."""
FUSED = -1
"""Original patch index reported for a token that is itself an earlier stage's fused token."""


# ----- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneSchedule:
    """Where and how much to prune: one entry per stage in ``begin_layer`` (0-based block before
    which tokens are pruned), ``num_act_layers`` (look-ahead blocks) and ``keep_ratio`` (fraction
    of the patch grid kept), plus the scorer, the text share and the phases in which it runs."""

    begin_layer: tuple[int, ...]
    keep_ratio: tuple[float, ...]
    num_act_layers: tuple[int, ...] = ()
    scoring: str = "lookahead"
    text_weight: float = 0.2
    phases: tuple[str, ...] = PHASES
    nominal_patches: int = 0
    """Patch count the keep ratios apply to; 0: the real grid (ELIP-METER: ``(resolution_before // 32)^2``)."""

    def __post_init__(self) -> None:
        stages = len(self.begin_layer)
        if not stages:
            raise ValueError("img_prune.begin_layer is empty: give the stage blocks, or img_prune={} for no pruning")
        if len(self.keep_ratio) != stages:
            raise ValueError(
                f"img_prune.keep_ratio has {len(self.keep_ratio)} entries but img_prune.begin_layer has "
                f"{stages}: give one keep ratio per stage"
            )
        if self.scoring not in SCORERS:
            raise ValueError(f"img_prune_scoring={self.scoring!r}: choose one of {list(SCORERS)}")
        if (self.scoring == "lookahead" or self.num_act_layers) and len(self.num_act_layers) != stages:
            raise ValueError(
                f"img_prune.num_act_layers has {len(self.num_act_layers)} entries but img_prune.begin_layer "
                f"has {stages}: give one look-ahead depth per stage"
            )
        if list(self.begin_layer) != sorted(set(self.begin_layer)) or min(self.begin_layer) < 0:
            raise ValueError(f"img_prune.begin_layer={list(self.begin_layer)} must be increasing block indices >= 0")
        for ratio in self.keep_ratio:
            if not 0 < ratio <= 1:
                raise ValueError(f"img_prune.keep_ratio={list(self.keep_ratio)}: every ratio must be in (0, 1]")
        if list(self.keep_ratio) != sorted(self.keep_ratio, reverse=True):
            raise ValueError(
                f"img_prune.keep_ratio={list(self.keep_ratio)} must not grow from stage to stage: a later "
                "stage cannot keep patches an earlier one merged"
            )
        if self.scoring == "lookahead" and min(self.num_act_layers) < 1:
            raise ValueError(f"img_prune.num_act_layers={list(self.num_act_layers)}: every depth must be >= 1")
        if not 0 <= self.text_weight <= 1:
            raise ValueError(f"img_prune_text_weight={self.text_weight} must be in [0, 1] (ELIP: 0.2)")
        unknown = set(self.phases) - set(PHASES)
        if unknown:
            raise ValueError(f"img_prune_phases has unknown phase(s) {sorted(unknown)}; valid: {list(PHASES)}")

    def check_depth(self, depth: int) -> None:
        """Fail when a stage (or its look-ahead window) reaches past a tower of ``depth`` blocks."""
        if max(self.begin_layer) >= depth:
            raise ValueError(
                f"img_prune.begin_layer={list(self.begin_layer)}: block {max(self.begin_layer)} is beyond the "
                f"vision tower's {depth} blocks (0-based); use the ELIP preset of this host or smaller indices"
            )
        for stage, begin in enumerate(self.begin_layer):
            if self.scoring == "lookahead" and begin + self.num_act_layers[stage] > depth:
                raise ValueError(
                    f"img_prune.num_act_layers={list(self.num_act_layers)}: the look-ahead window of stage "
                    f"{stage} (blocks {begin}..{begin + self.num_act_layers[stage] - 1}) reaches past the "
                    f"vision tower's {depth} blocks"
                )

    def keep_counts(self, num_patches: int) -> list[int]:
        """Patch tokens kept at each stage: ``floor(num_patches * keep_ratio)``, at least 1; with
        ``nominal_patches``, ``int(nominal_patches * keep_ratio)`` (ELIP-METER's)."""
        if self.nominal_patches:
            counts = [int(self.nominal_patches * ratio) for ratio in self.keep_ratio]
            if max(counts) > num_patches:
                raise ValueError(
                    f"img_prune_keep_from=resolution_before keeps {max(counts)} patches but the image has only "
                    f"{num_patches}: set resolution_before to the checkpoint's, or img_prune_keep_from=grid"
                )
        else:
            counts = [math.floor(num_patches * ratio + 1e-9) for ratio in self.keep_ratio]
        if min(counts) < 1:
            raise ValueError(
                f"img_prune.keep_ratio={list(self.keep_ratio)} keeps no patch of a {num_patches}-patch "
                "grid at some stage; raise the ratio"
            )
        return counts


def schedule_from_config(cfg: Any) -> PruneSchedule | None:
    """The ``img_prune*`` keys of ``cfg`` as a schedule; None when ``img_prune`` is empty or
    ``begin_layer`` is ``[]`` (no pruning)."""
    spec = dict(cfg.img_prune or {})
    if not spec.get("begin_layer"):
        return None
    if "keep_ratio" not in spec:
        raise ValueError("img_prune sets begin_layer but no keep_ratio: give one keep ratio per stage")
    return PruneSchedule(
        begin_layer=tuple(int(b) for b in spec["begin_layer"]),
        keep_ratio=tuple(float(r) for r in spec["keep_ratio"]),
        num_act_layers=tuple(int(n) for n in spec.get("num_act_layers") or ()),
        scoring=cfg.img_prune_scoring,
        text_weight=float(cfg.img_prune_text_weight),
        phases=tuple(cfg.img_prune_phases),
        nominal_patches=_nominal_patches(cfg),
    )


KEEP_FROM = ("grid", "resolution_before")


def _nominal_patches(cfg: Any) -> int:
    """0 (the real grid), or ELIP-METER's fixed ``(resolution_before // 32)^2`` (``img_prune_keep_from``)."""
    if cfg.img_prune_keep_from not in KEEP_FROM:
        raise ValueError(f"img_prune_keep_from={cfg.img_prune_keep_from!r}: choose one of {list(KEEP_FROM)}")
    if cfg.img_prune_keep_from == "grid":
        return 0
    if cfg.resolution_before < 32:
        raise ValueError(f"resolution_before={cfg.resolution_before}: give the checkpoint's training resolution (>= 32)")
    return (cfg.resolution_before // 32) ** 2


def phase(training: bool, is_pretrain: bool) -> str:
    """``pretrain``, ``finetune`` or ``eval`` for a module's training flag and the run's ``is_pretrain``."""
    if not training:
        return "eval"
    return "pretrain" if is_pretrain else "finetune"


def phases_of_run(is_pretrain: bool) -> set[str]:
    """The phases a run enters: its training phase and evaluation."""
    return {phase(True, is_pretrain), "eval"}


# ----- the two block types ------------------------------------------------------------------------


@dataclass
class BlockView:
    """What scoring needs of one transformer block: its pre-attention norm, stacked q/k/v
    projection, head count, per-head q/k norms, softmax scale, and how to call it."""

    norm: nn.Module
    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor | None
    heads: int
    scale: float
    q_norm: Callable[[torch.Tensor], torch.Tensor]
    k_norm: Callable[[torch.Tensor], torch.Tensor]
    call: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    """block(x, key_padding_mask): a (B, T) mask with 1 for real tokens, or None."""


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _timm_call(block: nn.Module) -> Callable:
    def call(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return block(x, attn_mask=None if mask is None else mask.bool()[:, None, None, :])
    return call


def _open_clip_call(block: nn.Module) -> Callable:
    def call(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("open_clip blocks take no key-padding mask here: an image-only tower has no padding")
        return block(x)
    return call


def block_view(block: nn.Module) -> BlockView:
    """The ``BlockView`` of a timm ``Block`` (``norm1``, ``attn.qkv``) or an open_clip
    ``ResidualAttentionBlock`` (``ln_1``, batch-first ``nn.MultiheadAttention``)."""
    attn = getattr(block, "attn", None)
    if hasattr(block, "norm1") and hasattr(attn, "qkv") and hasattr(attn, "num_heads"):
        return BlockView(block.norm1, attn.qkv.weight, attn.qkv.bias, attn.num_heads, float(attn.scale),
                         attn.q_norm, attn.k_norm, _timm_call(block))
    if hasattr(block, "ln_1") and isinstance(attn, nn.MultiheadAttention):
        if not attn.batch_first or not attn._qkv_same_embed_dim:
            raise ValueError(
                "ELIP scores open_clip blocks whose nn.MultiheadAttention is batch-first with one in_proj "
                "weight (open_clip >= 2.24); convert the tower's blocks to batch-first"
            )
        head_dim = attn.embed_dim // attn.num_heads
        return BlockView(block.ln_1, attn.in_proj_weight, attn.in_proj_bias, attn.num_heads, head_dim ** -0.5,
                         _identity, _identity, _open_clip_call(block))
    raise TypeError(
        f"ELIP cannot prune a tower built of {type(block).__name__} blocks: it scores tokens with the CLS "
        "query's self-attention of ViT blocks (timm Block or open_clip ResidualAttentionBlock); a tower "
        "without a CLS token or without such blocks (Swin, ResNet) cannot prune: set img_prune={}"
    )


def cls_attention_row(block: nn.Module, x: torch.Tensor, query_pos: int,
                      key_padding_mask: torch.Tensor | None = None,
                      query_state: torch.Tensor | None = None) -> torch.Tensor:
    """Head-averaged attention (B, T) of one query over the block's input ``x`` (B, T, D): the
    softmax of q·k / sqrt(d) that ``block`` computes for position ``query_pos``, or for
    ``query_state`` (B, D) in its place. Computes one query row and the keys, not the full map."""
    with distributed.gathered_params(block):  # strategy=fsdp: the block's weights are read directly
        return _cls_attention_row(block, x, query_pos, key_padding_mask, query_state)


def _cls_attention_row(block: nn.Module, x: torch.Tensor, query_pos: int,
                       key_padding_mask: torch.Tensor | None, query_state: torch.Tensor | None) -> torch.Tensor:
    view = block_view(block)
    batch, length, _ = x.shape
    width = view.qkv_weight.shape[0] // 3
    head_dim = width // view.heads
    q_bias = k_bias = None
    if view.qkv_bias is not None:
        q_bias, k_bias = view.qkv_bias[:width], view.qkv_bias[width:2 * width]
    hidden = view.norm(x)
    query_in = view.norm(query_state) if query_state is not None else hidden[:, query_pos]
    q = F.linear(query_in, view.qkv_weight[:width], q_bias).view(batch, view.heads, 1, head_dim)
    k = F.linear(hidden, view.qkv_weight[width:2 * width], k_bias).view(batch, length, view.heads, head_dim)
    q, k = view.q_norm(q), view.k_norm(k.transpose(1, 2))
    logits = (q @ k.transpose(-2, -1)).squeeze(2).float() * view.scale  # (B, H, T)
    if key_padding_mask is not None:
        logits = logits.masked_fill(~key_padding_mask.bool()[:, None, :], float("-inf"))
    return logits.softmax(dim=-1).mean(dim=1)


# ----- selection and merging ----------------------------------------------------------------------


@dataclass
class Selection:
    """One stage's choice, as positions among the current patch tokens (after the image CLS):
    ``kept`` (B, K) in original order, ``dropped`` (B, M - K), and the merge ``weights`` (B, M - K)."""

    kept: torch.Tensor
    dropped: torch.Tensor
    weights: torch.Tensor


@torch.no_grad()
def select_tokens(scores: torch.Tensor, keep: int) -> Selection:
    """The ``keep`` best-scored tokens of each row of ``scores`` (B, M), in original order; the rest
    with their scores renormalised to sum to 1 (+``MERGE_EPS``). Batched: topk, sort, gather."""
    if not 0 < keep < scores.shape[1]:
        raise ValueError(f"keep={keep} tokens of {scores.shape[1]}: must discard at least one and keep one")
    best = scores.topk(keep, dim=1).indices
    kept = best.sort(dim=1).values
    is_kept = torch.zeros_like(scores, dtype=torch.uint8).scatter_(1, best, 1)
    # the dropped positions in original order: a stable sort puts the unkept (0) first, no mask indexing
    dropped = is_kept.sort(dim=1, stable=True).indices[:, : scores.shape[1] - keep]
    dropped_scores = scores.gather(1, dropped)
    weights = dropped_scores / (dropped_scores.sum(dim=1, keepdim=True) + MERGE_EPS)
    return Selection(kept, dropped, weights)


def merge_tokens(x: torch.Tensor, selection: Selection, image_start: int = 0) -> torch.Tensor:
    """``x`` (B, T, D) rebuilt as [everything up to the image CLS, kept patches, one fused token].

    The image CLS sits at ``image_start`` and the patch tokens run from it to the end. The fused
    token is the weighted sum of the dropped tokens' hidden states; gradients reach the kept and
    the dropped states, never the weights.
    """
    head, patches = x[:, : image_start + 1], x[:, image_start + 1:]
    width = x.shape[-1]
    kept = patches.gather(1, selection.kept[..., None].expand(-1, -1, width))
    dropped = patches.gather(1, selection.dropped[..., None].expand(-1, -1, width))
    fused = (selection.weights.detach().to(x.dtype)[..., None] * dropped).sum(dim=1, keepdim=True)
    return torch.cat([head, kept, fused], dim=1)


# ----- the pruning block loop ---------------------------------------------------------------------


@dataclass
class PruneStage:
    """What one stage did, in original patch indices (row-major on the patch grid): ``kept`` (B, K),
    ``merged`` (B, D; ``FUSED`` marks an earlier fused token merged again) and their merge
    ``weights`` (B, D). Empty ``merged`` when the stage kept every token."""

    block: int
    kept: torch.Tensor
    merged: torch.Tensor
    weights: torch.Tensor


@dataclass
class PruneTrace:
    """One pruned forward pass: the stages, and the image tokens (CLS and fused token included)
    entering each block."""

    num_patches: int
    stages: list[PruneStage] = field(default_factory=list)
    tokens_per_block: list[int] = field(default_factory=list)


class TokenPruner(nn.Module):
    """Runs a tower's blocks with ELIP pruning before the stage blocks (no parameters).

    Active when ``enabled`` and the phase (from ``self.training``, which follows the tower's, and
    ``is_pretrain``) is in the schedule's phases. The last pass's ``PruneTrace`` is ``last_trace``.
    """

    def __init__(self, schedule: PruneSchedule, blocks: Sequence[nn.Module], num_patches: int,
                 is_pretrain: bool = True):
        super().__init__()
        schedule.check_depth(len(blocks))
        for block in blocks:
            block_view(block)  # fails now for a block type that cannot be scored
        self.schedule = schedule
        self.num_patches = num_patches
        self.keep = dict(zip(schedule.begin_layer, schedule.keep_counts(num_patches)))
        self.stage_of = {begin: stage for stage, begin in enumerate(schedule.begin_layer)}
        self.is_pretrain = is_pretrain
        self.enabled = True
        self.last_trace: PruneTrace | None = None

    def active(self) -> bool:
        """Whether a pass now prunes (``enabled`` and the current phase is scheduled)."""
        return self.enabled and phase(self.training, self.is_pretrain) in self.schedule.phases

    def extra_repr(self) -> str:
        s = self.schedule
        return (f"begin_layer={list(s.begin_layer)}, keep={list(self.keep.values())} of {self.num_patches}, "
                f"scoring={s.scoring}, phases={list(s.phases)}")

    def forward(self, blocks: Sequence[nn.Module], x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                image_start: int = 0, text_cls: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All ``blocks`` on ``x`` (B, T, D), pruning the image patch tokens before each stage block.

        The image CLS is at ``image_start`` and its patches run to the end of the sequence (text
        tokens, if any, come first and are never pruned). The text vector mixed into the CLS state
        is ``text_cls`` (B, D) when given, else the state at position 0 when text precedes the
        image (the text [CLS] of a single-stream model), else none. Returns the output and the
        key-padding mask of the shorter sequence (None stays None).
        """
        patches = x.shape[1] - image_start - 1
        if patches != self.num_patches:
            raise ValueError(
                f"ELIP prunes a full patch grid of {self.num_patches} patches, but the image has {patches} "
                "tokens after its CLS: patch dropping (MAE, mae_patch_drop / itm_patch_drop) does not "
                "compose with pruning; switch one of them off"
            )
        if text_cls is not None and text_cls.shape != (x.shape[0], x.shape[-1]):
            raise ValueError(
                f"text_cls of shape {tuple(text_cls.shape)}: ELIP mixes the text [CLS] into the image CLS "
                f"without a projection, so it must be (batch, vision width) = {(x.shape[0], x.shape[-1])}"
            )
        origin = torch.arange(patches, device=x.device).expand(x.shape[0], -1)
        trace = PruneTrace(self.num_patches)
        previous = None
        for index, block in enumerate(blocks):
            view = block_view(block)
            if index in self.stage_of:
                x, key_padding_mask, origin = self._prune(blocks, index, x, previous, key_padding_mask,
                                                          image_start, text_cls, origin, trace)
            trace.tokens_per_block.append(x.shape[1] - image_start)
            previous = x
            x = view.call(x, key_padding_mask)
        self.last_trace = trace
        return x, key_padding_mask

    def _text_vector(self, x: torch.Tensor, image_start: int, text_cls: torch.Tensor | None) -> torch.Tensor | None:
        if text_cls is not None:
            return text_cls.detach()
        return x[:, 0].detach() if image_start > 0 else None

    def _mixed_cls(self, x: torch.Tensor, image_start: int, text_cls: torch.Tensor | None) -> torch.Tensor:
        """The image CLS state with the text vector mixed in: (1 - w)·CLS + w·text."""
        cls = x[:, image_start]
        text = self._text_vector(x, image_start, text_cls)
        if text is None:
            return cls
        weight = self.schedule.text_weight
        return (1 - weight) * cls + weight * text.to(cls.dtype)

    @torch.no_grad()
    def scores(self, blocks: Sequence[nn.Module], index: int, x: torch.Tensor, previous: torch.Tensor | None,
               key_padding_mask: torch.Tensor | None, image_start: int,
               text_cls: torch.Tensor | None) -> torch.Tensor:
        """(B, M) importance of the patch tokens before block ``index`` (see the module doc)."""
        if self.schedule.scoring == "lookahead":
            depth = self.schedule.num_act_layers[self.stage_of[index]]
            z = x.detach().clone()
            z[:, image_start] = self._mixed_cls(z, image_start, text_cls)
            for block in blocks[index: index + depth - 1]:
                was_training = block.training
                block.train(False)  # scoring needs no dropout
                z = block_view(block).call(z, key_padding_mask)
                block.train(was_training)
            row = cls_attention_row(blocks[index + depth - 1], z, image_start, key_padding_mask)
        else:
            source, block = (previous, blocks[index - 1]) if previous is not None else (x, blocks[index])
            query = self._mixed_cls(source, image_start, text_cls)
            row = cls_attention_row(block, source.detach(), image_start, key_padding_mask, query_state=query)
        return row[:, image_start + 1:]

    def _prune(self, blocks, index, x, previous, key_padding_mask, image_start, text_cls, origin, trace):
        keep = self.keep[index]
        current = x.shape[1] - image_start - 1
        if keep >= current:  # nothing to discard: no fused token (the reference appended a zero one)
            empty = origin[:, :0]
            trace.stages.append(PruneStage(index, origin.clone(), empty, empty.float()))
            return x, key_padding_mask, origin
        scores = self.scores(blocks, index, x, previous, key_padding_mask, image_start, text_cls)
        selection = select_tokens(scores, keep)
        x = merge_tokens(x, selection, image_start)
        if key_padding_mask is not None:  # image tokens are all real
            ones = key_padding_mask.new_ones(x.shape[0], keep + 1)
            key_padding_mask = torch.cat([key_padding_mask[:, : image_start + 1], ones], dim=1)
        kept, merged = origin.gather(1, selection.kept), origin.gather(1, selection.dropped)
        trace.stages.append(PruneStage(index, kept, merged, selection.weights))
        fused = torch.full_like(kept[:, :1], FUSED)
        return x, key_padding_mask, torch.cat([kept, fused], dim=1)


def token_pruner_from_config(cfg: Any, blocks: Sequence[nn.Module], num_patches: int) -> TokenPruner | None:
    """The pruner ``cfg``'s ``img_prune*`` keys ask for over ``blocks``, or None when pruning is off."""
    schedule = schedule_from_config(cfg)
    if schedule is None:
        return None
    return TokenPruner(schedule, blocks, num_patches, is_pretrain=bool(cfg.is_pretrain))


def check_no_patch_dropping(cfg: Any, drops_patches: bool) -> None:
    """Fail when ``cfg`` both prunes (in a phase the run enters) and drops MAE patches."""
    schedule = schedule_from_config(cfg)
    if schedule is None or not drops_patches:
        return
    if phases_of_run(bool(cfg.is_pretrain)) & set(schedule.phases):
        raise ValueError(
            "ELIP pruning (img_prune) and MAE patch dropping are both on: pruning needs the full patch grid "
            "and the MAE decoder every visible patch; set mae_patch_drop=False loss_names.mae=0, or "
            "img_prune_phases to phases this run does not enter (a pre-training run enters pretrain and eval)"
        )


def switch_off_token_pruning(module: nn.Module) -> None:
    """Disable every pruner inside ``module`` (ALBEF's momentum encoder stays full length)."""
    for child in module.modules():
        if isinstance(child, TokenPruner):
            child.enabled = False


def token_pruners(module: nn.Module) -> list[TokenPruner]:
    """Every pruner inside ``module``."""
    return [child for child in module.modules() if isinstance(child, TokenPruner)]
