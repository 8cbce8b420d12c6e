"""GRIT-VLP grouped mini-batch sampling (``train_sampler=grit``) against a plain shuffle
(``train_sampler=random``), on the tiny ALBEF/GRIT model (``grit_pretrain tiny``, cross_attention
family) and the synthetic COCO captions.

A shared warm-up pre-training (random sampler, ``--warmup-epochs``) first brings ITC above chance,
since GRIT groups by ITC similarity; both samplers then continue from its checkpoint with the same
seed and number of steps (epoch 0 of each is a shuffle, the later ones GRIT-grouped or shuffled).
Measures:

1. per epoch: the mean ITC cosine similarity of each training batch's negatives (image i against
   text j of another image), next to the same mean over every pair of the epoch (what a random
   batch would see under the same model); the share of off-diagonal pairs that are two captions
   of one image; ITM loss and accuracy (hardest in-batch negatives);
2. ir/tr recall@1 after the same short retrieval fine-tune from each pre-trained checkpoint;
3. the sampler's overhead (``GritSampler.observe`` + ``set_epoch``) as a share of each epoch's
   wall time, and ``greedy_chain`` alone at GRIT's block size (M=1920, D=256), extrapolated to a
   GRIT epoch (4M examples over 4 GPUs);
4. retrieval evaluation of each fine-tuned model on the test split with ``retrieval_protocol``
   exact and fast (ITC pre-ranking, ``k_test`` candidates): wall time, pairs scored, recall.

    python benchmarks/grit.py                          # about 4 minutes on 2 CPU cores
    python benchmarks/grit.py --images 320 --warmup-epochs 6 --epochs 4 --out benchmarks/results
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Iterator
from unittest.mock import patch

import torch

from vlkit.cli.synth import data_arguments
from vlkit.cli.training import train_or_test
from vlkit.config import resolve_config
from vlkit.data.grit import greedy_chain
from vlkit.data.samplers import GritSampler, ResumableDistributedSampler
from vlkit.engine.trainer import Trainer
from vlkit.cli.quickstart import format_table
from vlkit.tasks import build_task
from vlkit.tasks.pretrain import PretrainTask

SAMPLERS = {"random": ResumableDistributedSampler, "grit": GritSampler}
MODEL_WORDS = ["model=cross_attention", "fusion_layer=1", "max_position_embeddings=0", "image_size=64",
               "datasets=[coco]", "progress_bar=False", "warmup_steps=0.1",
               # no augmentation: random crops of the 64-px synthetic scenes keep ITC at chance
               "train_transform_keys=[albef_test]", "val_transform_keys=[albef_test]"]
FINETUNE_PRESETS = ["albef", "task_finetune_irtr_coco_mae_randaug", "tiny"]
FINETUNE_WORDS = ["loss_names.itc=1", "draw_false_text=3", "learning_rate=5e-4"]


# ----- recording a pre-training run ---------------------------------------------------------

@dataclass
class Recorder:
    """Per-step batch statistics and per-epoch timings of one pre-training run."""

    epoch: int = 0
    steps: list[dict[str, float]] = field(default_factory=list)
    embeddings: dict[int, list[tuple[torch.Tensor, ...]]] = field(default_factory=lambda: defaultdict(list))
    seconds: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))

    def add_step(self, batch: dict, out: dict) -> None:
        """Similarity statistics of the batch's ITC embeddings and its ITM loss and accuracy."""
        image, text = (embeds.float().cpu() for embeds in out["itc_embeddings"])
        img_index = batch["img_index"].cpu()
        self.embeddings[self.epoch].append((image, text, img_index))
        self.steps.append({
            "epoch": self.epoch, **similarity_stats(image, text, img_index),
            "itm_loss": float(out["itm_loss"]), "itm_accuracy": float(out["itm_accuracy"]),
        })

    @contextlib.contextmanager
    def timer(self, kind: str, epoch: int | None = None) -> Iterator[None]:
        """Add the block's wall time to ``seconds[kind][epoch]`` (default: the current epoch)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[kind][self.epoch if epoch is None else epoch] += time.perf_counter() - started

    def epochs(self) -> list[dict[str, float]]:
        """Means over each epoch's steps, the epoch-wide negative similarity and the timings."""
        rows = []
        for epoch in sorted(self.embeddings):
            steps = [step for step in self.steps if step["epoch"] == epoch]
            means = {key: sum(step[key] for step in steps) / len(steps) for key in steps[0] if key != "epoch"}
            whole = similarity_stats(*(torch.cat(parts) for parts in zip(*self.embeddings[epoch])))
            wall, sampler = self.seconds["epoch"][epoch], self.seconds["sampler"][epoch]
            rows.append({
                "epoch": epoch, "steps": len(steps), **means,
                "epoch_neg_sim": whole["neg_sim"], "epoch_neg_sim_std": whole["neg_sim_std"],
                "neg_sim_lift": means["neg_sim"] - whole["neg_sim"],
                "epoch_seconds": wall, "sampler_seconds": sampler, "sampler_fraction": sampler / wall,
            })
        return rows


