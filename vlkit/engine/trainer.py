"""One training loop for every task: DDP, mixed precision, gradient accumulation, validation,
atomic checkpoints with exact resume, and logging (docs/architecture.md, fact sheet §1.1, §7)."""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from vlkit.data.samplers import ResumableDistributedSampler, build_train_sampler
from vlkit.engine.checkpoint import (
    build_checkpoint, checkpoint_metadata, load_checkpoint, native_rng_state, portable_rng_state, read_state_file,
    restore_optimizer_state,
)
from vlkit.engine.accounting import FlopCount, device_peak_tflops, throughput_fields
from vlkit.engine.dcp_checkpoint import load_sharded, save_sharded
from vlkit.engine.fsdp import apply_fsdp, check_strategy, clip_grads, gathered_model_state, grad_norm
from vlkit.engine.nan_policy import NanGuard, finite_check_mode
from vlkit.engine.step_checkpoints import (
    checkpoint_path, is_checkpoint_folder, prune_step_checkpoints, resolve_resume, step_name,
)
from vlkit.engine.logging import (
    PLOT_FILE, IntervalMeter, MetricsLogger, create_version_dir, peak_memory_mb, plot_curves, run_name,
)
from vlkit.engine.optim import build_optimizers, build_schedulers, kernel_name
from vlkit.engine.parallelize import (
    CompileStats, apply_activation_checkpointing, apply_channels_last, apply_compile, configure_cuda_math,
    resolve_compile,
)
from vlkit.engine.progress import ProgressBar
from vlkit.eval.metrics import evaluation_record
from vlkit.tasks.ablation import with_image_ablation
from vlkit.tasks.base import Task
from vlkit.utils.atomic import atomic_torch_save
from vlkit.utils import distributed
from vlkit.utils.tensors import move_to_device
from vlkit.utils.seeding import rng_state, seed_everything, set_rng_state

AUTOCAST_DTYPES = {
    "32": None, "32-true": None,
    "16": torch.float16, "16-mixed": torch.float16,
    "bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16,
}


def autocast_dtype(precision: int | str) -> torch.dtype | None:
    """The autocast dtype for ``cfg.precision`` (None: full fp32)."""
    key = str(precision)
    if key not in AUTOCAST_DTYPES:
        raise ValueError(f"precision={precision!r} is not one of {list(AUTOCAST_DTYPES)}")
    return AUTOCAST_DTYPES[key]


def accumulation_steps(batch_size: int, per_gpu_batchsize: int, world_size: int) -> int:
    """Micro-batches per optimizer step: ``batch_size // (per_gpu_batchsize * world_size)``."""
    if per_gpu_batchsize <= 0:
        raise ValueError(
            f"per_gpu_batchsize={per_gpu_batchsize} must be > 0 (samples per device per step); "
            f"set e.g. per_gpu_batchsize=32"
        )
    steps = batch_size // (per_gpu_batchsize * world_size)
    if steps == 0:
        warnings.warn(
            f"batch_size={batch_size} is smaller than per_gpu_batchsize x world size = "
            f"{per_gpu_batchsize} x {world_size}; training without gradient accumulation, with a "
            f"global batch of {per_gpu_batchsize * world_size}"
        )
        return 1
    return steps


def fast_dev_batches(fast_dev_run: bool | int) -> int:
    """Batches of train and val that ``fast_dev_run`` asks for (0: off)."""
    if fast_dev_run is True:
        return 1
    if fast_dev_run is False or fast_dev_run is None:
        return 0
    if fast_dev_run < 0:
        raise ValueError(f"fast_dev_run={fast_dev_run} must be True, False or a batch count >= 0")
    return int(fast_dev_run)


def _is_scalar(value: Any) -> bool:
    return (torch.is_tensor(value) and value.numel() == 1) or (
        isinstance(value, (int, float)) and not isinstance(value, bool)
    )


class _TrainingStep(nn.Module):
    """``task.training_step`` as a module's forward, so DDP wraps (and synchronises) the whole step
    while the task itself always receives the plain model."""

    def __init__(self, model: nn.Module, task: Task):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.task.training_step(self.model, batch)


class _FirstBatches:
    """The first ``limit`` batches of a loader (``fast_dev_run``)."""

    def __init__(self, loader: DataLoader, limit: int):
        self.loader, self.limit = loader, limit

    def __iter__(self) -> Iterator:
        return itertools.islice(iter(self.loader), self.limit)

    def __len__(self) -> int:
        return min(len(self.loader), self.limit)


RESUMED_COUNTERS = ("batch_in_epoch", "best_metric", "best_checkpoint", "num_skipped_images", "num_nan_skips")
"""TrainState fields kept under the checkpoint's ``vlkit`` key (step and epoch are Lightning's)."""


