"""Convolution kernels (Gaussian, disk, motion line) and batched filtering with replicate borders."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


@lru_cache(maxsize=64)
def gaussian_kernel1d(sigma: float, truncate: float) -> np.ndarray:
    """Normalised 1-D Gaussian of size ``2 * ceil(truncate * sigma) + 1``.

    Taps below ``eps * max`` are zeroed (as MATLAB's ``fspecial`` does), so a tiny sigma gives
    the identity.
    """
    half = int(math.ceil(truncate * sigma))
    x = np.arange(-half, half + 1, dtype=np.float64)
    kernel = np.exp(-(x * x) / (2.0 * sigma * sigma))
    kernel[kernel < np.finfo(np.float64).eps * kernel.max()] = 0.0
    return kernel / kernel.sum()


@lru_cache(maxsize=64)
def disk_kernel(radius: float, supersample: int = 16) -> np.ndarray:
    """Normalised pillbox of ``radius`` pixels: each tap is the pixel's area inside the circle.

    The area is estimated on a ``supersample`` x ``supersample`` grid per pixel, which gives the
    anti-aliased edge of MATLAB's ``fspecial('disk')`` to within about 1e-3 per tap.
    """
    half = int(math.ceil(radius - 0.5))
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    centres = np.arange(-half, half + 1, dtype=np.float64)
    sub = (centres[:, None] + offsets[None, :]).reshape(-1)  # sub-pixel coordinates along one axis
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2) <= radius * radius
    size = 2 * half + 1
    area = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return area / area.sum()


def motion_kernel(length: float, angle_degrees: float) -> np.ndarray:
    """Normalised anti-aliased line of ``length`` pixels through the centre at ``angle_degrees``.

    0 degrees is horizontal, 90 vertical. A tap's weight is ``max(0, 1 - d)`` with ``d`` the
    distance from the pixel centre to the segment of half-length ``(length - 1) / 2`` (a line one
    pixel wide, as in MATLAB's ``fspecial('motion')``); length 1 is the identity. The kernel size
    depends only on ``length``, so kernels of one length and different angles can be stacked.
    """
    half_length = max(float(length) - 1.0, 0.0) / 2.0
    radius = int(math.ceil(half_length)) + 1
    coords = np.arange(-radius, radius + 1, dtype=np.float64)
    y, x = np.meshgrid(-coords, coords, indexing="ij")  # rows go down, so y points up
    phi = math.radians(angle_degrees)
    ux, uy = math.cos(phi), math.sin(phi)
    along = np.clip(x * ux + y * uy, -half_length, half_length)
    distance = np.hypot(x - along * ux, y - along * uy)
    kernel = np.clip(1.0 - distance, 0.0, None)
    return kernel / kernel.sum()


def filter2d(images: torch.Tensor, kernel: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Convolve every channel of ``images`` [B,C,H,W] with ``kernel`` using replicate borders.

    ``kernel`` is [kh, kw] (one kernel for all images) or [B, kh, kw] (one per image); both sides
    must be odd. The output has the input's shape, device and dtype.
    """
    kernel = torch.as_tensor(kernel, dtype=images.dtype, device=images.device)
    batch, channels, height, width = images.shape
    kh, kw = kernel.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel sides must be odd, got {kh}x{kw}")
    padded = F.pad(images, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
    # conv2d is a correlation; flip so that this is a true convolution
    kernel = torch.flip(kernel, dims=(-2, -1))
    if kernel.dim() == 2:
        weight = kernel.expand(channels, 1, kh, kw)
        return F.conv2d(padded, weight, groups=channels)
    if kernel.shape[0] != batch:
        raise ValueError(f"{kernel.shape[0]} kernels for a batch of {batch} images")
    weight = kernel[:, None].expand(batch, channels, kh, kw).reshape(batch * channels, 1, kh, kw)
    out = F.conv2d(padded.reshape(1, batch * channels, *padded.shape[-2:]), weight, groups=batch * channels)
    return out.reshape(batch, channels, height, width)


def filter_separable(images: torch.Tensor, kernel1d: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Convolve with ``outer(kernel1d, kernel1d)`` as two 1-D passes, replicate borders."""
    kernel = torch.as_tensor(kernel1d, dtype=images.dtype, device=images.device).flip(0)
    channels = images.shape[1]
    half = kernel.numel() // 2
    out = F.pad(images, (half, half, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, kernel.numel()), groups=channels)
    out = F.pad(out, (0, 0, half, half), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, kernel.numel(), 1), groups=channels)
