"""Image files: decoding with one clear error for anything unreadable.

Below every user of images (extractors, training stages, the demo dataset): nothing here
knows about models or the store.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "read_rgb"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(RuntimeError):
    """An image that cannot be decoded; the row is marked failed with this message."""


def read_rgb(path: Path, draft: int | None = None) -> Image.Image:
    """Decode an image file fully, as the RGB a viewer shows; a clear ImageReadError for anything unreadable.

    As a viewer shows it (README, "What happens to odd images"): EXIF orientation applied,
    transparency composited on white, 16-bit grey reduced to its high byte (as Pillow reduces
    16-bit colour), CMYK by Pillow's conversion without colour management, an animation's first
    frame. More pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` is an error, raised before decoding.

    ``draft``: JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides
    at least ``draft`` px, several times faster than a full decode (other formats: no effect).
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"empty file (0 bytes): {path}")
    try:
        with warnings.catch_warnings():  # Pillow only warns between 1x and 2x the limit: make it the row's error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as image:
            if draft:
                image.draft("RGB", (draft, draft))
            image.load()  # decode now: truncated files fail here, not later in a worker
            return _as_displayed(image)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise ImageReadError(f"not decoded: {path} has more pixels than PIL.Image.MAX_IMAGE_PIXELS "
                             f"({Image.MAX_IMAGE_PIXELS}), a possible decompression bomb ({error})") from None
    except Exception as error:  # PIL raises many types for corrupt data
        raise ImageReadError(f"cannot decode {path}: {type(error).__name__}: {error}") from error


def _as_displayed(image: Image.Image) -> Image.Image:
    """The RGB pixels a viewer shows of a decoded image (the rules in ``read_rgb``)."""
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode.startswith("I;16"):  # Pillow's own conversion would clip 16-bit grey at 255
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8), "L")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")
