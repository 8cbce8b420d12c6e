"""The text tokenizer: loading it (it must be a fast one, whose word ids drive whole-word masking)
and encoding one text into fixed-length tensors."""
from __future__ import annotations

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase


class TokenizerLoadError(OSError):
    """The tokenizer could not be loaded, or is not a fast tokenizer."""


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained(name_or_path)``; must give a fast tokenizer.

    Works offline from a local directory or the Hugging Face cache (set ``HF_HUB_OFFLINE=1`` on a
    machine without internet access).
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as err:
        raise TokenizerLoadError(
            f"could not load tokenizer {name_or_path!r} ({err}); pass tokenizer=<local dir> holding a "
            f"saved tokenizer (for example the synthetic set's DIR/tokenizer from "
            f"`vlkit data synth --out DIR`), or download {name_or_path!r} into the Hugging Face cache"
        ) from err
    if not tokenizer.is_fast:
        raise TokenizerLoadError(
            f"tokenizer {name_or_path!r} loaded as the slow {type(tokenizer).__name__}; vlkit needs a fast "
            f"tokenizer (a tokenizer.json), for whole-word masking: pass tokenizer=<local dir> with one"
        )
    return tokenizer


TOKEN_FIELDS = ("ids", "masks", "special_tokens_mask", "word_ids")
"""Per-text tensors that ``encode_text`` returns and the collator stacks (as ``{text key}_{field}``)."""


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, max_length: int) -> dict[str, torch.Tensor]:
    """Token ids padded to ``max_length`` (truncated beyond it), attention mask, special-tokens mask
    (1 at [CLS], [SEP] and padding) and word ids (-1 where a token belongs to no word), all (L,) long."""
    encoding = tokenizer(
        text,
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_special_tokens_mask=True,
    )
    word_ids = [-1 if word is None else word for word in encoding.word_ids()]
    return {
        "ids": torch.tensor(encoding["input_ids"], dtype=torch.long),
        "masks": torch.tensor(encoding["attention_mask"], dtype=torch.long),
        "special_tokens_mask": torch.tensor(encoding["special_tokens_mask"], dtype=torch.long),
        "word_ids": torch.tensor(word_ids, dtype=torch.long),
    }
