"""Appearance of an image: brightness, contrast, sharpness and colourfulness, and their low/medium/high bins.

SLIQUE (Zhou et al. 2024, Sec. III-C) describes authentic images by these four attributes, each
put in a "low", "medium" or "high" category "based on their value distributions"; the paper
cites Hasler & Suesstrunk for colourfulness and Vu & Chandler for sharpness, and defers the
exact procedures to an appendix that was never published. Ours, on an 8-bit RGB image:

- brightness: the mean luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601 weights), on 0-1;
- contrast: the RMS contrast of the luma (its standard deviation over the image, Peli 1990), on 0-1;
- sharpness: FISH (Vu & Chandler 2012) of the luma on 0-255: a three-level CDF 9/7 wavelet
  decomposition (``wavelet.dwt2``); per level n the log-energies
  ``E_XY = log10(1 + mean(S_XY**2))`` of its LH, HL and HH subbands are combined as
  ``E_n = (1 - a) (E_LH + E_HL) / 2 + a E_HH`` with a = 0.8, and FISH = 4 E_1 + 2 E_2 + E_3
  (level 1 the finest, weights 2**(3 - n));
- colourfulness: Hasler & Suesstrunk's M on 0-255: with rg = R - G and yb = (R + G) / 2 - B,
  ``M = sqrt(sd_rg**2 + sd_yb**2) + 0.3 sqrt(mean_rg**2 + mean_yb**2)`` (population std).

Bins (``tertile_levels``): over the images annotated together, t1 and t2 are the 1/3 and 2/3
quantiles of an attribute (numpy's linear interpolation); a value below t1 is "low", above t2
"high", anything else (t1 and t2 included) "medium". One image, or images all alike, are medium.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from iqa_store.texts.wavelet import dwt2

__all__ = ["APPEARANCE_ATTRIBUTES", "APPEARANCE_LEVELS", "brightness", "colourfulness", "contrast", "fish",
           "luma", "measure_appearance", "sharpness", "tertile_levels"]

APPEARANCE_ATTRIBUTES = ("brightness", "contrast", "sharpness", "colourfulness")
APPEARANCE_LEVELS = ("low", "medium", "high")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
FISH_ALPHA = 0.8
FISH_LEVELS = 3


def _rgb(image: np.ndarray) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"appearance measures take an H x W x 3 RGB image, got shape {pixels.shape}")
    return pixels


def luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image, in the image's own scale (0-255 for 8-bit)."""
    return _rgb(image) @ np.array(LUMA_WEIGHTS)


def brightness(image: np.ndarray) -> float:
    """Mean luma of an 8-bit RGB image, on 0-1."""
    return float(luma(image).mean() / 255.0)


def contrast(image: np.ndarray) -> float:
    """RMS contrast: the standard deviation of the luma of an 8-bit RGB image, on 0-1."""
    return float(luma(image).std() / 255.0)


def fish(grey: np.ndarray, alpha: float = FISH_ALPHA, levels: int = FISH_LEVELS) -> float:
    """FISH sharpness of a grey image (Vu & Chandler 2012): higher is sharper."""
    approximation = np.asarray(grey, dtype=np.float64)
    total = 0.0
    for level in range(1, levels + 1):
        approximation, (lh, hl, hh) = dwt2(approximation)
        e_lh, e_hl, e_hh = (np.log10(1.0 + np.mean(band ** 2)) for band in (lh, hl, hh))
        total += 2 ** (levels - level) * ((1 - alpha) * (e_lh + e_hl) / 2 + alpha * e_hh)
    return float(total)


def sharpness(image: np.ndarray) -> float:
    """FISH of the luma of an 8-bit RGB image (0-255)."""
    return fish(luma(image))


def colourfulness(image: np.ndarray) -> float:
    """Hasler & Suesstrunk's colourfulness M of an 8-bit RGB image (0 for a grey image)."""
    pixels = _rgb(image)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    rg, yb = red - green, 0.5 * (red + green) - blue
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))



def measure_appearance(image: np.ndarray) -> dict[str, float]:
    """The four measures of one 8-bit RGB image, keyed by ``APPEARANCE_ATTRIBUTES`` (the luma computed once)."""
    grey = luma(image)
    return {"brightness": float(grey.mean() / 255.0), "contrast": float(grey.std() / 255.0), "sharpness": fish(grey),
            "colourfulness": colourfulness(image)}


def tertile_levels(values: Sequence[float]) -> list[str]:
    """low / medium / high of each value by the tertiles of ``values`` (rule in the module docstring)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return []
    if not np.isfinite(data).all():
        raise ValueError("appearance values must be finite to be binned")
    low_cut, high_cut = np.quantile(data, [1 / 3, 2 / 3])
    return ["low" if v < low_cut else "high" if v > high_cut else "medium" for v in data]
