"""The two Re-IQA stages (Saha et al., CVPR 2023): content-aware and quality-aware encoders.

Content (section 3.1): plain MoCo-v2, two independently augmented crops of an image are a
positive pair; augmentations of MoCo-v2 (random resized crop 0.2-1, colour jitter 0.4/0.4/0.4/0.1
with p 0.8, grey p 0.2, Gaussian blur sigma 0.1-2 with p 0.5, flip), ImageNet normalisation.

Quality (sections 3.2, 4.3): for each source image,

1. ``n_aug`` distortions (distinct types of the Re-IQA bank, random levels); a chunk is the
   image and its ``n_aug`` distorted versions, at full scale and at half scale, where the half
   scale chunk is the distorted images downscaled, as the released code (avinabsaha/ReIQA,
   ``datasets/dataset.py``) makes it and as extraction sees a distorted image at half scale;
2. per scale, two overlap-area (OLA) crops of ``patch`` pixels whose overlap is within
   ``ola`` bounds, at the same place in every image of the chunk;
3. pair ``a`` = (crop 1 of version a, crop 2 of version a) is positive; in half of the pairs
   query and key are swapped (intra-pair half swap), so the keys of one step hold both crops
   and the same crop differently distorted is a negative (hypothesis H3). Those in-batch
   negatives are why this stage contrasts against the batch's keys as well as the queue.

Distortions are applied to the full-resolution region under the two crops (plus a margin),
not the whole image: the crops see the same pixels either way except where a filter reaches
past the margin, and the cost no longer grows with the image size. Types whose value is a
budget for the whole image (``per_image`` in the bank: blocks pasted, patches moved) are
applied to the whole image and then cut, or a small region would get all of the image's
blocks. Each scale distorts its own region with the same draws (a noise pattern is drawn
again, its strength is the same). Images whose shorter side is too small for a crop pair at
half scale are first upscaled (bicubic) to the smallest size that fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from iqa_store.distortions import apply as distort
from iqa_store.distortions import get_bank, sample_distinct
from iqa_store.distortions._random import uniform
from iqa_store.nets import IMAGENET_MEAN, IMAGENET_STD
from iqa_store.nets.resize import upscaled_to
from iqa_store.train.crops import Box, context_region, min_side, ola_pair
from iqa_store.train.moco import ContrastiveStage
from iqa_store.train.stage import TrainingDefaults, option


@dataclass
class ContentStage(ContrastiveStage):
    """Re-IQA content encoder: MoCo-v2 on two augmented crops of each image (ImageNet-normalised input)."""

    name: ClassVar[str] = "reiqa-content"
    reader: ClassVar[str] = "reiqa-content"
    input_normalization: ClassVar[str] = "imagenet"
    # MoCo-v2: 200 epochs, batch 256, lr 0.03 with cosine decay, SGD, weight decay 1e-4
    defaults: ClassVar[TrainingDefaults] = TrainingDefaults(epochs=200, batch_size=256, lr=0.03)
    batch_negatives: ClassVar[bool] = False

    crop: int = option(224, "side of the random resized crops")
    min_scale: float = option(0.2, "smallest crop area as a fraction of the image (RandomResizedCrop scale)")

    def views(self, image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._augment(image, generator)[None], self._augment(image, generator)[None]

    def _augment(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        top, left, height, width = _resized_crop_box(image.shape[-2], image.shape[-1], self.min_scale, generator)
        out = TF.resized_crop(image, top, left, height, width, [self.crop, self.crop], antialias=True).clamp(0, 1)
        if _chance(generator, 0.8):
            out = _colour_jitter(out, generator)
        if _chance(generator, 0.2):
            out = TF.rgb_to_grayscale(out, num_output_channels=3)
        if _chance(generator, 0.5):
            sigma = uniform(generator, 0.1, 2.0)
            out = TF.gaussian_blur(out, [_blur_kernel(self.crop)] * 2, [sigma, sigma])
        if _chance(generator, 0.5):
            out = TF.horizontal_flip(out)
        return TF.normalize(out, list(IMAGENET_MEAN), list(IMAGENET_STD))


@dataclass
class QualityStage(ContrastiveStage):
    """Re-IQA quality encoder: distortion chunks, OLA crop pairs, half swap, full and half scale ([0, 1] input)."""

    name: ClassVar[str] = "reiqa-quality"
    reader: ClassVar[str] = "reiqa-quality"
    input_normalization: ClassVar[str] = "none"
    # section 4.3: lr 0.6 with cosine annealing, batch 630, 25 epochs
    defaults: ClassVar[TrainingDefaults] = TrainingDefaults(epochs=25, batch_size=630, lr=0.6)
    batch_negatives: ClassVar[bool] = True

    n_aug: int = option(11, "distorted versions per image (distinct types, random levels)")
    patch: int = option(160, "side of the OLA crops")
    ola_min: float = option(0.10, "smallest overlap of the two crops, as a fraction of the patch area")
    ola_max: float = option(0.30, "largest overlap of the two crops")
    bank: str = option("reiqa", "distortion bank (iqa_store.distortions.BANKS)")
    scales: int = option(2, "1 = full scale only, 2 = full and half scale")

    def pairs_per_image(self) -> int:
        return (self.n_aug + 1) * self.scales

    def views(self, image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image = upscaled_to(image, min_side(self.patch) * 2 ** (self.scales - 1))
        distortions = sample_distinct(self.bank, self.n_aug, generator)
        pairs = [self._chunk_pairs(image, 2 ** scale, distortions, generator) for scale in range(self.scales)]
        return torch.cat([q for q, _ in pairs]), torch.cat([k for _, k in pairs])

    def _chunk_pairs(self, image: torch.Tensor, factor: int, distortions: list[tuple[str, int]],
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The crop pairs of the chunk at 1 / ``factor`` scale: distorted at full resolution, then downscaled."""
        height, width = image.shape[-2] // factor, image.shape[-1] // factor
        first, second = ola_pair(height, width, self.patch, (self.ola_min, self.ola_max), generator)
        top, left, region_height, region_width = context_region(first, second, height, width)
        window = (slice(None), slice(top * factor, (top + region_height) * factor),
                  slice(left * factor, (left + region_width) * factor))
        chunk = torch.stack([image[window]] + [distort_window(image, window, self.bank, kind, level, generator)
                                               for kind, level in distortions])
        if factor > 1:
            chunk = _downscale(chunk, (region_height, region_width))
        return half_swap(_cut(chunk, first, top, left), _cut(chunk, second, top, left), generator)


