"""Image files: decoding with one clear error for anything unreadable.

Below every user of images (extractors, training stages, the demo dataset): nothing here
knows about models or the store.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "read_rgb"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(RuntimeError):
    """An image that cannot be decoded; the row is marked failed with this message."""


def read_rgb(path: Path, draft: int | None = None) -> Image.Image:
    """Decode an image file fully, as RGB; a clear ImageReadError for anything unreadable.

    ``draft``: JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides
    at least ``draft`` px, several times faster than a full decode (other formats: no effect).
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"empty file (0 bytes): {path}")
    try:
        with Image.open(path) as image:
            if draft:
                image.draft("RGB", (draft, draft))
            image.load()  # decode now: truncated files fail here, not later in a worker
            return image.convert("RGB")
    except Exception as error:  # PIL raises many types for corrupt data
        raise ImageReadError(f"cannot decode {path}: {type(error).__name__}: {error}") from error
