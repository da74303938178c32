"""What a pretraining stage is: hyper-parameters as dataclass fields, and the views of an image.

A stage turns one decoded image into (queries, keys): two tensors [n, 3, h, w] whose rows
pair up as positives. Everything random is drawn from the generator it is given, so a view
depends only on (seed, epoch, image index) and an interrupted run can be replayed exactly.
The trainer (``iqa_store.train.trainer``) does the rest for every stage alike.

``field(metadata={"help": ...})`` documents a hyper-parameter; the CLI builds one option per
field from it, so a new stage needs no CLI code.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


def option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainingDefaults:
    """The schedule a stage's paper used; every value can be overridden on the command line."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    weight_decay: float = 1e-4


@dataclass
class Stage(ABC):
    name: ClassVar[str]
    input_normalization: ClassVar[str]  # "none" or "imagenet": what the encoder expects at extraction
    defaults: ClassVar[TrainingDefaults]
    batch_negatives: ClassVar[bool]

    backbone: str = option("resnet50", "encoder network (iqa_store.train.BACKBONES)")
    head_hidden: int = option(0, "hidden width of the MLP projection head; 0 = the backbone's feature width")
    head_dim: int = option(128, "output width of the projection head")
    queue_size: int = option(65536, "negatives kept in the MoCo queue (0: the batch's own keys only, stages with in-batch negatives)")
    momentum: float = option(0.999, "key encoder momentum m in theta_k <- m theta_k + (1 - m) theta_q")
    temperature: float = option(0.2, "InfoNCE temperature tau")

    def hyperparameters(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @abstractmethod
    def views(self, image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries, keys) for one image given as float [3, H, W] in [0, 1]."""

    def pairs_per_image(self) -> int:
        """How many (query, key) rows ``views`` returns per image (constant, for batching)."""
        return 1
