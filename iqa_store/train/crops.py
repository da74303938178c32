"""Overlap-area (OLA) crop pairs: two square patches whose shared area is a bounded fraction.

Re-IQA (section 3.2.1, Table 1) takes two crops of the same image such that their overlap, as a
fraction of one patch's area, lies within bounds (10-30 % by default): neighbouring patches
carry similar quality (hypothesis H1) without being the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from iqa_store.distortions._random import uniform

# For the lowest overlap bound to stay reachable a side must hold two patches that share only
# sqrt(low) of their width: side >= (2 - sqrt(low)) * patch. 1.7 covers bounds from 0.09 up.
MIN_SIDE_IN_PATCHES = 1.7
_MAX_DRAWS = 64


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    size: int

    def area_shared(self, other: "Box") -> int:
        rows = max(0, min(self.top + self.size, other.top + other.size) - max(self.top, other.top))
        cols = max(0, min(self.left + self.size, other.left + other.size) - max(self.left, other.left))
        return rows * cols

    def overlap_fraction(self, other: "Box") -> float:
        return self.area_shared(other) / float(self.size * self.size)


def cut(image: torch.Tensor, box: Box) -> torch.Tensor:
    """The pixels of ``box`` in a [3, H, W] image."""
    return image[:, box.top:box.top + box.size, box.left:box.left + box.size]


def min_side(patch: int) -> int:
    return math.ceil(MIN_SIDE_IN_PATCHES * patch)


def ola_pair(height: int, width: int, patch: int, bounds: tuple[float, float], generator: torch.Generator) -> tuple[Box, Box]:
    """Two ``patch`` x ``patch`` boxes inside an image whose overlap fraction lies in ``bounds``.

    The overlap target is drawn uniformly in ``bounds``, then how it splits into an overlap
    width and height (within what the image allows), then the direction of the offset and the
    position of the pair: every draw comes from ``generator``.
    """
    low, high = bounds
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"overlap bounds must satisfy 0 < low <= high <= 1, got {bounds}")
    if min(height, width) < patch:
        raise ValueError(f"image {height}x{width} is smaller than the {patch}-pixel patch")
    for _ in range(_MAX_DRAWS):
        target = uniform(generator, low, high)
        # overlap width w and height h = target * patch^2 / w; the offsets patch - w and
        # patch - h must fit in the image next to the first patch
        w_low = max(target * patch, 2 * patch - width)
        h_low = max(target * patch, 2 * patch - height)
        w_high = min(patch, target * patch * patch / h_low)
        if w_low > w_high:
            continue
        overlap_w = uniform(generator, w_low, w_high)
        dx = patch - round(overlap_w)
        dy = patch - round(target * patch * patch / overlap_w)
        if dx < 0 or dy < 0 or dx > width - patch or dy > height - patch:
            continue
        sx, sy = (1 if uniform(generator) < 0.5 else -1), (1 if uniform(generator) < 0.5 else -1)
        left = _randint(generator, max(0, -sx * dx), width - patch - max(0, sx * dx))
        top = _randint(generator, max(0, -sy * dy), height - patch - max(0, sy * dy))
        first, second = Box(top, left, patch), Box(top + sy * dy, left + sx * dx, patch)
        if low - 1e-9 <= first.overlap_fraction(second) <= high + 1e-9:  # rounding may step outside
            return first, second
    raise ValueError(f"no crop pair with overlap in {bounds} fits a {height}x{width} image with patch {patch}; "
                     f"images need a shorter side of at least {min_side(patch)} pixels")


def context_region(first: Box, second: Box, height: int, width: int, margin: int = 16,
                   minimum: int = 64) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the region holding both boxes plus ``margin`` pixels of context.

    Distorting this region instead of the whole image gives the crops the same pixels except
    where a filter reaches past the margin; ``minimum`` keeps the region large enough for the
    distortions that work on blocks (non-eccentricity needs 48 px). Both are clipped to the image.
    """
    top = min(first.top, second.top) - margin
    left = min(first.left, second.left) - margin
    bottom = max(first.top, second.top) + first.size + margin
    right = max(first.left, second.left) + first.size + margin
    top, bottom = _grow(top, bottom, minimum, height)
    left, right = _grow(left, right, minimum, width)
    return top, left, bottom - top, right - left


def _grow(start: int, stop: int, minimum: int, limit: int) -> tuple[int, int]:
    """Widen [start, stop) symmetrically to at least ``minimum``, then shift/clip it into [0, limit)."""
    missing = max(0, minimum - (stop - start))
    start, stop = start - missing // 2, stop + missing - missing // 2
    if start < 0:
        start, stop = 0, stop - start
    if stop > limit:
        start, stop = max(0, start - (stop - limit)), limit
    return start, stop


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (), generator=generator))
