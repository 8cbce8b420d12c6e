"""The typed configuration schema: every key, its type and its default.

Keys and defaults are VLC's (``vlc/config.py``); ViLT-only keys keep ViLT's defaults. Keys that
vlkit adds are grouped at the end and documented. A config is a flat mapping except for
``loss_names``, a mapping of task name to weight (a head is built when > 0, a task runs when >= 1,
as in the reference; the value is not a loss weight).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Union

LOSS_NAMES = ("itm", "mlm", "mpp", "vqa", "nlvr2", "irtr", "mae", "itc", "snli", "nlvr_ta", "vqa_decoder")
IMG_PRUNE_KEYS = ("begin_layer", "num_act_layers", "keep_ratio")
DICT_KEYS = {"loss_names": LOSS_NAMES, "img_prune": IMG_PRUNE_KEYS}
"""Mapping-valued keys and their entries; ``KEY.ENTRY=value`` sets one entry on the command line."""


def loss_names(**on: float) -> dict[str, float]:
    """All task weights 0 except the ones given (the reference's ``_loss_names``)."""
    unknown = set(on) - set(LOSS_NAMES)
    if unknown:
        raise KeyError(f"unknown loss name(s) {sorted(unknown)}; valid: {list(LOSS_NAMES)}")
    return {name: float(on.get(name, 0)) for name in LOSS_NAMES}


@dataclass
class Config:
    # --- VLC / ViLT keys (same names and defaults as vlc/config.py) ---
    exp_name: str = "vlc"
    seed: int = 0
    datasets: list = field(default_factory=lambda: ["coco", "vg", "sbu", "gcc"])
    loss_names: dict = field(default_factory=lambda: loss_names(itm=1, mlm=1))
    batch_size: int = 4096
    train_transform_keys: list = field(default_factory=lambda: ["mae"])
    val_transform_keys: list = field(default_factory=lambda: ["mae"])
    image_size: int = 384
    max_image_len: int = -1
    draw_false_image: int = 1
    image_only: bool = False
    cache_images: bool = False
    """Keep every image in memory once decoded and transformed (only with a deterministic transform,
    e.g. ``mae_test``; 3·S²·4 bytes an image per dataloader worker): for small data sets such as the
    synthetic one, whose tiny runs otherwise spend most of a step decoding."""
    vqav2_label_size: int = 3129
    max_text_len: int = 40
    tokenizer: str = "bert-base-uncased"
    vocab_size: int = 30522
    whole_word_masking: bool = False
    mlm_prob: float = 0.15
    draw_false_text: int = 0
    vit: str = "mae_vit_base_patch16"
    hidden_size: int = 768
    num_heads: int = 12
    num_layers: int = 12
    mlp_ratio: float = 4
    drop_rate: float = 0.1
    optim_type: str = "adamw"
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    decay_power: Union[int, float, str] = 1
    max_epoch: int = 100
    max_steps: Union[int, None] = 25000
    warmup_steps: Union[int, float] = 2500
    end_lr: float = 0.0
    """Learning rate at the end of the decay (polynomial and cosine; ALBEF's ``min_lr``)."""
    lr_schedule_epochs: int = 0
    """Length of the decay in epochs; 0: the run's length. Longer than ``max_epoch`` stops the run
    part-way down the curve (GRIT: a 30-epoch cosine, 20 epochs trained)."""
    lr_mult: float = 1
    get_recall_metric: bool = False
    resume_from: Union[str, None] = None
    """A checkpoint to resume (file, or sharded folder); ``auto``: the newest complete one of this run
    name (every ``log_dir/NAME/version_*``), or a fresh start when there is none (issue 21)."""
    fast_dev_run: Union[bool, int] = False
    val_check_interval: Union[int, float] = 1.0
    test_only: bool = False
    pretrain_path: str = ""
    mask_ratio: float = 0.75
    use_mae: bool = False
    mae_weight: float = 1.0
    data_root: str = ""
    log_dir: str = "result"
    per_gpu_batchsize: int = 0
    num_gpus: Union[int, list] = 1
    num_nodes: int = 1
    load_path: str = ""
    num_workers: int = 1
    precision: Union[int, str] = 16
    is_pretrain: bool = True
    # ViLT-only keys (ViLT defaults; patch_size follows the default `vit`, which is patch 16)
    patch_size: int = 16

    # --- keys vlkit adds ---
    model: str = "single_stream"
    """Model family, a key of ``vlkit.models.build.MODEL_FAMILIES``."""
    task: str = "auto"
    """Task, a key of ``vlkit.tasks.TASKS``; ``auto`` picks it from ``loss_names`` as the reference."""
    vqa_use_vgqa: bool = False
    """Add the VG-QA questions (``vgqa_train``) to VQAv2 training (VLC's README, commented out in its code)."""
    mae_decoder_dim: int = 512
    mae_decoder_depth: int = 8
    mae_decoder_heads: int = 16
    norm_pix_loss: bool = True
    """MAE target normalised per patch (VLC forces this on)."""
    mae_patch_drop: Union[bool, None] = None
    """Drop ``mask_ratio`` of the patches in the encoder. None follows ``is_pretrain`` for VLC's
    ``mae_vit_*`` and is off for ViLT's ``vit_*``."""
    itm_patch_drop: Union[bool, None] = None
    """Drop patches in the ITM pass too. None does what the encoder does by default (VLC drops
    them there as a side effect of ``is_pretrain``); False shows ITM the whole image."""
    wpa_weight: float = 0.1
    """Weight of ITM's word-patch-alignment (IPOT) term; 0 switches it off."""
    layer_decay: float = 0.5
    """Layer-wise LR decay used when ``is_pretrain=False`` (VLC hard-codes 0.5); 1 switches it off."""
    adam_betas: list = field(default_factory=lambda: [0.9, 0.98])
    adam_eps: float = 1e-8
    gradient_clip_val: float = 0.0
    log_every_n_steps: int = 10
    progress_bar: bool = True
    device: str = "auto"
    """``auto`` (cuda when available), ``cpu`` or ``cuda``."""
    itc_embed_dim: int = 256
    """Width of the image-text contrastive (``itc``) embeddings."""
    retrieval_protocol: str = "exact"
    """Retrieval evaluation: ``exact`` scores every image-caption pair with the cross-encoder (as
    the reference); ``fast`` re-ranks only the ``k_test`` best ITC candidates of each query."""
    k_test: int = 128
    """Candidates per query that ``retrieval_protocol=fast`` re-ranks (ALBEF's name and default);
    for ``vqa_decoder``, the answers per question scored in full after their first token."""
    eval_pairs_per_batch: int = 512
    """Image-caption pairs per forward pass when scoring retrieval candidates."""
    vqa_annotations: str = ""
    """Official VQA annotations JSON of the validation questions (``v2_mscoco_val2014_annotations
    .json``), for the official accuracy; empty: that file in ``data_root`` when present."""
    answer_decoder_layers: int = 6
    """Layers of the VQA answer decoder built by ``loss_names.vqa_decoder`` (ALBEF's ``text_decoder``: 6)."""
    # cross_attention family (ALBEF / GRIT-VLP) and its pre-training recipe
    fusion_layer: int = 6
    """``model=cross_attention``: BERT layers before this read text only, later ones cross-attend."""
    pair_fusion: bool = False
    """``model=cross_attention``: ALBEF's NLVR2 encoder; the fusion layers ``[fusion_layer,
    num_layers)`` come in pairs, the first cross-attending to image 0, the second to image 1,
    sharing their cross-attention key/value (ALBEF: ``num_layers=18``, ``vision_layers=12``)."""
    vision_layers: int = 0
    """``model=cross_attention``: ViT depth (0: ``num_layers``). ``model=co_attention`` with
    ``backbone_init=random``: CLIP depth, of which the last block is dropped (0: 12)."""
    max_position_embeddings: int = 0
    """``model=cross_attention``, and ``co_attention`` with ``backbone_init=random``: rows of the text
    tower's position table (0: ``max_text_len``, + 2 for RoBERTa; BERT: 512, RoBERTa: 514)."""
    itc_temperature: float = 0.07
    """Initial ITC temperature (learnable; ALBEF's ``temp``)."""
    itc_max_logit_scale: float = 4.6052
    """Upper clamp of the learnable ITC log-scale: log 100 as CLIP; ALBEF's temp >= 0.001 is log 1000."""
    itc_in_batch: bool = False
    """ITC negatives from this rank's batch only, with the other side detached (GRIT); False
    gathers every rank's embeddings (CLIP)."""
    itc_consistency_weight: float = 0.0
    """Weight of GRIT's ITC consistency term (0.2 in GRIT): each direction's distribution is pulled
    towards the other's (detached)."""
    itm_negatives: str = "random"
    """ITM negatives in pre-training: ``random`` (a random other image, half the batch, as VLC),
    ``hardest`` (most ITC-similar in-batch pair, GRIT) or ``sampled`` (drawn by ITC similarity, ALBEF)."""
    train_sampler: str = "random"
    """Training order: ``random`` (seeded shuffle) or ``grit`` (GRIT-VLP grouped mini-batches from
    the previous epoch's ITC features; needs ``loss_names.itc``)."""
    grit_queue_size: int = 48000
    """GRIT: examples collected per rank before they are grouped (L)."""
    grit_search_space: int = 1920
    """GRIT: examples searched together when chaining similar pairs (M)."""
    momentum: float = 0.0
    """EMA rate of ALBEF's momentum model (a frozen copy of the encoders, ITC projections and MLM
    head; ALBEF: 0.995); 0: none (GRIT-VLP pre-training)."""
    itc_queue_size: int = 0
    """Momentum ITC features of past batches (all ranks) kept as extra ITC keys (ALBEF: 65536;
    GRIT retrieval: 65280); needs ``momentum``. 0: no queue."""
    distill_alpha: float = 0.0
    """Weight of the momentum model's soft targets in ITC and MLM (ALBEF's ``alpha``: 0.4); needs
    ``momentum``. 0: no distillation (GRIT)."""
    distill_warmup: bool = True
    """Ramp ``distill_alpha`` linearly from 0 over the first epoch (ALBEF's ``warm_up``)."""
    itc_same_image_positives: bool = False
    """ITC counts every caption of the same image (``img_index``, also in the queue) as a positive,
    as ALBEF's retrieval fine-tuning; False: only the paired caption (pre-training)."""
    run_name: str = ""
    """Folder name under ``log_dir``; empty gives the reference's ``{exp_name}_seed{seed}_from_{load}``."""
    # ALBEF / GRIT-VLP json annotation datasets (json_pretrain, json_retrieval, json_vqa, json_nlvr)
    train_file: Union[list, str] = field(default_factory=list)
    """Training json files (a path or a list); relative paths are looked up in the current
    directory, then under ``data_root``; empty: the json datasets have no train split."""
    val_file: Union[list, str] = field(default_factory=list)
    """Validation json files, as ``train_file`` (ALBEF's yaml gives one path)."""
    test_file: Union[list, str] = field(default_factory=list)
    """Test json files, as ``train_file``."""
    image_root: str = ""
    """Folder that relative image paths of the json files are joined to (pretrain: only when set)."""
    vqa_root: str = ""
    """Image folder of json VQA entries with ``dataset`` ``vqa``."""
    vg_root: str = ""
    """Image folder of json VQA entries with ``dataset`` ``vg``."""
    answer_list: str = ""
    """ALBEF's ``answer_list.json`` (candidate answers; a position is a VQA label), for ``json_vqa``."""
    max_words: int = 30
    """Words kept by ``pre_caption`` / ``pre_question`` when the json datasets clean texts."""
    # ELIP vision-token pruning and merging (meter_elip.md §3), an option of any ViT vision tower
    img_prune: dict = field(default_factory=dict)
    """ELIP stages (ELIP's METER key): ``begin_layer`` (0-based blocks before which tokens are
    pruned), ``num_act_layers`` (look-ahead blocks scored per stage), ``keep_ratio`` (patches kept
    per stage, a fraction of the real patch grid). Empty or ``begin_layer=[]``: no pruning."""
    img_prune_scoring: str = "lookahead"
    """``lookahead`` (ELIP: re-run the next ``num_act_layers`` blocks at full length without
    gradients and take the last one's CLS-query attention) or ``cls_attention`` (the CLS-query
    attention row of the block just run, one extra row: no look-ahead pass)."""
    img_prune_text_weight: float = 0.2
    """Share of the text [CLS] mixed into the image CLS state before scoring (ELIP: 1 - 0.8)."""
    img_prune_phases: list = field(default_factory=lambda: ["pretrain", "finetune", "eval"])
    """When pruning runs: any of ``pretrain`` (training with ``is_pretrain``), ``finetune``
    (training otherwise) and ``eval`` (evaluation and inference). ELIP-METER: all three;
    ELIP-ALBEF: ``[pretrain]``."""
    # CLIP-ViL (clipvil.md): the ``clipvil`` family, its LXMERT-format data and its two optimizers
    clip_model_name: str = "RN50"
    """``model=clipvil``: the open_clip ModifiedResNet (RN50, RN101, RN50x4, RN50x16, RN50x64)."""
    clip_layers: list = field(default_factory=list)
    """Bottleneck blocks per stage instead of ``clip_model_name``'s (tiny models); empty: the named model's."""
    clip_width: int = 0
    """Stem width instead of ``clip_model_name``'s (grid features are 32x wider); 0: the named model's."""
    clip_path: str = ""
    """Local OpenAI CLIP archive or open_clip checkpoint whose ResNet fills the grid backbone."""
    clip_freeze: bool = False
    """Freeze the CLIP backbone's parameters (the reference's ``--freeze_clip``)."""
    image_size_min: int = 384
    """CLIP-ViL images: short side after resizing, and short side of the padded canvas."""
    image_size_max: int = 640
    """CLIP-ViL images: cap of the long side, and long side of the padded canvas."""
    dynamic_padding: bool = False
    """Pad each batch to its largest resized image instead of the fixed canvas."""
    aspect_ratio_group_factor: int = -1
    """Batches of one aspect-ratio group (bins ``2 ** linspace(-1, 1, 2k + 1)``); -1: plain shuffle."""
    sub_sampling: bool = False
    """Keep ``sub_feat_num`` random grid cells per image while training (CLIP-ViL pre-training)."""
    sub_feat_num: int = 36
    use_positional_embedding: bool = True
    """Add learned row and column embeddings (``pos_num`` each) to the grid features."""
    pos_num: int = 25
    attend_padded_cells: bool = False
    """Let every token attend to grid cells that cover only padding (the reference); False masks them."""
    relation_layers: int = 0
    """``model=clipvil`` two-stream LXMERT layout: visual self-attention layers (``--rlayers``)."""
    cross_layers: int = 0
    """``model=clipvil``: LXMERT cross-modality layers (``--xlayers``); 0 with ``relation_layers=0``
    is the published single-stream encoder over [text; grid] tokens."""
    qa_label_size: int = 0
    """Answers of the pre-training QA head (stage two; LXMERT: 9500); 0: no QA head or loss."""
    qa_answers: str = ""
    """LXMERT's ``all_ans.json`` (``[{"ans", "dsets"}]``, a position is a QA label)."""
    qa_sets: list = field(default_factory=list)
    """Keep only QA answers of these ``dsets`` (``vqa``, ``gqa``, ``visual7w``); empty: all."""
    lxmert_limit_sources: list = field(default_factory=list)
    """``sentf`` sources skipped when reading LXMERT pre-training json (``--limit_source``)."""
    vqa_head_from_qa: bool = False
    """Fill ``vqa_classifier`` from a checkpoint's QA head, row by matching answer (``--loadLXMERTQA``)."""
    vqa_loss_scale: float = 0.0
    """CLIP-ViL VQA: mean BCE times this (``--loss_scale``); 0: times the answer count (vlkit's vqa loss)."""
    visual_optimizer: str = ""
    """A separate optimizer for the model's visual backbone: ``sgd`` or ``adamw``; empty: none."""
    visual_learning_rate: float = 0.001
    visual_momentum: float = 0.0
    visual_weight_decay: float = 0.0004
    visual_lr_milestones: list = field(default_factory=lambda: [2, 5])
    """Epochs (0-based) from which the visual optimizer's LR is multiplied by another 0.1."""
    load_optimizer_states: list = field(default_factory=list)
    """Files of ``optimizer.state_dict()`` restored into optimizer i (main, visual) before training; "" skips."""
    load_scheduler_states: list = field(default_factory=list)
    """Files of ``scheduler.state_dict()`` restored into schedule i before training; "" skips."""
    reference_checkpoint_dir: str = ""
    """``model=clipvil``: also write every checkpoint in the reference's layout into this folder
    (``--output``): ``EpochNN_LXRT*.pth`` / ``EpochNNStepS_LXRT*.pth`` when pre-training,
    ``BEST.pth`` / ``LAST.pth`` for VQA; empty: vlkit's checkpoints only."""
    # METER (model=co_attention, meter_elip.md §1.2, §2)
    num_top_layer: int = 6
    """``model=co_attention``: co-attention layers per stream (METER: 6)."""
    input_image_embed_size: int = 768
    """``model=co_attention``: width of the vision tower's tokens (CLIP ViT-B: 768), projected to ``hidden_size``."""
    input_text_embed_size: int = 768
    """``model=co_attention``: width of the text tower's states (RoBERTa/BERT-base: 768), projected to ``hidden_size``."""
    lr_mult_head: Union[float, None] = None
    """LR multiplier of the task heads that the model names (METER's key: 5 to 50); None: ``lr_mult``."""
    lr_mult_cross_modal: float = 1
    """LR multiplier of the parameters whose names contain ``cross_modal`` (METER's fusion part: 5)."""
    backbone_init: str = "pretrained"
    """``model=co_attention``: ``pretrained`` loads the CLIP weights that ``vit`` names and the text
    model in the ``tokenizer`` folder, as METER; ``random`` builds both from random weights, sized
    by ``input_image_embed_size``/``vision_layers``/``patch_size`` and
    ``input_text_embed_size``/``text_layers`` (CPU runs: ``meter_tiny``)."""
    clip_cache_dir: str = "~/.cache/clip"
    """Folder where ``vit=ViT-B/16`` finds ``ViT-B-16.pt`` (where OpenAI's CLIP loader caches it)."""
    swin_weights: str = ""
    """``model=co_attention`` with a Swin ``vit`` (swin32_* presets): the ImageNet-22k ``.pth`` (or a timm
    checkpoint) of that Swin; METER downloads it, vlkit reads it from here."""
    text_layers: int = 12
    """``backbone_init=random``: layers of the text tower."""
    # Performance (docs/performance.md): compilation, activation checkpointing, kernels, loaders
    compile: Union[bool, str, None] = None
    """``False``, ``True``/``"blocks"`` (each transformer block and CLIP ResNet stage compiled in
    place, torchtitan's regional compilation) or ``"model"`` (the whole training step); None:
    blocks on CUDA, off on CPU."""
    compile_backend: str = "inductor"
    """The ``torch.compile`` backend: ``inductor``, or ``aot_eager`` / ``eager`` to tell a compiler
    problem from a model one (no code generation: quick to start, no speed-up)."""
    grad_checkpointing: Union[bool, int] = False
    """Activation checkpointing (``use_reentrant=False``): ``True`` every block, an int N the first
    N blocks of each tower's stack, ``False`` none."""
    optimizer_impl: str = "auto"
    """Optimizer kernels: ``fused`` (one CUDA kernel), ``foreach`` (batched over tensors),
    ``for_loop``; ``auto``: fused on CUDA, foreach elsewhere."""
    allow_tf32: Union[bool, None] = None
    """TF32 matmuls and convolutions on CUDA; None: on."""
    channels_last: Union[bool, None] = None
    """CLIP ResNet towers in channels_last memory format; None: on CUDA."""
    persistent_workers: Union[bool, None] = None
    """Keep loader workers between epochs; None: on CUDA when ``num_workers`` > 0."""
    prefetch_factor: Union[int, None] = None
    """Batches each loader worker prepares ahead; None: PyTorch's default (2)."""
    peak_tflops: Union[float, None] = None
    """The device's dense bf16 peak for MFU; None: looked up from the GPU's name (no MFU on CPU)."""
    finite_check: str = "auto"
    """When the loss is checked for NaN/inf: ``step`` (every step, a host-device synchronisation)
    or ``interval`` (on device, read at logging intervals and before every checkpoint); ``auto``:
    ``interval`` on CUDA, ``step`` elsewhere."""
    # scale-out and fault tolerance (issue 21; docs/scaling.md)
    strategy: str = "ddp"
    """``ddp`` (replicated model) or ``fsdp`` (FSDP2: parameters, gradients and optimizer state
    sharded per transformer block; checkpoints are sharded ``torch.distributed.checkpoint`` folders)."""
    fsdp_cpu_offload: bool = False
    """``strategy=fsdp``: keep the parameter shards and optimizer state in CPU memory."""
    checkpoint_every_n_steps: int = 0
    """Also write ``checkpoints/step_NNNNNNN`` every N optimizer steps (0: only at validation)."""
    keep_last_k: int = 3
    """Step checkpoints kept (the oldest are deleted); 0 keeps every one."""
    nan_policy: str = "stop"
    """A non-finite loss: ``stop`` the run (the batch's sample ids go to ``nan_batches.jsonl``) or
    ``skip`` the step's update (no optimizer or scaler step) and go on."""
    max_consecutive_nan: int = 5
    """``nan_policy=skip``: stop after this many skipped steps in a row."""
    nan_debug_checkpoint: bool = False
    """``nan_policy=stop``: also write ``checkpoints/nan_debug`` (the weights that gave the non-finite loss)."""

    # issue 20 (fidelity with the reference implementations and official metrics)
    vqa_normalize: str = "official"
    """When the VQA accuracy normalises answers: ``official`` (as the VQA challenge's ``vqaEval.py``:
    not when the human answers are all the same string), ``always`` or ``none``."""
    recall_ties: str = "expected"
    """Recall@K with tied scores at the cut: ``expected`` (uniform random tie-breaking, the
    probability that a tied positive lands inside K), ``pessimistic`` or ``optimistic``."""
    itc_min_logit_scale: Union[float, None] = None
    """Lower clamp of the learnable ITC log-scale; None: none (CLIP). ALBEF's temp <= 0.5 is log 2."""
    resolution_before: int = 224
    """METER's key: the image size a checkpoint was pre-trained at (its Swin position tables and
    ELIP's reference keep counts follow it); vlkit resamples position tables from the file's shape."""
    img_prune_keep_from: str = "grid"
    """ELIP keep counts as fractions of the real patch grid (``grid``) or, as ELIP-METER's code,
    of a fixed ``(resolution_before // 32)^2`` grid (``resolution_before``: 44/34/22 at 224), to
    evaluate released ELIP-METER checkpoints as they were trained."""
    vilt_pos_grid: int = 0
    """ViLT towers (``vit_*``): side of the stored position table, resized to each image's patch
    grid at every forward (bilinear, ``align_corners=True``, as ViLT); 0: ``image_size //
    patch_size``. The ``vilt`` preset sets ViLT's 12 (384 / 32), so ViLT checkpoints load as stored."""
    trust_checkpoint: bool = False
    """Allow full unpickling of checkpoint files (``load_path``, ``pretrain_path``, weight files) that
    hold objects other than tensors and plain values; only for files from a trusted source."""
    # issue 19: use a trained model (vlkit.api)
    export_best: bool = True
    """At the end of training, export the best (else last) checkpoint as a model folder into
    ``run_dir/model`` (``vlkit export``; load it with ``vlkit.load``)."""
    # issue 22: grounding (image-ablation baseline)
    eval_image_ablation: bool = False
    """Evaluate every validation a second time with blank images (the normalisation mean) and report
    ``{metric}_blank`` and ``image_gain`` (= metric - metric_blank) beside ``chance``."""
    mae_image_folder: str = ""
    """``task=mae_pretrain``: an ImageFolder tree (``train/``, ``val/``) to read images from instead of ``datasets``."""
    mae_checkpoint: str = ""
    """``task=mae_pretrain``: where each checkpoint is also written in MAE's layout (``{"model": ...}``,
    for ``pretrain_path=``); empty: ``{log_dir}/{run name}/mae_pretrain.pth``."""

VALUE_CHOICES: dict[str, tuple] = {
    "compile": (None, False, True, "blocks", "model"),
    "optimizer_impl": ("auto", "fused", "foreach", "for_loop"),
    "finite_check": ("auto", "step", "interval"),
}
"""Keys whose value must be one of a few."""


def check_allowed_value(key: str, value: Any) -> None:
    """A ValueError naming the valid values when ``value`` (already of the declared type) is not
    allowed for ``key``."""
    choices = VALUE_CHOICES.get(key)
    if choices is not None and not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        raise ValueError(f"{key}={value!r} is not valid; use one of {', '.join(map(repr, choices))}")
    if key == "grad_checkpointing" and not isinstance(value, bool) and value < 0:
        raise ValueError(f"grad_checkpointing={value!r} is not valid; use False, True (every block) or an "
                         "int N >= 0 (the first N blocks of each tower)")


def defaults() -> dict[str, Any]:
    """The default config as a plain dict."""
    return dataclasses.asdict(Config())


def field_types() -> dict[str, Any]:
    """Declared type of every key (used to check values given on the command line)."""
    import typing

    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}
