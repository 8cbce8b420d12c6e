"""The command line of the reference ``main_finetune.py`` (MAE's, as VLC ships it; fact sheet
vilt_vlc.md §8.2): every argument with its default, plus a few vlkit additions marked as such."""
from __future__ import annotations

import argparse

REFERENCE_DATA_PATH = "/datasets01/imagenet_full_size/061417/"


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="vit_large_patch16", type=str, metavar="MODEL",
                       help="classifier architecture, a key of vlkit.imagenet.models.MODELS")
    group.add_argument("--input_size", default=224, type=int, help="side of the square network input in pixels")
    group.add_argument("--drop_path", type=float, default=0.1, metavar="PCT",
                       help="stochastic depth: rate of the last block (linear from 0)")
    sizes = parser.add_argument_group("model size overrides (vlkit; default: the --model's)")
    for name, help_text in (("patch_size", "patch side in pixels"), ("embed_dim", "width"),
                            ("depth", "number of blocks"), ("num_heads", "attention heads")):
        sizes.add_argument(f"--{name}", type=int, default=None, help=help_text)


def _optimizer_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("optimizer")
    group.add_argument("--clip_grad", type=float, default=None, metavar="NORM",
                       help="maximum gradient norm (default: no clipping)")
    group.add_argument("--weight_decay", type=float, default=0.05, help="AdamW weight decay of matrices")
    group.add_argument("--lr", type=float, default=None, metavar="LR", help="peak learning rate; overrides --blr")
    group.add_argument("--blr", type=float, default=1e-3, metavar="LR",
                       help="peak learning rate per 256 images: lr = blr x effective batch / 256")
    group.add_argument("--layer_decay", type=float, default=0.75,
                       help="per-block learning-rate factor, from the head down")
    group.add_argument("--min_lr", type=float, default=1e-6, metavar="LR",
                       help="learning rate at the end of the cosine")
    group.add_argument("--warmup_epochs", type=int, default=5, metavar="N", help="epochs of linear warm-up from 0")


def _augmentation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("augmentation")
    group.add_argument("--color_jitter", type=float, default=None, metavar="PCT",
                       help="colour jitter strength (used only without --aa)")
    group.add_argument("--aa", type=str, default="rand-m9-mstd0.5-inc1", metavar="NAME",
                       help="timm auto-augment policy string (RandAugment rand-..., AutoAugment v0/original)")
    group.add_argument("--smoothing", type=float, default=0.1, help="label smoothing of the targets")
    group.add_argument("--reprob", type=float, default=0.25, metavar="PCT", help="probability of random erasing")
    group.add_argument("--remode", type=str, default="pixel", help="random erasing fill: const, rand or pixel")
    group.add_argument("--recount", type=int, default=1, help="random erasing boxes per image")
    group.add_argument("--resplit", action="store_true", default=False,
                       help="accepted as the reference does; its transform has no augmentation splits, so unused")
    group.add_argument("--mixup", type=float, default=0, help="mixup Beta alpha; > 0 turns mixup on")
    group.add_argument("--cutmix", type=float, default=0, help="cutmix Beta alpha; > 0 turns cutmix on")
    group.add_argument("--cutmix_minmax", type=float, nargs="+", default=None,
                       help="cutmix box ratio bounds (two numbers); replaces the alpha and turns cutmix on")
    group.add_argument("--mixup_prob", type=float, default=1.0,
                       help="chance that a batch is mixed at all")
    group.add_argument("--mixup_switch_prob", type=float, default=0.5,
                       help="with both on: chance of cutmix instead of mixup")
    group.add_argument("--mixup_mode", type=str, default="batch",
                       help="one draw per batch, per pair or per element (batch, pair, elem)")


def _finetune_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fine-tuning")
    group.add_argument("--finetune", default="",
                       help="pre-trained checkpoint: VLC / ViLT Lightning, ALBEF, MAE ({'model': ...}) or timm ViT")
    group.add_argument("--trust_checkpoint", action="store_true",
                       help="allow full unpickling of --finetune / --resume files that hold more than tensors "
                            "(runs code stored in the file: only for files you trust)")
    group.add_argument("--global_pool", action="store_true")
    group.set_defaults(global_pool=True)
    group.add_argument("--cls_token", action="store_false", dest="global_pool",
                       help="classify from the CLS token (with the final norm) instead of the mean of the patch tokens")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data and run")
    group.add_argument("--data_path", default=REFERENCE_DATA_PATH, type=str,
                       help="dataset root holding train/ and val/ with one folder per class")
    group.add_argument("--nb_classes", default=None, type=int,
                       help="classifier outputs (at least the number of class folders); default: the "
                            "number of class folders in train/ (val/ when there is no train/)")
    group.add_argument("--output_dir", default="./output_dir",
                       help="checkpoints, log.txt, metrics.jsonl and plots; empty: write nothing")
    group.add_argument("--log_dir", default="./output_dir", help="TensorBoard folder (when tensorboard is installed)")
    group.add_argument("--device", default="cuda", help="cuda, cpu or auto")
    group.add_argument("--seed", default=0, type=int)
    group.add_argument("--resume", default="",
                       help="a checkpoint of this script to continue (or, with --eval, to evaluate)")
    group.add_argument("--start_epoch", default=0, type=int, metavar="N",
                       help="first epoch (a resume sets it from the checkpoint)")
    group.add_argument("--eval", action="store_true", help="only evaluate the --resume (or --finetune) weights on val/")
    group.add_argument("--dist_eval", action="store_true", default=False,
                       help="shard evaluation over the processes (each image once) instead of every "
                            "process evaluating the whole set")
    group.add_argument("--num_workers", default=10, type=int)
    group.add_argument("--pin_mem", action="store_true",
                       help="pinned host memory for the batches (CUDA only; the default)")
    group.add_argument("--no_pin_mem", action="store_false", dest="pin_mem")
    group.set_defaults(pin_mem=True)


