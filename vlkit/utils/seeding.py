"""Explicit, reproducible randomness.

Data-side randomness (augmentations, negative sampling, MLM masking) is keyed on a per-sample
seed derived from (run seed, epoch, sample index), so a resumed run and any number of data-loader
workers produce exactly the same batches. Model-side randomness (MAE masks, ITM labels, dropout)
uses the process-global torch RNG, whose state is saved in checkpoints.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Iterator, Sequence

import numpy as np
import torch

SampleKey = tuple[int, int]
"""What a sampler yields and a dataset's ``__getitem__`` accepts: ``(index, sample_seed)``."""


def sample_seed(base_seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch, stable across processes and platforms."""
    digest = hashlib.blake2b(f"{base_seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def split_key(key: int | SampleKey) -> tuple[int, int | None]:
    """Accept a plain index (seed None: use global RNG) or an ``(index, seed)`` key."""
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), None


@contextlib.contextmanager
def seeded(seed: int | None, devices: Sequence[torch.device | int] = ()) -> Iterator[None]:
    """Run a block with torch (CPU), numpy and python RNGs seeded, restoring their state after.

    ``devices`` lists CUDA devices whose RNG is restored too. ``seed=None`` leaves the global RNGs
    untouched (no save/restore).
    """
    if seed is None:
        yield
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(devices)):
        if devices:
            torch.manual_seed(seed)  # CPU and CUDA; the listed devices are restored after
        else:
            torch.default_generator.manual_seed(seed)  # leaves CUDA's RNG alone
        random.seed(seed)
        np.random.seed(seed % (2**32))
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Everything needed to continue the global random streams exactly."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
