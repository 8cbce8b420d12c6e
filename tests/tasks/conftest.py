"""A small synthetic dataset (with its tokenizer) shared by the task tests."""
import pytest

from vlkit.data.synthetic import write_synthetic


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> dict:
    """``write_synthetic`` at 64 px with 120 scenes; returns its summary (``out_dir`` added)."""
    out = tmp_path_factory.mktemp("synthetic")
    info = write_synthetic(str(out), num_images=120, seed=0, image_size=64)
    return {**info, "out_dir": str(out)}


@pytest.fixture
def data_words(synthetic) -> list[str]:
    """``key=value`` words pointing a run at the synthetic set."""
    return [
        f"data_root={synthetic['out_dir']}", f"tokenizer={synthetic['tokenizer']}",
        f"vocab_size={synthetic['vocab_size']}",
    ]