def distort_window(image: torch.Tensor, window: tuple[slice, slice, slice], bank: str, kind: str, level: int,
                   generator: torch.Generator) -> torch.Tensor:
    """``image[window]`` distorted as if the whole image had been: only the window is distorted,
    except for types whose value is a budget for the whole image (``per_image``), which are."""
    if get_bank(bank).entry(kind).per_image:
        return distort(image, bank, kind, level, generator)[window]
    return distort(image[window], bank, kind, level, generator)


def half_swap(first: torch.Tensor, second: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap query and key in a random half of the pairs (rows), in place; returns the pair."""
    swap = torch.randperm(len(first), generator=generator)[: len(first) // 2]
    first[swap], second[swap] = second[swap].clone(), first[swap].clone()
    return first, second


def _cut(chunk: torch.Tensor, box: Box, top: int, left: int) -> torch.Tensor:
    return chunk[:, :, box.top - top:box.top - top + box.size, box.left - left:box.left - left + box.size].clone()


def _downscale(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic, as extraction's half scale (Pillow's bicubic resize)."""
    return F.interpolate(images, size=list(size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)




def _resized_crop_box(height: int, width: int, min_scale: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop's sampling (scale [min_scale, 1], ratio [3/4, 4/3]) on our generator."""
    area = height * width
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * (uniform(generator, min_scale, 1.0))
        ratio = math.exp(uniform(generator, *log_ratio))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    side = min(height, width)  # fallback of torchvision: the central crop
    return (height - side) // 2, (width - side) // 2, side, side


def _colour_jitter(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ColorJitter(0.4, 0.4, 0.4, 0.1): the four adjustments in a random order."""
    brightness, contrast, saturation = (uniform(generator, 0.6, 1.4) for _ in range(3))
    hue = uniform(generator, -0.1, 0.1)
    steps = [lambda x: TF.adjust_brightness(x, brightness), lambda x: TF.adjust_contrast(x, contrast),
             lambda x: TF.adjust_saturation(x, saturation), lambda x: TF.adjust_hue(x, hue)]
    for index in torch.randperm(len(steps), generator=generator).tolist():
        image = steps[index](image)
    return image.clamp(0, 1)


def _blur_kernel(crop: int) -> int:
    """About a tenth of the crop, odd (23 at 224, as in MoCo-v2's torchvision port)."""
    return int(0.1 * crop) // 2 * 2 + 1


def _chance(generator: torch.Generator, p: float) -> bool:
    return uniform(generator) < p
