"""Tiny stand-ins for METER's weight files and tokenizers, written in their real formats."""
import json
import os

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from tokenizers import ByteLevelBPETokenizer, processors
from transformers import RobertaTokenizerFast

from tests.models._model_toys import tiny_cfg

ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def tiny_openai_clip(width: int = 64, layers: int = 3, patch_size: int = 16, image_size: int = 32) -> CLIP:
    """A random open_clip CLIP in OpenAI's layout (QuickGELU, as OpenAI's archives)."""
    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=layers, width=width, patch_size=patch_size, image_size=image_size, head_width=64)
    text = CLIPTextCfg(context_length=8, vocab_size=50, width=32, heads=1, layers=1)
    return CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text, quick_gelu=True)


def roberta_tokenizer(words: list[str], directory: str) -> str:
    """A byte-level BPE RoBERTa tokenizer trained on ``words``, saved in ``directory``."""
    backend = ByteLevelBPETokenizer()
    backend.train_from_iterator([" ".join(words)] * 4, vocab_size=400, min_frequency=1,
                                special_tokens=ROBERTA_SPECIALS, show_progress=False)
    backend.post_processor = processors.RobertaProcessing(("</s>", backend.token_to_id("</s>")),
                                                          ("<s>", backend.token_to_id("<s>")))
    tokenizer = RobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                     sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                     pad_token="<pad>", mask_token="<mask>")
    tokenizer.save_pretrained(directory)
    return directory


def wordpiece_words(tokenizer_dir: str) -> list[str]:
    """The whole words of a WordPiece tokenizer folder's vocabulary (no specials, no ``##`` pieces)."""
    with open(os.path.join(tokenizer_dir, "tokenizer.json")) as file:
        vocab = json.load(file)["model"]["vocab"]
    return sorted(word for word in vocab if not word.startswith(("[", "##")))


def meter_cfg(loss_names=None, **overrides):
    """A tiny co_attention config: 64-wide towers from random weights (unless overridden), 32 px."""
    values = dict(model="co_attention", backbone_init="random", input_image_embed_size=64, input_text_embed_size=64,
                  vision_layers=3, text_layers=1, num_top_layer=1, image_size=32, max_text_len=16,
                  tokenizer="bert-base-uncased", drop_rate=0.0, mae_patch_drop=False)
    return tiny_cfg(loss_names, **{**values, **overrides})
