"""MLM masking functions and the Collator."""
import numpy as np
import pytest
import torch

from vlkit.data.collate import (
    IGNORE_INDEX,
    Collator,
    mlm_candidates,
    replace_selected,
    select_tokens,
    select_whole_words,
)
from vlkit.data.tokenizer import encode_text

WORDS = "a the man dog on grass red riding skateboarder frisbee giraffes sitting near an cat old bird street".split()
"""Words of the tiny tokenizer's vocabulary; an, cat, old split into 2 pieces, bird, street into 3."""


def random_texts(count, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(6, 20))) for _ in range(count)]


def encode_batch(tokenizer, texts, max_length):
    encoded = [encode_text(tokenizer, text, max_length) for text in texts]
    return {field: torch.stack([e[field] for e in encoded]) for field in encoded[0]}


def whole_word_selection(tokenizer, texts, max_length, seed, mlm_prob=0.15):
    batch = encode_batch(tokenizer, texts, max_length)
    candidates = mlm_candidates(batch["masks"], batch["special_tokens_mask"])
    generator = torch.Generator().manual_seed(seed)
    return batch, candidates, select_whole_words(batch["word_ids"], candidates, mlm_prob, generator)


def test_tiny_tokenizer_splits_some_words(tokenizer):
    word_ids = encode_text(tokenizer, " ".join(WORDS), 40)["word_ids"]
    real = word_ids[word_ids >= 0]
    assert len(real) > len(torch.unique(real))  # else whole-word tests would prove nothing


def test_whole_word_masking_takes_whole_words_and_only_real_tokens(tokenizer):
    batch, candidates, selected = whole_word_selection(tokenizer, random_texts(300), 40, seed=1)
    assert not (selected & ~candidates).any()
    assert not selected[batch["special_tokens_mask"].bool()].any()
    assert not selected[batch["masks"] == 0].any()
    for row in range(selected.shape[0]):
        for word in torch.unique(batch["word_ids"][row][candidates[row]]):
            in_word = selected[row][candidates[row] & (batch["word_ids"][row] == word)]
            assert in_word.all() or not in_word.any()


def test_whole_word_rate_on_real_tokens_is_mlm_prob_whatever_the_padding(tokenizer):
    texts = random_texts(600, seed=2)
    short_batch, short_candidates, short_selected = whole_word_selection(tokenizer, texts, 48, seed=5)
    assert (short_batch["masks"][:, -1] == 0).all()  # nothing truncated: both lengths hold the same tokens
    _, long_candidates, long_selected = whole_word_selection(tokenizer, texts, 96, seed=5)
    assert torch.equal(long_selected[:, :48], short_selected) and not long_selected[:, 48:].any()
    rate = short_selected.sum().item() / short_candidates.sum().item()
    assert rate == pytest.approx(0.15, abs=0.02)


def test_standard_masking_rate_and_special_tokens(tokenizer):
    batch = encode_batch(tokenizer, random_texts(500, seed=3), 40)
    candidates = mlm_candidates(batch["masks"], batch["special_tokens_mask"])
    selected = select_tokens(candidates, 0.15, torch.Generator().manual_seed(0))
    assert not (selected & ~candidates).any()
    assert selected.sum().item() / candidates.sum().item() == pytest.approx(0.15, abs=0.015)


def test_replacement_is_80_10_10_with_non_special_random_ids():
    ids = torch.randint(5, 30000, (400, 50), generator=torch.Generator().manual_seed(0))
    selected = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    replacement_ids = torch.arange(5, 30000)
    masked, labels = replace_selected(ids, selected, 3, replacement_ids, torch.Generator().manual_seed(2))
    assert torch.equal(labels[selected], ids[selected])
    assert (labels[~selected] == IGNORE_INDEX).all()
    assert torch.equal(masked[~selected], ids[~selected])
    chosen, original = masked[selected], ids[selected]
    n = len(chosen)
    assert (chosen == 3).sum().item() / n == pytest.approx(0.8, abs=0.01)
    randomised = (chosen != 3) & (chosen != original)
    assert randomised.sum().item() / n == pytest.approx(0.1, abs=0.01)
    assert (chosen == original).sum().item() / n == pytest.approx(0.1, abs=0.01)
    assert (chosen[randomised] >= 5).all()


def make_sample(tokenizer, text, seed, image_size=(3, 8, 8), **extra):
    sample = {"image": torch.ones(image_size), "text": text, "seed": seed, "img_index": 1, "cap_index": 0,
              "raw_index": 2, "num_skipped_images": 1, **extra}
    sample.update({f"text_{k}": v for k, v in encode_text(tokenizer, text, 16).items()})
    return sample


def test_collator_batch_keys_shapes_and_padding(tokenizer):
    samples = [
        make_sample(tokenizer, "a dog on the grass", 11, (3, 8, 12), vqa_labels=[1, 2], qid=5),
        make_sample(tokenizer, "two cats", 12, (3, 10, 6), vqa_labels=[], qid=6),
    ]
    for sample, false_text in zip(samples, ["a red bicycle", "the snow"]):
        sample["false_image_0"] = torch.full((3, 4, 4), 2.0)
        sample["false_text_0"] = false_text
        sample.update({f"false_text_0_{k}": v for k, v in encode_text(tokenizer, false_text, 16).items()})
    batch = Collator(tokenizer, 0.15, whole_word_masking=True)(samples)

    assert batch["image"].shape == (2, 3, 10, 12) and batch["false_image_0"].shape == (2, 3, 10, 12)
    assert (batch["image"][0, :, :8, :12] == 1).all() and (batch["image"][0, :, 8:] == 0).all()
    assert (batch["image"][1, :, :10, :6] == 1).all() and (batch["image"][1, :, :, 6:] == 0).all()
    assert (batch["false_image_0"][:, :, :4, :4] == 2).all() and batch["false_image_0"][:, :, 4:].abs().sum() == 0
    for key in ("text_ids", "text_masks", "text_labels", "text_ids_mlm", "text_labels_mlm",
                "false_text_0_ids", "false_text_0_masks"):
        assert batch[key].shape == (2, 16) and batch[key].dtype == torch.long
    assert (batch["text_labels"] == IGNORE_INDEX).all()
    assert batch["text"] == ["a dog on the grass", "two cats"]
    assert batch["false_text_0"] == ["a red bicycle", "the snow"]
    assert batch["num_skipped_images"] == 2
    assert batch["img_index"].tolist() == [1, 1] and batch["qid"].dtype == torch.long
    assert batch["vqa_labels"] == [[1, 2], []]
    assert not any(key.endswith(("word_ids", "special_tokens_mask")) for key in batch)
    predicted = batch["text_labels_mlm"] != IGNORE_INDEX
    assert torch.equal(batch["text_labels_mlm"][predicted], batch["text_ids"][predicted])


def test_collator_masking_follows_the_first_samples_seed(tokenizer):
    collate = Collator(tokenizer, 0.5)
    texts = random_texts(8, seed=4)

    def masked(seed):
        return collate([make_sample(tokenizer, text, seed) for text in texts])["text_ids_mlm"]

    assert torch.equal(masked(7), masked(7))
    assert not torch.equal(masked(7), masked(8))
