"""The extractor contract.

An extractor is a dataclass whose fields are its settings. Fields that change the numbers
go into the fingerprint (``fingerprint_inputs``); run-time knobs (device, batch size,
workers) are passed to ``prepare`` and the runner and never change the stored values
beyond floating-point noise.

The work is split so decoding can run in DataLoader worker processes:

* ``load_item(path)`` runs in a worker: decode the file and preprocess it. It must not touch
  the model, and ``self`` must stay picklable until ``prepare`` has run.
* ``collate(items)`` builds a batch (default: stack tensors or arrays).
* ``compute(batch)`` runs in the main process after ``prepare`` and returns float32 [B, D].

A CPU-bound hand-crafted extractor (BRISQUE) does all of its work in ``load_item`` so it is
parallel over images for free, and ``compute`` just stacks.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from iqa_store.fingerprint import fingerprint
from iqa_store.images import DECODING_VERSION


class ExtractorError(RuntimeError):
    """An extractor that cannot be built or run (missing weights, bad settings)."""


@dataclass(frozen=True)
class RunOptions:
    """Run-time knobs that do not change the stored numbers."""

    device: str = "cpu"
    batch_size: int = 32
    workers: int = 0


@dataclass
class Extractor(ABC):
    name: ClassVar[str]
    version: ClassVar[str]  # bump whenever a code change alters the output values
    description: ClassVar[str] = ""
    licence: ClassVar[str] = ""  # of the weights (or the method), for ``iqa-store models``

    @property
    @abstractmethod
    def dim(self) -> int: ...

    def weights_source(self) -> str:
        """Where the weights come from; "" for a method without weights."""
        return ""

    def weights_available(self) -> bool:
        """True when extraction can start without downloading anything."""
        return True

    def settings(self) -> dict[str, Any]:
        """The dataclass fields: what a user chose. Stored in the feature set attributes."""
        return dataclasses.asdict(self)

    def weights_identity(self) -> dict[str, Any]:
        """How the weights are identified (published tag or file hash); {} for none."""
        return {}

    def fingerprint_inputs(self) -> dict[str, Any]:
        return {"extractor": self.name, "version": self.version, "settings": self.settings(),
                "weights": self.weights_identity(), "decoding": DECODING_VERSION}

    def fingerprint(self) -> str:
        return fingerprint(self.fingerprint_inputs())

    def prepare(self, options: RunOptions) -> None:
        """Load weights onto the device. Called once in the main process before compute."""

    @abstractmethod
    def load_item(self, path: Path) -> Any: ...

    def collate(self, items: Sequence[Any]) -> Any:
        first = items[0]
        if isinstance(first, np.ndarray):
            return np.stack(items)
        import torch
        return torch.stack(list(items))

    @abstractmethod
    def compute(self, batch: Any) -> np.ndarray: ...
