"""Distributed samplers that yield sample keys and can resume mid-epoch: a seeded shuffle
(``random``) and GRIT-VLP's grouped mini-batches (``grit``)."""
from __future__ import annotations

import math
from typing import Any, Iterator, Sequence, Sized

import numpy as np
import torch
from torch.utils.data import Sampler

from vlkit.data.grit import GritCollector
from vlkit.utils import distributed
from vlkit.utils.seeding import SampleKey, sample_seed


def _cycle_to(order: list[int], length: int) -> list[int]:
    """``order`` repeated from its start until it holds ``length`` entries."""
    if not order:
        return []
    return (order * math.ceil(length / len(order)))[:length]


class ResumableDistributedSampler(Sampler[SampleKey]):
    """Splits a seeded per-epoch order across ranks and yields ``(index, sample_seed)`` keys.

    Training mode (``training=True``) shuffles with ``seed + epoch`` and pads the order (repeating
    its start) to a multiple of the world size, so every rank gets the same number of samples, as
    ``torch.utils.data.DistributedSampler`` does. Evaluation mode keeps the dataset order and pads
    nothing: across ranks every index is yielded exactly once (ranks may differ by one sample).

    Rank ``r`` takes positions ``r, r + W, r + 2W, ...`` of the order, so after every rank has
    consumed ``k`` samples the first ``k * W`` positions are done. The trainer reports consumption
    with ``mark_consumed``; ``state_dict`` holds the epoch and that global position, and a sampler
    loaded from it yields only the rest of the epoch (also under a different world size).
    """

    def __init__(
        self,
        dataset: Sized,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        training: bool = True,
    ):
        self.dataset_size = len(dataset)
        self.num_replicas = distributed.get_world_size() if num_replicas is None else num_replicas
        self.rank = distributed.get_rank() if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside [0, {self.num_replicas}) (num_replicas)")
        self.seed = seed
        self.training = training
        self.epoch = 0
        self._start = 0
        self._consumed = 0

    @property
    def epoch_size(self) -> int:
        """Positions in a whole epoch's order (padded to a multiple of the world in training)."""
        if not self.training:
            return self.dataset_size
        return math.ceil(self.dataset_size / self.num_replicas) * self.num_replicas

    @property
    def samples_per_epoch(self) -> int:
        """Samples this rank yields in a whole epoch."""
        return len(range(self.rank, self.epoch_size, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch``; a new epoch starts from its beginning."""
        if epoch != self.epoch:
            self.epoch, self._start, self._consumed = epoch, 0, 0

    def mark_consumed(self, num_samples: int) -> None:
        """Record that this rank's training loop used ``num_samples`` more samples."""
        self._consumed += num_samples

    @property
    def position(self) -> int:
        """Positions of this epoch's order consumed by all ranks together."""
        return min(self.epoch_size, self._start + self._consumed * self.num_replicas)

    def _epoch_order(self) -> list[int]:
        if not self.training:
            return list(range(self.dataset_size))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.dataset_size, generator=generator).tolist()
        return _cycle_to(order, self.epoch_size)

    def _remaining(self) -> list[int]:
        if not self.training:
            return self._epoch_order()
        remaining = self._epoch_order()[self._start:]
        return _cycle_to(remaining, math.ceil(len(remaining) / self.num_replicas) * self.num_replicas)

    def __iter__(self) -> Iterator[SampleKey]:
        for index in self._remaining()[self.rank::self.num_replicas]:
            yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        if not self.training:
            return self.samples_per_epoch
        return math.ceil(max(0, self.epoch_size - self._start) / self.num_replicas)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "dataset_size": self.dataset_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["dataset_size"] != self.dataset_size:
            raise ValueError(
                f"sampler state is for a dataset of {state['dataset_size']} samples but this one has "
                f"{self.dataset_size}; resume with the same training data or start a new run"
            )
        self.epoch, self._start, self._consumed = state["epoch"], state["position"], 0


def _split_chunks(order: np.ndarray, size: int) -> list[np.ndarray]:
    return [order[start:start + size] for start in range(0, len(order), size)]


class GritSampler(ResumableDistributedSampler):
    """GRIT-VLP grouped mini-batches (``train_sampler=grit``; fact sheet grit_albef.md §3.5).

    Epoch 0 is a seeded shuffle, as ``ResumableDistributedSampler``. While an epoch trains, the
    trainer hands every batch's ``sample_index`` and ITC embeddings to ``observe``; each rank's
    ``GritCollector`` groups them into chains of similar pairs. ``set_epoch`` then builds the next
    epoch's order from every rank's chains (a collective): duplicates dropped, any example never
    observed appended, cut into ``batch_size`` chunks whose order is shuffled with ``seed +
    epoch``; rank r takes chunks r, r + W, ..., so every batch is one chunk. Unlike the
    reference, every example is in every epoch, examples move between ranks, and the per-rank
    collectors travel in the checkpoint (``state_dict`` gathers them), so a resumed run continues
    the same order.
    """

    def __init__(self, dataset: Sized, *, batch_size: int, queue_size: int, search_space: int, **kwargs):
        super().__init__(dataset, **kwargs)
        if batch_size < 1:
            raise ValueError(f"GRIT sampler batch_size={batch_size} must be >= 1 (per_gpu_batchsize)")
        self.batch_size, self.queue_size, self.search_space = batch_size, queue_size, search_space
        self.order: np.ndarray | None = None
        self.collector = self._new_collector()

    def _new_collector(self) -> GritCollector:
        seed = (self.seed * 1_000_003 + self.epoch) * 4099 + self.rank
        return GritCollector(self.queue_size, self.search_space, seed)

    def observe(self, batch: dict, outputs: dict) -> None:
        """Collect a training batch's ``sample_index`` and ``itc_embeddings`` (image, text)."""
        if "itc_embeddings" not in outputs:
            raise KeyError(
                "train_sampler=grit groups examples by their ITC embeddings, but the task returned "
                "none: set loss_names.itc=1 (pre-training)"
            )
        self.collector.add(batch["sample_index"], *outputs["itc_embeddings"])

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch``; when it is the next one, build its order from the collected chains."""
        if epoch == self.epoch:
            return
        self.collector.flush()
        chains = distributed.all_gather_object(self.collector.grouped)
        self.order = self._next_order(chains, epoch)
        super().set_epoch(epoch)
        self.collector = self._new_collector()

    def _next_order(self, chains: list[np.ndarray], epoch: int) -> np.ndarray:
        order = np.concatenate(chains) if chains else np.zeros(0, dtype=np.int64)
        order = order[(order >= 0) & (order < self.dataset_size)]
        _, first = np.unique(order, return_index=True)
        order = order[np.sort(first)]
        generator = torch.Generator().manual_seed(self.seed + epoch)
        missing = np.setdiff1d(np.arange(self.dataset_size, dtype=np.int64), order)
        missing = missing[torch.randperm(len(missing), generator=generator).numpy()]
        chunks = _split_chunks(np.concatenate([order, missing]), self.batch_size)
        full = len(chunks) - (len(chunks[-1]) < self.batch_size)
        shuffled = [chunks[i] for i in torch.randperm(full, generator=generator).tolist()]
        return np.concatenate(shuffled + chunks[full:]).astype(np.int64)

    # ----- the grouped epoch: chunk-wise distribution -----------------------------------------

    def _rank_share(self, remaining: np.ndarray) -> np.ndarray:
        """This rank's chunks r, r + W, ... of ``remaining``, padded (with full chunks from the
        start) so that every rank gets as many chunks; a partial chunk stays last on its rank."""
        chunks = _split_chunks(remaining, self.batch_size)
        full = [chunk for chunk in chunks if len(chunk) == self.batch_size] or chunks
        padding = (-len(chunks)) % self.num_replicas
        chunks = chunks + [full[k % len(full)] for k in range(padding)]
        mine = chunks[self.rank::self.num_replicas]
        return np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)

    @property
    def epoch_size(self) -> int:
        if self.order is None:
            return super().epoch_size
        chunks = math.ceil(self.dataset_size / self.batch_size)
        return self.dataset_size + ((-chunks) % self.num_replicas) * self.batch_size

    @property
    def samples_per_epoch(self) -> int:
        if self.order is None:
            return super().samples_per_epoch
        return len(self._rank_share(self.order))

    def __iter__(self) -> Iterator[SampleKey]:
        if self.order is None:
            yield from super().__iter__()
            return
        for index in self._rank_share(self.order[self._start:]).tolist():
            yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        if self.order is None:
            return super().__len__()
        return len(self._rank_share(self.order[self._start:]))

    # ----- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The position, the current order and every rank's collector (a collective)."""
        collectors = distributed.all_gather_object(self.collector.state_dict())
        order = None if self.order is None else torch.from_numpy(self.order)
        return {**super().state_dict(), "order": order, "collectors": collectors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.order = None if state["order"] is None else state["order"].numpy()
        self.collector = self._new_collector()
        collectors = state["collectors"]
        if len(collectors) == self.num_replicas:
            self.collector.load_state_dict(collectors[self.rank])
        else:
            self.collector.load_state_dict(_merged(collectors[self.rank::self.num_replicas]))


def _merged(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Collector states of several old ranks as one (resuming on fewer or more processes)."""
    if not states:
        return GritCollector(1, 1, 0).state_dict()
    merged = {key: torch.cat([s[key] for s in states]) for key in ("grouped", "queue_index", "queue_image", "queue_text")}
    return {"groupings": max(s["groupings"] for s in states), **merged}


def aspect_ratio_groups(ratios: Sequence[float], factor: int) -> np.ndarray:
    """Group of each height/width ratio: its place among the edges ``2 ** linspace(-1, 1, 2k + 1)``
    (bisect right; k = ``factor``). k = 0 splits at 1.0 (landscape / square-or-portrait), k = 5
    gives 12 groups."""
    if factor < 0:
        raise ValueError(f"aspect_ratio_group_factor={factor}: grouping needs a factor >= 0 (-1 switches it off)")
    edges = 2.0 ** np.linspace(-1, 1, 2 * factor + 1) if factor else np.array([1.0])  # linspace(-1, 1, 1) is [-1]
    return np.searchsorted(edges, np.asarray(ratios, dtype=np.float64), side="right")


class AspectRatioGroupedSampler(ResumableDistributedSampler):
    """Batches whose examples share an aspect-ratio group (CLIP-ViL's ``aspect_ratio_group_factor``).

    Each epoch shuffles with ``seed + epoch``, cuts every group into chunks of ``batch_size`` (a
    group's last chunk is filled up with its own first members, as the reference's sampler tops up
    groups), shuffles the chunks, and deals them out: rank r takes chunks r, r + W, ..., so every
    batch is one chunk. Every example is in every epoch (the reference's grouped sampler could skip
    some); at most ``batch_size - 1`` repeats per group fill the last chunks, and whole chunks
    repeat to give every rank as many. Resumes mid-epoch like its parent.
    """

    def __init__(self, dataset: Sized, *, batch_size: int, groups: Sequence[int], **kwargs):
        super().__init__(dataset, **kwargs)
        if batch_size < 1:
            raise ValueError(f"aspect-ratio grouping needs batch_size >= 1 (per_gpu_batchsize); got {batch_size}")
        self.groups = np.asarray(groups)
        if len(self.groups) != self.dataset_size:
            raise ValueError(f"{len(self.groups)} aspect-ratio groups for a dataset of {self.dataset_size} samples")
        self.batch_size = batch_size

    def _chunks(self) -> list[np.ndarray]:
        """This epoch's chunks, in order, before padding for the ranks."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.dataset_size, generator=generator).numpy()
        chunks = []
        for group in np.unique(self.groups):
            members = order[self.groups[order] == group]
            filled = np.asarray(_cycle_to(members.tolist(), math.ceil(len(members) / self.batch_size) * self.batch_size))
            chunks += _split_chunks(filled, self.batch_size)
        return [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]

    def _rank_chunks(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        padded = chunks + [chunks[k % len(chunks)] for k in range((-len(chunks)) % self.num_replicas)] if chunks else []
        return padded[self.rank::self.num_replicas]

    def _remaining_chunks(self) -> list[np.ndarray]:
        return self._chunks()[self._start // self.batch_size:]

    @property
    def epoch_size(self) -> int:
        _, sizes = np.unique(self.groups, return_counts=True)
        chunks = int(sum(math.ceil(size / self.batch_size) for size in sizes))
        return math.ceil(chunks / self.num_replicas) * self.num_replicas * self.batch_size

    @property
    def samples_per_epoch(self) -> int:
        return self.epoch_size // self.num_replicas

    def __iter__(self) -> Iterator[SampleKey]:
        for chunk in self._rank_chunks(self._remaining_chunks()):
            for index in chunk.tolist():
                yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self._rank_chunks(self._remaining_chunks())) * self.batch_size


def build_train_sampler(cfg: Any, dataset: Sized, num_replicas: int, rank: int) -> ResumableDistributedSampler:
    """The training sampler: ``train_sampler`` ``random`` or ``grit``, or with
    ``aspect_ratio_group_factor`` >= 0 aspect-ratio groups of a dataset with ``aspect_ratios()``."""
    common = {"num_replicas": num_replicas, "rank": rank, "seed": cfg.seed, "training": True}
    if cfg.get("aspect_ratio_group_factor", -1) >= 0:
        if not callable(getattr(dataset, "aspect_ratios", None)):
            raise ValueError(f"aspect_ratio_group_factor={cfg.aspect_ratio_group_factor} needs a dataset that knows "
                             f"its images' aspect ratios ({type(dataset).__name__} does not); set it to -1")
        groups = aspect_ratio_groups(dataset.aspect_ratios(), cfg.aspect_ratio_group_factor)
        return AspectRatioGroupedSampler(dataset, batch_size=cfg.per_gpu_batchsize, groups=groups, **common)
    if cfg.train_sampler == "random":
        return ResumableDistributedSampler(dataset, **common)
    if cfg.train_sampler == "grit":
        return GritSampler(
            dataset, batch_size=cfg.per_gpu_batchsize, queue_size=cfg.grit_queue_size,
            search_space=cfg.grit_search_space, **common,
        )
    raise ValueError(f"train_sampler={cfg.train_sampler!r}: choose 'random' or 'grit'")
