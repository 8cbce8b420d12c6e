"""CLIP-ViL helpers outside the Trainer: the contrastive warm-up of a tiny CLIP (``contrastive``)."""
