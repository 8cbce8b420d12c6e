"""Distributed samplers that yield sample keys and can resume mid-epoch."""
from __future__ import annotations

import math
from typing import Iterator, Sized

import torch
from torch.utils.data import Sampler

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
