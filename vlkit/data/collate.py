"""Batching samples into the batch dict of docs/architecture.md, with MLM masking (fact sheet §3.1, §5.4).

The masking functions are pure: tensors and a ``torch.Generator`` in, tensors out. Whole-word
masking budgets ``max(1, round(n_real · mlm_prob))`` tokens per text on its *real* tokens; the
reference counted padding too, which masked about 6 of 40 positions whatever the caption length.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from vlkit.data.tokenizer import TOKEN_FIELDS

IGNORE_INDEX = -100
MASK_FRACTION = 0.8
"""Of the selected tokens, this fraction becomes [MASK]; the next ``RANDOM_FRACTION`` a random token."""
RANDOM_FRACTION = 0.1
LONG_KEYS = ("img_index", "cap_index", "raw_index", "sample_index", "qid", "answers", "labels")
"""Per-sample integers that become (B,) long tensors."""


def mlm_candidates(attention_mask: torch.Tensor, special_tokens_mask: torch.Tensor) -> torch.Tensor:
    """Positions that may be masked: real tokens (attention 1) that are not special."""
    return attention_mask.bool() & ~special_tokens_mask.bool()


def select_tokens(candidates: torch.Tensor, mlm_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard MLM: each candidate position independently with probability ``mlm_prob``."""
    draws = torch.rand(candidates.shape, generator=generator)
    return candidates & (draws < mlm_prob)


