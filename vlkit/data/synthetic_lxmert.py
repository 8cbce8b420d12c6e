"""The synthetic set in CLIP-ViL's LXMERT layout (fact sheet clipvil.md §4), under ``clipvil/``
(use it as ``data_root``):

* ``mscoco/{train2014,val2014,test2015}/COCO_*_%012d.jpg`` and ``vg_raw_images/VG_100K/<i>.jpg``:
  each scene pasted in the middle of a landscape (3:2) or portrait (2:3) background, alternately,
  so aspect-ratio grouping has two orientations to separate;
* ``lxmert/{mscoco_train,mscoco_nominival,mscoco_minival,vgnococo}.json``: ``img_id``, ``sentf``
  (captions under ``mscoco`` / ``vg``, questions under ``vqa`` / ``visual7w``) and ``labelf``;
  ``lxmert/all_ans.json`` (every answer, in alphabetical order, so QA labels differ from VQA's);
* ``vqa/{train,nominival,minival,test}.json`` and ``vqa/trainval_{label2ans,ans2label}.json``.

The train pool is split into COCO-train and Visual Genome images, the val pool into nominival and
minival; test images only appear in ``vqa/test.json``. Texts and answers are those of the Arrow
files, so every run of the generator writes the same bytes.
"""
from __future__ import annotations

import io
import os
from typing import Callable, Sequence

from PIL import Image

from vlkit.data.synthetic_scenes import ANSWERS, BACKGROUND

CLIPVIL_DIR = "clipvil"
WIDE_RATIO = 1.5
"""Long side / short side of the reshaped images."""


def reshaped_jpeg(data: bytes, index: int) -> bytes:
    """The square scene in the middle of a landscape (even ``index``) or portrait background."""
    with Image.open(io.BytesIO(data)) as scene:
        scene = scene.convert("RGB")
    side = scene.width
    size = (int(side * WIDE_RATIO), side) if index % 2 == 0 else (side, int(side * WIDE_RATIO))
    canvas = Image.new("RGB", size, BACKGROUND)
    canvas.paste(scene, ((size[0] - side) // 2, (size[1] - side) // 2))
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _by_image(file) -> dict[int, int]:
    return {image: row for row, image in enumerate(file.images)}


def _questions(file, image: int) -> list[tuple[int, str, dict[str, float] | None]]:
    """(question id, question, label) of an image's questions in a VQA Arrow file."""
    row = _by_image(file)[image]
    columns = file.columns
    labels = [dict(zip(a, s)) for a, s in zip(columns["answers"][row], columns["answer_scores"][row])] or None
    return [(qid, question, labels[k] if labels else None)
            for k, (qid, question) in enumerate(zip(columns["question_id"][row], columns["questions"][row]))]


def lxmert_files(corpus, files: Sequence) -> tuple[dict[str, object], dict[str, tuple[int, str]]]:
    """(json files by path relative to ``clipvil/``, image index → (pool index, img_id))."""
    by_name = {file.name: file for file in files}
    train, val, test = corpus.pools["train"], corpus.pools["val"], corpus.pools["test"]
    n_vg = max(2, len(train) // 5)
    vg, coco_train = train[:n_vg], train[n_vg:]
    nominival, minival = val[: len(val) // 2], val[len(val) // 2:]
    ids = {i: f"COCO_train2014_{i:012d}" for i in coco_train}
    ids.update({i: str(i) for i in vg})
    ids.update({i: f"COCO_val2014_{i:012d}" for i in val})
    ids.update({i: f"COCO_test2015_{i:012d}" for i in test})
    captions = {}
    for name in ("coco_caption_karpathy_train", "coco_caption_karpathy_restval", "coco_caption_karpathy_val"):
        captions.update({image: caps for image, caps in zip(by_name[name].images, by_name[name].columns["caption"])})
    vg_phrases = dict(zip(by_name["vg"].images, by_name["vg"].columns["caption"]))

    def coco_entry(i: int, vqa_file) -> dict:
        asked = _questions(vqa_file, i)
        return {"img_id": ids[i], "sentf": {"mscoco": captions[i], "vqa": [q for _, q, _ in asked]},
                "labelf": {"vqa": [label for _, _, label in asked]}}

    def vg_entry(i: int) -> dict:
        asked = _questions(by_name["vgqa_train"], i)
        return {"img_id": ids[i], "sentf": {"vg": vg_phrases[i][:5], "visual7w": [q for _, q, _ in asked]},
                "labelf": {"visual7w": [label for _, _, label in asked]}}

    def vqa_entries(images: list[int], vqa_file) -> list[dict]:
        out = []
        for i in images:
            for qid, question, label in _questions(vqa_file, i):
                entry = {"question_id": qid, "img_id": ids[i], "sent": question, "answer_type": "other"}
                if label is not None:
                    entry["label"] = label
                out.append(entry)
        return out

    train_vqa, val_vqa = by_name["vqav2_train"], by_name["vqav2_val"]
    out = {
        "lxmert/mscoco_train.json": [coco_entry(i, train_vqa) for i in coco_train],
        "lxmert/mscoco_nominival.json": [coco_entry(i, val_vqa) for i in nominival],
        "lxmert/mscoco_minival.json": [coco_entry(i, val_vqa) for i in minival],
        "lxmert/vgnococo.json": [vg_entry(i) for i in vg],
        "lxmert/all_ans.json": [{"ans": a, "dsets": ["vqa", "visual7w"]} for a in sorted(ANSWERS)],
        "vqa/train.json": vqa_entries(coco_train, train_vqa),
        "vqa/nominival.json": vqa_entries(nominival, val_vqa),
        "vqa/minival.json": vqa_entries(minival, val_vqa),
        "vqa/test.json": vqa_entries(test, by_name["vqav2_test"]),
        "vqa/trainval_label2ans.json": list(ANSWERS),
        "vqa/trainval_ans2label.json": {a: label for label, a in enumerate(ANSWERS)},
    }
    return out, ids


def image_file(img_id: str) -> str:
    """Path of an ``img_id``'s image relative to ``clipvil/`` (the reference's folders)."""
    for folder in ("train2014", "val2014", "test2015"):
        if folder in img_id:
            return f"mscoco/{folder}/{img_id}.jpg"
    return f"vg_raw_images/VG_100K/{img_id}.jpg"


def write_lxmert(
    out_dir: str, corpus, files: Sequence, write_bytes: Callable[[str, bytes], None],
    write_json: Callable[[str, object], None],
) -> dict:
    """Write ``clipvil/`` (images and json files); returns its summary (``root``, file entry counts,
    answer counts)."""
    root = os.path.join(out_dir, CLIPVIL_DIR)
    entries, ids = lxmert_files(corpus, files)
    for index, img_id in sorted(ids.items()):
        path = os.path.join(root, image_file(img_id))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_bytes(path, reshaped_jpeg(corpus.images[index], index))
    for path, value in entries.items():
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        write_json(os.path.join(root, path), value)
    return {"root": root, "files": {path: len(value) for path, value in entries.items()},
            "qa_label_size": len(ANSWERS), "vqa_label_size": len(ANSWERS)}

