"""Raw fixtures in the official layouts, each converted once per session (see ``_raw_layouts``)."""
from __future__ import annotations

import pytest

import _raw_layouts as raw
from vlkit.data.convert import convert

ALL_FORMATS = ["arrow", "albef", "lxmert"]


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory) -> str:
    return raw.write_coco_root(str(tmp_path_factory.mktemp("coco_raw")))


@pytest.fixture(scope="session")
def coco_out(tmp_path_factory, coco_root) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("coco_arrow"))
    return out, convert("coco_karpathy", coco_root, out, formats=ALL_FORMATS, progress=False)


@pytest.fixture(scope="session")
def vqa_out(tmp_path_factory, coco_root) -> tuple[str, dict]:
    """VQAv2 with ``min_answer_count=3`` (vocabulary ``raw.VQA_VOCAB``) and one rest_val image:
    seed 1 draws 73 of the val images 42, 73, 74."""
    out = str(tmp_path_factory.mktemp("vqa_arrow"))
    section = convert("vqav2", coco_root, out, formats=ALL_FORMATS, progress=False, min_answer_count=3,
                      rest_val_images=1, seed=1)
    return out, section


@pytest.fixture(scope="session")
def vg_root(tmp_path_factory) -> str:
    return raw.write_vg_root(str(tmp_path_factory.mktemp("vg_raw")))


@pytest.fixture(scope="session")
def nlvr2_root(tmp_path_factory) -> str:
    return raw.write_nlvr2_root(str(tmp_path_factory.mktemp("nlvr2_raw")))


@pytest.fixture(scope="session")
def snli_root(tmp_path_factory) -> str:
    return raw.write_snli_root(str(tmp_path_factory.mktemp("snli_raw")))
