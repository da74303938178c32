"""Image tensors made large enough for a crop: shared by training stages and extractors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["upscaled_to"]


def upscaled_to(image: torch.Tensor, side: int) -> torch.Tensor:
    """[3, H, W] upscaled (bicubic, aspect kept) so that its shorter side is at least ``side``."""
    height, width = image.shape[-2:]
    shorter = min(height, width)
    if shorter >= side:
        return image
    size = [max(side, math.ceil(height * side / shorter)), max(side, math.ceil(width * side / shorter))]
    return F.interpolate(image[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1)
