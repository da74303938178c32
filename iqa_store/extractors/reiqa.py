"""Re-IQA content and quality features (saha2023-reiqa): a frozen ResNet at full and half scale.

Stored vector: ``cat(encoder(full), encoder(half))``, 2 x the backbone's feature dim (4096 for
ResNet-50), computed as the reference extraction does (avinabsaha/ReIQA,
``demo_{content,quality}_aware_feats.py``): the whole image at its native resolution, no crop;
half scale is Pillow's bicubic resize to ``(w // 2, h // 2)``; values in [0, 1] (ToTensor), then
ImageNet mean/std for the content encoder only (the quality encoder sees raw values).

Weights, exactly one of:

* ``weights``: a checkpoint file: the published ``reiqa_ckpts/*_aware_r50.pth`` (a DataParallel
  state dict under 'model': ``module.encoder.*`` plus the training head, ignored), a
  registry encoder's ``model.safetensors`` (``backbone.*``, from our training stages) or a bare
  backbone state dict. The backbone is the ``BACKBONES`` entry whose keys and shapes the file
  matches exactly. With a registry encoder (``--weights registry:NAME``, resolved by
  ``iqa_store.extraction.weights``) ``encoder_config`` is its config: the backbone and the
  input normalisation it was trained with.
* ``random_init`` with ``seed``: for tests only.

Images keep their own sizes, so a batch is run as one forward pass per distinct image shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np
from PIL import Image

from iqa_store.extractors.base import Extractor, ExtractorError, RunOptions
from iqa_store.images import read_rgb
from iqa_store.extractors.embedder import group_by_shape, half_scale, pixels_to_input
from iqa_store.extractors.neural import (TrainedWeights, autocast, check_precision, existing_weights_file,
                                        load_state_dict)
from iqa_store.nets import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, build_backbone, feature_dim

if TYPE_CHECKING:
    import torch

DEFAULT_BACKBONE = "resnet50"
NORMALIZATIONS = ("none", "imagenet")
# Where the backbone's weights sit inside a checkpoint, after 'module.' is stripped: the published
# Re-IQA files (MoCo's query network) and our registry's encoders; a bare state dict has no prefix.
_BACKBONE_PREFIXES = ("encoder.", "backbone.")
Pair = tuple["torch.Tensor", "torch.Tensor"]  # one image at full and at half scale, as network input


@dataclass
class ReiqaExtractor(TrainedWeights, Extractor):
    weights: str | None = None
    backbone: str | None = None  # None: the encoder's config, the file's exact match, or resnet50 for random_init
    random_init: bool = False
    seed: int = 0  # only used with random_init
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast)
    encoder_config: dict[str, Any] | None = None  # a registry encoder's config (backbone, input_normalization)
    version = "1"
    licence = "published checkpoints: see avinabsaha/ReIQA; encoders you pretrain: yours"
    normalization: ClassVar[str]  # the reference extraction's input normalisation for this encoder
    published_file: ClassVar[str]

    def __post_init__(self) -> None:
        check_precision(self.precision)
        chosen = [option for option in ("weights", "random_init") if getattr(self, option)]
        if len(chosen) > 1:
            raise ExtractorError(f"{self.name}: give one of --weights or --random-init, not {chosen}")
        if self.backbone is not None:
            BACKBONES.get(self.backbone)  # an unknown name fails here, listing the known ones
        if self.encoder_config is not None:
            self._check_encoder_config()
        if self.weights:
            self.weights = existing_weights_file(self.weights)
            backbone = (self.encoder_config or {}).get("backbone", self.backbone)
            self._load(load_state_dict(self.weights), self.weights, backbone)
        elif self.random_init:
            self.backbone = self.backbone or DEFAULT_BACKBONE

    def _check_encoder_config(self) -> None:
        config = self.encoder_config or {}
        if config.get("input_normalization") not in NORMALIZATIONS:
            raise ExtractorError(f"{self.name}: the encoder's input_normalization must be one of {NORMALIZATIONS}, "
                                 f"not {config.get('input_normalization')!r}")
        if self.backbone not in (None, config.get("backbone")):
            raise ExtractorError(f"{self.name}: the encoder is a {config.get('backbone')}, not a {self.backbone}")

    def _load(self, state: dict[str, Any], source: str, backbone: str | None) -> None:
        """Keep the backbone's tensors for ``prepare`` and settle which backbone they fit."""
        self._state = backbone_state(state)
        self.backbone = matching_backbone(self._state, source, backbone)

    # --- identity --------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return 2 * feature_dim(self.backbone or DEFAULT_BACKBONE)

    def input_normalization(self) -> str:
        """What the encoder was trained on: its registry config says; else the reference extraction's."""
        return self.encoder_config["input_normalization"] if self.encoder_config else self.normalization

    def settings(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "precision": self.precision,
                "preprocess": {"resize": "none (native resolution)", "scales": ["full", "half"],
                               "half_scale": "PIL bicubic to (w // 2, h // 2)", "values": "[0, 1]",
                               "normalization": self.input_normalization()}}

    def weights_source(self) -> str:
        return (f"--weights registry:NAME (an encoder from `iqa-store train {self.name}`), or --weights "
                f"reiqa_ckpts/{self.published_file} (avinabsaha/ReIQA)")

    def _no_weights_error(self) -> ExtractorError:
        return ExtractorError(f"{self.name} needs weights: --weights registry:NAME[/FINGERPRINT] (see `iqa-store ls`) "
                              f"or --weights FILE (the published reiqa_ckpts/{self.published_file})")

    # --- worker side -----------------------------------------------------------------------
    def load_item(self, path: Path) -> Pair:
        image = read_rgb(path)
        return self._to_input(image), self._to_input(half_scale(image, path))

    def _to_input(self, image: Image.Image) -> "torch.Tensor":
        if self.input_normalization() == "imagenet":
            return pixels_to_input(image, IMAGENET_MEAN, IMAGENET_STD)
        return pixels_to_input(image)

    def collate(self, items: Sequence[Pair]) -> list[Pair]:
        return list(items)  # sizes differ between images: compute groups them by shape

    # --- main-process side -----------------------------------------------------------------
    def prepare(self, options: RunOptions) -> None:
        self._place(lambda: build_backbone(self.backbone or DEFAULT_BACKBONE),
                    lambda model, state: model.load_state_dict(state, strict=True), options.device)

    def compute(self, batch: list[Pair]) -> np.ndarray:
        import torch
        full = self._encode([pair[0] for pair in batch])
        half = self._encode([pair[1] for pair in batch])
        return torch.cat([full, half], dim=1).cpu().numpy()

    def _encode(self, images: list["torch.Tensor"]) -> "torch.Tensor":
        """Backbone features of images of any sizes: one forward pass per distinct shape."""
        import torch
        out = torch.empty(len(images), feature_dim(self.backbone or DEFAULT_BACKBONE))
        for _, rows in group_by_shape(images):
            stacked = torch.stack([images[row] for row in rows]).to(self._device, non_blocking=True)
            with torch.inference_mode(), autocast(stacked.device.type, self.precision):
                out[rows] = self._model(stacked).float().cpu()
        return out


