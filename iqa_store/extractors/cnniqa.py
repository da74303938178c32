"""CNNIQA features (Kang et al. 2014; onuoha2024 section 3.3.2 uses them as a distortion feature).

The stored vector is the mean over an image's 32x32 patches of the network's penultimate
activation (``fc_width``-d: 800, or 512 as onuoha2024 sized it), or with ``output="score"`` the
mean patch score on the MOS scale of its training rows (1-d, higher is better). The network and
its input (grey, local contrast normalisation, the patch grid) are ``iqa_store.nets.cnniqa``,
the same code the training stage (``iqa-store train cnniqa``) runs.

CNNIQA learns from MOS, so it has no published weights here: its encoders are trained per split
and found by their scope (``extract -m cnniqa --protocol P``), or given as ``--weights
registry:cnniqa/FP`` or a file (safetensors or a tensor-only torch file with the network's keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from iqa_store.extractors.base import Extractor, ExtractorError, RunOptions
from iqa_store.extractors.embedder import pixels_to_input
from iqa_store.extractors.neural import TrainedWeights, existing_weights_file, load_state_dict
from iqa_store.images import ImageReadError, read_rgb

if TYPE_CHECKING:
    import torch

OUTPUTS = ("features", "score")


@dataclass
class Cnniqa(TrainedWeights, Extractor):
    """CNNIQA: mean penultimate activation (or score) over the image's 32x32 patches."""

    weights: str | None = None
    encoder_config: dict[str, Any] | None = None  # a registry encoder's config (fc_width, MOS scale)
    output: str = "features"
    fc_width: int = 800  # used with random_init; weights carry their own width
    random_init: bool = False
    seed: int = 0  # only used with random_init
    name = "cnniqa"
    version = "1"
    description = "CNNIQA patch network (Kang et al. 2014), trained per split with `iqa-store train cnniqa`"
    licence = "encoders you train: yours"

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ExtractorError(f"cnniqa: output must be one of {OUTPUTS}, not {self.output!r}")
        if self.weights and self.random_init:
            raise ExtractorError("cnniqa: give --weights or --random-init, not both")
        if self.weights:
            self.weights = existing_weights_file(self.weights)
            self._state = load_state_dict(self.weights)
            if "fc1.weight" not in self._state:
                raise ExtractorError(f"{self.weights} is not a CNNIQA checkpoint: it has no fc1.weight "
                                     f"(keys: {sorted(self._state)[:5]})")
            self.fc_width = int(self._state["fc1.weight"].shape[0])

    @property
    def dim(self) -> int:
        return 1 if self.output == "score" else self.fc_width

    def mos_scale(self) -> tuple[float, float]:
        """(mean, std) of the training MOS the network's output is standardised by; (0, 1) if unknown."""
        config = self.encoder_config or {}
        return float(config.get("mos_mean", 0.0)), float(config.get("mos_std", 1.0))

    def settings(self) -> dict[str, Any]:
        return {"output": self.output, "fc_width": self.fc_width, "mos_scale": list(self.mos_scale()),
                "preprocess": "grey 0-255, 3x3 local contrast normalisation (C = 1), every 32x32 patch"}

    def weights_source(self) -> str:
        return "--protocol P (the encoders of `iqa-store train cnniqa`), --weights registry:cnniqa/FP or a file"

    def _no_weights_error(self) -> ExtractorError:
        return ExtractorError("cnniqa needs weights trained on MOS: train them with `iqa-store train cnniqa --dataset D "
                              "--protocol P`, then extract with --protocol P (or --weights registry:cnniqa/FP)")

    def load_item(self, path: Path) -> "torch.Tensor":
        from iqa_store.nets.cnniqa import image_patches
        image = pixels_to_input(read_rgb(path))
        try:
            return image_patches(image)
        except ValueError as error:
            raise ImageReadError(f"{path}: {error}") from None

    def collate(self, items: Sequence["torch.Tensor"]) -> list["torch.Tensor"]:
        return list(items)  # patch counts differ between images

    def prepare(self, options: RunOptions) -> None:
        from iqa_store.nets.cnniqa import CNNIQA
        self._place(lambda: CNNIQA(self.fc_width), lambda model, state: model.load_state_dict(state, strict=True),
                    options.device)

    def compute(self, batch: list["torch.Tensor"]) -> np.ndarray:
        import torch
        counts = [len(patches) for patches in batch]
        stacked = torch.cat(batch).to(self._device)
        with torch.inference_mode():
            values = self._model.features(stacked) if self.output == "features" else self._model(stacked)[:, None]
        means = torch.stack([part.mean(dim=0) for part in torch.split(values.float().cpu(), counts)])
        if self.output == "score":
            mean, std = self.mos_scale()
            means = means * std + mean
        return means.numpy().astype(np.float32)
