"""Noise group: additive white noise (RGB and YCbCr), impulse, multiplicative noise, denoising."""

from __future__ import annotations

import math

import torch

from iqa_store.distortions import _random
from iqa_store.distortions._colorspace import rgb_to_ycbcr, ycbcr_to_rgb
from iqa_store.distortions._kernels import filter_separable, gaussian_kernel1d


def _per_image(images: torch.Tensor, generator: torch.Generator | None, draw) -> torch.Tensor:
    """Stack ``draw(image_generator)`` (one [C,H,W] tensor per image) into a batch."""
    generators = _random.image_generators(generator, images.shape[0])
    return torch.stack([draw(g) for g in generators])


def white_noise(images: torch.Tensor, variance: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add i.i.d. Gaussian noise of ``variance`` (on the [0, 1] scale) to every RGB value."""
    noise = _per_image(images, generator, lambda g: _random.randn(images.shape[1:], g, images))
    return (images + math.sqrt(variance) * noise).clamp(0.0, 1.0)


def white_noise_ycbcr(images: torch.Tensor, variance: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian noise of ``variance`` to the Y, Cb and Cr channels (BT.601, [0, 1] scale)."""
    noise = _per_image(images, generator, lambda g: _random.randn(images.shape[1:], g, images))
    return ycbcr_to_rgb(rgb_to_ycbcr(images) + math.sqrt(variance) * noise).clamp(0.0, 1.0)


def impulse_noise(images: torch.Tensor, density: float, generator: torch.Generator | None = None, *,
                  per_channel: bool = False) -> torch.Tensor:
    """Salt-and-pepper noise: a fraction ``density`` of the pixels set to black or white (half each).

    With ``per_channel`` each channel value is hit independently (coloured specks, the KADID
    code's behaviour); otherwise whole pixels turn black or white (the Re-IQA code's).
    """
    channels, height, width = images.shape[1:]
    shape = (channels, height, width) if per_channel else (1, height, width)
    draws = _per_image(images, generator, lambda g: _random.rand(shape, g, images))
    out = images.clone()
    out = torch.where(draws < density / 2, torch.zeros_like(out), out)
    return torch.where(draws > 1.0 - density / 2, torch.ones_like(out), out)


def multiplicative_noise(images: torch.Tensor, variance: float,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Speckle: ``x + x * n`` with ``n`` Gaussian of ``variance``."""
    noise = _per_image(images, generator, lambda g: _random.randn(images.shape[1:], g, images))
    return (images + images * math.sqrt(variance) * noise).clamp(0.0, 1.0)


def denoise(images: torch.Tensor, variance: float, generator: torch.Generator | None = None, *,
            blur_sigma: float = 3.0, box_size: int = 5) -> torch.Tensor:
    """White noise of ``variance``, then a "denoiser": per image, at random, a Gaussian blur of
    ``blur_sigma`` px or a ``box_size`` x ``box_size`` box blur (the Re-IQA code's two filters)."""
    generators = _random.image_generators(generator, images.shape[0])
    noise = torch.stack([_random.randn(images.shape[1:], g, images) for g in generators])
    use_box = torch.tensor([_random.randint(g, 2) == 1 for g in generators], device=images.device)
    noisy = (images + math.sqrt(variance) * noise).clamp(0.0, 1.0)
    gaussian = filter_separable(noisy, gaussian_kernel1d(float(blur_sigma), 3.0))
    box = filter_separable(noisy, torch.full((box_size,), 1.0 / box_size, dtype=torch.float64))
    return torch.where(use_box.view(-1, 1, 1, 1), box, gaussian).clamp(0.0, 1.0)
