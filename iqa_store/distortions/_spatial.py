"""Spatial group: pixelate, jitter, non-eccentricity, colour blocks, quantisation; resize down/up."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from iqa_store.distortions import _random


def pixelate(images: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Nearest-neighbour down- and up-scaling by ``z = 0.95 - strength ** 0.6`` (the reference codes' map)."""
    scale = 0.95 - float(strength) ** 0.6
    height, width = images.shape[-2:]
    small = (max(1, int(scale * height)), max(1, int(scale * width)))
    low = F.interpolate(images, size=small, mode="nearest-exact")
    return F.interpolate(low, size=(height, width), mode="nearest-exact")


def jitter(images: torch.Tensor, amount: float, generator: torch.Generator | None = None, *,
           iterations: int = 5) -> torch.Tensor:
    """Scatter pixels: ``iterations`` times, resample every pixel at an offset drawn from
    N(0, ``amount``^2) px per axis (bilinear, replicate borders)."""
    batch, _, height, width = images.shape
    offsets = torch.stack([_random.randn((iterations, height, width, 2), g, images)
                           for g in _random.image_generators(generator, batch)])  # [B,I,H,W,2] (x, y) in px
    ys, xs = torch.meshgrid(torch.arange(height, device=images.device, dtype=images.dtype),
                            torch.arange(width, device=images.device, dtype=images.dtype), indexing="ij")
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=images.device, dtype=images.dtype)
    base = torch.stack((xs, ys), dim=-1) * scale - 1.0  # normalised grid, align_corners=True
    out = images
    for step in range(iterations):
        grid = base + offsets[:, step] * float(amount) * scale
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.clamp(0.0, 1.0)


def non_eccentricity(images: torch.Tensor, count: float, generator: torch.Generator | None = None, *,
                     patch: int = 16, radius: int = 16) -> torch.Tensor:
    """Copy ``count`` random ``patch`` x ``patch`` blocks to a spot up to ``radius / 2`` px away.

    Needs images of at least ``patch + 2 * radius`` px per side.
    """
    batch, _, height, width = images.shape
    if min(height, width) < patch + 2 * radius:
        raise ValueError(f"non_eccentricity needs images of at least {patch + 2 * radius} px per side, "
                         f"got {height}x{width}")
    out = images.clone()
    for index, g in enumerate(_random.image_generators(generator, batch)):
        for _ in range(int(count)):
            top = int(_random.uniform(g) * (height - patch - 2 * radius)) + radius
            left = int(_random.uniform(g) * (width - patch - 2 * radius)) + radius
            new_top = int(round((_random.uniform(g) - 0.5) * radius + top))
            new_left = int(round((_random.uniform(g) - 0.5) * radius + left))
            block = out[index, :, top:top + patch, left:left + patch].clone()
            out[index, :, new_top:new_top + patch, new_left:new_left + patch] = block
    return out


def color_block(images: torch.Tensor, count: float, generator: torch.Generator | None = None, *,
                patch: int = 32) -> torch.Tensor:
    """Paint ``count`` uniformly coloured ``patch`` x ``patch`` squares at random places."""
    batch, _, height, width = images.shape
    out = images.clone()
    side_h, side_w = min(patch, height), min(patch, width)
    for index, g in enumerate(_random.image_generators(generator, batch)):
        for _ in range(int(count)):
            colour = _random.rand((3, 1, 1), g, images)
            top = int(_random.uniform(g) * (height - side_h + 1))
            left = int(_random.uniform(g) * (width - side_w + 1))
            out[index, :, top:top + side_h, left:left + side_w] = colour
    return out


def quantization(images: torch.Tensor, levels: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Quantise every value to ``levels`` uniform bins, each replaced by its centre.

    The KADID MATLAB code picks the thresholds with multi-level Otsu, the ARNIQA code uses
    uniform bins and stretches the bin indices to [0, 1] per image; the stretch changes the
    brightness by an image-dependent amount (severity is then not monotone in the level), so
    here every value becomes the centre of its bin.
    """
    count = int(levels)
    index = torch.clamp(torch.floor(images * count), 0, count - 1)
    return (index + 0.5) / count


_PIL_FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def resize(images: torch.Tensor, factor: float, generator: torch.Generator | None = None, *,
           method: str = "bicubic") -> torch.Tensor:
    """Downscale by ``factor`` and back to the original size with one Pillow resampling filter
    (``nearest``, ``bilinear``, ``bicubic`` or ``lanczos``), on float planes: no 8-bit rounding."""
    if method not in _PIL_FILTERS:
        raise ValueError(f"unknown resize method {method!r}; known: {sorted(_PIL_FILTERS)}")
    height, width = images.shape[-2:]
    small = (max(1, int(width / factor)), max(1, int(height / factor)))
    flat = images.detach().to("cpu", torch.float32).reshape(-1, height, width).numpy()
    planes = [np.asarray(Image.fromarray(plane).resize(small, _PIL_FILTERS[method])
                         .resize((width, height), _PIL_FILTERS[method])) for plane in flat]
    out = torch.from_numpy(np.stack(planes)).reshape(images.shape)
    return out.to(device=images.device, dtype=images.dtype).clamp(0.0, 1.0)


resize_bicubic = partial(resize, method="bicubic")
resize_bilinear = partial(resize, method="bilinear")
resize_lanczos = partial(resize, method="lanczos")
resize_nearest = partial(resize, method="nearest")
