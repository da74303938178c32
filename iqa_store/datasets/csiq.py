"""CSIQ, read from the official release.

Layout (``ROOT`` is what the user passes, or ``$IQA_CSIQ_ROOT``)::

    ROOT/csiq.DMOS.xlsx                  sheet "all_by_image" (not the first sheet); its header
                                         image, dst_idx, dst_type, dst_lev, dmos_std, dmos starts
                                         at cell D4
    ROOT/dst_imgs/awgn/1600.AWGN.1.png   folders lower case, file tokens mixed (x.jpeg2000.4.png)
    ROOT/src_imgs/1600.png               the 30 references

``image`` mixes numbers (1600) and words (bridge); ``dst_type`` says ``noise`` for the awgn
folder and ``jpeg 2000`` (with a space) for jpeg2000. DMOS is in [0, 1], lower is better: the
manifest's MOS is ``1 - dmos`` and ``mos_original`` keeps the DMOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.datasets.official import (FolderIndex, Published, cell_number, cell_text, flip_scale, in_range,
                                         non_negative, read_sheet, require_dir, require_file)

__all__ = ["CSIQ"]

LABELS = ("csiq.DMOS.xlsx", "csiq.DMOS.xls")
SHEET = "all_by_image"
COLUMNS = ["image", "dst_type", "dst_lev", "dmos_std", "dmos"]
# dst_type (lower case, spaces removed) -> folder under dst_imgs/ and the type token in file names
DISTORTIONS = {"noise": ("awgn", "awgn"), "awgn": ("awgn", "awgn"), "jpeg": ("jpeg", "jpeg"),
               "jpeg2000": ("jpeg2000", "jpeg2000"), "fnoise": ("fnoise", "fnoise"), "blur": ("blur", "blur"),
               "contrast": ("contrast", "contrast")}
DMOS_SCALE = (0.0, 1.0)


@dataclass
class CSIQ(DatasetAdapter):
    """CSIQ: 866 images from 30 references, 6 distortions; DMOS 0-1 (lower is better) flipped to MOS."""

    name: ClassVar[str] = "csiq"
    env_var: ClassVar[str | None] = "IQA_CSIQ_ROOT"
    layout: ClassVar[str] = (f"ROOT/{LABELS[0]} (sheet {SHEET!r}, header image,dst_idx,dst_type,dst_lev,dmos_std,"
                             "dmos anywhere in it), ROOT/dst_imgs/<type>/<image>.<TYPE>.<level>.png and "
                             "ROOT/src_imgs/<image>.png")
    citation: ClassVar[str] = ("E. C. Larson, D. M. Chandler. Most apparent distortion: full-reference image quality "
                               "assessment and the role of strategy. Journal of Electronic Imaging 19(1), 2010.")
    published: ClassVar[Published] = Published(866, "DMOS 0-1, lower is better (MOS = 1 - DMOS)", references=30)

    def read(self, root: Path) -> Manifest:
        labels = require_file(root, LABELS, dataset=self.name, layout=self.layout)
        distorted = FolderIndex(root, require_dir(labels.parent, ["dst_imgs"], dataset=self.name, layout=self.layout))
        references = FolderIndex(root, require_dir(labels.parent, ["src_imgs"], dataset=self.name, layout=self.layout))
        sheet = read_sheet(labels, COLUMNS, sheet=SHEET)
        records = []
        for position, (image, kind, level, std, dmos) in enumerate(sheet.frame.itertuples(index=False)):
            where = sheet.where(position)
            source, token = cell_text(image), cell_text(kind).lower().replace(" ", "")
            if not source or token not in DISTORTIONS:
                raise ManifestError(f"{where}: image {source!r} with dst_type {cell_text(kind)!r}; expected an image "
                                    f"name and one of {sorted(DISTORTIONS)}")
            folder, file_token = DISTORTIONS[token]
            name = f"{folder}/{source}.{file_token}.{cell_text(level)}.png"
            where = f"{where} ({name})"
            value = in_range(cell_number(dmos, source=where, what="dmos"), DMOS_SCALE, source=where, what="dmos")
            std = non_negative(cell_number(std, source=where, what="dmos_std"), source=where, what="dmos_std")
            records.append({"image_id": name, "path": distorted.resolve(name, source=where), "mos_original": value,
                            "mos_std": std,
                            "reference_id": references.resolve(f"{source}.png", source=where), "source": where})
        if not records:
            raise ManifestError(f"{labels}: no data rows under the header of sheet {sheet.sheet!r}")
        table = pd.DataFrame.from_records(records)
        table["mos"] = flip_scale(table["mos_original"].to_numpy(np.float64), DMOS_SCALE)
        return Manifest(self.name, root, table, DMOS_SCALE, "lower_better",
                        {"label_file": labels.relative_to(root).as_posix(), "sheet": sheet.sheet})