@dataclass
class ReiqaContent(ReiqaExtractor):
    """Re-IQA content encoder (MoCo-v2 on ImageNet-normalised crops)."""

    name = "reiqa-content"
    normalization = "imagenet"
    published_file = "content_aware_r50.pth"


@dataclass
class ReiqaQuality(ReiqaExtractor):
    """Re-IQA quality encoder (MoCo-v2 with the distortion bank), on unnormalised [0, 1] input."""

    name = "reiqa-quality"
    normalization = "none"
    published_file = "quality_aware_r50.pth"


def backbone_state(state: dict[str, Any]) -> dict[str, Any]:
    """The backbone's entries of a checkpoint, under torchvision's keys; heads are dropped."""
    for prefix in _BACKBONE_PREFIXES:
        if any(key.startswith(prefix) for key in state):
            return {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
    return state


def matching_backbone(state: dict[str, Any], source: str, wanted: str | None = None) -> str:
    """``wanted`` if ``state`` fits it exactly, else (``wanted`` None) the one backbone that does."""
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    candidates = [wanted] if wanted else BACKBONES.names()
    problems = {name: _differences(shapes, _backbone_shapes(name)) for name in candidates}
    fitting = [name for name, problem in problems.items() if not problem]
    if fitting:
        return fitting[0]  # exact keys and shapes: at most one of the registered backbones
    closest = min(problems, key=lambda name: len(problems[name]))
    target = f"backbone {wanted}" if wanted else f"any backbone ({', '.join(candidates)})"
    raise ExtractorError(f"{source} does not fit {target}; against {closest}: {'; '.join(problems[closest])}")


def _differences(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches, a few of each; empty when they match."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(f"{k} {list(found[k])} vs {list(expected[k])}" for k in set(found) & set(expected)
                    if found[k] != expected[k])
    return [f"{label} ({len(items)}): {items[:4]}" for label, items in
            (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if items]


@lru_cache(maxsize=None)
def _backbone_shapes(name: str) -> dict[str, tuple[int, ...]]:
    import torch
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_backbone(name)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}