def select_whole_words(
    word_ids: torch.Tensor,
    candidates: torch.Tensor,
    mlm_prob: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Whole-word MLM selection, (B, L) bool.

    A word is the set of candidate positions of a row sharing one word id (negative ids belong to
    no word and are never selected). Per row the budget is ``max(1, round(n · mlm_prob))`` with n
    the number of candidate tokens; words are visited in a random order and each is taken whole
    unless it would exceed the budget. The random draws depend only on the words, not on padding.
    """
    selected = torch.zeros_like(candidates, dtype=torch.bool)
    for row in range(candidates.shape[0]):
        positions = (candidates[row] & (word_ids[row] >= 0)).nonzero().flatten()
        if len(positions) == 0:
            continue
        budget = max(1, round(len(positions) * mlm_prob))
        _, word_of_position = torch.unique(word_ids[row, positions], return_inverse=True)
        word_sizes = torch.bincount(word_of_position).tolist()
        chosen, covered = [], 0
        for word in torch.randperm(len(word_sizes), generator=generator).tolist():
            if covered >= budget:
                break
            if covered + word_sizes[word] <= budget:
                chosen.append(word)
                covered += word_sizes[word]
        selected[row, positions[torch.isin(word_of_position, torch.tensor(chosen, dtype=torch.long))]] = True
    return selected


def replace_selected(
    input_ids: torch.Tensor,
    selected: torch.Tensor,
    mask_token_id: int,
    replacement_ids: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 corruption of the selected positions: ``(masked_ids, labels)``.

    80% become ``mask_token_id``, 10% a token drawn uniformly from ``replacement_ids``, 10% stay.
    ``labels`` holds the original id at selected positions and -100 elsewhere.
    """
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    draws = torch.rand(input_ids.shape, generator=generator)
    random_ids = replacement_ids[torch.randint(len(replacement_ids), input_ids.shape, generator=generator)]
    masked = input_ids.clone()
    to_mask = selected & (draws < MASK_FRACTION)
    to_random = selected & (draws >= MASK_FRACTION) & (draws < MASK_FRACTION + RANDOM_FRACTION)
    masked[to_mask] = mask_token_id
    masked[to_random] = random_ids[to_random]
    return masked, labels


def pad_images(images: Sequence[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Stack (3, h, w) images into (B, 3, height, width), each at the top-left, zeros elsewhere."""
    return torch.stack([F.pad(image, (0, width - image.shape[-1], 0, height - image.shape[-2])) for image in images])


def is_image_key(key: str) -> bool:
    """``image``, ``image_0``/``image_1`` (NLVR2) and ``false_image_{k}``."""
    return key == "image" or key.startswith(("image_", "false_image_"))


def is_text_key(key: str) -> bool:
    """``text`` and ``false_text_{k}`` (the raw strings, not their token fields)."""
    return key == "text" or (key.startswith("false_text_") and key.removeprefix("false_text_").isdigit())


def _gather(samples: Sequence[dict], key: str) -> list:
    values = []
    for position, sample in enumerate(samples):
        if key not in sample:
            raise KeyError(
                f"sample {position} of the batch lacks key {key!r} that sample 0 has; batch together "
                f"only samples of datasets that yield the same keys"
            )
        values.append(sample[key])
    return values


class Collator:
    """Turns a list of dataset samples into a batch dict (docs/architecture.md, "Batches").

    Images of every image key are zero-padded to the largest height and width in the batch. Each
    text key gets ``_ids`` and ``_masks``; ``text`` also gets ``text_labels`` (all -100) and the
    MLM pair ``text_ids_mlm`` / ``text_labels_mlm``. Masking draws from a ``torch.Generator``
    seeded with the first sample's ``seed`` (the global RNG when it is None), so a batch does not
    depend on the worker that built it.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, mlm_prob: float = 0.15, whole_word_masking: bool = False):
        if tokenizer.mask_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no mask token; MLM needs one")
        if not 0 <= mlm_prob <= 1:
            raise ValueError(f"mlm_prob must be in [0, 1]; got {mlm_prob}")
        self.mlm_prob = mlm_prob
        self.whole_word_masking = whole_word_masking
        self.mask_token_id = tokenizer.mask_token_id
        special_ids = set(tokenizer.all_special_ids)
        self.replacement_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special_ids])

    def mask(self, ids: torch.Tensor, masks: torch.Tensor, special: torch.Tensor, word_ids: torch.Tensor,
             generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(text_ids_mlm, text_labels_mlm)`` for (B, L) token tensors."""
        candidates = mlm_candidates(masks, special)
        if self.whole_word_masking:
            selected = select_whole_words(word_ids, candidates, self.mlm_prob, generator)
        else:
            selected = select_tokens(candidates, self.mlm_prob, generator)
        return replace_selected(ids, selected, self.mask_token_id, self.replacement_ids, generator)

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        seed = samples[0].get("seed")
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        keys = list(samples[0])
        batch: dict[str, Any] = {}
        consumed: set[str] = set()

        image_keys = [key for key in keys if is_image_key(key)]
        if image_keys:
            gathered = {key: _gather(samples, key) for key in image_keys}
            height = max(image.shape[-2] for images in gathered.values() for image in images)
            width = max(image.shape[-1] for images in gathered.values() for image in images)
            for key, images in gathered.items():
                batch[key] = pad_images(images, height, width)
            consumed.update(image_keys)

        for key in (key for key in keys if is_text_key(key)):
            batch[key] = _gather(samples, key)
            tokens = {field: torch.stack(_gather(samples, f"{key}_{field}")) for field in TOKEN_FIELDS}
            batch[f"{key}_ids"], batch[f"{key}_masks"] = tokens["ids"], tokens["masks"]
            if key == "text":
                batch["text_labels"] = torch.full_like(tokens["ids"], IGNORE_INDEX)
                batch["text_ids_mlm"], batch["text_labels_mlm"] = self.mask(
                    tokens["ids"], tokens["masks"], tokens["special_tokens_mask"], tokens["word_ids"], generator
                )
            consumed.add(key)
            consumed.update(f"{key}_{field}" for field in TOKEN_FIELDS)

        for key in keys:
            if key in consumed:
                continue
            values = _gather(samples, key)
            if key == "num_skipped_images":
                batch[key] = int(sum(values))
            elif key in LONG_KEYS:
                batch[key] = torch.tensor(values, dtype=torch.long)
            else:
                batch[key] = values
        return batch
