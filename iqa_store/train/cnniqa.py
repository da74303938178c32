"""CNNIQA as a supervised stage: patches labelled with their image's MOS, L1 loss, trained per split.

Each image of a batch contributes ``patches_per_image`` patches drawn at random (without
replacement) from its grid of non-overlapping 32x32 patches, every one labelled with the
image's MOS; the loss is the mean absolute error over all patches (Kang et al. 2014; lidq92's
re-implementation: Adam 1e-3, constant rate, batches of 128 patches, 500 epochs; the paper
itself used SGD with momentum, ``--optimizer sgd``). MOS is standardised with the mean and
standard deviation of the training rows themselves, kept in the encoder's config so the
extractor's score is on the MOS scale again; nothing of the other rows is read.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iqa_store.nets.cnniqa import CNNIQA, image_patches
from iqa_store.train.data import TrainingData
from iqa_store.train.stage import Data, Example, Export, Stage, StepContext, TrainingDefaults, option


@dataclass
class CnniqaStage(Stage):
    """CNNIQA (Kang et al. 2014): a patch CNN regressing MOS, one model per split on its training rows."""

    name: ClassVar[str] = "cnniqa"
    data: ClassVar[Data] = Data.IMAGES_MOS
    reader: ClassVar[str] = "cnniqa"
    # lidq92/CNNIQA: Adam, lr 1e-3, no weight decay, 128 patches a batch (4 images x 32 here), 500 epochs
    defaults: ClassVar[TrainingDefaults] = TrainingDefaults(epochs=500, batch_size=4, lr=1e-3, optimizer="adam",
                                                            weight_decay=0.0, schedule="constant")

    fc_width: int = option(800, "width of both fully connected layers (the paper: 800; onuoha2024: 512)")
    dropout: float = option(0.5, "dropout on the input of the second fully connected layer")
    patches_per_image: int = option(32, "random 32x32 patches of each image per step (all of them if it has fewer)")

    def __post_init__(self) -> None:
        self._mos_scale: tuple[float, float] | None = None

    def check(self) -> None:
        if self.fc_width < 1 or self.patches_per_image < 1 or not 0 <= self.dropout < 1:
            raise ValueError("cnniqa: fc_width and patches_per_image must be positive and dropout in [0, 1)")

    def prepare(self, data: TrainingData) -> None:
        """Standardise MOS by the training rows' own mean and standard deviation."""
        mos = data.mos or ()
        spread = statistics.pstdev(mos) if len(mos) > 1 else 0.0
        self._mos_scale = (statistics.fmean(mos), spread or 1.0)

    def build_model(self) -> nn.Module:
        return CNNIQA(self.fc_width, self.dropout)

    def sample(self, example: Example, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self._mos_scale is None or example.mos is None:
            raise ValueError("cnniqa trains on MOS: its data must be a split's training rows")
        patches = image_patches(example.image)
        chosen = torch.randperm(len(patches), generator=generator)[:self.patches_per_image]
        mean, std = self._mos_scale
        return patches[chosen], torch.full((len(chosen),), (example.mos - mean) / std)

    def collate(self, samples: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([p for p, _ in samples]), torch.cat([t for _, t in samples])

    def loss(self, model: nn.Module, trainable: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
             context: StepContext) -> torch.Tensor:
        patches, targets = batch
        return F.l1_loss(trainable(patches), targets)

    def export(self, model: nn.Module) -> Export:
        mean, std = self._mos_scale or (0.0, 1.0)
        config: dict[str, Any] = {"feature_dim": self.fc_width, "fc_width": self.fc_width, "mos_mean": mean,
                                  "mos_std": std, "input": "grey 0-255, 3x3 local contrast normalisation, 32 px patches"}
        return Export(model.state_dict(), config)
