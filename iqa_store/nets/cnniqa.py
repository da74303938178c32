"""CNNIQA (Kang, Ye, Li and Doermann, CVPR 2014): a one-convolution patch network regressing quality.

The input is a grey image (ITU-R BT.601 luma, 0-255) under local contrast normalisation, cut
into non-overlapping 32x32 patches; each patch passes one 7x7 convolution with 50 kernels,
whose maps are pooled to one maximum and one minimum each (100 values), then two fully
connected layers (800 wide in the paper; onuoha2024 used 512) and one output. An image's
score is the mean of its patches' scores; its feature, the mean of their penultimate
activations.

Choices the sources leave open (``../shared/SUPERVISED.md`` section 6), made here:

* intensities on the 0-255 scale with the normalisation constant C = 1: on [0, 1] values
  C = 1 would swamp the local deviation (at most 0.5) and the step would be little more
  than mean subtraction;
* normalisation over the whole image (3x3 box window, symmetric borders), then patches,
  so a patch's border pixels see their true neighbours;
* every complete patch of the grid, including the last row and column when a side is an
  exact multiple of 32 (lidq92's loop drops those);
* dropout (p 0.5) on the input of the second fully connected layer, the paper's "second FC
  layer" as lidq92 reads it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 32
KERNEL = 7
KERNELS = 50
NORMALISATION_WINDOW = 3
NORMALISATION_C = 1.0
_LUMA = (0.299, 0.587, 0.114)


class CNNIQA(nn.Module):
    def __init__(self, fc_width: int = 800, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, KERNELS, KERNEL)
        self.fc1 = nn.Linear(2 * KERNELS, fc_width)
        self.fc2 = nn.Linear(fc_width, fc_width)
        self.fc3 = nn.Linear(fc_width, 1)
        self.dropout = nn.Dropout(dropout)

    def features(self, patches: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [N, fc_width] of patches [N, 1, 32, 32]."""
        maps = self.conv(patches).flatten(2)
        pooled = torch.cat([maps.amax(dim=2), maps.amin(dim=2)], dim=1)
        hidden = F.relu(self.fc1(pooled))
        return F.relu(self.fc2(self.dropout(hidden)))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """One score per patch, [N]."""
        return self.fc3(self.features(patches)).squeeze(1)


def grey(image: torch.Tensor) -> torch.Tensor:
    """Luma [H, W] on 0-255 of an RGB image [3, H, W] in [0, 1]."""
    weights = torch.tensor(_LUMA, dtype=image.dtype).view(3, 1, 1)
    return (image * weights).sum(dim=0) * 255.0


def normalise(luma: torch.Tensor) -> torch.Tensor:
    """Local contrast normalisation: (I - mean) / (std + C) over a 3x3 window, symmetric borders."""
    pad = NORMALISATION_WINDOW // 2
    # one pixel of symmetric padding (scipy's 'symmetric', lidq92's boundary) repeats the edge pixel
    padded = F.pad(luma[None, None], (pad, pad, pad, pad), mode="replicate")
    mean = F.avg_pool2d(padded, NORMALISATION_WINDOW, stride=1)
    square = F.avg_pool2d(padded * padded, NORMALISATION_WINDOW, stride=1)
    std = (square - mean * mean).clamp_min(0).sqrt()
    return ((luma[None, None] - mean) / (std + NORMALISATION_C))[0, 0]


def patch_grid(normalised: torch.Tensor) -> torch.Tensor:
    """Every complete non-overlapping 32x32 patch [N, 1, 32, 32], row by row."""
    height, width = normalised.shape
    rows, columns = height // PATCH, width // PATCH
    if rows == 0 or columns == 0:
        raise ValueError(f"an image of {width}x{height} px has no complete {PATCH}x{PATCH} patch")
    cropped = normalised[:rows * PATCH, :columns * PATCH]
    return cropped.reshape(rows, PATCH, columns, PATCH).permute(0, 2, 1, 3).reshape(-1, 1, PATCH, PATCH)


def image_patches(image: torch.Tensor) -> torch.Tensor:
    """The network's input for one RGB image [3, H, W] in [0, 1]: its normalised grey patches."""
    return patch_grid(normalise(grey(image))).contiguous()
