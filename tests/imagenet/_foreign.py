"""Checkpoints in other code bases' layouts, written out from the fact sheet (vilt_vlc.md §2.4,
§8.1) rather than derived from vlkit's modules."""
from collections import OrderedDict

import torch

DIM, DEPTH, PATCH, GRID = 48, 2, 8, 4
"""The tiny model of the tests: width 48, 2 blocks, 8-px patches, 32-px images."""
DECODER_DIM, VOCAB, TEXT_LEN = 16, 50, 12


def vit_shapes(dim=DIM, depth=DEPTH, patch=PATCH, grid=GRID, decoder_dim=0):
    """{unprefixed key: shape} of an MAE / VLC vision transformer, decoder optional."""
    shapes = OrderedDict([("cls_token", (1, 1, dim)), ("pos_embed", (1, 1 + grid * grid, dim)),
                          ("patch_embed.proj.weight", (dim, 3, patch, patch)), ("patch_embed.proj.bias", (dim,))])
    for i in range(depth):
        for part, shape in (("norm1.weight", (dim,)), ("norm1.bias", (dim,)), ("attn.qkv.weight", (3 * dim, dim)),
                            ("attn.qkv.bias", (3 * dim,)), ("attn.proj.weight", (dim, dim)), ("attn.proj.bias", (dim,)),
                            ("norm2.weight", (dim,)), ("norm2.bias", (dim,)), ("mlp.fc1.weight", (4 * dim, dim)),
                            ("mlp.fc1.bias", (4 * dim,)), ("mlp.fc2.weight", (dim, 4 * dim)), ("mlp.fc2.bias", (dim,))):
            shapes[f"blocks.{i}.{part}"] = shape
    shapes["norm.weight"], shapes["norm.bias"] = (dim,), (dim,)
    if decoder_dim:
        shapes["mask_token"] = (1, 1, decoder_dim)
        shapes["decoder_pos_embed"] = (1, 1 + grid * grid, decoder_dim)
        shapes["decoder_embed.weight"], shapes["decoder_embed.bias"] = (decoder_dim, dim), (decoder_dim,)
        shapes["decoder_norm.weight"], shapes["decoder_norm.bias"] = (decoder_dim,), (decoder_dim,)
        shapes["decoder_pred.weight"] = (patch * patch * 3, decoder_dim)
        shapes["decoder_pred.bias"] = (patch * patch * 3,)
    return shapes


def random_state(shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict((key, torch.randn(shape, generator=generator)) for key, shape in shapes.items())


def vlc_lightning_checkpoint(seed=0, **vit):
    """A VLC ``VLCTransformer`` Lightning checkpoint: text embeddings, modality types, the MAE ViT
    with its decoder under ``transformer.``, pooler, MLM and ITM heads, a metric state."""
    vision = random_state(vit_shapes(decoder_dim=DECODER_DIM, **vit), seed)
    text = random_state(OrderedDict([
        ("text_embeddings.word_embeddings.weight", (VOCAB, DIM)),
        ("text_embeddings.position_embeddings.weight", (TEXT_LEN, DIM)),
        ("text_embeddings.token_type_embeddings.weight", (2, DIM)),
        ("text_embeddings.LayerNorm.weight", (DIM,)), ("text_embeddings.LayerNorm.bias", (DIM,)),
        ("token_type_embeddings.weight", (2, DIM)),
        ("pooler.dense.weight", (DIM, DIM)), ("pooler.dense.bias", (DIM,)),
        ("mlm_score.bias", (VOCAB,)), ("mlm_score.decoder.weight", (VOCAB, DIM)),
        ("itm_score.fc.weight", (2, DIM)), ("itm_score.fc.bias", (2,)),
    ]), seed + 1)
    state = OrderedDict([("text_embeddings.position_ids", torch.arange(TEXT_LEN)[None])])
    state.update(text)
    state.update((f"transformer.{key}", value) for key, value in vision.items())
    state["train_mlm_accuracy.correct"] = torch.tensor(3)
    return {"epoch": 9, "global_step": 25000, "state_dict": state,
            "hyper_parameters": {"config": {"hidden_size": DIM, "num_layers": DEPTH, "patch_size": PATCH}}}
