"""Full-reference measures between a distorted and a pristine batch: PSNR and SSIM.

Used to check that severity grows with the level and to make the demo dataset's synthetic
labels. Inputs are float [B,3,H,W] (or [3,H,W]) in [0, 1]; outputs are float64 [B]. SSIM's
filtering runs in the inputs' precision (float32 unless one input is float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(distorted: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as [B,C,H,W] in a common float dtype (at least float32)."""
    distorted = distorted[None] if distorted.dim() == 3 else distorted
    reference = reference[None] if reference.dim() == 3 else reference
    if distorted.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(distorted.shape)} vs {tuple(reference.shape)}")
    dtype = torch.promote_types(torch.promote_types(distorted.dtype, reference.dtype), torch.float32)
    return distorted.to(dtype), reference.to(dtype)


def psnr(distorted: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (inf for identical images)."""
    distorted, reference = _check(distorted, reference)
    mse = ((distorted.double() - reference.double()) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(distorted: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, averaged over R, G, B and positions.

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, no padding (positions where the
    window fits). Images smaller than the window use a window of their size.
    """
    distorted, reference = _check(distorted, reference)
    size = min(11, *distorted.shape[-2:])
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    kernel = torch.exp(-(offsets**2) / (2 * 1.5**2))
    kernel = (kernel / kernel.sum()).to(device=distorted.device, dtype=distorted.dtype)
    # the five local means of one image in one grouped convolution per axis
    stack = torch.cat((distorted, reference, distorted * distorted, reference * reference, distorted * reference),
                      dim=1)
    channels = stack.shape[1]
    row = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    column = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    means = F.conv2d(F.conv2d(stack, row, groups=channels), column, groups=channels).double()
    mu_x, mu_y, xx, yy, xy = means.chunk(5, dim=1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(dim=1)
