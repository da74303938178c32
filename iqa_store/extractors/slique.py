"""SLIQUE features (zhou2024-slique-tadac): the frozen image encoder at full and half scale.

Stored vector: ``cat(h(full) / ||h(full)||, h(half) / ||h(half)||)``, h the trunk's adaptively
pooled features, 2 x the trunk width (4096 for ResNet-50), as the released ``demo_feat.py``
computes it: the whole image at its native resolution, no crop, values in [0, 1]
(``ToTensor``, no mean/std); half scale is Pillow's bicubic resize to ``(w // 2, h // 2)``.
Unlike ``demo_feat.py``, which flips both copies at random (never leaving one unflipped) so
its features change from run to run, nothing is flipped: two extractions are identical.

Weights, exactly one of:

* ``weights``: the released ``SLIQUE.tar`` (a CON_model state dict: the trunk under
  ``model.encoder.<i>.*`` and ``visual.*``), a registry encoder's ``model.safetensors`` from
  ``iqa-store train slique`` (``trunk.*``; ``encoder_config`` then gives its backbone and width),
  or a bare torchvision ResNet state dict; read with ``weights_only=True`` or safetensors;
* ``random_init`` with ``seed``: for tests only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from iqa_store.extractors.base import Extractor, ExtractorError, RunOptions
from iqa_store.extractors.embedder import group_by_shape, half_scale, pixels_to_input
from iqa_store.extractors.neural import (TrainedWeights, autocast, check_precision, existing_weights_file,
                                        load_state_dict)
from iqa_store.images import read_rgb
from iqa_store.nets import BACKBONES

if TYPE_CHECKING:
    import torch

DEFAULT_BACKBONE = "resnet50"
DEFAULT_WIDTH = 64
PUBLISHED_FILE = "SLIQUE.tar"
Pair = tuple["torch.Tensor", "torch.Tensor"]


@dataclass
class Slique(TrainedWeights, Extractor):
    """SLIQUE's image encoder: L2-normalised pooled ResNet features at full and half scale."""

    weights: str | None = None
    backbone: str | None = None  # None: the encoder's config, else resnet50 (the released model)
    width: int | None = None  # None: the encoder's config, else 64
    random_init: bool = False
    seed: int = 0  # only used with random_init
    precision: str = "fp32"
    encoder_config: dict[str, Any] | None = None  # a registry encoder's config (backbone, width)
    name = "slique"
    version = "1"
    licence = "released checkpoint: Iceuro/SLIQUE ships no licence; encoders you pretrain: yours"

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.weights and self.random_init:
            raise ExtractorError("slique: give one of --weights or --random-init, not both")
        config = self.encoder_config or {}
        for key in ("backbone", "width"):
            if config.get(key) is not None and getattr(self, key) not in (None, config[key]):
                raise ExtractorError(f"slique: the encoder's {key} is {config[key]!r}, not {getattr(self, key)!r}")
        BACKBONES.get(self.network()[0])  # an unknown name fails here, listing the known ones
        if self.network()[1] < 1:
            raise ExtractorError(f"slique: the trunk width must be positive, got {self.network()[1]}")
        if self.weights:
            self.weights = existing_weights_file(self.weights)
            self._state = load_state_dict(self.weights)

    def network(self) -> tuple[str, int]:
        """(backbone, width): given, else the registry encoder's, else the released ResNet-50's."""
        config = self.encoder_config or {}
        backbone = self.backbone or config.get("backbone") or DEFAULT_BACKBONE
        width = self.width or config.get("width") or DEFAULT_WIDTH
        return backbone, int(width)

    # --- identity --------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        from iqa_store.nets.slique import trunk_dim
        return 2 * trunk_dim(*self.network())

    def settings(self) -> dict[str, Any]:
        backbone, width = self.network()
        return {"backbone": backbone, "width": width, "precision": self.precision,
                "preprocess": {"resize": "none (native resolution)", "scales": ["full", "half"],
                               "half_scale": "PIL bicubic to (w // 2, h // 2)", "values": "[0, 1]",
                               "flips": "none", "features": "pooled trunk output, L2-normalised per scale"}}

    def weights_source(self) -> str:
        return (f"--weights registry:NAME (an encoder from `iqa-store train slique`), or --weights {PUBLISHED_FILE} "
                "(Iceuro/SLIQUE, Google Drive)")

    def _no_weights_error(self) -> ExtractorError:
        return ExtractorError(f"slique needs weights: --weights registry:NAME[/FINGERPRINT] (see `iqa-store ls`) or "
                              f"--weights FILE (the released {PUBLISHED_FILE})")

    # --- worker side -----------------------------------------------------------------------
    def load_item(self, path: Path) -> Pair:
        image = read_rgb(path)
        return pixels_to_input(image), pixels_to_input(half_scale(image, path))

    def collate(self, items: Sequence[Pair]) -> list[Pair]:
        return list(items)  # sizes differ between images: compute groups them by shape

    # --- main-process side -----------------------------------------------------------------
    def prepare(self, options: RunOptions) -> None:
        from iqa_store.nets.slique import build_trunk
        self._place(lambda: build_trunk(*self.network()), self._load, options.device)

    def _load(self, trunk: Any, state: dict[str, Any]) -> None:
        from iqa_store.nets.slique import load_trunk
        try:
            load_trunk(trunk, state, str(self.weights))
        except ValueError as error:
            raise ExtractorError(str(error)) from None

    def compute(self, batch: list[Pair]) -> np.ndarray:
        import torch
        full = self._encode([pair[0] for pair in batch])
        half = self._encode([pair[1] for pair in batch])
        return torch.cat([full, half], dim=1).numpy()

    def _encode(self, images: list["torch.Tensor"]) -> "torch.Tensor":
        """Normalised pooled features of images of any sizes: one forward pass per distinct shape."""
        import torch

        from iqa_store.nets.slique import pooled_features
        out = torch.empty(len(images), self.dim // 2)
        for _, rows in group_by_shape(images):
            stacked = torch.stack([images[row] for row in rows]).to(self._device, non_blocking=True)
            with torch.inference_mode(), autocast(stacked.device.type, self.precision):
                out[rows] = pooled_features(self._model, stacked).float().cpu()
        return out
