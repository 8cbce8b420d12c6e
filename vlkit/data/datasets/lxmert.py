"""CLIP-ViL's datasets on LXMERT-format json (``vlkit.data.lxmert``), images through
``vlkit.data.canvas``.

``LxmertPretrainDataset`` (fact sheet clipvil.md §3, §4.1) yields one (image, sentence) pair per
sample: with ITM, half of the sentences are swapped for the sentence of a random other image
(``itm_label`` 0); with QA, a matched question gets one answer drawn in proportion to its score
(``qa_label``, else -100). ``LxmertVqaDataset`` (§4.2) yields a question with ``vqa_labels`` /
``vqa_scores`` and ``qid``. Both yield ``image`` (3, H, W), ``image_pixel_mask`` (H, W; 1 on the
image), the text fields of ``text`` and ``seed``; both know their images' ``aspect_ratios()``.
Randomness comes from the sample key's seed, so batches do not depend on the worker.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from vlkit.data.canvas import ResizePadNormalize, aspect_ratio
from vlkit.data.collate import IGNORE_INDEX, Collator
from vlkit.data.datasets.json_datasets import PackedStrings
from vlkit.data.lxmert import Question, Sentence, image_path
from vlkit.data.tokenizer import encode_text
from vlkit.utils.seeding import split_key

log = logging.getLogger(__name__)

ITM_REDRAWS = 20
"""Draws of a negative sentence before giving up on finding one of another image."""
LABEL_KEYS = ("itm_label", "qa_label")


class LxmertImages:
    """Image files by ``img_id`` under ``image_root``: decoding, the canvas transform and aspect ratios."""

    def __init__(self, image_root: str, transform: ResizePadNormalize):
        self.image_root, self.transform = image_root, transform
        self._ratios: dict[str, float] = {}

    def path(self, img_id: str) -> str:
        return image_path(img_id, self.image_root)

    def exists(self, img_id: str) -> bool:
        return os.path.isfile(self.path(img_id))

    def load(self, img_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.path(img_id)
        try:
            with Image.open(path) as image:
                return self.transform(image)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"image of img_id {img_id!r} ({path}) cannot be read ({err}); check image_root "
                                    "(the folder holding mscoco/ and vg_raw_images/)") from err

    def ratio(self, img_id: str) -> float:
        if img_id not in self._ratios:
            self._ratios[img_id] = aspect_ratio(self.path(img_id))
        return self._ratios[img_id]


def _existing(items: Sequence[Any], images: LxmertImages, what: str) -> list[Any]:
    present = {img_id: images.exists(img_id) for img_id in {item.img_id for item in items}}
    kept = [item for item in items if present[item.img_id]]
    missing = sum(not found for found in present.values())
    if not kept:
        raise FileNotFoundError(f"none of the {len(present)} images of the {what} data is under image_root="
                                f"{images.image_root!r} (e.g. {images.path(next(iter(present)))})")
    if missing:
        log.warning("%s: %d of %d images are missing under %s; their %d texts are left out", what, missing,
                    len(present), images.image_root, len(items) - len(kept))
    return kept


class _LxmertDataset(Dataset):
    def __init__(self, images: LxmertImages, img_ids: Sequence[str], tokenizer: PreTrainedTokenizerBase,
                 max_text_len: int):
        self.images, self.tokenizer, self.max_text_len = images, tokenizer, max_text_len
        self.img_ids = PackedStrings(img_ids)

    def __len__(self) -> int:
        return len(self.img_ids)

    def aspect_ratios(self) -> list[float]:
        """Height / width of every sample's image (file headers, read once per image)."""
        return [self.images.ratio(self.img_ids[i]) for i in range(len(self))]

    def _base(self, index: int, text: str, seed: int | None) -> dict[str, Any]:
        image, mask = self.images.load(self.img_ids[index])
        encoded = encode_text(self.tokenizer, text, self.max_text_len)
        return {"image": image, "image_pixel_mask": mask, "text": text,
                **{f"text_{field}": tensor for field, tensor in encoded.items()}, "raw_index": index, "seed": seed}


class LxmertPretrainDataset(_LxmertDataset):
    """(image, sentence) pairs of LXMERT pre-training json, with ITM swaps and QA targets."""

    def __init__(self, sentences: Sequence[Sentence], images: LxmertImages, tokenizer: PreTrainedTokenizerBase,
                 max_text_len: int, itm: bool, qa: bool):
        sentences = _existing(sentences, images, "LXMERT pre-training")
        super().__init__(images, [s.img_id for s in sentences], tokenizer, max_text_len)
        self.texts = PackedStrings(s.text for s in sentences)
        self.labels = PackedStrings(json.dumps(s.label) if s.label else "" for s in sentences)
        self.itm, self.qa = itm, qa
        if itm and len({s.img_id for s in sentences}) < 2:
            raise ValueError("ITM needs sentences of at least two images to draw negatives from")

    def _negative(self, index: int, rng: np.random.Generator) -> int:
        for _ in range(ITM_REDRAWS):
            other = int(rng.integers(len(self)))
            if self.img_ids[other] != self.img_ids[index]:
                return other
        return next(i for i in range(len(self)) if self.img_ids[i] != self.img_ids[index])

    def _qa_label(self, index: int, rng: np.random.Generator) -> int:
        raw = self.labels[index]
        label = {int(k): v for k, v in json.loads(raw).items()} if raw else {}
        total = sum(label.values())
        if not label or total <= 0:
            return IGNORE_INDEX
        answers = list(label)
        if len(answers) == 1:
            return answers[0]
        return int(rng.choice(answers, p=np.asarray(list(label.values())) / total))

    def __getitem__(self, key) -> dict[str, Any]:
        index, seed = split_key(key)
        rng = np.random.default_rng(seed)
        matched = not (self.itm and rng.random() < 0.5)
        text_index = index if matched else self._negative(index, rng)
        sample = self._base(index, self.texts[text_index], seed)
        sample["itm_label"] = int(matched)
        sample["qa_label"] = self._qa_label(index, rng) if self.qa and matched else IGNORE_INDEX
        return sample


class LxmertVqaDataset(_LxmertDataset):
    """Questions of VQA json (LXMERT's preprocessing) with their soft-score targets."""

    def __init__(self, questions: Sequence[Question], images: LxmertImages, tokenizer: PreTrainedTokenizerBase,
                 max_text_len: int):
        questions = _existing(questions, images, "VQA")
        super().__init__(images, [q.img_id for q in questions], tokenizer, max_text_len)
        self.texts = PackedStrings(q.text for q in questions)
        self.qids = np.array([q.question_id for q in questions], dtype=np.int64)
        self.targets = PackedStrings(json.dumps([q.labels, q.scores]) for q in questions)

    def question_ids(self) -> list[int]:
        """``question_id`` of every question, in sample order."""
        return self.qids.tolist()

    def __getitem__(self, key) -> dict[str, Any]:
        index, seed = split_key(key)
        sample = self._base(index, self.texts[index], seed)
        labels, scores = json.loads(self.targets[index])
        sample.update(vqa_labels=labels, vqa_scores=scores, qid=int(self.qids[index]))
        return sample


class LxmertCollator(Collator):
    """The shared collator (images and pixel masks padded to the batch's largest canvas, text
    fields, MLM masking) plus ``itm_labels`` / ``qa_labels`` tensors from the samples' labels."""

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(samples)
        for key in LABEL_KEYS:
            if key in batch:
                batch[key + "s"] = torch.tensor(batch.pop(key), dtype=torch.long)
        return batch
