"""vlkit: pre-train and fine-tune vision-language transformers from one codebase."""

__version__ = "0.1.0"
