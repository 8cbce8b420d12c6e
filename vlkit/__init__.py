"""vlkit: pre-train and fine-tune vision-language transformers from one codebase."""

__version__ = "0.1.0"


def load(path, device="cpu", precision=32, words=(), trust_checkpoint=False):
    """``vlkit.api.load``: a model folder, run directory or checkpoint as a ``VLModel``."""
    from vlkit.api import load as load_model

    return load_model(path, device=device, precision=precision, words=words, trust_checkpoint=trust_checkpoint)
