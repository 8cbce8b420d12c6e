"""GRIT-VLP grouped mini-batch sampling: collecting ITC features and chaining similar pairs
(fact sheet grit_albef.md §3.5).

Each rank collects the detached ITC unit embeddings (image, text) and dataset indices of the
examples it trains on. Every ``queue_size`` (L) collected examples are shuffled, cut into blocks
of ``search_space`` (M), and each block is ordered by ``greedy_chain``: from the current pair's
image take the most similar unvisited text, from that text the most similar unvisited image, and
so on, every pair visited once. Consecutive runs of a batch size in the result become
mini-batches of mutually similar pairs, i.e. hard negatives, at O(N·M) cost per epoch and no
extra forward pass.

Fixes over the reference: any remainder (empty, a multiple of M, smaller than a block) groups
without error; indices are int64; the start of a chain may be any pair (the reference never
started at the last column); the state is a plain dict, saved per rank in the checkpoint.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def greedy_chain(image: torch.Tensor, text: torch.Tensor, generator: torch.Generator) -> np.ndarray:
    """A permutation of the m pairs (rows of the (m, D) unit embeddings) visiting similar pairs in
    turn: start at a random pair, then alternately the unvisited text most similar to the current
    image and the unvisited image most similar to the current text."""
    m = image.shape[0]
    start = int(torch.randint(m, (), generator=generator))
    if m == 1:
        return np.zeros(1, dtype=np.int64)
    image_to_text = (image.float() @ text.float().t()).cpu().numpy()
    text_to_image = np.ascontiguousarray(image_to_text.T)
    visited = np.zeros(m, dtype=np.float32)  # -inf once a pair is in the chain
    order = np.empty(m, dtype=np.int64)
    order[0] = current = start
    visited[start] = -np.inf
    for step in range(1, m):
        table = image_to_text if step % 2 == 1 else text_to_image
        current = int((table[current] + visited).argmax())
        order[step] = current
        visited[current] = -np.inf
    return order


class GritCollector:
    """One rank's collection queue and the grouped order it has produced so far.

    ``add`` takes a training step's indices and embeddings; every ``queue_size`` collected
    examples are grouped (shuffled, cut into ``search_space`` blocks, each block chained).
    ``flush`` groups what is left at the end of the epoch; ``grouped`` is then a permutation of
    everything added, in chains. Randomness comes from ``seed`` and the count of groupings done,
    so a collector restored from ``state_dict`` continues exactly.
    """

    def __init__(self, queue_size: int, search_space: int, seed: int):
        if search_space < 1 or queue_size < search_space:
            raise ValueError(
                f"grit_search_space={search_space} must be >= 1 and <= grit_queue_size={queue_size}"
            )
        self.queue_size, self.search_space, self.seed = queue_size, search_space, seed
        self.groupings = 0
        self._grouped: list[np.ndarray] = []
        self._index: list[torch.Tensor] = []
        self._image: list[torch.Tensor] = []
        self._text: list[torch.Tensor] = []
        self._queued = 0

    def add(self, index: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> None:
        """Queue (B,) dataset indices with their (B, D) image and text unit embeddings."""
        if not (len(index) == len(image) == len(text)):
            raise ValueError(f"GRIT collector: {len(index)} indices for {len(image)} images and {len(text)} texts")
        self._index.append(index.detach().long())  # stays on the device: no synchronisation per step
        self._image.append(image.detach())
        self._text.append(text.detach())
        self._queued += len(index)
        while self._queued >= self.queue_size:
            self._group_queue(self.queue_size)

    def flush(self) -> None:
        """Group whatever is queued (end of epoch)."""
        if self._queued:
            self._group_queue(self._queued)

    @property
    def grouped(self) -> np.ndarray:
        """Dataset indices grouped so far, int64, chain after chain."""
        return np.concatenate(self._grouped) if self._grouped else np.zeros(0, dtype=np.int64)

    def _take(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, image, text = (torch.cat(parts) for parts in (self._index, self._image, self._text))
        self._index, self._image, self._text = [index[count:]], [image[count:]], [text[count:]]
        self._queued -= count
        return index[:count], image[:count], text[:count]

    def _group_queue(self, count: int) -> None:
        index, image, text = self._take(count)
        index = index.cpu()  # once per queue of grit_queue_size examples
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.groupings)
        self.groupings += 1
        shuffled = torch.randperm(count, generator=generator)
        for start in range(0, count, self.search_space):
            block = shuffled[start:start + self.search_space]
            device_block = block.to(image.device)
            chain = greedy_chain(image[device_block], text[device_block], generator)
            self._grouped.append(index[block].numpy()[chain])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (tensors on CPU; safe for ``weights_only`` loading)."""
        queued = [torch.cat(parts).cpu() if parts else torch.zeros(0) for parts in (self._index, self._image, self._text)]
        return {
            "groupings": self.groupings, "grouped": torch.from_numpy(self.grouped),
            "queue_index": queued[0], "queue_image": queued[1], "queue_text": queued[2],
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        self.groupings = int(state["groupings"])
        self._grouped = [state["grouped"].numpy()] if len(state["grouped"]) else []
        self._index = [state["queue_index"].long()]
        self._image = [state["queue_image"].to(device)]
        self._text = [state["queue_text"].to(device)]
        self._queued = len(state["queue_index"])
