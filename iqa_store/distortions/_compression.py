"""Compression group: JPEG and JPEG 2000, encoded and decoded with Pillow one image at a time."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch
from PIL import Image


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3,H,W] float in [0, 1] -> [H,W,3] uint8 (rounded), on the CPU."""
    return (image.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def from_uint8(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """[H,W,3] uint8 -> [3,H,W] float in [0, 1] on ``like``'s device and dtype."""
    tensor = torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    return tensor.to(device=like.device, dtype=like.dtype) / 255.0


def _round_trip(images: torch.Tensor, save_options: dict[str, Any]) -> torch.Tensor:
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(to_uint8(image)).save(buffer, **save_options)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(from_uint8(np.asarray(decoded.convert("RGB")), images))
    return torch.stack(out)


def jpeg(images: torch.Tensor, quality: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """JPEG at ``quality`` (libjpeg scale 1-100, Pillow defaults: 4:2:0 chroma subsampling)."""
    return _round_trip(images, {"format": "JPEG", "quality": int(quality)})


def jpeg2000(images: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """JPEG 2000 (OpenJPEG, irreversible 9/7 wavelet) at compression ``ratio``, one quality layer.

    Up to 8 resolutions, fewer for small images (OpenJPEG needs ``2**(n-1)`` px per side).
    """
    smallest = min(images.shape[-2:])
    resolutions = max(1, min(8, int(math.log2(max(smallest, 1)))))
    return _round_trip(images, {"format": "JPEG2000", "quality_mode": "rates", "quality_layers": [float(ratio)],
                                "num_resolutions": resolutions, "irreversible": True})
