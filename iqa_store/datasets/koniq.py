"""KonIQ-10k, read from the official release as downloaded.

Layout (``ROOT`` is what the user passes, or ``$IQA_KONIQ_ROOT``)::

    ROOT/koniq10k_scores_and_distributions.csv   image_name,c1..c5,c_total,MOS,SD,MOS_zscore
    ROOT/1024x768/10004473376.jpg ...             from koniq10k_1024x768.zip (or 512x384/)
    ROOT/koniq10k_distributions_sets.csv          optional: the official train/val/test split

The release is sometimes unpacked with one extra folder (``ROOT/koniq10k/...``): the scores
CSV is looked for in ``ROOT`` first, then one level down, and the image folder next to it
(then in ``ROOT``). The sets file is looked for next to the scores CSV, in ``ROOT``, then one
level down.

The label file has two quality columns on different scales: ``MOS`` (1-5, used here) and
``MOS_zscore`` (0-100). In the sets file ``MOS`` is on the 0-100 scale and c1..c5 are
fractions: from that file only ``set`` is read.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.csv_folder import normalise_split, parse_number, read_label_csv, safe_relative_path
from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.datasets.official import Published, locate_file, require_file

__all__ = ["KonIQ"]

SCORES_FILE = "koniq10k_scores_and_distributions.csv"
SETS_FILE = "koniq10k_distributions_sets.csv"
RESOLUTIONS = ("1024x768", "512x384")
MOS_RANGE = (1.0, 5.0)


@dataclass
class KonIQ(DatasetAdapter):
    """KonIQ-10k: 10,073 in-the-wild images, MOS 1-5 (higher is better), SD per image.

    ``resolution`` picks the image folder: ``"1024x768"`` (the published scores were collected
    at this size) or ``"512x384"``. The image id is the published ``image_name`` for both.
    """

    name: ClassVar[str] = "koniq"
    env_var: ClassVar[str | None] = "IQA_KONIQ_ROOT"
    layout: ClassVar[str] = (f"ROOT/{SCORES_FILE} and ROOT/1024x768/*.jpg (or ROOT/512x384/); optional "
                             f"ROOT/{SETS_FILE} for the official split; the same one level down "
                             f"(ROOT/koniq10k/...) is accepted")
    citation: ClassVar[str] = ("V. Hosu, H. Lin, T. Sziranyi, D. Saupe. KonIQ-10k: An ecologically valid database "
                               "for deep learning of blind image quality assessment. IEEE Transactions on Image "
                               "Processing 29, 4041-4056, 2020.")
    published: ClassVar[Published] = Published(10073, "MOS 1-5, higher is better",
                                                splits={"train": 7058, "val": 1000, "test": 2015})

    resolution: str = "1024x768"

    def read(self, root: Path) -> Manifest:
        root = Path(root)
        if self.resolution not in RESOLUTIONS:
            raise ManifestError(f"koniq: resolution {self.resolution!r} is not one of {list(RESOLUTIONS)}")
        scores_path = require_file(root, [SCORES_FILE], dataset=self.name, layout=self.layout)
        image_dir = self._image_dir(root, scores_path.parent)
        image_prefix = image_dir.relative_to(root).as_posix()

        table = read_label_csv(scores_path)
        table.require(["image_name", "MOS", "SD"])
        if not table.rows:
            raise ManifestError(f"{scores_path}: no data rows after the header")
        records = []
        first_line: dict[str, int] = {}
        for line, row in table.rows:
            where = table.where(line)
            image = safe_relative_path(image_dir, row["image_name"], source=where)
            if image in first_line:
                raise ManifestError(f"{where}: duplicate image_name {image!r} (first on line {first_line[image]})")
            first_line[image] = line
            where = f"{where} ({image})"
            mos = parse_number(row["MOS"], source=where, what="MOS")
            if not MOS_RANGE[0] <= mos <= MOS_RANGE[1]:
                hint = " (that looks like the 0-100 z-score scale, not the 1-5 MOS)" if mos > MOS_RANGE[1] else ""
                raise ManifestError(f"{where}: MOS {mos:g} outside {MOS_RANGE[0]:g}-{MOS_RANGE[1]:g}{hint}")
            sd = parse_number(row["SD"], source=where, what="SD")
            if sd < 0:
                raise ManifestError(f"{where}: negative SD {sd:g}")
            records.append({"image_id": image, "path": posixpath.join(image_prefix, image), "mos": mos,
                            "mos_std": sd, "mos_original": mos, "reference_id": None, "split": None})

        frame = pd.DataFrame.from_records(records)
        info = {"label_file": scores_path.relative_to(root).as_posix(), "resolution": self.resolution}
        sets_path = _find_sets_file(root, scores_path.parent)
        if sets_path is not None:
            frame["split"] = _read_official_split(sets_path, scores_path, frame["image_id"].tolist())
            info["split_file"] = sets_path.relative_to(root).as_posix()
        return Manifest(dataset=self.name, root=root, table=frame, mos_range=MOS_RANGE,
                        original_direction="higher_better", info=info)

    def _image_dir(self, root: Path, label_dir: Path) -> Path:
        candidates = list(dict.fromkeys([label_dir / self.resolution, root / self.resolution]))
        for candidate in candidates:
            if candidate.is_dir():
                return candidate
        other = [r for r in RESOLUTIONS if r != self.resolution
                 and any((c.parent / r).is_dir() for c in candidates)]
        hint = f"; found {other[0]}/ instead: pass resolution={other[0]!r}" if other else ""
        raise ManifestError(f"koniq: image folder {self.resolution}/ not found; expected "
                            f"{candidates[0]} (unpack koniq10k_{self.resolution}.zip next to {SCORES_FILE}){hint}")


def _find_sets_file(root: Path, label_dir: Path) -> Path | None:
    beside = label_dir / SETS_FILE
    return beside if beside.is_file() else locate_file(root, [SETS_FILE], dataset="koniq")


def _read_official_split(sets_path: Path, scores_path: Path, images: list[str]) -> list[str]:
    """The ``set`` column (training/validation/test) of every image, in the order of ``images``.

    Only ``image_name`` and ``set`` are read: this file's ``MOS`` is on the 0-100 z-score scale.
    """
    table = read_label_csv(sets_path)
    table.require(["image_name", "set"])
    split: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, row in table.rows:
        where = table.where(line)
        image = posixpath.normpath(row["image_name"].strip().replace("\\", "/"))
        if image in first_line:
            raise ManifestError(f"{where}: duplicate image_name {image!r} (first on line {first_line[image]})")
        first_line[image] = line
        if not row["set"].strip():
            raise ManifestError(f"{where} ({image}): empty set; every image must be assigned to a split")
        split[image] = normalise_split(row["set"], source=f"{where} ({image})")
    unassigned = [i for i in images if i not in split]
    unknown = sorted(set(split) - set(images))
    if unassigned or unknown:
        parts = []
        if unassigned:
            parts.append(f"{len(unassigned)} image(s) of {scores_path.name} missing from {sets_path.name}: "
                         f"{unassigned[:10]}")
        if unknown:
            parts.append(f"{len(unknown)} image(s) in {sets_path.name} not in {scores_path.name}: {unknown[:10]}")
        raise ManifestError(f"koniq: image names differ between {scores_path} and {sets_path}; " + "; ".join(parts))
    return [split[i] for i in images]
