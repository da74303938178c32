"""Training images and the batches of views made from them.

Every random choice of a view is drawn from a generator seeded by (seed, epoch, image index),
and the order of images in an epoch by (seed, epoch): a batch depends on nothing but its step
number. That is what lets an interrupted run continue exactly where it stopped, with any
number of DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from iqa_store.images import IMAGE_SUFFIXES, read_rgb
from iqa_store.fingerprint import fingerprint
from iqa_store.train.stage import Stage

@dataclass(frozen=True)
class TrainingImages:
    """The images a stage trains on (labels, if any, are never read)."""

    source: str  # what the user named: a folder or a dataset
    paths: tuple[Path, ...]
    identity: str  # fingerprint of the file list with sizes and modification times
    skipped: tuple[str, ...] = ()  # files that could not be opened, with the reason

    @classmethod
    def from_paths(cls, source: str, paths: Sequence[Path]) -> "TrainingImages":
        readable, skipped = [], []
        for path in paths:
            problem = _unreadable(path)
            if problem:
                skipped.append(f"{path}: {problem}")
            else:
                readable.append(path)
        if not readable:
            raise ValueError(f"no readable images in {source}" + (f" ({len(skipped)} unreadable)" if skipped else ""))
        identity = fingerprint([[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in readable])
        return cls(source, tuple(readable), identity, tuple(skipped))

    @classmethod
    def from_folder(cls, folder: str | Path) -> "TrainingImages":
        root = Path(folder).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return cls.from_paths(str(root), paths)

    @classmethod
    def from_dataset(cls, name: str, root: str | Path | None = None, **options: Any) -> "TrainingImages":
        from iqa_store.datasets import load_manifest
        manifest = load_manifest(name, root, **options)
        paths = [Path(manifest.root) / p for p in manifest.table["path"]]
        return cls.from_paths(f"dataset {name} ({manifest.root})", paths)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "images": len(self.paths), "identity": self.identity,
                "skipped": list(self.skipped)}


def _unreadable(path: Path) -> str:
    """Why a file cannot be used, checked from its header only (cheap for large sets)."""
    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # PIL raises many types for bad data
        return f"{type(error).__name__}: {error}"
    return ""


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


class ViewDataset(torch.utils.data.Dataset):
    """Items are keyed by (epoch, image index); each decodes its image and makes the stage's views."""

    def __init__(self, images: TrainingImages, stage: Stage, seed: int) -> None:
        self.paths, self.stage, self.seed = images.paths, stage, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch, index))
        pixels = np.asarray(read_rgb(self.paths[index]), dtype=np.float32) / 255.0
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        return self.stage.views(image, generator)


def collate(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([q for q, _ in items]), torch.cat([k for _, k in items])


@dataclass(frozen=True)
class StepSampler:
    """Batches of (epoch, index) keys for steps ``start`` .. ``total`` - 1 of one process.

    An epoch is a permutation of all images cut into ``batch_size`` batches (the remainder is
    dropped so every step has the same size); each process takes its share of a batch.
    """

    images: int
    batch_size: int
    seed: int
    start: int
    total: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size > self.images:
            raise ValueError(f"batch size {self.batch_size} is larger than the {self.images} training images")
        if self.batch_size % self.world_size:
            raise ValueError(f"batch size {self.batch_size} does not divide among {self.world_size} processes")

    @property
    def steps_per_epoch(self) -> int:
        return self.images // self.batch_size

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, order_epoch = None, -1
        for step in range(self.start, self.total):
            epoch, position = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:
                generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
                order, order_epoch = torch.randperm(self.images, generator=generator).tolist(), epoch
            batch = order[position * self.batch_size:(position + 1) * self.batch_size]
            yield [(epoch, index) for index in batch[self.rank::self.world_size]]
