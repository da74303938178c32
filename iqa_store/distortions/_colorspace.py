"""Colour-space conversions (sRGB <-> CIELAB D65, RGB <-> YCbCr) and spline tone curves, batched."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

# sRGB primaries, D65 white; rows give X, Y, Z from linear R, G, B
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423),
               (0.212671, 0.715160, 0.072169),
               (0.019334, 0.119193, 0.950227))
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_DELTA = 6.0 / 29.0


def _mix(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix, images)


def _matrix(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> CIELAB (L in [0, 100]), D65 white."""
    linear = torch.where(images <= 0.04045, images / 12.92, ((images.clamp(min=0) + 0.055) / 1.055) ** 2.4)
    xyz = _mix(linear, _matrix(_RGB_TO_XYZ, images)) / _matrix(_WHITE_D65, images).view(1, 3, 1, 1)
    f = torch.where(xyz > _DELTA**3, xyz.clamp(min=_DELTA**3) ** (1.0 / 3.0), xyz / (3 * _DELTA**2) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(1)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB -> sRGB, not clipped (callers clamp to [0, 1])."""
    lightness, a, b = lab.unbind(1)
    fy = (lightness + 16.0) / 116.0
    f = torch.stack((fy + a / 500.0, fy, fy - b / 200.0), dim=1)
    xyz = torch.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4.0 / 29.0))
    xyz = xyz * _matrix(_WHITE_D65, lab).view(1, 3, 1, 1)
    inverse = torch.linalg.inv(_matrix(_RGB_TO_XYZ, lab).double()).to(lab.dtype)
    linear = _mix(xyz, inverse)
    return torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055)


# ITU-R BT.601 full-range YCbCr on [0, 1] data (Cb, Cr centred on 0.5)
_RGB_TO_YCBCR = ((0.299, 0.587, 0.114),
                 (-0.168736, -0.331264, 0.5),
                 (0.5, -0.418688, -0.081312))


def rgb_to_ycbcr(images: torch.Tensor) -> torch.Tensor:
    out = _mix(images, _matrix(_RGB_TO_YCBCR, images))
    return out + _matrix((0.0, 0.5, 0.5), images).view(1, 3, 1, 1)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    centred = ycbcr - _matrix((0.0, 0.5, 0.5), ycbcr).view(1, 3, 1, 1)
    inverse = torch.linalg.inv(_matrix(_RGB_TO_YCBCR, ycbcr).double()).to(ycbcr.dtype)
    return _mix(centred, inverse)


_CURVE_STEPS = 4096  # linear interpolation between 4097 samples: error below 1e-6 for these curves


@lru_cache(maxsize=64)
def _curve_table(knots_x: tuple[float, ...], knots_y: tuple[float, ...]) -> np.ndarray:
    from scipy.interpolate import CubicSpline  # not-a-knot; through 3 knots it is the parabola

    spline = CubicSpline(np.asarray(knots_x, float), np.asarray(knots_y, float))
    return np.clip(spline(np.linspace(0.0, 1.0, _CURVE_STEPS + 1)), 0.0, 1.0)


def tone_curve(values: torch.Tensor, knots_x: tuple[float, ...], knots_y: tuple[float, ...]) -> torch.Tensor:
    """Map ``values`` in [0, 1] through the not-a-knot cubic spline through the knots, clamped to [0, 1].

    This is the "curves" adjustment of the KADID-10k MATLAB code (``spline`` then ``ppval``),
    evaluated from a table of 4097 samples with linear interpolation.
    """
    table = torch.as_tensor(_curve_table(tuple(map(float, knots_x)), tuple(map(float, knots_y))),
                            dtype=values.dtype, device=values.device)
    position = values.clamp(0.0, 1.0) * _CURVE_STEPS
    index = position.floor().clamp(max=_CURVE_STEPS - 1)
    fraction = position - index
    index = index.long()
    low = table[index]
    return low + (table[index + 1] - low) * fraction
