"""Distortion type and level of each image of the synthetic releases, read from their file names.

The releases name every distorted image by its reference, type and level, so the manifest's
image ids carry them: KADID-10k ``I01_03_05.png`` (type 3 of 25, level 5), TID2013
``i01_08_4.bmp`` (type 8 of 24, level 4), CSIQ ``blur/1600.BLUR.2.png`` (folder = type,
level 2). LIVE release 2 has types (its five folders) but no levels. Level 1 is the mildest in
every release. Type names are those of each release's readme.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from iqa_store.datasets.manifest import Manifest, ManifestError

__all__ = ["distortion_levels", "has_distortion_labels"]

KADID_TYPES = ("gaussian blur", "lens blur", "motion blur", "color diffusion", "color shift", "color quantization",
               "color saturation 1", "color saturation 2", "jpeg2000", "jpeg", "white noise",
               "white noise in color component", "impulse noise", "multiplicative noise", "denoise", "brighten",
               "darken", "mean shift", "jitter", "non-eccentricity patch", "pixelate", "quantization", "color block",
               "high sharpen", "contrast change")
TID2013_TYPES = ("additive gaussian noise", "additive noise in color components", "spatially correlated noise",
                 "masked noise", "high frequency noise", "impulse noise", "quantization noise", "gaussian blur",
                 "image denoising", "jpeg", "jpeg2000", "jpeg transmission errors", "jpeg2000 transmission errors",
                 "non eccentricity pattern noise", "local block-wise distortions", "mean shift", "contrast change",
                 "change of color saturation", "multiplicative gaussian noise", "comfort noise",
                 "lossy compression of noisy images", "color quantization with dither", "chromatic aberrations",
                 "sparse sampling and reconstruction")


@dataclass(frozen=True)
class _NamePattern:
    """How one release's image ids spell type and level (level group None: no levels)."""

    pattern: re.Pattern[str]
    type_name: Callable[[str], str]
    has_levels: bool = True


def _numbered(names: tuple[str, ...]) -> Callable[[str], str]:
    def name(code: str) -> str:
        index = int(code)
        if not 1 <= index <= len(names):
            raise ValueError(f"distortion type {index} (the release has {len(names)})")
        return names[index - 1]
    return name


_PATTERNS = {
    "kadid10k": _NamePattern(re.compile(r"^I\d+_(?P<type>\d+)_(?P<level>\d+)\.\w+$", re.IGNORECASE),
                             _numbered(KADID_TYPES)),
    "tid2013": _NamePattern(re.compile(r"^I\d+_(?P<type>\d+)_(?P<level>\d)\.\w+$", re.IGNORECASE),
                            _numbered(TID2013_TYPES)),
    "csiq": _NamePattern(re.compile(r"^(?P<type>[^/]+)/[^/]+\.\w+\.(?P<level>\d+)\.png$", re.IGNORECASE), str),
    "live": _NamePattern(re.compile(r"^(?P<type>[^/]+)/img\d+\.bmp$", re.IGNORECASE), str, has_levels=False),
}


def has_distortion_labels(dataset: str) -> bool:
    return dataset in _PATTERNS


def distortion_levels(manifest: Manifest) -> pd.DataFrame:
    """``image_id``, ``distortion`` (type name) and ``level`` (int, NA for LIVE) of every image, in
    manifest order; a clear error for datasets without labels or an id that does not parse."""
    pattern = _PATTERNS.get(manifest.dataset)
    if pattern is None:
        raise ManifestError(f"{manifest.dataset} has no distortion types and levels (they are read from the image "
                            f"names of {', '.join(_PATTERNS)})")
    rows = []
    for image_id in manifest.ids:
        match = pattern.pattern.match(image_id)
        try:
            if match is None:
                raise ValueError("not named as the release names its images")
            distortion = pattern.type_name(match["type"])
        except ValueError as error:
            raise ManifestError(f"{manifest.dataset} image {image_id!r}: {error}") from None
        rows.append((image_id, distortion, int(match["level"]) if pattern.has_levels else pd.NA))
    return pd.DataFrame(rows, columns=["image_id", "distortion", "level"]).astype({"level": "Int64"})
