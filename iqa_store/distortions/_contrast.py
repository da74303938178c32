"""Sharpness and contrast group: high sharpen, linear and non-linear contrast change."""

from __future__ import annotations

import math

import torch

from iqa_store.distortions._colorspace import lab_to_rgb, rgb_to_lab, tone_curve
from iqa_store.distortions._kernels import filter_separable, gaussian_kernel1d


def high_sharpen(images: torch.Tensor, amount: float, generator: torch.Generator | None = None, *,
                 radius: float = 3.0) -> torch.Tensor:
    """Unsharp masking of CIELAB lightness: ``L + amount * (L - blur(L))``.

    The blur is a Gaussian of sigma ``ceil(2 * radius)`` on a ``2 * ceil(2 * radius) + 1`` window
    (the KADID code's filter).
    """
    lab = rgb_to_lab(images)
    sigma = float(math.ceil(2 * radius))
    lightness = lab[:, :1]
    blurred = filter_separable(lightness, gaussian_kernel1d(sigma, 1.0))
    sharpened = (lightness + amount * (lightness - blurred)).clamp(0.0, 100.0)
    return lab_to_rgb(torch.cat((sharpened, lab[:, 1:]), dim=1)).clamp(0.0, 1.0)


def linear_contrast(images: torch.Tensor, amount: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """S-shaped tone curve through (0.3, 0.25 - amount/4), (0.5, 0.5), (0.7, 0.75 + amount/4).

    ``amount`` > -0.2 raises contrast, ``amount`` < -0.2 lowers it (-0.2 is the identity).
    """
    knots_y = (0.0, 0.25 - amount / 4.0, 0.5, 0.75 + amount / 4.0, 1.0)
    return tone_curve(images, (0.0, 0.3, 0.5, 0.7, 1.0), knots_y)


def nonlinear_contrast(images: torch.Tensor, offset: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Compress the range [0, 1] onto [0.5 - ``offset``, 0.5 + ``offset``] (contrast ``2 * offset``)."""
    return 0.5 + (images.clamp(0.0, 1.0) - 0.5) * (2.0 * offset)