def _distributed_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("distributed training")
    group.add_argument("--world_size", default=1, type=int, help="process count (the launcher's environment wins)")
    group.add_argument("--local_rank", "--local-rank", default=-1, type=int,
                       help="set by torch.distributed.launch without --use_env (the environment wins)")
    group.add_argument("--dist_on_itp", action="store_true", help="read rank and world size from OpenMPI variables")
    group.add_argument("--dist_url", default="env://", help="rendezvous: env:// or tcp://HOST:PORT")
    group.add_argument("--strategy", default="ddp", choices=("ddp", "fsdp"),
                       help="vlkit: ddp (whole model per process) or fsdp (FSDP2: parameters, gradients and "
                            "optimizer state sharded over the processes; bf16 mixed precision on CUDA)")
    group.add_argument("--fsdp_cpu_offload", action="store_true",
                       help="vlkit, with --strategy fsdp: keep the shards and optimizer state in CPU memory")


def _performance_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("performance (docs/performance.md)")
    group.add_argument("--compile", default="auto", choices=("auto", "off", "blocks", "model"),
                       help="torch.compile: each transformer block, the whole model, or off; auto: blocks on CUDA")
    group.add_argument("--grad_checkpointing", default=0, type=int, metavar="N",
                       help="activation checkpointing of the first N blocks (-1: every block; 0: off)")
    group.add_argument("--optimizer_impl", default="auto", choices=("auto", "fused", "foreach", "for_loop"),
                       help="AdamW kernels; auto: fused on CUDA, foreach elsewhere")


def get_args_parser() -> argparse.ArgumentParser:
    """The parser, with the reference's arguments, order and defaults."""
    parser = argparse.ArgumentParser("main_finetune.py", description="ImageNet-style fine-tuning of a ViT classifier")
    parser.add_argument("--batch_size", default=64, type=int,
                        help="images per process and step; effective batch = batch_size x accum_iter x processes")
    parser.add_argument("--epochs", default=50, type=int)
    parser.add_argument("--accum_iter", default=1, type=int,
                        help="micro-batches per optimizer step")
    _model_arguments(parser)
    _optimizer_arguments(parser)
    _augmentation_arguments(parser)
    _finetune_arguments(parser)
    _run_arguments(parser)
    _distributed_arguments(parser)
    _performance_arguments(parser)
    return parser


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse values the run cannot use, naming the argument and the fix; returns ``args``."""
    positive = ("batch_size", "epochs", "accum_iter", "input_size", "nb_classes")
    for name in positive:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)}: must be at least 1")
    for name in ("patch_size", "embed_dim", "depth", "num_heads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} {value}: must be at least 1 (or leave it out to use the --model's)")
    if args.warmup_epochs < 0 or args.start_epoch < 0 or args.num_workers < 0:
        raise ValueError("--warmup_epochs, --start_epoch and --num_workers must not be negative")
    if args.grad_checkpointing < -1:
        raise ValueError(f"--grad_checkpointing {args.grad_checkpointing}: give N >= 0 blocks, or -1 for every block")
    if args.mixup_mode not in ("batch", "pair", "elem"):
        raise ValueError(f"--mixup_mode {args.mixup_mode!r}: choose batch, pair or elem")
    if args.cutmix_minmax is not None and len(args.cutmix_minmax) != 2:
        raise ValueError(f"--cutmix_minmax takes two numbers (min and max ratio), got {args.cutmix_minmax}")
    mixing = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
    if mixing and args.mixup_mode != "elem" and args.batch_size % 2:
        raise ValueError(
            f"--batch_size {args.batch_size}: mixup/cutmix in {args.mixup_mode!r} mode pairs the "
            "images of a batch, so the batch size must be even"
        )
    if args.fsdp_cpu_offload and args.strategy != "fsdp":
        raise ValueError("--fsdp_cpu_offload offloads FSDP shards: add --strategy fsdp or leave it out")
    if args.eval and not (args.resume or args.finetune):
        raise ValueError("--eval needs the weights to evaluate: give --resume CKPT (or --finetune CKPT)")
    return args

