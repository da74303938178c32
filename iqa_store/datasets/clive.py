"""LIVE In the Wild Image Quality Challenge (CLIVE), read from the official release.

Layout (``ROOT`` is what the user passes, or ``$IQA_CLIVE_ROOT``; the release's
``ChallengeDB_release/`` folder, or its parent)::

    ROOT/Data/AllImages_release.mat   AllImages_release: 1169x1 cell of file names
    ROOT/Data/AllMOS_release.mat      AllMOS_release: 1x1169 MOS (about 3-92, higher is better)
    ROOT/Data/AllStdDev_release.mat   AllStdDev_release: 1x1169 standard deviations
    ROOT/Images/*.bmp, *.JPG          mixed extensions and case
    ROOT/Images/trainingImages/t1.bmp .. t7.bmp

The first seven entries (``t1.bmp``..``t7.bmp``) were shown to raters for training only; their
names carry no folder although the files sit in ``Images/trainingImages/``. Every evaluation
excludes them: 1,162 images remain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.datasets.official import (FolderIndex, Published, in_range, mat_numbers, mat_strings, non_negative, read_mat,
                                         require_dir, require_file, require_lengths)

__all__ = ["CLIVE"]

NAMES, MOS, STD = "AllImages_release", "AllMOS_release", "AllStdDev_release"
TRAINING_IMAGE = re.compile(r"^t[1-7]\.bmp$", re.IGNORECASE)
MOS_RANGE = (0.0, 100.0)


@dataclass
class CLIVE(DatasetAdapter):
    """CLIVE: 1,162 authentically distorted photographs, MOS 0-100 (higher is better), std per image."""

    name: ClassVar[str] = "clive"
    env_var: ClassVar[str | None] = "IQA_CLIVE_ROOT"
    layout: ClassVar[str] = (f"ROOT/Data/{NAMES}.mat, ROOT/Data/{MOS}.mat, ROOT/Data/{STD}.mat and ROOT/Images/ "
                             "(training images t1-t7.bmp in ROOT/Images/trainingImages/); ROOT may also be the "
                             "folder above ChallengeDB_release/")
    citation: ClassVar[str] = ("D. Ghadiyaram, A. C. Bovik. Massive online crowdsourced study of subjective and "
                               "objective picture quality. IEEE Transactions on Image Processing 25(1), 372-387, 2016.")
    published: ClassVar[Published] = Published(1162, "MOS 0-100, higher is better")

    def read(self, root: Path) -> Manifest:
        names_path = require_file(root, [f"Data/{NAMES}.mat"], dataset=self.name, layout=self.layout)
        base = names_path.parent.parent
        mos_path, std_path = (require_file(base, [f"Data/{n}.mat"], dataset=self.name, layout=self.layout)
                              for n in (MOS, STD))
        names = mat_strings(read_mat(names_path), names_path, NAMES)
        mos = mat_numbers(read_mat(mos_path), mos_path, MOS)
        std = mat_numbers(read_mat(std_path), std_path, STD)
        require_lengths({names_path.name: len(names), mos_path.name: mos.size, std_path.name: std.size},
                        dataset=self.name)
        images = FolderIndex(root, require_dir(base, ["Images"], dataset=self.name, layout=self.layout))
        records = []
        for index, name in enumerate(names):
            if TRAINING_IMAGE.match(name):
                continue
            where = f"{names_path}, entry {index + 1} ({name})"
            records.append({"image_id": name, "path": images.resolve(name, source=where),
                            "mos": in_range(mos[index], MOS_RANGE, source=where, what="MOS"),
                            "mos_std": non_negative(std[index], source=where, what=f"std in {std_path.name}"),
                            "source": where})
        if not records:
            raise ManifestError(f"{names_path}: no images besides the training images t1-t7.bmp")
        return Manifest(self.name, root, pd.DataFrame.from_records(records), MOS_RANGE, "higher_better",
                        {"label_file": names_path.relative_to(root).as_posix(),
                         "excluded": "training images t1.bmp-t7.bmp"})
