"""Image files: decoding with one clear error for anything unreadable.

Below every user of images (extractors, training stages, the demo dataset): nothing here
knows about models or the store.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
from PIL import Image, ImageOps

__all__ = ["DECODING_VERSION", "IMAGE_SUFFIXES", "ImageReadError", "read_rgb", "read_rgb_array"]

T = TypeVar("T")

# Raised whenever read_rgb's rules change the pixels of some file; every extractor's fingerprint
# holds it, so sets decoded under older rules are not reused. 2: EXIF orientation applied,
# transparency on white, 16-bit grey by its high byte (1 decoded them as Pillow's default).
DECODING_VERSION = 2

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
    return _decode(path, draft, _rgb_copy)


def read_rgb_array(path: Path, draft: int | None = None) -> np.ndarray:
    """``np.asarray(read_rgb(path, draft))``, the same HxWx3 uint8 pixels (read-only), one copy fewer.

    ``read_rgb`` copies an image that decodes as RGB already (what ``convert("RGB")`` does);
    here its pixels are read straight from the decoded image. The copy's fresh buffer costs
    about 1,500 page faults for a 1024x768 photo, a tenth of a JPEG decode's time.
    """
    return _decode(path, draft, lambda image: np.asarray(_as_displayed(image)))


def _decode(path: Path, draft: int | None, finish: Callable[[Image.Image], T]) -> T:
    """Open and decode ``path``, then ``finish(image)`` while the file is open; one ImageReadError
    (naming the file) for anything unreadable, raised by the decoder or by ``finish``."""
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
            return finish(image)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise ImageReadError(f"not decoded: {path} has more pixels than PIL.Image.MAX_IMAGE_PIXELS "
                             f"({Image.MAX_IMAGE_PIXELS}), a possible decompression bomb ({error})") from None
    except Exception as error:  # PIL raises many types for corrupt data
        raise ImageReadError(f"cannot decode {path}: {type(error).__name__}: {error}") from error


def _rgb_copy(image: Image.Image) -> Image.Image:
    """The displayed RGB image as a new image, which outlives the closing of the decoded one."""
    displayed = _as_displayed(image)
    return displayed.copy() if displayed is image else displayed


def _as_displayed(image: Image.Image) -> Image.Image:
    """The RGB pixels a viewer shows of a decoded image (the rules in ``read_rgb``): ``image``
    itself when it is RGB already, else a new image."""
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode.startswith("I;16"):  # Pillow's own conversion would clip 16-bit grey at 255
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8), "L")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")
