"""``VLModel``: a loaded vlkit model with its preprocessing and one method per task.

Every method takes batches (lists of images and strings; a single item is a batch of one) and
returns plain JSON-serialisable values. A method whose head the model lacks raises
``MissingHeadError`` naming the head and the task that trains it.
"""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from vlkit.api.inputs import ImageBatch, Preprocessor, as_list, repeat_to

SNLI_LABELS = ("contradiction", "neutral", "entailment")
TRAINED_BY = {
    "vqa_classifier": "VQAv2 fine-tuning (task_finetune_vqa_*, loss_names.vqa=1)",
    "text_decoder": "ALBEF VQA fine-tuning (loss_names.vqa_decoder=1)",
    "itm_score": "pre-training with loss_names.itm=1",
    "itc_head": "pre-training or retrieval fine-tuning with loss_names.itc=1",
    "mlm_score": "pre-training with loss_names.mlm=1",
    "nlvr2_classifier": "NLVR2 fine-tuning (task_finetune_nlvr2_*, loss_names.nlvr2=1)",
    "snli_classifier": "SNLI-VE fine-tuning (task_finetune_snli_*, loss_names.snli=1)",
}
PAIR_BATCH = 64


class MissingHeadError(ValueError):
    """The model has no head for the method called."""


class VLModel:
    """A model, its config, tokenizer, image preprocessing and answer vocabulary, on ``device``."""

    def __init__(self, model: nn.Module, cfg: DictConfig, tokenizer: Any, answers: list[str] | None,
                 device: str | torch.device = "cpu", precision: str | int = 32):
        self.cfg, self.tokenizer, self.answers = cfg, tokenizer, answers
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = Preprocessor(cfg, tokenizer)
        self.autocast_dtype = {"bf16": torch.bfloat16, "16": torch.float16, "32": None}.get(str(precision).replace("-mixed", ""))
        if str(precision).replace("-mixed", "") not in ("bf16", "16", "32"):
            raise ValueError(f"precision={precision!r}: choose 32, 16 or bf16")

    # ----- plumbing ---------------------------------------------------------------------------

    def head(self, name: str) -> nn.Module:
        if not hasattr(self.model, name):
            raise MissingHeadError(f"this {self.cfg.model} model has no {name} head; it is trained by "
                                   f"{TRAINED_BY.get(name, 'its task')}")
        return getattr(self.model, name)

    def _context(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return torch.inference_mode()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast_dtype))
        return stack

    def _images(self, images: Any, what: str = "images") -> ImageBatch:
        return self.preprocess.images(images, what).to(self.device)

    def _texts(self, texts: Any, what: str = "texts") -> tuple[torch.Tensor, torch.Tensor]:
        ids, masks = self.preprocess.texts(texts, what)
        return ids.to(self.device), masks.to(self.device)

    def infer(self, text_ids: torch.Tensor, text_masks: torch.Tensor, images: ImageBatch,
              image_token_type_idx: int = 1) -> dict[str, torch.Tensor]:
        """The model's fused features of text and image batches of one length."""
        if images.pixel_mask is not None:
            return self.model.infer(text_ids, text_masks, images.pixels, pixel_mask=images.pixel_mask)
        if image_token_type_idx != 1:
            return self.model.infer(text_ids, text_masks, images.pixels, image_token_type_idx=image_token_type_idx)
        return self.model.infer(text_ids, text_masks, images.pixels)

    def _pairs(self, images: Any, texts: Any) -> tuple[ImageBatch, torch.Tensor, torch.Tensor]:
        image_list, text_list = as_list(images, "images"), as_list(texts, "texts")
        count = max(len(image_list), len(text_list))
        batch = self._images(repeat_to(image_list, count, "images"))
        ids, masks = self._texts(repeat_to(text_list, count, "texts"))
        return batch, ids, masks

    # ----- tasks ------------------------------------------------------------------------------

    def vqa(self, images: Any, questions: Any, top_k: int = 5) -> list[list[dict[str, Any]]]:
        """The ``top_k`` answers of each question, ``{"answer", "score"}`` best first: the
        classifier's sigmoid scores, or for an answer decoder the log-probability of the answer."""
        if not hasattr(self.model, "vqa_classifier") and not hasattr(self.model, "text_decoder"):
            self.head("vqa_classifier")
        if self.answers is None:
            raise ValueError("this model folder has no answers.json: re-export it with its data_root / answer_list")
        images, ids, masks = self._pairs(images, questions)
        with self._context():
            features = self.infer(ids, masks, images)
            if hasattr(self.model, "vqa_classifier"):
                scores = self.model.vqa_classifier(features["cls_feats"]).float().sigmoid()
                values, labels = scores.topk(min(top_k, scores.shape[1]), dim=1)
            else:
                values, labels = self._rank_answers(features, top_k)
        return [[{"answer": self.answers[label], "score": float(value)} for label, value in zip(row_l, row_v)]
                for row_l, row_v in zip(labels.tolist(), values.tolist())]

    def _rank_answers(self, features: dict[str, torch.Tensor], top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        from vlkit.models.fusion.cross_attention import text_positions
        from vlkit.tasks.vqa_rank import rank_answers, tokenize_answers

        if not hasattr(self, "_answer_tokens"):
            self._answer_tokens = tokenize_answers(self.tokenizer, self.answers, text_positions(self.cfg)).to(self.device)
        k = max(top_k, int(self.cfg.k_test))
        ranked, scores = rank_answers(self.model.text_decoder, features["text_feats"], features["text_masks"],
                                      self._answer_tokens, k)
        return scores[:, :top_k].float(), ranked[:, :top_k]

    def match(self, images: Any, texts: Any) -> list[dict[str, float]]:
        """Per image-text pair: ``itm`` (match probability) and, with an ITC head, ``itc`` (cosine)."""
        head = self.head("itm_score")
        images, ids, masks = self._pairs(images, texts)
        with self._context():
            itm = head(self.infer(ids, masks, images)["cls_feats"]).float().softmax(dim=-1)[:, 1]
            itc = None
            if hasattr(self.model, "itc_head"):
                itc = (self._embed_images(images) * self._embed_texts(ids, masks)).sum(dim=-1)
        return [{"itm": float(p), **({"itc": float(itc[i])} if itc is not None else {})}
                for i, p in enumerate(itm.tolist())]

    def _embed_images(self, images: ImageBatch) -> torch.Tensor:
        embeds = self.model.embed_image(images.pixels, mask_image=False)
        return self.model.itc_head.embed_image(self.model.image_only_feats(embeds)).float()

    def _embed_texts(self, ids: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.model.itc_head.embed_text(self.model.text_only_feats(ids, masks)).float()

    def embed_images(self, images: Any) -> list[list[float]]:
        """Unit ITC embeddings of the images."""
        self.head("itc_head")
        with self._context():
            return self._embed_images(self._images(images)).cpu().tolist()

    def embed_texts(self, texts: Any) -> list[list[float]]:
        """Unit ITC embeddings of the texts."""
        self.head("itc_head")
        with self._context():
            return self._embed_texts(*self._texts(texts)).cpu().tolist()

    def fill_mask(self, image: Any, text: str, top_k: int = 5) -> list[list[dict[str, Any]]]:
        """For each ``[MASK]`` of ``text`` (in order), the ``top_k`` tokens ``{"token", "score"}``."""
        head = self.head("mlm_score")
        mask_token = self.tokenizer.mask_token
        if not isinstance(text, str) or mask_token not in text:
            raise ValueError(f"fill_mask: the text must hold at least one {mask_token}, got {text!r}")
        images, ids, masks = self._pairs([image] if not isinstance(image, list) else image, [text])
        with self._context():
            logits = head(self.infer(ids, masks, images)["text_feats"]).float()
        positions = (ids[0] == self.tokenizer.mask_token_id).nonzero().flatten().tolist()
        results = []
        for position in positions:
            probs, tokens = logits[0, position].softmax(dim=-1).topk(top_k)
            results.append([{"token": self.tokenizer.convert_ids_to_tokens(t), "score": float(p)}
                            for t, p in zip(tokens.tolist(), probs.tolist())])
        return results

    def nlvr2(self, image0: Any, image1: Any, statement: Any) -> list[dict[str, float]]:
        """Per (left image, right image, statement): the probability that the statement is ``true``."""
        head = self.head("nlvr2_classifier")
        left, right, texts = as_list(image0, "image0"), as_list(image1, "image1"), as_list(statement, "statement")
        count = max(len(left), len(right), len(texts))
        first = self._images(repeat_to(left, count, "image0"))
        second = self._images(repeat_to(right, count, "image1"))
        ids, masks = self._texts(repeat_to(texts, count, "statement"))
        with self._context():
            if getattr(self.model, "pair_fusion", False):
                features = self.model.infer(ids, masks, (first.pixels, second.pixels))["cls_feats"]
            else:
                features = torch.cat([self.infer(ids, masks, first, 1)["cls_feats"],
                                      self.infer(ids, masks, second, 2)["cls_feats"]], dim=-1)
            probs = head(features).float().softmax(dim=-1)[:, 1]
        return [{"true": float(p)} for p in probs.tolist()]

    def entailment(self, image: Any, hypothesis: Any) -> list[dict[str, float]]:
        """Per (image, hypothesis): probabilities of contradiction, neutral and entailment."""
        head = self.head("snli_classifier")
        images, ids, masks = self._pairs(image, hypothesis)
        with self._context():
            probs = head(self.infer(ids, masks, images)["cls_feats"]).float().softmax(dim=-1)
        return [dict(zip(SNLI_LABELS, map(float, row))) for row in probs.tolist()]

    def classify(self, images: Any, top_k: int = 5) -> list:
        """Image classification is what ``vlkit imagenet`` classifiers do (``ImageClassifier``)."""
        raise MissingHeadError(f"this {self.cfg.model} model has no ImageNet classification head; it is trained by "
                               "`vlkit imagenet --finetune ...` (main_finetune.py), whose checkpoint exports to a "
                               "classifier folder")

    def index_images(self, images: Any, progress: bool | None = None):
        """A ``Gallery`` of the images for ``retrieve`` (save it with ``Gallery.save``)."""
        from vlkit.api.retrieval import Gallery

        return Gallery.build(self, images=images, progress=progress)

    def index_texts(self, texts: Any):
        """A ``Gallery`` of the texts for ``retrieve(images=...)``."""
        from vlkit.api.retrieval import Gallery

        return Gallery.build(self, texts=texts)

    def retrieve(self, texts: Any = None, images: Any = None, k: int = 10, gallery: Any = None,
                 query: str = "texts", progress: bool | None = None) -> list[list[dict[str, Any]]]:
        """Text → image (``query="texts"``) or image → text retrieval, ITC first stage then
        cross-encoder re-ranking of each query's ``k_test`` candidates; see ``vlkit.api.retrieval``."""
        from vlkit.api.retrieval import retrieve

        return retrieve(self, texts=texts, images=images, k=k, gallery=gallery, query=query, progress=progress)

    def __repr__(self) -> str:
        heads = [name for name in TRAINED_BY if hasattr(self.model, name)]
        return f"VLModel({self.cfg.model}, heads={heads}, device={self.device})"


def chunks(count: int, size: int = PAIR_BATCH) -> Sequence[slice]:
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]
