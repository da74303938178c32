"""CONTRIQUE's view augmentation (Madhusudana et al. 2022), which SLIQUE's image-image branch uses.

The released CONTRIQUE loader (pavancm/CONTRIQUE, ``modules/dataset_loader.py``) gives each
view one colour space drawn uniformly from five, and flips it horizontally with p = 0.5:

* grey: ITU-R BT.601 luma in all three channels (torchvision's ``RandomGrayscale``);
* LAB: CIE L*a*b* encoded as an 8-bit LAB image holds it (L* / 100, (a* + 128) / 255,
  (b* + 128) / 255). CONTRIQUE converts with littleCMS from sRGB to a D50 LAB profile; here the
  sRGB values are linearised and taken to XYZ under D65, Lab's own white (a documented
  stand-in: the two differ by the chromatic adaptation, a few units of a* and b*);
* HSV: hue, saturation and value in [0, 1] (Pillow's ``convert('HSV')``, unquantised);
* mean-subtracted: each channel minus its local Gaussian mean (7 taps, sigma 7/6, mirrored
  at the borders), min-max normalised with CONTRIQUE's 1e-3 guard on the 0-255 scale;
* RGB: unchanged.

CONTRIQUE also views an image at two scales (x1 and x1/2); SLIQUE's pairs are overlap-area
crops, whose overlap is defined on one grid, so here a pair is cut from the image at one scale
drawn per pair (Re-IQA draws its OLA pairs per scale the same way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from iqa_store.distortions._random import randint, uniform

COLOUR_SPACES = ("grey", "lab", "hsv", "mean-subtracted", "rgb")
BT601 = (0.299, 0.587, 0.114)
SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))
D65_WHITE = (0.95047, 1.0, 1.08883)
MS_TAPS, MS_SIGMA, MS_GUARD = 3, 7 / 6, 1e-3  # skvideo gen_gauss_window(3, 7/6): 2 x 3 + 1 taps


def to_grey(image: torch.Tensor) -> torch.Tensor:
    weights = image.new_tensor(BT601).view(3, 1, 1)
    return (image * weights).sum(0, keepdim=True).expand_as(image).clone()


def to_lab(image: torch.Tensor) -> torch.Tensor:
    linear = torch.where(image <= 0.04045, image / 12.92, ((image + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,jhw->ihw", image.new_tensor(SRGB_TO_XYZ), linear)
    ratio = xyz / image.new_tensor(D65_WHITE).view(3, 1, 1)
    epsilon, kappa = (6 / 29) ** 3, (29 / 6) ** 2 / 3
    f = torch.where(ratio > epsilon, ratio.clamp_min(epsilon) ** (1 / 3), kappa * ratio + 4 / 29)
    lightness, a, b = 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])
    return torch.stack([lightness / 100, (a + 128) / 255, (b + 128) / 255]).clamp(0, 1)


def to_hsv(image: torch.Tensor) -> torch.Tensor:
    red, green, blue = image
    value, largest = image.max(0)
    chroma = value - image.min(0).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(largest == 0, ((green - blue) / safe) % 6,
                      torch.where(largest == 1, (blue - red) / safe + 2, (red - green) / safe + 4)) / 6
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    return torch.stack([hue, saturation, value])


def gaussian_taps(dtype: torch.dtype) -> torch.Tensor:
    offsets = torch.arange(-MS_TAPS, MS_TAPS + 1, dtype=dtype)
    taps = torch.exp(-0.5 * offsets ** 2 / MS_SIGMA ** 2)
    return taps / taps.sum()


def mean_subtracted(image: torch.Tensor) -> torch.Tensor:
    """CONTRIQUE's MS transform per channel, on the 0-255 scale, normalised to [0, 1]."""
    values = image * 255
    taps = gaussian_taps(image.dtype)
    planes = values[:, None]  # [3, 1, H, W]: each channel its own image
    padded = _symmetric(planes, MS_TAPS)  # scipy's mode='reflect' (d c b a | a b c d), as CONTRIQUE filters
    blurred = F.conv2d(padded, taps.view(1, 1, 1, -1))
    blurred = F.conv2d(blurred, taps.view(1, 1, -1, 1))
    detail = (values[:, None] - blurred)[:, 0]
    low = detail.amin(dim=(1, 2), keepdim=True)
    spread = detail.amax(dim=(1, 2), keepdim=True) - low
    return (detail - low) / (spread + MS_GUARD)


def _symmetric(planes: torch.Tensor, width: int) -> torch.Tensor:
    """Pad the last two axes by mirroring with the edge sample repeated (scipy.ndimage 'reflect')."""
    rows = torch.cat([planes[..., :width, :].flip(-2), planes, planes[..., -width:, :].flip(-2)], dim=-2)
    return torch.cat([rows[..., :width].flip(-1), rows, rows[..., -width:].flip(-1)], dim=-1)


CONVERSIONS = {"grey": to_grey, "lab": to_lab, "hsv": to_hsv, "mean-subtracted": mean_subtracted,
               "rgb": lambda image: image}


def contrique_view(view: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One view: a colour space drawn uniformly from ``COLOUR_SPACES``, then a horizontal flip with p = 0.5."""
    converted = CONVERSIONS[COLOUR_SPACES[randint(generator, len(COLOUR_SPACES))]](view)
    return converted.flip(-1) if uniform(generator) < 0.5 else converted


def half_scale(image: torch.Tensor) -> torch.Tensor:
    """The image at half its size (antialiased bilinear, as CONTRIQUE's ``transforms.Resize`` on Pillow)."""
    size = [max(1, image.shape[-2] // 2), max(1, image.shape[-1] // 2)]
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
