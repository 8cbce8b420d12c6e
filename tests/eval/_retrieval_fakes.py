"""A stand-in cross-encoder with known scores, for the retrieval evaluator tests.

"Images" are vectors (row ``r`` of ``IMAGES``); a caption's token 1 holds the row of its vector in
``TEXTS``. The cross-encoder score of a pair is their dot product; the ITC embeddings are the
normalised vectors plus a fixed distortion, so the first stage ranks differently from the
cross-encoder.
"""
import torch
import torch.nn.functional as F
from torch import nn

from vlkit.eval.retrieval_eval import RetrievalTexts

NUM_IMAGES, CAPTIONS_PER_IMAGE, DIM = 7, 3, 8
GEN = torch.Generator().manual_seed(0)
IMAGES = torch.randn(NUM_IMAGES, DIM, generator=GEN)
TEXTS = IMAGES.repeat_interleave(CAPTIONS_PER_IMAGE, 0) + 1.2 * torch.randn(NUM_IMAGES * CAPTIONS_PER_IMAGE, DIM, generator=GEN)
DISTORTION = torch.randn(DIM, DIM, generator=GEN)


class FakeITC(nn.Module):
    def __init__(self):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(0.0))

    def embed_text(self, feats):
        return F.normalize(feats @ DISTORTION, dim=-1)

    def embed_image(self, feats):
        return F.normalize(feats, dim=-1)


class FakeCrossEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.itc_head = FakeITC()
        self.pairs_seen = 0

    def embed_image(self, image, mask_image=None):
        return {"vector": image.float()}

    def infer(self, text_ids, text_masks, image=None, image_embeds=None):
        self.pairs_seen += len(text_ids)
        text = TEXTS[text_ids[:, 1]]
        return {"score": (text * image_embeds["vector"]).sum(-1)}

    def text_only_feats(self, text_ids, text_masks):
        return TEXTS[text_ids[:, 1]]

    def image_only_feats(self, image_embeds):
        return image_embeds["vector"]


def texts() -> RetrievalTexts:
    count = len(TEXTS)
    ids = torch.stack([torch.zeros(count, dtype=torch.long), torch.arange(count)], dim=1)
    return RetrievalTexts(ids, torch.ones_like(ids), torch.arange(NUM_IMAGES).repeat_interleave(CAPTIONS_PER_IMAGE))


def image_batches(rows, batch_size=2):
    rows = list(rows)
    return [{"image": IMAGES[rows[i:i + batch_size]], "img_index": torch.tensor(rows[i:i + batch_size])}
            for i in range(0, len(rows), batch_size)]


def pair_score(features):
    return features["score"]
