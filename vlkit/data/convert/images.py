"""Reading raw images one at a time, checking that each decodes (as VLC's ``check_valid_images``,
but reporting the bad ones instead of deleting them)."""
from __future__ import annotations

import io
import os

from PIL import Image


MISSING = "missing image"
CORRUPT = "corrupt image"
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
"""What PIL raises for a truncated, corrupt or not-an-image file (``vlkit.imagenet.data.UNREADABLE``,
repeated here so that converting does not import timm and torchvision)."""


def decode_error(data: bytes) -> str | None:
    """Why ``data`` cannot be decoded into an RGB image, or None when it can."""
    if not data:
        return "empty file"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.convert("RGB")
    except UNREADABLE as err:
        return f"{type(err).__name__}: {err}"
    return None


class ImageReader:
    """Reads an image file's encoded bytes, decoding it once to verify it when ``verify``.

    ``read(path)`` returns ``(bytes, None)`` or ``(None, (reason, detail))`` with reason
    ``MISSING`` or ``CORRUPT``. With ``remember`` the verdict of each path is kept, so a file read
    again (VQA's val images go into two tables) is not decoded twice.
    """

    def __init__(self, verify: bool = True, remember: bool = False):
        self.verify = verify
        self._verdicts: dict[str, tuple[str, str] | None] | None = {} if remember else None

    def read(self, path: str) -> tuple[bytes | None, tuple[str, str] | None]:
        if not os.path.isfile(path):
            return None, (MISSING, path)
        with open(path, "rb") as handle:
            data = handle.read()
        known = self._verdicts is not None and path in self._verdicts
        if known:
            verdict = self._verdicts[path]
        else:
            error = decode_error(data) if self.verify or not data else None
            verdict = (CORRUPT, error) if error else None
            if self._verdicts is not None:
                self._verdicts[path] = verdict
        return (None, verdict) if verdict else (data, None)
