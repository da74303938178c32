"""Blur group: Gaussian, lens (disk) and motion blur."""

from __future__ import annotations

from typing import Sequence

import torch

from iqa_store.distortions import _random
from iqa_store.distortions._kernels import disk_kernel, filter2d, filter_separable, gaussian_kernel1d, motion_kernel


def gaussian_blur(images: torch.Tensor, sigma: float, generator: torch.Generator | None = None, *,
                  truncate: float = 2.0) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` px, kernel side ``2 * ceil(truncate * sigma) + 1``."""
    return filter_separable(images, gaussian_kernel1d(float(sigma), float(truncate))).clamp(0.0, 1.0)


def lens_blur(images: torch.Tensor, radius: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Defocus blur: convolution with an anti-aliased disk of ``radius`` px."""
    return filter2d(images, disk_kernel(float(radius))).clamp(0.0, 1.0)


def motion_blur(images: torch.Tensor, length: float, generator: torch.Generator | None = None, *,
                angles: Sequence[float] | None = None) -> torch.Tensor:
    """Linear motion blur along a line of ``length`` px, one random direction per image.

    ``angles``: the directions (degrees) to choose from uniformly, e.g. ``(0, 90)``; None draws
    a direction uniformly in [0, 180).
    """
    directions = []
    for image_generator in _random.image_generators(generator, images.shape[0]):
        if angles is None:
            directions.append(_random.uniform(image_generator, 0.0, 180.0))
        else:
            directions.append(float(angles[_random.randint(image_generator, len(angles))]))
    kernels = torch.stack([torch.as_tensor(motion_kernel(float(length), angle)) for angle in directions])
    return filter2d(images, kernels).clamp(0.0, 1.0)
