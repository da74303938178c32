"""TID2013, read from the official release.

Layout (``ROOT`` is what the user passes, or ``$IQA_TID2013_ROOT``; ``ROOT/tid2013/`` is accepted)::

    ROOT/mos_with_names.txt        lines "5.51429 I01_01_1.bmp" (MOS 0-9, higher is better)
    ROOT/mos_std.txt               one std per line, in the same order (optional)
    ROOT/distorted_images/i01_01_1.bmp ...   case varies: I01_11_1.BMP
    ROOT/reference_images/I01.BMP .. I24.BMP, i25.bmp

Names are resolved case-insensitively; an image's reference is the ``Ixx`` its name starts with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.csv_folder import parse_number, read_label_text
from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.datasets.official import (FolderIndex, Published, in_range, locate_file, non_negative, require_dir,
                                         require_file, require_lengths)

__all__ = ["TID2013"]

MOS_RANGE = (0.0, 9.0)


@dataclass
class TID2013(DatasetAdapter):
    """TID2013: 3,000 images from 25 references, 24 distortions x 5 levels; MOS 0-9, std per image."""

    name: ClassVar[str] = "tid2013"
    env_var: ClassVar[str | None] = "IQA_TID2013_ROOT"
    layout: ClassVar[str] = ("ROOT/mos_with_names.txt ('MOS name' per line), optional ROOT/mos_std.txt, "
                             "ROOT/distorted_images/ and ROOT/reference_images/ (names in any case)")
    citation: ClassVar[str] = ("N. Ponomarenko et al. Image database TID2013: Peculiarities, results and perspectives. "
                               "Signal Processing: Image Communication 30, 57-77, 2015.")
    published: ClassVar[Published] = Published(3000, "MOS 0-9, higher is better", references=25)

    def read(self, root: Path) -> Manifest:
        labels = require_file(root, ["mos_with_names.txt"], dataset=self.name, layout=self.layout)
        base = labels.parent
        distorted = FolderIndex(root, require_dir(base, ["distorted_images"], dataset=self.name, layout=self.layout))
        references = FolderIndex(root, require_dir(base, ["reference_images"], dataset=self.name, layout=self.layout))
        records = []
        for line, text in _lines(labels):
            fields = text.split()
            where = f"{labels}, line {line}"
            if len(fields) != 2:
                raise ManifestError(f"{where}: expected 'MOS image_name', got {text!r}")
            score, name = fields
            where = f"{where} ({name})"
            records.append({"image_id": name, "path": distorted.resolve(name, source=where),
                            "mos": in_range(parse_number(score, source=where), MOS_RANGE, source=where, what="MOS"),
                            "reference_id": references.resolve(f"{name.split('_')[0]}.bmp", source=where),
                            "source": where})
        if not records:
            raise ManifestError(f"{labels}: no lines of 'MOS image_name'")
        table = pd.DataFrame.from_records(records)
        table["mos_std"] = _std(locate_file(base, ["mos_std.txt"], dataset=self.name), len(table))
        return Manifest(self.name, root, table, MOS_RANGE, "higher_better",
                        {"label_file": labels.relative_to(root).as_posix()})


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers (LF or CRLF ends: numbered as an editor shows them)."""
    text = read_label_text(path)
    return [(number, line.strip()) for number, line in enumerate(text.split("\n"), 1) if line.strip()]


def _std(path: Path | None, count: int) -> np.ndarray:
    if path is None:
        return np.full(count, np.nan)
    values = [non_negative(parse_number(text, source=f"{path}, line {line}", what="std"),
                           source=f"{path}, line {line}", what="std") for line, text in _lines(path)]
    require_lengths({"mos_with_names.txt": count, path.name: len(values)}, dataset="tid2013")
    return np.asarray(values)
