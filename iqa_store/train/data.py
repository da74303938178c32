"""Training data and the batches a stage makes of it.

Every random choice of a view is drawn from a generator seeded by (seed, epoch, image index),
and the order of images in an epoch by (seed, epoch): a batch depends on nothing but its step
number. That is what lets an interrupted run continue exactly where it stopped, with any
number of DataLoader workers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from iqa_store.fingerprint import fingerprint
from iqa_store.images import IMAGE_SUFFIXES, read_rgb
from iqa_store.store.scope import Scope
from iqa_store.train.stage import Example, Stage

@dataclass(frozen=True)
class TrainingData:
    """The images a stage trains on, with what else its ``data`` kind needs.

    ``mos`` (one value per image) exists only for data taken from one split's training rows
    (``from_split``), and ``scope`` then says which: the registry's record of that encoder
    carries it, and a fit uses the encoder's features only on that split.
    """

    source: str  # what the user named: a folder or a dataset
    paths: tuple[Path, ...]
    ids: tuple[str, ...]
    identity: str  # fingerprint of the file list with sizes and modification times (and MOS, if any)
    skipped: tuple[str, ...] = ()  # files that could not be opened, with the reason
    mos: tuple[float, ...] | None = None
    scope: Scope | None = None
    mos_range: tuple[float, float] | None = None  # the dataset's declared MOS scale (from_split)
    # the split's validation rows (from_split, protocols with a val part): what a stage may select on
    validation: "TrainingData | None" = None
    texts: tuple[tuple[str, ...], ...] | None = None  # Data.IMAGES_TEXTS: each image's annotations (with_texts)

    @classmethod
    def from_paths(cls, source: str, paths: Sequence[Path], ids: Sequence[str] | None = None,
                   mos: Sequence[float] | None = None, scope: Scope | None = None) -> "TrainingData":
        ids = [str(p) for p in paths] if ids is None else list(ids)
        keep, skipped = [], []
        for index, path in enumerate(paths):
            problem = _unreadable(path)
            if problem:
                skipped.append(f"{path}: {problem}")
            else:
                keep.append(index)
        if not keep:
            raise ValueError(f"no readable images in {source}" + (f" ({len(skipped)} unreadable)" if skipped else ""))
        readable = [Path(paths[i]) for i in keep]
        listing: list[list[Any]] = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in readable]
        kept_mos = None if mos is None else tuple(float(mos[i]) for i in keep)
        if kept_mos is not None:  # the labels are training data too: other MOS, another run
            listing = [row + [value] for row, value in zip(listing, kept_mos)]
        return cls(source, tuple(readable), tuple(ids[i] for i in keep), fingerprint(listing), tuple(skipped),
                   kept_mos, scope)

    @classmethod
    def from_folder(cls, folder: str | Path) -> "TrainingData":
        root = Path(folder).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return cls.from_paths(str(root), paths)

    @classmethod
    def from_manifest(cls, manifest: Any) -> "TrainingData":
        """Every image of a dataset, without its labels (self-supervised stages)."""
        paths = [Path(manifest.root) / p for p in manifest.table["path"]]
        return cls.from_paths(f"dataset {manifest.dataset} ({manifest.root})", paths)

    @classmethod
    def from_split(cls, manifest: Any, rows: Sequence[int], scope: Scope, validation_rows: Sequence[int] = (),
                   part: str = "train") -> "TrainingData":
        """The given rows (a split's training part) with their MOS, and the scope they were taken for;
        ``validation_rows`` (the split's val part, if any) become ``validation``."""
        rows = np.asarray(rows, dtype=np.int64)
        table = manifest.table.iloc[rows]
        paths = [Path(manifest.root) / p for p in table["path"]]
        data = cls.from_paths(f"dataset {manifest.dataset} ({manifest.root}), split {scope.split} {part} part",
                              paths, [str(i) for i in table["image_id"]], manifest.mos[rows].tolist(), scope)
        validation = (cls.from_split(manifest, validation_rows, scope, part="val") if len(validation_rows) else None)
        return dataclasses.replace(data, mos_range=_training_mos_range(manifest, data), validation=validation)

    def with_texts(self, texts: Sequence[Sequence[str]]) -> "TrainingData":
        """The same images, image i with ``texts[i]``; the texts are training data, so they join the identity."""
        if len(texts) != len(self.paths):
            raise ValueError(f"{len(texts)} lists of texts for {len(self.paths)} images")
        texts = tuple(tuple(str(text) for text in own) for own in texts)
        return dataclasses.replace(self, texts=texts, identity=fingerprint([self.identity, [list(t) for t in texts]]))

    def describe(self) -> dict[str, Any]:
        described = {"source": self.source, "images": len(self.paths), "identity": self.identity,
                     "skipped": list(self.skipped)}
        if self.scope is not None:  # which rows a supervised encoder saw: the leakage audit reads these
            described["training_ids"] = list(self.ids)
        if self.validation is not None:
            described["validation_ids"] = list(self.validation.ids)
        return described


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


class ExampleDataset(torch.utils.data.Dataset):
    """Items are keyed by (epoch, image index); each decodes its image and makes the stage's sample."""

    def __init__(self, data: TrainingData, stage: Stage, seed: int) -> None:
        self.data, self.stage, self.seed = data, stage, seed

    def __len__(self) -> int:
        return len(self.data.paths)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch, index))
        pixels = np.asarray(read_rgb(self.data.paths[index]), dtype=np.float32) / 255.0
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        mos = None if self.data.mos is None else self.data.mos[index]
        texts = () if self.data.texts is None else self.data.texts[index]
        return self.stage.sample(Example(image, self.data.ids[index], mos, texts), generator)


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


def _training_mos_range(manifest: Any, data: "TrainingData") -> tuple[float, float]:
    """The dataset's declared MOS scale; a scale the adapter took from the data's own extremes (a csv
    file without ``mos_range``) would carry the test rows' extremes, so the training rows' are used."""
    if manifest.info.get("mos_range_source") == "data" and data.mos:
        return min(data.mos), max(data.mos)
    return tuple(float(v) for v in manifest.mos_range)
