"""BID (Blurred Image Database), read from the official release.

Layout (``ROOT`` is what the user passes, or ``$IQA_BID_ROOT``)::

    ROOT/DatabaseGrades.xls (or .xlsx)       sheet "Plan1": Image Number, Average Subjective Grade,
                                             Number of Grades, Grade #1 .. Grade #20
    ROOT/ImageDatabase/DatabaseImage0001.JPG ...   (copies also hold the images in ROOT itself)

Image numbers run to 589 with gaps (2, 346, 413 and 439 are missing): 585 images. The MOS is
the average grade, 0-5, higher is better. No std is published; it is the sample std of the
individual grades (NaN with fewer than two). Reading ``.xls`` needs the ``xlrd`` package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.datasets.official import FolderIndex, Published, cell_number, in_range, read_sheet, require_file

__all__ = ["BID"]

LABELS = ("DatabaseGrades.xls", "DatabaseGrades.xlsx")
NUMBER, MOS = "Image Number", "Average Subjective Grade"
GRADES = [f"Grade #{k}" for k in range(1, 21)]
MOS_RANGE = (0.0, 5.0)


@dataclass
class BID(DatasetAdapter):
    """BID: 585 photographs with realistic blur; MOS 0-5 (higher is better), std from the grades."""

    name: ClassVar[str] = "bid"
    env_var: ClassVar[str | None] = "IQA_BID_ROOT"
    layout: ClassVar[str] = ("ROOT/DatabaseGrades.xls or .xlsx (sheet 'Plan1': Image Number, Average Subjective "
                             "Grade, Grade #1..#20) and ROOT/ImageDatabase/DatabaseImage0001.JPG ... (or the "
                             "images in ROOT)")
    citation: ClassVar[str] = ("A. Ciancio, A. L. N. T. da Costa, E. A. B. da Silva, A. Said, R. Samadani, "
                               "P. Obrador. No-reference blur assessment of digital pictures based on multifeature "
                               "classifiers. IEEE Transactions on Image Processing 20(1), 64-75, 2011.")
    published: ClassVar[Published] = Published(585, "MOS 0-5, higher is better")

    def read(self, root: Path) -> Manifest:
        labels = require_file(root, LABELS, dataset=self.name, layout=self.layout)
        folder = labels.parent / "ImageDatabase"
        images = FolderIndex(root, folder if folder.is_dir() else labels.parent)
        sheet = read_sheet(labels, [NUMBER, MOS], sheet="Plan1", optional=GRADES)
        records = []
        for position, row in enumerate(sheet.frame.to_dict(orient="records")):
            where = sheet.where(position)
            number = cell_number(row[NUMBER], source=where, what=NUMBER)
            if not number.is_integer() or number < 1:
                raise ManifestError(f"{where}: {NUMBER} {number:g} is not a positive whole number")
            name = f"DatabaseImage{int(number):04d}.JPG"
            where = f"{where} ({name})"
            grades = [cell_number(row[g], source=where, what=g) for g in GRADES if g in row and pd.notna(row[g])]
            records.append({"image_id": name, "path": images.resolve(name, source=where),
                            "mos": in_range(cell_number(row[MOS], source=where, what=MOS), MOS_RANGE, source=where,
                                            what=MOS),
                            "mos_std": float(np.std(grades, ddof=1)) if len(grades) > 1 else np.nan, "source": where})
        if not records:
            raise ManifestError(f"{labels}: no data rows under the header of sheet {sheet.sheet!r}")
        return Manifest(self.name, root, pd.DataFrame.from_records(records), MOS_RANGE, "higher_better",
                        {"label_file": labels.relative_to(root).as_posix(), "sheet": sheet.sheet})
