"""Several datasets read as one, by plain indices or sample keys ``(index, seed)``."""
from __future__ import annotations

import bisect
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset

from vlkit.utils.seeding import SampleKey, split_key


class ConcatSamples(Dataset):
    """``datasets`` one after another, like ``torch.utils.data.ConcatDataset``, but an index may
    be a ``SampleKey``, whose seed is passed on to the dataset that holds the sample. A dict
    sample gets ``sample_index``, its index in the concatenation (what samplers index)."""

    def __init__(self, datasets: Sequence[Dataset]):
        if not datasets:
            raise ValueError("ConcatSamples needs at least one dataset")
        self.datasets = list(datasets)
        self.starts = np.cumsum([0] + [len(d) for d in self.datasets]).tolist()

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, key: int | SampleKey) -> Any:
        index, seed = split_key(key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside [0, {len(self)})")
        position = bisect.bisect_right(self.starts, index) - 1
        local = index - self.starts[position]
        sample = self.datasets[position][local if seed is None else (local, seed)]
        if isinstance(sample, dict):
            sample["sample_index"] = index
        return sample