def similarity_stats(image: torch.Tensor, text: torch.Tensor, img_index: torch.Tensor) -> dict[str, float]:
    """Mean (and std) cosine similarity of image i and text j over pairs of different images
    (``neg_sim``), the mean over all i != j (``offdiag_sim``) and the share of i != j pairs that
    share an image."""
    similarity = image @ text.t()
    off_diagonal = ~torch.eye(len(similarity), dtype=torch.bool)
    other_image = img_index[:, None] != img_index[None, :]
    return {
        "neg_sim": similarity[other_image].mean().item(), "neg_sim_std": similarity[other_image].std().item(),
        "offdiag_sim": similarity[off_diagonal].mean().item(),
        "same_image_fraction": (off_diagonal & ~other_image).sum().item() / off_diagonal.sum().item(),
    }


@contextlib.contextmanager
def recording(recorder: Recorder, sampler_class: type) -> Iterator[None]:
    """Patch the training step, the trainer's epoch and the sampler so ``recorder`` sees them."""
    training_step, train_epoch, set_epoch = PretrainTask.training_step, Trainer._train_epoch, sampler_class.set_epoch

    def recorded_step(self, model, batch):
        out = training_step(self, model, batch)
        recorder.add_step(batch, out)
        return out

    def timed_epoch(self):
        recorder.epoch = self.state.epoch
        with recorder.timer("epoch"):
            return train_epoch(self)

    def timed_set_epoch(self, epoch):
        with recorder.timer("epoch", epoch), recorder.timer("sampler", epoch):
            set_epoch(self, epoch)

    with contextlib.ExitStack() as stack:
        stack.enter_context(patch.object(PretrainTask, "training_step", recorded_step))
        stack.enter_context(patch.object(Trainer, "_train_epoch", timed_epoch))
        stack.enter_context(patch.object(sampler_class, "set_epoch", timed_set_epoch))
        if hasattr(sampler_class, "observe"):
            observe = sampler_class.observe

            def timed_observe(self, batch, outputs):
                with recorder.timer("sampler"):
                    observe(self, batch, outputs)

            stack.enter_context(patch.object(sampler_class, "observe", timed_observe))
        yield


# ----- runs ---------------------------------------------------------------------------------

def run_words(args: argparse.Namespace, data_words: list[str], name: str) -> list[str]:
    """Words shared by every run: the tiny model, the data, the batch and the run folder."""
    return [*MODEL_WORDS, *data_words, f"per_gpu_batchsize={args.batch}", f"batch_size={args.batch}",
            f"seed={args.seed}", f"log_dir={args.work / 'runs'}", f"run_name={name}"]


def steps_per_epoch(words: list[str], batch: int) -> int:
    """Training batches in one epoch of the run ``words`` describe."""
    return math.ceil(len(build_task(resolve_config(words)).build_dataset("train")) / batch)


def pretrain(args: argparse.Namespace, data_words: list[str], name: str, sampler: str, epochs: int,
             load_path: str = "") -> tuple[str, list[dict]]:
    """Pre-train with ``train_sampler=sampler`` for ``epochs`` epochs from ``load_path`` (or from
    scratch); returns the last checkpoint and the per-epoch records."""
    words = ["grit_pretrain", "tiny", *run_words(args, data_words, name), f"learning_rate={args.lr}",
             f"train_sampler={sampler}", f"grit_queue_size={args.queue}", f"grit_search_space={args.search_space}",
             f"load_path={load_path}"]
    steps = epochs * steps_per_epoch(words, args.batch)
    recorder = Recorder()
    with recording(recorder, SAMPLERS[sampler]):
        result = train_or_test(resolve_config([*words, f"max_steps={steps}", f"val_check_interval={steps}"]))
    return result["last_checkpoint"], recorder.epochs()


