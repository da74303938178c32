"""Synthetic distortions at five levels, for contrastive pretraining and the demo dataset.

Two registries and one call:

- ``DISTORTIONS``: distortion types by name. Each is a function
  ``fn(images, value, generator=None, **options) -> images`` on a float batch [B,3,H,W] in
  [0, 1] (any device; the result has the input's shape, device and dtype, values in [0, 1],
  and the input is never modified). ``value`` is the type's own parameter (a sigma, a JPEG
  quality...). Random types draw one seed per image from ``generator`` and everything for that
  image from it, so a batch equals its images applied one by one (in order, same generator),
  and a CPU generator gives the same result on every device.
- ``BANKS``: ``"reiqa"`` and ``"kadid24"``, each a ``Bank`` of entries (type, group, the five
  values, options), built from the parameter table ``PARAMETERS`` in ``banks.py``.
- ``apply(images, bank, type, level, generator)``: look up the bank's value for the level and run
  the type. Level 1 is the mildest, 5 the strongest; severity grows with the level for every
  type (checked by PSNR on real photographs in the tests).
- ``sample_distinct(bank, n, generator)``: ``n`` (type, level) pairs with distinct types and
  uniformly random levels, as Re-IQA draws its augmentations.

Importing this package does not import torch; the type modules load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iqa_store.distortions.banks import (BANKS, LEVELS, PARAMETERS, Bank, BankEntry, TypeParameters,
                                         check_level, get_bank)
from iqa_store.distortions.sampling import sample_distinct
from iqa_store.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = ["BANKS", "DISTORTIONS", "LEVELS", "PARAMETERS", "Bank", "BankEntry", "DistortionError",
           "TypeParameters", "apply", "get_bank", "sample_distinct"]

DISTORTIONS: Registry = Registry("distortion")

_TYPES = (
    ("gaussian_blur", "_blur", "Gaussian blur"),
    ("lens_blur", "_blur", "defocus blur with a disk kernel"),
    ("motion_blur", "_blur", "linear motion blur"),
    ("color_diffusion", "_color", "blurred and amplified a*b* chroma"),
    ("color_shift", "_color", "green channel misregistered along edges"),
    ("color_saturation_hsv", "_color", "HSV saturation scaled (desaturation, inversion)"),
    ("color_saturation_lab", "_color", "Lab a*b* scaled (over-saturation)"),
    ("jpeg", "_compression", "JPEG compression (Pillow)"),
    ("jpeg2000", "_compression", "JPEG 2000 compression (Pillow/OpenJPEG)"),
    ("white_noise", "_noise", "additive Gaussian noise in RGB"),
    ("white_noise_ycbcr", "_noise", "additive Gaussian noise in YCbCr"),
    ("impulse_noise", "_noise", "salt-and-pepper noise"),
    ("multiplicative_noise", "_noise", "speckle noise"),
    ("denoise", "_noise", "white noise then a Gaussian or box denoising blur"),
    ("brighten", "_brightness", "mid-tones lifted by a tone curve"),
    ("darken", "_brightness", "mid-tones lowered by a tone curve"),
    ("mean_shift", "_brightness", "constant added to every value"),
    ("jitter", "_spatial", "pixels scattered by random offsets"),
    ("non_eccentricity", "_spatial", "16x16 patches copied to nearby spots"),
    ("pixelate", "_spatial", "nearest-neighbour down/up scaling"),
    ("quantization", "_spatial", "values quantised to a few levels"),
    ("color_block", "_spatial", "uniform 32x32 colour squares pasted"),
    ("resize_bicubic", "_spatial", "bicubic down/up scaling"),
    ("resize_bilinear", "_spatial", "bilinear down/up scaling"),
    ("resize_lanczos", "_spatial", "Lanczos down/up scaling"),
    ("resize_nearest", "_spatial", "nearest-neighbour down/up scaling by an integer factor"),
    ("high_sharpen", "_contrast", "over-sharpening of L* (unsharp mask)"),
    ("linear_contrast", "_contrast", "contrast changed by an S-shaped tone curve"),
    ("nonlinear_contrast", "_contrast", "value range compressed around mid-grey"),
)
for _name, _module, _help in _TYPES:
    DISTORTIONS.register(_name, f"iqa_store.distortions.{_module}:{_name}", help=_help)
del _name, _module, _help


class DistortionError(ValueError):
    """Invalid input to a distortion: wrong shape, dtype, level, or a type outside the bank."""


def apply(images: "torch.Tensor", bank: str | Bank, type: str, level: int,
          generator: "torch.Generator | None" = None) -> "torch.Tensor":
    """Distort ``images`` (float [B,3,H,W] or [3,H,W] in [0, 1]) with ``type`` at ``level`` of ``bank``.

    Returns a new tensor of the same shape, device and dtype. Half-precision input is processed
    in float32. ``generator`` makes random types reproducible (see the module docstring).
    """
    import torch

    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4) or images.shape[-3] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else images.__class__.__name__
        raise DistortionError(f"images must be a float tensor [B,3,H,W] or [3,H,W], got {shape}")
    if not images.is_floating_point():
        raise DistortionError(f"images must be floating point in [0, 1], got {images.dtype}; divide uint8 by 255")
    try:
        check_level(level)
        entry = get_bank(bank).entry(type)
    except (KeyError, ValueError) as error:
        raise DistortionError(str(error)) from None
    function: Any = DISTORTIONS.get(type)
    single = images.dim() == 3
    batch = images[None] if single else images
    work = batch if batch.dtype in (torch.float32, torch.float64) else batch.float()
    out = function(work, entry.value(level), generator, **entry.options)
    out = out.to(images.dtype)
    return out[0] if single else out
