"""Use a trained model: model folders (``export``), ``load`` and the task methods of ``VLModel``."""
from vlkit.api.classifier import ImageClassifier
from vlkit.api.export import export
from vlkit.api.load import load
from vlkit.api.model import MissingHeadError, VLModel
from vlkit.api.retrieval import Gallery

__all__ = ["Gallery", "ImageClassifier", "MissingHeadError", "VLModel", "export", "load"]
