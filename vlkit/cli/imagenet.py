"""``main_finetune.py`` / ``vlkit imagenet``: fine-tune (or, with ``--eval``, evaluate) a ViT
classifier on an ImageFolder tree, on one process or under torchrun / ``torch.distributed.launch``
on several processes and nodes."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Sequence
from urllib.parse import urlparse

import torch
from torch import nn

from vlkit.engine.progress import ProgressBar
from vlkit.imagenet.args import check_args, get_args_parser
from vlkit.imagenet.convert import load_pretrained, load_resumed
from vlkit.imagenet.data import build_loaders, resolve_nb_classes
from vlkit.imagenet.evaluate import evaluate
from vlkit.engine.parallelize import apply_activation_checkpointing, apply_compile, configure_cuda_math, resolve_compile
from vlkit.imagenet.models import build_classifier
from vlkit.imagenet.outputs import BEST, LAST, RunOutputs, training_checkpoint
from vlkit.imagenet.recipe import (
    build_criterion,
    build_mixup,
    build_optimizer,
    build_scheduler,
    effective_batch_size,
    peak_lr,
)
from vlkit.imagenet.sharding import amp_dtype, full_state, load_optimizer_state, shard_classifier
from vlkit.imagenet.train import EpochContext, train_one_epoch
from vlkit.models.checkpoints import read_checkpoint
from vlkit.utils import distributed
from vlkit.utils.seeding import sample_seed, seed_everything

log = logging.getLogger("vlkit.imagenet")


def init_processes(args: argparse.Namespace) -> distributed.DistInfo:
    """Join the job the launcher describes; ``--dist_url tcp://HOST:PORT`` sets the rendezvous."""
    if args.dist_url != "env://":
        url = urlparse(args.dist_url)
        if url.scheme != "tcp" or not url.hostname or not url.port:
            raise ValueError(f"--dist_url {args.dist_url!r}: use env:// or tcp://HOST:PORT")
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = url.hostname, str(url.port)
    try:
        info = distributed.init_distributed(args.device)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"--device {args.device}: {error}; on a machine without a GPU pass --device cpu") from error
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return info


def _accuracy_line(stats: dict[str, Any]) -> str:
    return (f"Accuracy of the network on the {stats['count']} test images: {stats['acc1']:.1f}% "
            f"(top-5 {stats['acc5']:.1f}%, loss {stats['loss']:.4f}, unreadable skipped {stats['num_skipped']})")


def _load_weights(model: nn.Module, args: argparse.Namespace) -> dict[str, Any] | None:
    """``--finetune`` weights, then ``--resume``'s model; returns the resume checkpoint."""
    if args.finetune:
        report = load_pretrained(model, args.finetune, keep_head=args.eval, trust_checkpoint=args.trust_checkpoint)
        log.info("--finetune: %s", report)
    if not args.resume:
        return None
    checkpoint = read_checkpoint(args.resume, "--resume", args.trust_checkpoint)
    log.info("--resume: %s", load_resumed(model, checkpoint, args.resume))
    return checkpoint


def run_eval(model: nn.Module, args: argparse.Namespace, info: distributed.DistInfo, outputs: RunOutputs) -> dict:
    """``--eval``: one evaluation of the loaded weights."""
    loaders = build_loaders(args, info.rank, info.world_size, _pin(args, info), with_train=False)
    stats = evaluate(model, loaders.val, info.device, sharded=args.dist_eval, progress=info.is_main,
                     amp_dtype=amp_dtype(args))
    log.info(_accuracy_line(stats))
    outputs.record({"event": "eval", "step": 0, **{f"val/{k}": v for k, v in stats.items()},
                    "checkpoint": args.resume or args.finetune})
    return stats


def _pin(args: argparse.Namespace, info: distributed.DistInfo) -> bool:
    return args.pin_mem and info.device.type == "cuda"


def _resume_training(checkpoint: dict[str, Any] | None, model: nn.Module, optimizer, scaler, args) -> float:
    """Continue a run: optimizer and scaler state, ``start_epoch``; returns the best top-1 so far."""
    if checkpoint is None or "optimizer" not in checkpoint or "epoch" not in checkpoint:
        return 0.0
    load_optimizer_state(model, optimizer, checkpoint["optimizer"])
    args.start_epoch = int(checkpoint["epoch"]) + 1
    if checkpoint.get("scaler"):  # (empty from a run without a scaler: CPU, fsdp)
        scaler.load_state_dict(checkpoint["scaler"])
    log.info("resuming after epoch %d of %s", checkpoint["epoch"], args.resume)
    return float(checkpoint.get("max_accuracy", 0.0))


