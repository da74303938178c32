"""Brightness group: brighten, darken (tone curves) and mean shift."""

from __future__ import annotations

import torch

from iqa_store.distortions._colorspace import lab_to_rgb, rgb_to_lab, tone_curve


def _midtone_curve(values: torch.Tensor, midpoint: float) -> torch.Tensor:
    """The parabola through (0, 0), (0.5, ``midpoint``), (1, 1), clamped to [0, 1]."""
    return tone_curve(values, (0.0, 0.5, 1.0), (0.0, midpoint, 1.0))


def brighten(images: torch.Tensor, amount: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lift the mid-tones: curve with mid-point ``0.5 + amount / 2``, averaged 2:1 between the curve
    applied to R, G, B and the curve applied to CIELAB lightness."""
    midpoint = 0.5 + amount / 2.0
    lab = rgb_to_lab(images)
    lightness = _midtone_curve(lab[:, :1] / 100.0, midpoint) * 100.0
    via_lab = lab_to_rgb(torch.cat((lightness, lab[:, 1:]), dim=1)).clamp(0.0, 1.0)
    return ((2.0 * _midtone_curve(images, midpoint) + via_lab) / 3.0).clamp(0.0, 1.0)


def darken(images: torch.Tensor, amount: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lower the mid-tones: curve with mid-point ``0.5 - amount / 2`` applied to R, G, B."""
    return _midtone_curve(images, 0.5 - amount / 2.0)


def mean_shift(images: torch.Tensor, amount: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add ``amount`` (on the [0, 1] scale) to every value."""
    return (images + amount).clamp(0.0, 1.0)