def finetune(args: argparse.Namespace, data_words: list[str], sampler: str, checkpoint: str) -> str:
    """The same short retrieval fine-tune (task ``irtr``, with ITC) from ``checkpoint``."""
    words = [*FINETUNE_PRESETS, *run_words(args, data_words, f"irtr_{sampler}"), *FINETUNE_WORDS,
             f"load_path={checkpoint}", f"max_steps={args.finetune_steps}",
             f"val_check_interval={args.finetune_steps}"]
    return train_or_test(resolve_config(words))["last_checkpoint"]


def test_retrieval(args: argparse.Namespace, data_words: list[str], sampler: str, checkpoint: str,
                   protocol: str) -> dict[str, float]:
    """Recall on the test split with ``retrieval_protocol=protocol`` (``seconds``, ``pairs_scored``)."""
    words = [*FINETUNE_PRESETS, *run_words(args, data_words, f"test_{sampler}_{protocol}"), *FINETUNE_WORDS,
             "test_only=True", f"load_path={checkpoint}", f"retrieval_protocol={protocol}", f"k_test={args.k_test}"]
    return train_or_test(resolve_config(words))


def time_greedy_chain(m: int, dim: int, repeats: int) -> float:
    """Seconds per ``greedy_chain`` call on an (m, dim) block of random unit embeddings."""
    generator = torch.Generator().manual_seed(0)
    image, text = (torch.nn.functional.normalize(torch.randn(m, dim, generator=generator), dim=1) for _ in range(2))
    greedy_chain(image, text, generator)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        greedy_chain(image, text, generator)
    return (time.perf_counter() - started) / repeats


# ----- output -------------------------------------------------------------------------------

def epoch_table(pretraining: dict[str, list[dict]]) -> str:
    rows = [("sampler", "epoch", "in-batch neg sim", "epoch-wide neg sim (± std)", "lift", "same-image pairs",
             "ITM loss", "ITM acc", "epoch s", "sampler s", "sampler %")]
    for sampler, epochs in pretraining.items():
        rows += [(sampler, str(e["epoch"]), f"{e['neg_sim']:.3f}",
                  f"{e['epoch_neg_sim']:.3f} ± {e['epoch_neg_sim_std']:.3f}", f"{e['neg_sim_lift']:+.3f}",
                  f"{e['same_image_fraction']:.3f}", f"{e['itm_loss']:.3f}", f"{e['itm_accuracy']:.3f}",
                  f"{e['epoch_seconds']:.1f}", f"{e['sampler_seconds']:.3f}", f"{100 * e['sampler_fraction']:.2f}")
                 for e in epochs]
    return format_table(rows)


def retrieval_table(retrieval: dict[str, dict[str, dict]]) -> str:
    rows = [("pre-training", "protocol", "pairs scored", "seconds", "IR R@1", "TR R@1", "R mean", "ITC-only R mean")]
    for sampler, protocols in retrieval.items():
        for protocol, m in protocols.items():
            rows.append((sampler, protocol, f"{m['pairs_scored']:.0f}", f"{m['seconds']:.2f}", f"{m['ir_r1']:.3f}",
                         f"{m['tr_r1']:.3f}", f"{m['r_mean']:.3f}",
                         f"{m['itc_r_mean']:.3f}" if "itc_r_mean" in m else ""))
    return format_table(rows)


