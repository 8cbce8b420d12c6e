"""A small synthetic set and tiny trained runs shared by the api tests."""
from pathlib import Path

import pytest

from tests.api._api_runs import train
from vlkit.data.synthetic import write_synthetic


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("api_scenes")
    return {**write_synthetic(str(out), num_images=60, seed=0, image_size=64), "out_dir": str(out)}


@pytest.fixture(scope="session")
def vqa_run(scenes, tmp_path_factory) -> Path:
    """A VQA run, exported at its end (export_best)."""
    return train(scenes, tmp_path_factory.mktemp("runs"), "vqa", "task_finetune_vqa_mae_randaug", "tiny",
                 "train_transform_keys=[mae_test]", export_best=True)


@pytest.fixture(scope="session")
def irtr_run(scenes, tmp_path_factory) -> Path:
    return train(scenes, tmp_path_factory.mktemp("runs"), "irtr", "task_finetune_irtr_f30k_mae_randaug", "tiny",
                 "loss_names.itc=1", "draw_false_text=1", "retrieval_protocol=fast", "k_test=8",
                 "train_transform_keys=[mae_test]")
