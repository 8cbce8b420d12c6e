"""Helpers of the api tests: the data words of the synthetic set and a tiny training run."""
from pathlib import Path

from vlkit.cli import main


def data_words(scenes: dict) -> list[str]:
    return [f"data_root={scenes['out_dir']}", f"tokenizer={scenes['tokenizer']}", f"vocab_size={scenes['vocab_size']}",
            f"vqav2_label_size={scenes['vqav2_label_size']}"]


def train(scenes: dict, log_dir: Path, name: str, *words: str, export_best: bool = False) -> Path:
    """A 4-step tiny run; returns its run directory."""
    assert main(["run", "with", *words, *data_words(scenes), f"log_dir={log_dir}", f"run_name={name}",
                 "progress_bar=False", "max_steps=4", "val_check_interval=4", "per_gpu_batchsize=8",
                 "batch_size=8", "learning_rate=1e-3", f"export_best={export_best}"]) == 0
    return log_dir / name / "version_0"
