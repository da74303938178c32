"""The stage contract: what one learned model supplies; the trainer does the rest.

A stage is a dataclass whose fields are its hyper-parameters (``option(default, help)``; the
CLI makes one option per field, of any type ``iqa_store.cli.fields`` knows). It declares:

* ``data``: what it learns from (``Data.IMAGES``, ``Data.IMAGES_TEXTS``, ``Data.IMAGES_MOS``,
  always one split's training rows, never anything else, or ``Data.DATASETS_MOS``, every row of
  the datasets the stage's own fields name, read by its ``own_data``: a prior for other datasets);
* ``reader``: the extractor that reads the encoder it exports;
* ``defaults``: the schedule of its paper;

and implements ``build_model`` (called right after ``torch.manual_seed(seed)``), ``sample`` (one
training example -> what a batch is made of, in DataLoader workers, every random draw from
the generator it is given, so a sample depends only on (seed, epoch, image)), ``collate``,
``loss`` (one batch -> a scalar) and ``export`` (the trained model -> the encoder's weights
and config). ``trainable`` says which part of the model the optimiser updates and DDP wraps.
Optional hooks: ``check``, ``attach`` (read the store: a prior encoder), ``prepare`` (the whole
training data), ``batches`` (compose each step's batch: tasks instead of shuffled epochs) and
``parameter_groups`` (parts at their own multiple of the learning rate).
"""

from __future__ import annotations

import dataclasses
import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Sequence

if TYPE_CHECKING:
    import torch
    from torch import nn

    from iqa_store.store import FeatureStore
    from iqa_store.train.data import TrainingData


def option(default: Any, help: str) -> Any:
    """A hyper-parameter: its default and the help line the CLI shows."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("a mutable default would be shared between stages: use a tuple")
    return field(default=default, metadata={"help": help})


class Data(str, enum.Enum):
    """What a stage learns from."""

    IMAGES = "images"  # pixels only (self-supervised)
    IMAGES_TEXTS = "images+texts"  # pixels and the store's text annotations of each image
    IMAGES_MOS = "images+mos"  # pixels and MOS of one split's training rows (supervised)
    # pixels and MOS of every row of the datasets the stage itself names (``own_data``): a prior
    # for OTHER datasets (MetaIQA's), unscoped, so it must never be evaluated on those datasets
    DATASETS_MOS = "datasets+mos"


@dataclass(frozen=True)
class TrainingDefaults:
    """The schedule a stage's paper used; every value can be overridden on the command line."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0  # linear warm-up, in passes over the images (the trainer turns it into steps)


@dataclass(frozen=True)
class Example:
    """One training image as a stage's ``sample`` receives it: float [3, H, W] in [0, 1]."""

    image: "torch.Tensor"
    image_id: str
    mos: float | None = None  # Data.IMAGES_MOS: the image's MOS (the manifest's higher-is-better scale)
    texts: tuple[str, ...] = ()  # Data.IMAGES_TEXTS: the image's annotations


@dataclass(frozen=True)
class StepContext:
    """What ``loss`` may need besides the batch."""

    step: int
    total: int
    generator: "torch.Generator"  # seeded by (seed, step): identical on every process


@dataclass(frozen=True)
class Export:
    """The encoder a finished run registers: weights (safetensors) and the config its reader needs."""

    state_dict: dict[str, "torch.Tensor"]
    config: dict[str, Any]


@dataclass
class Stage(ABC):
    name: ClassVar[str]
    data: ClassVar[Data]
    reader: ClassVar[str]  # the extractor that reads the exported encoder
    defaults: ClassVar[TrainingDefaults]

    def hyperparameters(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Refuse settings that cannot work, before any data is read (ValueError)."""

    def attach(self, store: "FeatureStore") -> None:
        """Resolve what the stage reads from the store (a prior encoder) before the run is identified."""

    def own_data(self) -> "TrainingData":
        """``Data.DATASETS_MOS``: the rows of the datasets the stage's fields name."""
        raise NotImplementedError(f"{self.name} does not name its own training data")

    def prepare(self, data: "TrainingData") -> None:
        """Read what the stage needs of its whole training data before the first sample (MOS statistics)."""

    def batches(self, images: int, batch_size: int, seed: int, start: int, total: int, rank: int = 0,
                world_size: int = 1) -> "Iterable[list[tuple[int, int]]]":
        """The (epoch, image index) keys of the batches of steps ``start`` .. ``total`` - 1 on one
        process: shuffled epochs (``StepSampler``) unless a stage composes its batches (tasks)."""
        from iqa_store.train.data import StepSampler
        return StepSampler(images, batch_size, seed, start, total, rank, world_size)

    @abstractmethod
    def build_model(self) -> "nn.Module":
        """The whole model, including state that is not trained (queues, momentum copies)."""

    def trainable(self, model: "nn.Module") -> "nn.Module":
        """The part the optimiser updates and DDP wraps."""
        return model

    def parameter_groups(self, trainable: "nn.Module") -> list[dict[str, Any]]:
        """The optimiser's parameter groups; each runs at ``lr_scale`` (default 1) x the schedule's rate."""
        return [{"params": [p for p in trainable.parameters() if p.requires_grad]}]

    @abstractmethod
    def sample(self, example: Example, generator: "torch.Generator") -> Any:
        """What one image contributes to a batch."""

    @abstractmethod
    def collate(self, samples: Sequence[Any]) -> Any:
        """A batch from the samples of its images."""

    @abstractmethod
    def loss(self, model: "nn.Module", trainable: "nn.Module", batch: Any, context: StepContext) -> "torch.Tensor":
        """The batch's loss; ``trainable`` is ``trainable(model)`` or its DDP wrapper (call that one)."""

    @abstractmethod
    def export(self, model: "nn.Module") -> Export:
        """The trained encoder's weights and the config its reader needs (``feature_dim`` at least)."""
