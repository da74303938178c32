"""Colour group: saturation (HSV and Lab), colour diffusion, colour shift."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from iqa_store.distortions import _random
from iqa_store.distortions._colorspace import lab_to_rgb, rgb_to_lab
from iqa_store.distortions._kernels import filter_separable, gaussian_kernel1d


def color_saturation_hsv(images: torch.Tensor, factor: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiply the HSV saturation by ``factor`` (hue and value kept; a negative factor inverts chroma).

    Every channel of an HSV colour is ``V * (1 - S * g(H))``, so scaling S by ``factor`` is exactly
    ``V + factor * (c - V)`` per channel with ``V = max(R, G, B)``; no hue computation is needed.
    """
    value = images.amax(dim=1, keepdim=True)
    return (value + factor * (images - value)).clamp(0.0, 1.0)


def color_saturation_lab(images: torch.Tensor, factor: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiply the CIELAB a* and b* channels by ``factor``."""
    lab = rgb_to_lab(images)
    lab = torch.cat((lab[:, :1], lab[:, 1:] * factor), dim=1)
    return lab_to_rgb(lab).clamp(0.0, 1.0)


def color_diffusion(images: torch.Tensor, amount: float, generator: torch.Generator | None = None, *,
                    truncate: float = 2.0) -> torch.Tensor:
    """Blur the a*b* chroma planes (sigma ``1.5 * amount + 2``) and scale them by ``amount``."""
    lab = rgb_to_lab(images)
    chroma = filter_separable(lab[:, 1:], gaussian_kernel1d(1.5 * float(amount) + 2.0, float(truncate)))
    return lab_to_rgb(torch.cat((lab[:, :1], chroma * amount), dim=1)).clamp(0.0, 1.0)


def _edge_weight(images: torch.Tensor) -> torch.Tensor:
    """Per-image edge strength in [0, 1] ([B,1,H,W]): blurred gradient magnitude of the grey image,
    min-max normalised, clipped at its 1st and 99th percentiles and renormalised."""
    grey = (0.2989 * images[:, 0] + 0.5870 * images[:, 1] + 0.1140 * images[:, 2]).unsqueeze(1)
    gy, gx = torch.gradient(grey, dim=(2, 3))
    edges = filter_separable(torch.hypot(gx, gy), gaussian_kernel1d(4.0, 2.0))

    def normalise(e: torch.Tensor) -> torch.Tensor:
        low = e.amin(dim=(1, 2, 3), keepdim=True)
        high = e.amax(dim=(1, 2, 3), keepdim=True)
        return torch.where(high > low, (e - low) / (high - low).clamp(min=1e-12), e)

    edges = normalise(edges)
    flat = edges.flatten(1)
    low = torch.quantile(flat.float(), 0.01, dim=1).to(edges.dtype).view(-1, 1, 1, 1)
    high = torch.quantile(flat.float(), 0.99, dim=1).to(edges.dtype).view(-1, 1, 1, 1)
    return normalise(torch.minimum(torch.maximum(edges, low), high))


def color_shift(images: torch.Tensor, amount: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Misregister the green channel by ``amount`` px in a random (down-right quadrant) direction,
    blended in where the image has edges, so that coloured fringes appear along them."""
    weight = _edge_weight(images)
    out = []
    for index, image_generator in enumerate(_random.image_generators(generator, images.shape[0])):
        direction = torch.rand(2, generator=image_generator, device=image_generator.device, dtype=torch.float64)
        direction = direction / direction.norm().clamp(min=1e-12)
        dy, dx = (int(round(v)) for v in (direction * float(amount)).tolist())
        green = images[index, 1][None, None]
        pad = max(abs(dy), abs(dx))
        shifted = F.pad(green, (pad, pad, pad, pad), mode="replicate")
        height, width = green.shape[-2:]
        shifted = shifted[..., pad - dy: pad - dy + height, pad - dx: pad - dx + width]
        blended = shifted[0, 0] * weight[index, 0] + images[index, 1] * (1 - weight[index, 0])
        out.append(torch.stack((images[index, 0], blended, images[index, 2])))
    return torch.stack(out).clamp(0.0, 1.0)
