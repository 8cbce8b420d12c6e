"""METER's weight files, each built from a tiny random model and saved in its real format: CLIP
(OpenAI archive, OpenAI state dict, open_clip checkpoint) into the vision tower, HF RoBERTa/BERT
folders into the text tower, and official METER ``{"state_dict"}`` checkpoints into the whole
model. Outputs after loading must equal outputs before saving."""
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

from tests.models._meter_toys import meter_cfg, roberta_tokenizer, tiny_openai_clip
from vlkit.models.backbones.clip_vit import build_clip_vit
from vlkit.models.build import build_model
from vlkit.models.checkpoints import load_checkpoint
from vlkit.models.pos_embed import resample_pos_embed

IMAGE = 32
WORDS = ["a", "red", "blue", "green", "cube", "ball", "cone", "left", "right", "of", "above", "below", "the", "is"]


class ArchiveLike(nn.Module):
    """What OpenAI's TorchScript archives hold: the CLIP modules plus integer metadata."""

    def __init__(self, clip):
        super().__init__()
        self.visual, self.transformer = clip.visual, clip.transformer
        self.positional_embedding, self.ln_final = clip.positional_embedding, clip.ln_final
        self.register_buffer("input_resolution", torch.tensor(IMAGE))

    def forward(self, image):
        return self.visual(image)


def clip_trunk_without_last_block(visual, image):
    """What METER computes from a CLIP visual: every block but the last, ``ln_post`` on all tokens."""
    x = visual._embeds(image)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    return visual.ln_post(x)


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    clip = tiny_openai_clip(width=64, layers=3, patch_size=16, image_size=IMAGE).eval()
    folder = tmp_path_factory.mktemp("clip")
    torch.save(clip.state_dict(), folder / "plain.pt")
    torch.save({"epoch": 2, "state_dict": {"module." + k: v for k, v in clip.state_dict().items()}},
               folder / "open_clip.pt")
    traced = torch.jit.trace(ArchiveLike(clip).eval(), torch.randn(1, 3, IMAGE, IMAGE), check_trace=False)
    traced.save(str(folder / "ViT-B-16.pt"))
    return clip, folder


def test_every_clip_format_loads_the_trunk_without_its_last_block(clip_files):
    clip, folder = clip_files
    image = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        expected = clip_trunk_without_last_block(clip.visual, image)
    for vit, cache in [("ViT-B/16", str(folder)), (str(folder / "plain.pt"), ""), (str(folder / "open_clip.pt"), "")]:
        tower = build_clip_vit(meter_cfg(backbone_init="pretrained", vit=vit, clip_cache_dir=cache)).eval()
        assert len(tower.blocks) == 2
        with torch.no_grad():
            torch.testing.assert_close(tower(image), expected, rtol=1e-5, atol=1e-5)


def test_a_larger_image_size_resamples_the_clip_position_table(clip_files):
    clip, folder = clip_files
    tower = build_clip_vit(meter_cfg(backbone_init="pretrained", vit=str(folder / "plain.pt"), image_size=48))
    expected = resample_pos_embed(clip.visual.positional_embedding.detach()[None], 3)[0]
    assert tower.positional_embedding.shape == (10, 64)
    torch.testing.assert_close(tower.positional_embedding.detach(), expected)
    torch.testing.assert_close(tower.positional_embedding[0].detach(), clip.visual.positional_embedding[0].detach())


def test_clip_errors_say_where_the_file_goes_and_what_to_change(clip_files, tmp_path):
    _, folder = clip_files
    with pytest.raises(FileNotFoundError, match=f"no CLIP weights at {tmp_path}/ViT-B-32.pt.*clip_cache_dir"):
        build_clip_vit(meter_cfg(backbone_init="pretrained", vit="ViT-B/32", clip_cache_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="16-px patches but patch_size=32: use the matching preset"):
        build_clip_vit(meter_cfg(backbone_init="pretrained", vit=str(folder / "plain.pt"), patch_size=32))
    with pytest.raises(ValueError, match="neither a CLIP model name"):
        build_clip_vit(meter_cfg(backbone_init="pretrained", vit="swin_base_patch4_window7_224_in22k"))


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_hf_text_folders_load_as_the_text_tower(kind, clip_files, tmp_path):
    _, folder = clip_files
    torch.manual_seed(1)
    if kind == "roberta":
        roberta_tokenizer(WORDS, str(tmp_path))
        config = RobertaConfig(vocab_size=400, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=128, max_position_embeddings=40, type_vocab_size=1, pad_token_id=1)
        text = RobertaModel(config, add_pooling_layer=True).eval()
    else:
        config = BertConfig(vocab_size=400, hidden_size=64, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=128, max_position_embeddings=40)
        text = BertModel(config).eval()
    text.save_pretrained(tmp_path)  # no tokenizer for BERT: the kind comes from config.json
    ids = torch.randint(3, 170, (2, 10))
    masks = torch.tensor([[1] * 10, [1] * 6 + [0] * 4])
    with torch.no_grad():
        expected = text(input_ids=ids, attention_mask=masks).last_hidden_state
    cfg = meter_cfg({"itm": 1, "mlm": 0}, backbone_init="pretrained", vit=str(folder / "plain.pt"),
                    tokenizer=str(tmp_path), vocab_size=400)
    model = build_model(cfg).eval()
    assert type(model.text_transformer) is type(text)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(ids, masks), expected)


