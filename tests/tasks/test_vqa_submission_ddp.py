"""``test_only=True`` VQA under two gloo processes writes each test question exactly once."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).parent.parent.parent


def _drop_one_test_question(source: str, target: Path) -> list[int]:
    """A copy of the synthetic set whose ``vqav2_test`` lacks the last question of its last row;
    returns the question ids left (an odd count)."""
    shutil.copytree(source, target)
    path = target / "vqav2_test.arrow"
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    rows = table.to_pylist()
    rows[-1]["questions"] = rows[-1]["questions"][:-1]
    rows[-1]["question_id"] = rows[-1]["question_id"][:-1]
    trimmed = pa.Table.from_pylist(rows, schema=table.schema)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, trimmed.schema) as writer:
        writer.write_table(trimmed)
    return [qid for row in rows for qid in row["question_id"]]


def test_two_gloo_processes_write_every_test_question_once(synthetic, tmp_path):
    question_ids = _drop_one_test_question(synthetic["out_dir"], tmp_path / "data")
    assert len(question_ids) % 2 == 1
    words = [
        "task_finetune_vqa_mae_randaug", "tiny", f"data_root={tmp_path / 'data'}",
        f"tokenizer={synthetic['tokenizer']}", f"vocab_size={synthetic['vocab_size']}",
        f"vqav2_label_size={synthetic['vqav2_label_size']}", f"log_dir={tmp_path / 'result'}",
        "test_only=True", "num_gpus=2", "device=cpu", "per_gpu_batchsize=4", "progress_bar=False",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "vlkit", "run", "with", *words], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    entries = json.loads((tmp_path / "result" / "vqa_submit_untrained.json").read_text())
    assert [entry["question_id"] for entry in entries] == question_ids
    vocabulary = set(json.loads(open(f"{synthetic['out_dir']}/vqa_answer_vocab.json").read()))
    assert all(entry["answer"] in vocabulary for entry in entries)
    record = json.loads(next((tmp_path / "result").glob("*/version_0/metrics.json")).read_text())
    assert record["task"] == "vqa" and record["split"] == "test"
    assert record["metrics"]["questions"] == len(question_ids) and record["metrics"]["unanswered"] == 0