def run_training(model: nn.Module, checkpoint: dict[str, Any] | None, args: argparse.Namespace,
                 info: distributed.DistInfo, outputs: RunOutputs) -> dict:
    """Train from ``args.start_epoch`` to ``args.epochs``, evaluating and saving after each epoch."""
    loaders = build_loaders(args, info.rank, info.world_size, _pin(args, info))
    lr = peak_lr(args, info.world_size)
    log.info("base lr %.3e, actual lr %.3e, accumulate grad iterations %d, effective batch size %d",
             lr * 256 / effective_batch_size(args, info.world_size), lr, args.accum_iter,
             effective_batch_size(args, info.world_size))
    optimizer = build_optimizer(model, args, lr)
    scaler = torch.amp.GradScaler("cuda", enabled=info.device.type == "cuda" and args.strategy == "ddp")
    max_accuracy = _resume_training(checkpoint, model, optimizer, scaler, args)
    iters = len(loaders.train)
    mixup = build_mixup(args)
    trained = model
    if info.is_distributed and args.strategy == "ddp":  # (fsdp: ``model`` is sharded already)
        device_ids = [info.device] if info.device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    progress = ProgressBar(args.epochs * iters, min(args.start_epoch, args.epochs) * iters, enabled=info.is_main)
    ctx = EpochContext(build_criterion(args, mixup), optimizer, build_scheduler(optimizer, args, iters), scaler,
                       mixup, info.device, progress, outputs.record, amp_dtype(args))
    n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    started = time.time()
    test_stats: dict[str, Any] = {}
    for epoch in range(args.start_epoch, args.epochs):
        seed_everything(sample_seed(args.seed, epoch, info.rank))
        loaders.train_sampler.set_epoch(epoch)
        train_stats = train_one_epoch(trained, loaders.train, epoch, args, ctx)
        test_stats = evaluate(model, loaders.val, info.device, sharded=args.dist_eval, amp_dtype=amp_dtype(args))
        log.info(_accuracy_line(test_stats))
        improved = test_stats["acc1"] > max_accuracy or epoch == 0
        max_accuracy = max(max_accuracy, test_stats["acc1"])
        log.info("Max accuracy: %.2f%%", max_accuracy)
        saved = training_checkpoint(*full_state(model, optimizer), scaler, epoch, args, max_accuracy, test_stats)
        outputs.save(LAST, saved)
        if improved:
            outputs.save(BEST, saved)
        outputs.epoch_log({**{f"train_{k}": v for k, v in train_stats.items()},
                           **{f"test_{k}": v for k, v in test_stats.items()},
                           "epoch": epoch, "n_parameters": n_parameters})
        outputs.record({"event": "val", "step": (epoch + 1) * iters, "epoch": epoch + 1,
                        **{f"val/{k}": test_stats[k] for k in ("acc1", "acc5", "loss")},
                        "count": test_stats["count"], "num_skipped": test_stats["num_skipped"],
                        "train_num_skipped": train_stats["num_skipped"]})
        outputs.plot()
    progress.close()
    log.info("Training time %.0f s", time.time() - started)
    return {**test_stats, "max_accuracy": max_accuracy, "epochs": args.epochs}


def apply_performance_options(model: nn.Module, args: argparse.Namespace, device: torch.device) -> None:
    """``--grad_checkpointing``, ``--compile`` and TF32 on CUDA, as the vlkit trainer applies them
    (before ``--strategy fsdp`` shards the model)."""
    configure_cuda_math(device, None)
    apply_activation_checkpointing(model, True if args.grad_checkpointing == -1 else args.grad_checkpointing)
    mode = resolve_compile({"auto": None, "off": False}.get(args.compile, args.compile), device)
    if mode == "model":
        model.compile()
    apply_compile(model, mode)


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run what ``args`` asks for in this process (one rank of the job); returns the last
    evaluation's numbers (``acc1``, ``acc5``, ``loss``, ``count``, ``num_skipped``)."""
    info = init_processes(args)
    args.world_size, args.local_rank = info.world_size, info.local_rank  # as the launcher set them
    if not info.is_main:  # one process reports, as the reference's print
        logging.getLogger("vlkit").setLevel(logging.WARNING)
    seed_everything(args.seed + info.rank)
    log.info("job dir %s; %d process(es), this is rank %d on %s", os.getcwd(), info.world_size, info.rank, info.device)
    log.info("%s", json.dumps(vars(args), sort_keys=True))
    log.info("--nb_classes %d", resolve_nb_classes(args))
    model = build_classifier(args)
    checkpoint = _load_weights(model, args)
    model.to(info.device)
    apply_performance_options(model, args, info.device)
    if args.strategy == "fsdp" and info.is_distributed:
        model = shard_classifier(model, args, info.device)
    elif args.strategy == "fsdp":
        log.info("--strategy fsdp in one process: the model is not sharded (checkpoints are the same)")
    outputs = RunOutputs(args.output_dir, args.log_dir, enabled=info.is_main)
    try:
        if args.eval:
            return run_eval(model, args, info, outputs)
        return run_training(model, checkpoint, args, info, outputs)
    finally:
        outputs.close()


def cli(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run, leave the process group; a bad argument exits with status 2 (errors
    found later, e.g. in the data or a checkpoint, raise with the fix in their message)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as error:
        print(f"main_finetune: {error}", file=sys.stderr)
        return 2
    try:
        main(args)
    finally:
        distributed.destroy_distributed()
    return 0