def plot(pretraining: dict[str, list[dict]], path: Path) -> None:
    """In-batch negative similarity per epoch (solid) against the epoch-wide one (dashed), their
    difference, and the ITM loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (sim_ax, lift_ax, itm_ax) = plt.subplots(1, 3, figsize=(12, 3.6))
    for (sampler, epochs), color in zip(pretraining.items(), ("tab:blue", "tab:orange")):
        xs = [e["epoch"] for e in epochs]
        sim_ax.plot(xs, [e["neg_sim"] for e in epochs], "o-", color=color, label=f"{sampler}: in-batch")
        sim_ax.plot(xs, [e["epoch_neg_sim"] for e in epochs], "--", color=color, label=f"{sampler}: epoch-wide")
        lift_ax.plot(xs, [e["neg_sim_lift"] for e in epochs], "o-", color=color, label=sampler)
        itm_ax.plot(xs, [e["itm_loss"] for e in epochs], "o-", color=color, label=sampler)
    sim_ax.set(xlabel="epoch", ylabel="mean ITC cosine, different images", title="negative-pair similarity")
    lift_ax.set(xlabel="epoch", ylabel="in-batch minus epoch-wide", title="lift over a random batch")
    itm_ax.set(xlabel="epoch", ylabel="ITM loss (hardest in-batch negatives)", title="ITM loss")
    for ax in (sim_ax, lift_ax, itm_ax):
        ax.set_xticks(xs)
        ax.legend(fontsize=8)
    fig.suptitle("tiny GRIT model, synthetic COCO, from a shared warm-up: random vs GRIT-grouped batches "
                 "(epoch 0 is a shuffle in both)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def synthetic_set(data_dir: Path, images: int, seed: int) -> dict[str, Any]:
    """The synthetic set in ``data_dir``, written first unless one of ``images`` scenes is there."""
    from vlkit.data.synthetic import write_synthetic

    info_path = data_dir / "synth_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info["num_images"] == images and info["seed"] == seed:
            return info
    return write_synthetic(str(data_dir), num_images=images, seed=seed, image_size=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=320, help="synthetic scenes (70%% train, 5 captions each)")
    parser.add_argument("--warmup-epochs", type=int, default=6,
                        help="shared pre-training with the random sampler before the two runs (0: none)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="pre-training epochs per sampler (all but the first grouped)")
    parser.add_argument("--lr", type=float, default=2e-3, help="pre-training learning rate")
    parser.add_argument("--batch", type=int, default=32, help="per_gpu_batchsize")
    parser.add_argument("--queue", type=int, default=128, help="grit_queue_size (L)")
    parser.add_argument("--search-space", type=int, default=64, help="grit_search_space (M)")
    parser.add_argument("--finetune-steps", type=int, default=70, help="retrieval fine-tuning steps")
    parser.add_argument("--k-test", type=int, default=16, help="candidates per query of the fast protocol")
    parser.add_argument("--chain-m", type=int, default=1920, help="greedy_chain block size timed (GRIT: 1920)")
    parser.add_argument("--chain-dim", type=int, default=256, help="ITC embedding width timed (GRIT: 256)")
    parser.add_argument("--chain-repeats", type=int, default=5)
    parser.add_argument("--grit-examples", type=int, default=4_000_000, help="examples per GRIT epoch")
    parser.add_argument("--grit-ranks", type=int, default=4, help="GPUs of GRIT's pre-training")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_grit"), help="folder for data and runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for grit.json / grit.png")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    info = synthetic_set(args.work / "data", args.images, args.seed)
    data_words = data_arguments(str(args.work / "data"), info).split()

    warm_checkpoint, warmup = "", []
    if args.warmup_epochs:
        warm_checkpoint, warmup = pretrain(args, data_words, "warmup", "random", args.warmup_epochs)
    pretraining, retrieval = {}, {}
    for sampler in SAMPLERS:
        checkpoint, pretraining[sampler] = pretrain(
            args, data_words, f"pretrain_{sampler}", sampler, args.epochs, warm_checkpoint
        )
        finetuned = finetune(args, data_words, sampler, checkpoint)
        retrieval[sampler] = {protocol: test_retrieval(args, data_words, sampler, finetuned, protocol)
                              for protocol in ("exact", "fast")}
    chain_seconds = time_greedy_chain(args.chain_m, args.chain_dim, args.chain_repeats)
    blocks = math.ceil(args.grit_examples / args.grit_ranks / args.chain_m)
    chain = {"m": args.chain_m, "dim": args.chain_dim, "seconds_per_block": chain_seconds,
             "examples_per_rank": args.grit_examples // args.grit_ranks, "blocks_per_rank_epoch": blocks,
             "seconds_per_rank_epoch": blocks * chain_seconds}

    print("\n" + epoch_table(pretraining))
    print("\n" + retrieval_table(retrieval))
    print(f"\ngreedy_chain, M={args.chain_m}, D={args.chain_dim}: {1000 * chain_seconds:.1f} ms per block; "
          f"{blocks} blocks per rank-epoch ({args.grit_examples:,} examples / {args.grit_ranks} ranks) = "
          f"{blocks * chain_seconds:.0f} s per epoch")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(pretraining, args.out / "grit.png")
    results = {
        "date": date.today().isoformat(), "torch": torch.__version__, "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "data": {"train_images": info["pools"]["train"], "test_images": info["pools"]["test"]},
        "warmup": warmup, "pretraining": pretraining, "retrieval": retrieval, "greedy_chain": chain,
        "seconds": time.perf_counter() - started,
    }
    (args.out / "grit.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults {args.out / 'grit.json'}, plot {args.out / 'grit.png'}, "
          f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