def test_a_tokenizer_folder_without_a_model_fails_clearly(clip_files, tmp_path):
    _, folder = clip_files
    tokenizer = roberta_tokenizer(WORDS, str(tmp_path))
    cfg = meter_cfg(backbone_init="pretrained", vit=str(folder / "plain.pt"), tokenizer=tokenizer)
    with pytest.raises(FileNotFoundError, match="METER loads its text encoder from where the tokenizer is"):
        build_model(cfg)


def as_official_meter(state):
    """A vlkit co_attention state dict in METER's Lightning layout, with the dead parts METER saves."""
    official = {}
    for key, value in state.items():
        official[key.replace("vit_model.", "vit_model.visual.", 1) if key.startswith("vit_model.") else key] = value
    official["vit_model.positional_embedding"] = torch.randn(77, 32)
    official["vit_model.ln_final.weight"] = torch.ones(32)
    official["vit_model.ln_final.bias"] = torch.zeros(32)
    official["text_transformer.pooler.dense.weight"] = torch.randn(64, 64)
    official["text_transformer.pooler.dense.bias"] = torch.zeros(64)
    official["text_transformer.embeddings.position_ids"] = torch.arange(16)[None]
    return {"state_dict": official, "epoch": 3, "hyper_parameters": {"config": {"exp_name": "mlm_itm"}}}


def outputs(model, image_size=IMAGE):
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 120, (2, 12), generator=generator)
    masks = torch.ones(2, 12, dtype=torch.long)
    image = torch.randn(2, 3, image_size, image_size, generator=generator)
    with torch.no_grad():
        out = model.infer(ids, masks, image)
    return out["cls_feats"], model.mlm_score(out["text_feats"]), model.itm_score(out["cls_feats"])


def test_official_meter_checkpoint_round_trip_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    source = build_model(meter_cfg({"itm": 1, "mlm": 1})).eval()
    path = tmp_path / "meter_clip16_224_roberta_pretrain.ckpt"
    torch.save(as_official_meter(source.state_dict()), path)

    torch.manual_seed(1)
    target = build_model(meter_cfg({"itm": 1, "mlm": 1})).eval()
    report = load_checkpoint(target, str(path))
    assert report.format == "meter" and not report.missing and not report.unexpected
    assert report.ignored == sorted(["vit_model.positional_embedding", "vit_model.ln_final.weight",
                                     "vit_model.ln_final.bias", "text_transformer.pooler.dense.weight",
                                     "text_transformer.pooler.dense.bias",
                                     "text_transformer.embeddings.position_ids"])
    for before, after in zip(outputs(source), outputs(target)):
        torch.testing.assert_close(after, before)

    # vlkit's own checkpoint of the same model (no visual. level) loads the same way, through load_path
    torch.save({"state_dict": source.state_dict()}, tmp_path / "vlkit.ckpt")
    reloaded = build_model(meter_cfg({"itm": 1, "mlm": 1}, load_path=str(tmp_path / "vlkit.ckpt"))).eval()
    for before, after in zip(outputs(source), outputs(reloaded)):
        torch.testing.assert_close(after, before)


def test_meter_checkpoint_fits_a_new_resolution_and_the_nlvr2_token_types(tmp_path):
    torch.manual_seed(0)
    source = build_model(meter_cfg({"itm": 1, "mlm": 1}))
    torch.save(as_official_meter(source.state_dict()), tmp_path / "pretrain.ckpt")
    target = build_model(meter_cfg({"nlvr2": 1, "itm": 0, "mlm": 0}, image_size=48))
    report = load_checkpoint(target, str(tmp_path / "pretrain.ckpt"))
    assert set(report.resized) == {"vit_model.positional_embedding", "token_type_embeddings.weight"}
    assert {"mlm_score.bias", "itm_score.fc.weight"} <= set(report.unexpected)
    assert all(key.startswith("nlvr2_classifier.") for key in report.missing)
    table = target.token_type_embeddings.weight.detach()
    torch.testing.assert_close(table[:2], source.token_type_embeddings.weight.detach())
    torch.testing.assert_close(table[2], table[1])
    torch.testing.assert_close(target.vit_model.positional_embedding.detach(),
                               resample_pos_embed(source.vit_model.positional_embedding.detach()[None], 3)[0])
