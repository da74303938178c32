"""FLIVE (the PaQ-2-PiQ database), read from the official release.

Layout (``ROOT`` is what the user passes, or ``$IQA_FLIVE_ROOT``: the ``database/`` folder or
the folder holding it)::

    database/labels_image.csv          name,mos (CRLF line ends): 39,810 images, MOS 0-100
    database/labels640.csv             the official test list (name_image, ...): 1,827 images
    database/labels=640_padded.csv     training images (name_image, ..., is_valid): is_valid
                                       True marks the official validation images
    database/blur_dataset/ voc_emotic_ava/ EE371R/ ...   the images; names are relative to database/

The official split: test = the images of labels640.csv, val = those marked ``is_valid`` in
labels=640_padded.csv, train = the rest. Without the two split files there is no official split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.csv_folder import parse_number, read_label_csv
from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.datasets.official import FolderIndex, Published, in_range, require_file

__all__ = ["FLIVE"]

LABELS, TEST_LIST, TRAIN_LIST = "labels_image.csv", "labels640.csv", "labels=640_padded.csv"
MOS_RANGE = (0.0, 100.0)
_TRUE = {"true", "1", "yes"}


@dataclass
class FLIVE(DatasetAdapter):
    """FLIVE / PaQ-2-PiQ: 39,810 in-the-wild images, MOS 0-100 (higher is better), official split."""

    name: ClassVar[str] = "flive"
    env_var: ClassVar[str | None] = "IQA_FLIVE_ROOT"
    layout: ClassVar[str] = (f"ROOT/{LABELS} (name,mos; names relative to the database/ folder), optional "
                             f"ROOT/{TEST_LIST} and ROOT/{TRAIN_LIST} for the official split, image folders "
                             "beside them; ROOT may also be the folder holding database/")
    citation: ClassVar[str] = ("Z. Ying, H. Niu, P. Gupta, D. Mahajan, D. Ghadiyaram, A. Bovik. From patches to "
                               "pictures (PaQ-2-PiQ): Mapping the perceptual space of picture quality. CVPR 2020.")
    published: ClassVar[Published] = Published(39810, "MOS 0-100, higher is better", splits={"test": 1827})

    def read(self, root: Path) -> Manifest:
        labels = require_file(root, [LABELS, f"database/{LABELS}"], dataset=self.name, layout=self.layout)
        base = labels.parent / "database" if (labels.parent / "database").is_dir() else labels.parent
        images = FolderIndex(root, base)
        table = read_label_csv(labels)
        table.require(["name", "mos"])
        records = []
        for line, row in table.rows:
            name = row["name"].strip()
            where = f"{table.where(line)} ({name})"
            mos = in_range(parse_number(row["mos"], source=where), MOS_RANGE, source=where, what="MOS")
            records.append({"image_id": name, "path": images.resolve(name, source=where), "mos": mos, "source": where})
        if not records:
            raise ManifestError(f"{labels}: no data rows after the header")
        frame = pd.DataFrame.from_records(records)
        info = {"label_file": labels.relative_to(root).as_posix()}
        test_list, train_list = (labels.parent / TEST_LIST), (labels.parent / TRAIN_LIST)
        if test_list.is_file() and train_list.is_file():
            frame["split"] = _official_split(frame["image_id"].tolist(), test_list, train_list)
            info["split_files"] = [p.relative_to(root).as_posix() for p in (test_list, train_list)]
        elif test_list.is_file() or train_list.is_file():
            missing = train_list if test_list.is_file() else test_list
            raise ManifestError(f"flive: the official split needs both {TEST_LIST} and {TRAIN_LIST}; "
                                f"{missing} is missing")
        return Manifest(self.name, root, frame, MOS_RANGE, "higher_better", info)


def _official_split(names: list[str], test_list: Path, train_list: Path) -> list[str]:
    test = _listed(test_list, names)
    validation = _listed(train_list, names, flag="is_valid")
    return ["test" if n in test else "val" if n in validation else "train" for n in names]


def _listed(path: Path, known: list[str], flag: str | None = None) -> set[str]:
    """Names in ``path`` (with ``flag`` true, when given); a name not in labels_image.csv is an error."""
    table = read_label_csv(path)
    table.require(["name_image", flag])
    names, known_set = set(), set(known)
    for line, row in table.rows:
        name = row["name_image"].strip()
        if name not in known_set:
            raise ManifestError(f"{table.where(line)}: image {name!r} is not in {LABELS}")
        if flag is None or row[flag].strip().lower() in _TRUE:
            names.add(name)
    return names
