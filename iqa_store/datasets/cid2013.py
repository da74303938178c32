"""CID2013 (Camera Image Database), read from the official release.

Layout (``ROOT`` is what the user passes, or ``$IQA_CID2013_ROOT``)::

    ROOT/CID2013 data - version 12112014.xlsx   sheet "CID2013 MOS": Source_ID,
                                                "Image set specific  MOS", "Realigned MOS", ...
    ROOT/IS1/co1/IS_I_C01_D01.jpg ...           six image sets IS1-IS6, six scene subsets each

474 of the images are scored. ``Source_ID`` names an image without folder or extension; the
image's folders give its image set and scene subset. The scene subset is the split group (a
scene never in two parts) and the image set its stratum: onuoha2024 (section 4.1) trains on
four scene subsets of every image set and tests on the other two (protocol ``scenes-4-2``).

``score="realigned"`` (default) uses the realigned MOS, comparable across image sets (it can be
slightly negative); ``score="image_set"`` the MOS within each image set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.datasets.official import FolderIndex, Published, cell_number, in_range, locate_file, read_sheet

__all__ = ["CID2013"]

LABELS = "CID2013 data - version 12112014.xlsx"
SHEET = "CID2013 MOS"
SCORES = {"realigned": "Realigned MOS", "image_set": "Image set specific MOS"}
IMAGE_SET, SCENE = re.compile(r"^IS\d+$", re.IGNORECASE), re.compile(r"^co\d+$", re.IGNORECASE)
MOS_RANGE = (-10.0, 100.0)  # the realigned MOS reaches about -9.5


@dataclass
class CID2013(DatasetAdapter):
    """CID2013: 474 scored photographs from 79 cameras, MOS about 0-100 (higher is better)."""

    name: ClassVar[str] = "cid2013"
    env_var: ClassVar[str | None] = "IQA_CID2013_ROOT"
    layout: ClassVar[str] = (f"ROOT/{LABELS} (sheet {SHEET!r}; another 'CID2013*.xlsx' is accepted) and "
                             "ROOT/IS1..IS6/co1..co6/<Source_ID>.jpg")
    citation: ClassVar[str] = ("T. Virtanen, M. Nuutinen, M. Vaahteranoksa, P. Oittinen, J. Hakkinen. CID2013: a "
                               "database for evaluating no-reference image quality assessment algorithms. IEEE "
                               "Transactions on Image Processing 24(1), 390-402, 2015.")
    published: ClassVar[Published] = Published(474, "realigned MOS about -10-100, higher is better")

    score: str = "realigned"

    def read(self, root: Path) -> Manifest:
        if self.score not in SCORES:
            raise ManifestError(f"cid2013: score {self.score!r} is not one of {sorted(SCORES)}")
        labels = self._labels(root)
        sheet = read_sheet(labels, ["Source_ID", SCORES[self.score]], sheet=SHEET)
        images = FolderIndex(root, labels.parent)
        records = []
        for where, image_id, (score,) in sheet.named_rows():
            mos = in_range(cell_number(score, source=where, what=SCORES[self.score]), MOS_RANGE, source=where,
                           what=SCORES[self.score])
            path = images.find(image_id, source=where)
            if path is None:
                raise ManifestError(f"{where}: no image file {image_id}.jpg under {labels.parent}/IS*/co*/ "
                                    "(its folders give its scene subset, which splits need)")
            image_set, scene = self._scene(images, path, where)
            records.append({"image_id": image_id, "path": path, "mos": mos, "group": f"{image_set}/{scene}",
                            "stratum": image_set, "source": where})
        if not records:
            raise ManifestError(f"{labels}: no scored images under the header of sheet {sheet.sheet!r}")
        return Manifest(self.name, root, pd.DataFrame.from_records(records), MOS_RANGE, "higher_better",
                        {"label_file": labels.relative_to(root).as_posix(), "score": SCORES[self.score]})

    def _labels(self, root: Path) -> Path:
        found = locate_file(root, [LABELS], dataset=self.name)
        if found is None:  # other versions of the workbook carry another date in their name
            others = sorted({*root.glob("CID2013*.xls*"), *root.glob("*/CID2013*.xls*")})
            if len(others) != 1:
                listing = f" (found several: {[p.name for p in others]})" if others else ""
                raise ManifestError(f"cid2013: {LABELS} not found in {root} nor one folder below it{listing}. "
                                    f"Expected layout: {self.layout}")
            found = others[0]
        return found

    @staticmethod
    def _scene(images: FolderIndex, path: str, where: str) -> tuple[str, str]:
        folders = images.folders(path)
        if len(folders) != 2 or not IMAGE_SET.match(folders[0]) or not SCENE.match(folders[1]):
            raise ManifestError(f"{where}: image {path} is not in an ISn/coK/ folder; expected "
                                "IS1..IS6/co1..co6/ (image set / scene subset)")
        return folders[0].upper(), folders[1].lower()