@dataclass
class TrainState:
    """Counters that a checkpoint carries over to a resumed run."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_checkpoint: str | None = None
    num_skipped_images: int = 0
    num_nan_skips: int = 0


class Trainer:
    """Trains and evaluates a ``Task`` (single process, or one rank of a torchrun/SLURM job).

    The constructor joins the process group the environment describes, seeds the global RNGs with
    ``cfg.seed + rank`` and creates the run folder ``run_dir`` (``log_dir/NAME/version_K``) with the
    resolved ``config.yaml``.
    """

    def __init__(self, cfg: Any, task: Task):
        self.cfg, self.task = cfg, task
        self.dist = distributed.init_distributed(cfg.device)
        self.device = self.dist.device
        self.autocast_dtype = autocast_dtype(cfg.precision)
        self.accumulation = accumulation_steps(cfg.batch_size, cfg.per_gpu_batchsize, self.dist.world_size)
        self.fast_dev_batches = fast_dev_batches(cfg.fast_dev_run)
        self._check_intervals()
        check_strategy(cfg)
        self.sharded_checkpoints = cfg.strategy == "fsdp"
        seed_everything(cfg.seed + self.dist.rank)
        self.run_dir = self._create_run_dir()
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.nan_guard = NanGuard(cfg, self.run_dir)
        self.model: nn.Module | None = None
        self.state = TrainState()
        self.last_val_metrics: dict[str, float] | None = None

    # ----- set-up -----------------------------------------------------------------------------

    def _check_intervals(self) -> None:
        interval = self.cfg.val_check_interval
        if isinstance(interval, bool) or interval <= 0 or (isinstance(interval, float) and interval > 1):
            raise ValueError(
                f"val_check_interval={interval!r}: give a float in (0, 1] (fraction of an epoch) or "
                f"an int >= 1 (every N optimizer steps)"
            )
        if self.cfg.log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps={self.cfg.log_every_n_steps} must be >= 1")

    def _create_run_dir(self) -> Path:
        path = None
        if self.dist.is_main:
            path = create_version_dir(self.cfg.log_dir, run_name(self.cfg))
            OmegaConf.save(self.cfg, path / "config.yaml", resolve=True)
        return Path(distributed.broadcast_object(str(path) if path else None))

    def _build_model(self) -> nn.Module:
        return self.task.build_model().to(self.device)

    def _dataset(self, split: str, required: bool = True) -> Dataset | None:
        dataset = self.task.build_dataset(split)
        task_name = self.task.name or type(self.task).__name__
        if dataset is None:
            if not required:
                return None
            raise ValueError(f"task {task_name!r} has no {split} dataset")
        if len(dataset) == 0:
            raise ValueError(
                f"task {task_name!r} built an empty {split} dataset; check data_root and datasets"
            )
        return dataset

    def _loader(self, dataset: Dataset, split: str, training: bool) -> DataLoader:
        if training:
            sampler = build_train_sampler(self.cfg, dataset, self.dist.world_size, self.dist.rank)
        else:
            sampler = ResumableDistributedSampler(
                dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, seed=self.cfg.seed,
                training=False,
            )
        # A private generator keeps the loader from drawing on the global RNG (exact resume).
        return DataLoader(
            dataset, batch_size=self.cfg.per_gpu_batchsize, sampler=sampler,
            collate_fn=self.task.collate_fn(split), pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed + self.dist.rank),
            **self._worker_options(),
        )

    def _worker_options(self) -> dict[str, Any]:
        """``num_workers``, ``persistent_workers`` (None: on CUDA) and ``prefetch_factor``."""
        workers = self.cfg.num_workers
        if workers == 0:
            return {"num_workers": 0}
        persistent = self.cfg.persistent_workers
        if persistent is None:
            persistent = self.device.type == "cuda"
        return {"num_workers": workers, "persistent_workers": bool(persistent),
                "prefetch_factor": self.cfg.prefetch_factor}

    def _eval_loader(self, dataset: Dataset, split: str) -> DataLoader | _FirstBatches:
        """Every sample of ``dataset`` once across ranks (the first batches under fast_dev_run)."""
        loader = self._loader(dataset, split, training=False)
        return _FirstBatches(loader, self.fast_dev_batches) if self.fast_dev_batches else loader

    def _total_steps(self, batches_per_epoch: int) -> int:
        if self.fast_dev_batches:
            return math.ceil(batches_per_epoch / self.accumulation)
        if self.cfg.max_steps is not None:
            return self.cfg.max_steps
        return max(1, batches_per_epoch * self.cfg.max_epoch // self.accumulation)

    def _schedule_steps(self, total_steps: int) -> int:
        """Optimizer steps the LR decay spans: ``lr_schedule_epochs`` of them when set."""
        if not self.cfg.lr_schedule_epochs:
            return total_steps
        steps = max(1, self.batches_per_epoch * self.cfg.lr_schedule_epochs // self.accumulation)
        if steps < total_steps:
            raise ValueError(
                f"lr_schedule_epochs={self.cfg.lr_schedule_epochs} ({steps} steps) is shorter than the "
                f"run ({total_steps} steps); set it to at least max_epoch, or 0 to decay over the run"
            )
        return steps

    def _wrap_for_training(self, model: nn.Module) -> nn.Module:
        """Activation checkpointing, then compilation, then DDP or FSDP (torchtitan's order)."""
        self.checkpointed_blocks = apply_activation_checkpointing(model, self.cfg.grad_checkpointing)
        compile_mode = resolve_compile(self.cfg.compile, self.device)
        self.compiled_blocks = apply_compile(model, compile_mode, self.cfg.compile_backend)
        self.compile_stats_start = CompileStats.now()
        step = _TrainingStep(model, self.task)
        if compile_mode == "model":
            step.compile(backend=self.cfg.compile_backend)
        if not self.dist.is_distributed:
            return step
        if self.cfg.strategy == "fsdp":
            return apply_fsdp(step, model, self.cfg, self.device)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # buffers are synchronised once here and stay equal on every rank by construction (ALBEF's
        # ITC queue is filled from all ranks), so DDP need not broadcast them before every step
        return DistributedDataParallel(step, device_ids=device_ids, find_unused_parameters=True,
                                       forward_sync_buffers=False)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ----- fit --------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` (or ``max_epoch``), validating and checkpointing on the way.

        Returns (and writes to ``run_dir/metrics.json``) the final validation metrics (``val``),
        ``best_metric``, ``best_checkpoint``, ``last_checkpoint``, ``global_step``,
        ``num_skipped_images`` (corrupt images replaced over the run) and ``run_dir``.
        """
        cfg = self.cfg
        total_steps = self._prepare_training()
        resume_from = resolve_resume(cfg.resume_from, self.run_dir.parent) if self.dist.is_main else None
        resume_from = distributed.broadcast_object(resume_from)  # every rank resumes the same checkpoint
        rng_to_restore = self._resume(resume_from) if resume_from else None
        self.logger = MetricsLogger(self.run_dir, self.dist.is_main)
        self.logger.log({
            "event": "setup", "step": self.state.global_step, "epoch": self.state.epoch,
            "world_size": self.dist.world_size, "accumulation": self.accumulation,
            "global_batch": cfg.per_gpu_batchsize * self.dist.world_size * self.accumulation,
            "total_steps": total_steps, "resumed_from": resume_from, "strategy": cfg.strategy,
            "compiled_modules": self.compiled_blocks, "checkpointed_blocks": self.checkpointed_blocks,
            "optimizer_kernels": [kernel_name(optimizer) for optimizer in self.optimizers],
            "finite_check": self.finite_check, "peak_tflops": self.peak_tflops,
        })
        self.progress = ProgressBar(
            total_steps, self.state.global_step, enabled=cfg.progress_bar and self.dist.is_main
        )
        self.meter = IntervalMeter()
        if rng_to_restore is not None:
            set_rng_state(rng_to_restore)
        try:
            self.model.train()
            self._train_loop()
            if self._last_event_step != self.state.global_step:
                self._validate_and_checkpoint()
        finally:
            self.progress.close()
            self.logger.close()
        last = checkpoint_path(self.checkpoint_dir, "last", self.sharded_checkpoints)
        summary = {
            "val": self.last_val_metrics,
            "best_metric": self.state.best_metric,
            "best_checkpoint": self.state.best_checkpoint,
            "last_checkpoint": str(last) if last.exists() else None,
            "global_step": self.state.global_step,
            "num_skipped_images": self._flush_skipped(),
            "run_dir": str(self.run_dir),
            "performance": self.performance_summary,
        }
        if self.dist.is_main:
            plot_curves(self.logger.path, self.run_dir / PLOT_FILE)
            (self.run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
            if cfg.export_best:  # issue 19: the run's model folder
                from vlkit.api.export import export_best

                summary["model_folder"] = str(export_best(self.run_dir))
        return summary

    def _prepare_training(self) -> int:
        """Model, loaders, optimizer, schedule, scaler and fresh counters; returns the total steps."""
        cfg = self.cfg
        if self.model is None:
            self.model = self._build_model()
        configure_cuda_math(self.device, cfg.allow_tf32)
        if cfg.channels_last or (cfg.channels_last is None and self.device.type == "cuda"):
            apply_channels_last(self.model)
        self.peak_tflops = device_peak_tflops(self.device, cfg.peak_tflops)
        self.finite_check = finite_check_mode(cfg, self.device)
        self.flops = FlopCount()
        self.flops_per_sample: float | None = None
        self.performance_summary: dict[str, float] = {}
        self._nonfinite_seen: torch.Tensor | None = None
        self.train_loader = self._loader(self._dataset("train"), "train", training=True)
        self.train_sampler: ResumableDistributedSampler = self.train_loader.sampler
        val_set = self._dataset("val", required=False)
        self.val_loader = self._eval_loader(val_set, "val") if val_set is not None else None
        self.batches_per_epoch = math.ceil(self.train_sampler.samples_per_epoch / cfg.per_gpu_batchsize)
        if self.fast_dev_batches:
            self.batches_per_epoch = min(self.batches_per_epoch, self.fast_dev_batches)
        total_steps = self._total_steps(self.batches_per_epoch)
        self.max_steps = None if self.fast_dev_batches else cfg.max_steps
        self.max_epochs = 1 if self.fast_dev_batches else (cfg.max_epoch if cfg.max_steps is None else None)
        self.step_module = self._wrap_for_training(self.model)  # FSDP replaces the parameters: first
        self.optimizers = build_optimizers(self.model, cfg)
        steps_per_epoch = math.ceil(self.batches_per_epoch / self.accumulation)
        self.schedulers = build_schedulers(self.optimizers, cfg, self._schedule_steps(total_steps), steps_per_epoch)
        self._load_optimizer_files()
        self.scaler = torch.amp.GradScaler(self.device.type) if self.autocast_dtype == torch.float16 else None
        self.state = TrainState()
        self._last_event_step: int | None = None
        self._pending_skipped = 0
        self._grad_norms: list[torch.Tensor] = []
        self._shown_loss: float | None = None
        self._shown_rate: float | None = None
        return total_steps

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The main optimizer (the first of ``optimizers``)."""
        return self.optimizers[0]

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        """The main optimizer's schedule (the first of ``schedulers``)."""
        return self.schedulers[0]

    def _load_optimizer_files(self) -> None:
        """Restore ``load_optimizer_states`` / ``load_scheduler_states`` (entry i: optimizer or
        schedule i, "" keeps it fresh), then set every group's LR from its schedule."""
        for key, targets in (("load_optimizer_states", self.optimizers), ("load_scheduler_states", self.schedulers)):
            files = list(self.cfg[key] or [])
            if key == "load_optimizer_states" and any(files) and isinstance(self.step_module, FSDPModule):
                raise ValueError(f"load_optimizer_states={files}: whole optimizer files do not load into "
                                 "strategy=fsdp's sharded optimizers; use strategy=ddp for this run")
            if len(files) > len(targets):
                raise ValueError(f"{key} lists {len(files)} files but the run has {len(targets)}; give one per "
                                 f"optimizer (main first, then the visual one) or '' to skip one")
            for target, path in zip(targets, files):
                if not path:
                    continue
                state = read_state_file(path, key)
                if isinstance(target, torch.optim.Optimizer):
                    restore_optimizer_state(target, state, f"{key} {path}")
                else:
                    target.load_state_dict(state)
        for optimizer, scheduler in zip(self.optimizers, self.schedulers):
            for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
                group["lr"] = lr

    def _finished(self) -> bool:
        if self.max_steps is not None and self.state.global_step >= self.max_steps:
            return True
        return self.max_epochs is not None and self.state.epoch >= self.max_epochs

    def _train_loop(self) -> None:
        while not self._finished():
            self.train_sampler.set_epoch(self.state.epoch)
            if not self._train_epoch():
                return
            self.state.epoch += 1
            self.state.batch_in_epoch = 0

    def _train_epoch(self) -> bool:
        """The rest of the current epoch; False when the run ended before the epoch did."""
        per_gpu = self.cfg.per_gpu_batchsize
        remaining_samples = len(self.train_sampler)
        num_batches = len(self.train_loader)
        if self.fast_dev_batches:
            num_batches = min(num_batches, self.fast_dev_batches)
        batches = iter(self.train_loader) if num_batches else iter(())  # no workers for nothing
        batches_per_epoch = self.state.batch_in_epoch + num_batches  # a resumed epoch started earlier
        pending = 0
        for index in range(num_batches):
            wait_started = time.perf_counter()
            batch = next(batches)
            data_wait = time.perf_counter() - wait_started
            self.task.on_train_batch(self.state.epoch, self.state.batch_in_epoch, batches_per_epoch)
            samples = min(per_gpu, remaining_samples - index * per_gpu)
            pending += 1
            step_now = pending == self.accumulation or index == num_batches - 1
            self._forward_backward(move_to_device(batch, self.device), samples, data_wait, sync=step_now)
            self.train_sampler.mark_consumed(samples)
            self.state.batch_in_epoch += 1
            if step_now:
                if self._optimizer_step():
                    self._after_step(micro_batches=pending)
                pending = 0
                if self._finished() and index < num_batches - 1:
                    return False
        return True

    def _forward_backward(self, batch: dict, samples: int, data_wait: float, sync: bool) -> None:
        no_sync = isinstance(self.step_module, DistributedDataParallel) and not sync
        with self.step_module.no_sync() if no_sync else contextlib.nullcontext():
            counting = self.flops.total is None
            with self._autocast(), self.flops.counting() if counting else contextlib.nullcontext():
                outputs = self.step_module(batch)
            if counting:
                self.flops_per_sample = self.flops.total / max(samples, 1)
            if "loss" not in outputs:
                raise KeyError(
                    f"{type(self.task).__name__}.training_step returned {sorted(outputs)} without "
                    f"'loss'; return the total loss to back-propagate under 'loss'"
                )
            if self.finite_check == "interval":
                self._note_nonfinite(outputs["loss"])
            elif not self.nan_guard.loss_is_finite(outputs["loss"]):
                self._non_finite_loss(outputs, batch)
                return
            loss = outputs["loss"] / self.accumulation
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        self.meter.add({k: v for k, v in outputs.items() if _is_scalar(v)}, samples, data_wait)
        observe = getattr(self.train_sampler, "observe", None)
        if observe is not None:  # a sampler that orders batches by what the model computed (GRIT)
            observe(batch, outputs)
        self._pending_skipped += int(batch.get("num_skipped_images", 0))

    def _non_finite_loss(self, outputs: dict, batch: dict) -> None:
        """Record the batch (every rank's sample ids, in ``nan_batches.jsonl``); under
        ``nan_policy=stop`` (optionally after writing ``checkpoints/nan_debug``) stop the run."""
        where = {"step": self.state.global_step, "epoch": self.state.epoch, "batch": self.state.batch_in_epoch}
        record = self.nan_guard.record(where, outputs, batch)
        if self.nan_guard.policy == "skip":
            self.logger.log({"event": "nan_skip", **where, "sample_ids": [r["sample_ids"] for r in record["ranks"]]})
            return
        debug = ""
        if self.cfg.nan_debug_checkpoint:
            debug = f"; the weights that gave it are in {self._write_checkpoint('nan_debug', self._resume_state())}"
        mine = record["ranks"][self.dist.rank]
        terms = ", ".join(f"{k}={v:.6g}" for k, v in mine["terms"].items())
        raise FloatingPointError(
            f"non-finite loss at global step {self.state.global_step} (optimizer steps done), epoch "
            f"{self.state.epoch}, batch {self.state.batch_in_epoch} of the epoch: {terms}; sample indices "
            f"{mine['sample_ids']} (every rank's in {self.nan_guard.record_file}){debug}. Nothing was saved "
            f"for this step; {self._nonfinite_advice(self.state.global_step)} (nan_policy=skip drops such steps)"
        )

    def _nonfinite_advice(self, first_bad_step: int) -> str:
        """Where the last good state is, and what to try, for a non-finite loss."""
        last = self.checkpoint_dir / "last.ckpt"
        saved = f"{last} is the last good state" if last.is_file() else "no checkpoint was written before it"
        if first_bad_step == 0:
            return f"{saved}; non-finite from the first step: check the loaded weights (load_path, pretrain_path) and the data"
        return f"{saved}; lower learning_rate, set gradient_clip_val or use precision=bf16"

    def _note_nonfinite(self, loss: torch.Tensor) -> None:
        """Remember on the device whether a loss was NaN/inf (``finite_check=interval``: no sync)."""
        bad = ~torch.isfinite(loss.detach()).all()
        if self._nonfinite_seen is None:
            self._nonfinite_since = self.state.global_step
            self._nonfinite_seen = bad
        else:
            self._nonfinite_seen = self._nonfinite_seen | bad

    def _raise_if_nonfinite_seen(self) -> None:
        """Stop every rank when a loss since the last check was NaN/inf (``finite_check=interval``)."""
        if self._nonfinite_seen is None:
            return
        first_possible = self._nonfinite_since
        seen = distributed.all_reduce_sum(self._nonfinite_seen.float().reshape(1)).item() > 0
        self._nonfinite_seen = None
        if seen:
            raise FloatingPointError(
                f"non-finite loss in the steps up to global step {self.state.global_step}, epoch "
                f"{self.state.epoch} (finite_check=interval reads the check every log_every_n_steps="
                f"{self.cfg.log_every_n_steps} steps; finite_check=step finds the exact step and batch at the "
                f"cost of a host-device synchronisation per step). Nothing was saved since; "
                f"{self._nonfinite_advice(first_possible)}"
            )

    def _optimizer_step(self) -> bool:
        """Clip the global gradient norm (over every optimizer's parameters) and step every
        optimizer and its schedule; False (and no update at all) when ``nan_policy=skip`` dropped
        a micro-batch of this step."""
        if self.nan_guard.step_poisoned:
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            self.state.num_nan_skips += 1
            self.nan_guard.step_done(skipped=True)
            return False
        self.nan_guard.step_done(skipped=False)
        clip = self.cfg.gradient_clip_val
        if self.scaler is not None:
            for optimizer in self.optimizers:
                self.scaler.unscale_(optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = grad_norm(params)
        self._grad_norms.append(norm)
        if clip > 0:
            clip_grads(params, clip, norm)
        for optimizer in self.optimizers:
            if self.scaler is not None:
                self.scaler.step(optimizer)
            else:
                optimizer.step()
        if self.scaler is not None:
            self.scaler.update()
        self._step_lrs = [max(group["lr"] for group in optimizer.param_groups) for optimizer in self.optimizers]
        for optimizer, scheduler in zip(self.optimizers, self.schedulers):
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1
        self.meter.mark_step()
        return True

    def _after_step(self, micro_batches: int) -> None:
        if self.state.global_step % self.cfg.log_every_n_steps == 0:
            self._log_train()
        self.progress.advance(self._shown_loss, self._shown_rate, self.performance_summary.get("mfu"))
        if self._validation_due(micro_batches):
            self._validate_and_checkpoint()
        every = self.cfg.checkpoint_every_n_steps
        if every > 0 and self.state.global_step % every == 0 and not self.fast_dev_batches:
            self._save_step_checkpoint()

    def _flush_skipped(self) -> int:
        """Add every rank's newly skipped images to the run total (a collective)."""
        pending = torch.tensor([self._pending_skipped], dtype=torch.float64, device=self.device)
        self.state.num_skipped_images += int(distributed.all_reduce_sum(pending).item())
        self._pending_skipped = 0
        return self.state.num_skipped_images

    def _log_train(self) -> None:
        self._raise_if_nonfinite_seen()
        summary = self.meter.summarize()
        self.meter.reset()
        performance = self._performance(summary["samples_per_s"])
        self.logger.log({
            "event": "train", "step": self.state.global_step, "epoch": self.state.epoch,
            "lr": self._step_lrs[0], **{f"lr_{i}": lr for i, lr in enumerate(self._step_lrs[1:], 1)},
            **summary, **performance, "num_skipped_images": self._flush_skipped(),
            "train/grad_norm": torch.stack(self._grad_norms).mean().item() if self._grad_norms else None,
            "num_nan_skips": self.state.num_nan_skips,
        })
        self._grad_norms = []
        self.performance_summary = {**summary, **performance}
        self._shown_loss, self._shown_rate = summary.get("train/loss"), summary["samples_per_s"]

    def _performance(self, samples_per_s: float) -> dict[str, float]:
        """Model FLOPs per sample, TFLOP/s and MFU, peak memory, and compile counts so far."""
        compiled = CompileStats.now().since(self.compile_stats_start)
        return {
            **throughput_fields(self.flops_per_sample, samples_per_s, self.peak_tflops, self.dist.world_size),
            "peak_memory_mb": peak_memory_mb(self.device),
            "compile_graphs": compiled.graphs, "compile_recompilations": compiled.recompilations,
        }

    def _validation_due(self, micro_batches: int) -> bool:
        if self.fast_dev_batches:
            return False
        interval = self.cfg.val_check_interval
        if isinstance(interval, int):
            return self.state.global_step % interval == 0
        every = max(1, int(interval * self.batches_per_epoch))
        done = self.state.batch_in_epoch
        return done // every > (done - micro_batches) // every

    # ----- validation and checkpoints ---------------------------------------------------------

    def _validate_and_checkpoint(self) -> None:
        started = time.perf_counter()
        metrics = self._validate() if self.val_loader is not None else None
        if not self.fast_dev_batches:
            self._save_checkpoints(metrics)
        if metrics is not None and self.dist.is_main:
            last = checkpoint_path(self.checkpoint_dir, "last", self.sharded_checkpoints)
            self._write_record(
                self.run_dir / "evaluations" / f"val_step{self.state.global_step:07d}.json", "val", metrics,
                checkpoint=str(last) if last.exists() else "",
            )
        self._last_event_step = self.state.global_step
        self.meter.exclude(time.perf_counter() - started)

    def _evaluate(self, loader: Any, split: str) -> dict[str, float]:
        self.model.eval()
        try:
            with torch.no_grad(), self._autocast(), distributed.gathered_params(getattr(self, "step_module", None)):
                if split == "test":
                    metrics = self.task.test(self.model, loader, str(self.run_dir))
                else:
                    metrics = self.task.evaluate(self.model, loader, split)
                    if self.cfg.eval_image_ablation:  # issue 22: the blank-image baseline
                        metrics = with_image_ablation(self.task, self.model, loader, split, metrics)
        finally:
            self.model.train()
        return {name: float(value) for name, value in metrics.items()}

    def _validate(self) -> dict[str, float]:
        metrics = self._evaluate(self.val_loader, "val")
        if "the_metric" not in metrics:
            raise KeyError(
                f"{type(self.task).__name__}.evaluate returned {sorted(metrics)} without "
                f"'the_metric'; add it (higher is better; it selects best.ckpt)"
            )
        self.logger.log({
            "event": "val", "step": self.state.global_step, "epoch": self.state.epoch,
            **{f"val/{name}": value for name, value in metrics.items()},
        })
        self.last_val_metrics = metrics
        return metrics

    def _save_checkpoints(self, metrics: dict[str, float] | None) -> None:
        """``last`` always, ``best`` when ``the_metric`` improved (``.ckpt`` files written by rank 0,
        or sharded folders written by every rank under ``strategy=fsdp``)."""
        best = self.state.best_metric
        is_best = metrics is not None and (best is None or metrics["the_metric"] > best)
        if is_best:
            self.state.best_metric = metrics["the_metric"]
            self.state.best_checkpoint = str(checkpoint_path(self.checkpoint_dir, "best", self.sharded_checkpoints))
        resume_state = self._resume_state()
        self._write_checkpoint("last", resume_state)
        if is_best:
            self._write_checkpoint("best", resume_state)
        checkpoint = self._checkpoint_for_task(resume_state)
        if self.dist.is_main:
            within_epoch = 0 < self.state.batch_in_epoch < self.batches_per_epoch
            self.task.on_checkpoint(checkpoint, is_best, end_of_epoch=not within_epoch)

    def _save_step_checkpoint(self) -> None:
        """``checkpoints/step_NNNNNNN`` (``checkpoint_every_n_steps``), keeping the last ``keep_last_k``."""
        started = time.perf_counter()
        self._write_checkpoint(step_name(self.state.global_step), self._resume_state())
        if self.dist.is_main:
            prune_step_checkpoints(self.checkpoint_dir, self.cfg.keep_last_k)
        self.meter.exclude(time.perf_counter() - started)

    def _resume_state(self) -> dict[str, Any]:
        """Counters, every rank's RNG and sampler state, scaler (collectives: every rank calls it)."""
        self._raise_if_nonfinite_seen()
        self._flush_skipped()
        rng_states = distributed.all_gather_object(portable_rng_state(rng_state()))
        sampler_state = self.train_sampler.state_dict()  # a collective for per-rank sampler state
        return {
            **{name: getattr(self.state, name) for name in RESUMED_COUNTERS},
            "rng_states": rng_states,
            "sampler": sampler_state,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "world_size": self.dist.world_size,
            "model_flops_per_sample": self.flops_per_sample,
        }

    def _metadata(self, resume_state: dict[str, Any]) -> dict[str, Any]:
        return checkpoint_metadata(
            schedulers=self.schedulers, config=OmegaConf.to_container(self.cfg, resolve=True),
            global_step=self.state.global_step, epoch=self.state.epoch, resume_state=resume_state,
        )

    def _full_checkpoint(self, resume_state: dict[str, Any]) -> dict[str, Any]:
        return build_checkpoint(
            model=self.model, optimizers=self.optimizers, schedulers=self.schedulers,
            config=OmegaConf.to_container(self.cfg, resolve=True),
            global_step=self.state.global_step, epoch=self.state.epoch, resume_state=resume_state,
        )

    def _write_checkpoint(self, name: str, resume_state: dict[str, Any]) -> Path:
        """Write checkpoint ``name`` into ``checkpoints/`` atomically; returns its path."""
        path = checkpoint_path(self.checkpoint_dir, name, self.sharded_checkpoints)
        if self.sharded_checkpoints:
            trainer_state = {**self._metadata(resume_state), "num_optimizers": len(self.optimizers)}
            return save_sharded(path, self.model, self.optimizers, trainer_state)
        if self.dist.is_main:
            atomic_torch_save(self._full_checkpoint(resume_state), path)
        return path

    def _checkpoint_for_task(self, resume_state: dict[str, Any]) -> dict[str, Any]:
        """The single-file checkpoint dict for ``task.on_checkpoint`` (a collective). Under FSDP it
        holds the gathered weights and no optimizer state, and is built only for a task that
        overrides the hook."""
        if not self.sharded_checkpoints:
            return self._full_checkpoint(resume_state)
        if type(self.task).on_checkpoint is Task.on_checkpoint:
            return {}
        return {"state_dict": gathered_model_state(self.model), **self._metadata(resume_state)}

    def _resume(self, path: str) -> dict | None:
        """Restore everything from ``path``; returns this rank's RNG state, to set just before the
        loop (or None when the checkpoint came from another world size)."""
        if is_checkpoint_folder(path):  # sharded (strategy=fsdp): loads at any world size, either strategy
            checkpoint = load_sharded(path, self.model, self.optimizers)
        elif self.cfg.strategy == "fsdp" and self.dist.is_distributed:
            raise ValueError(f"strategy=fsdp resumes from a sharded checkpoint folder, not the file {path}; "
                             f"resume it with strategy=ddp, or start from its weights with load_path={path}")
        else:
            checkpoint = self._load_checkpoint_file(path)
        saved, saved_schedulers = checkpoint["vlkit"], checkpoint["lr_schedulers"]
        for scheduler, state in zip(self.schedulers, saved_schedulers):
            scheduler.load_state_dict(state)
        if self.scaler is not None and saved["scaler"] is not None:
            self.scaler.load_state_dict(saved["scaler"])
        self.train_sampler.load_state_dict(saved["sampler"])
        self.state = TrainState(
            global_step=checkpoint["global_step"], epoch=checkpoint["epoch"],
            **{name: saved.get(name, getattr(TrainState, name)) for name in RESUMED_COUNTERS},
        )
        self._last_event_step = self.state.global_step
        if saved.get("model_flops_per_sample"):  # counted once per run: no eager counting step on resume
            self.flops_per_sample = self.flops.total = saved["model_flops_per_sample"]
        if len(saved["rng_states"]) != self.dist.world_size:
            warnings.warn(
                f"{path} was written by {len(saved['rng_states'])} processes, this run has "
                f"{self.dist.world_size}: data order resumes exactly, model-side randomness is "
                f"reseeded with seed + rank + global_step"
            )
            seed_everything(self.cfg.seed + self.dist.rank + self.state.global_step)
            return None
        return native_rng_state(saved["rng_states"][self.dist.rank])

    def _load_checkpoint_file(self, path: str) -> dict[str, Any]:
        """Weights and optimizer states from a single-file checkpoint; returns the checkpoint."""
        checkpoint = load_checkpoint(path)
        self.model.load_state_dict(checkpoint["state_dict"])
        saved_optimizers, saved_schedulers = checkpoint["optimizer_states"], checkpoint["lr_schedulers"]
        if len(saved_optimizers) != len(self.optimizers) or len(saved_schedulers) != len(self.schedulers):
            raise ValueError(
                f"{path} holds {len(saved_optimizers)} optimizer(s) but this run builds {len(self.optimizers)}; "
                "resume with the same visual_optimizer setting"
            )
        for optimizer, state in zip(self.optimizers, saved_optimizers):
            optimizer.load_state_dict(state)
        return checkpoint

    # ----- test -------------------------------------------------------------------------------

    def _write_record(self, path: Path, split: str, metrics: dict[str, float], checkpoint: str | None = None) -> None:
        """An evaluation's ``metrics.json``-style record (``vlkit.eval.metrics.evaluation_record``)."""
        record = evaluation_record(
            self.cfg, self.task.name or type(self.task).__name__, split, metrics,
            extra={**self.task.evaluation_info(), "step": self.state.global_step}, checkpoint=checkpoint,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")

    def test(self) -> dict[str, float]:
        """Run ``task.test`` on the test split; writes ``metrics.json`` (task, split, protocol,
        checkpoint path and hash, image size, the numbers under ``metrics``) into ``run_dir``."""
        if self.model is None:
            self.model = self._build_model()
        metrics = self._evaluate(self._eval_loader(self._dataset("test"), "test"), "test")
        if self.dist.is_main:
            self._write_record(self.run_dir / "metrics.json", "test", metrics)
            logger = MetricsLogger(self.run_dir, enabled=True)
            logger.log({"event": "test", "step": self.state.global_step, "epoch": self.state.epoch,
                        **{f"test/{name}": value for name, value in metrics.items()}})
            logger.close()
        return metrics
