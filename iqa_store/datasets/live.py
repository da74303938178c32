"""LIVE IQA release 2, read from the official release.

Layout (``ROOT`` is what the user passes, or ``$IQA_LIVE_ROOT``; ``ROOT/databaserelease2/`` is
accepted)::

    ROOT/dmos.mat           dmos (1x982), orgs (1x982: 1 marks a copy of a reference image)
    ROOT/refnames_all.mat   refnames_all (1x982 cell): the reference of every entry
    ROOT/jp2k/img1.bmp ..   227 entries, then jpeg/ 233, wn/ 174, gblur/ 174, fastfading/ 174
    ROOT/refimgs/bikes.bmp  the 29 references
    ROOT/dmos_realigned.mat optional (``realigned=True``): dmos_new, dmos_std, orgs

Entry k of the label vectors is image ``img<j>.bmp`` of the folder its position falls in (the
five folders in the order above). The 203 entries with ``orgs == 1`` are undistorted copies of
references and are left out: 779 images remain. DMOS is lower-is-better; the manifest's MOS is
the DMOS flipped inside its bounds (``mos_original`` keeps it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.datasets.official import (FolderIndex, Published, flip_scale, in_range, mat_numbers, mat_strings,
                                         non_negative, read_mat, require_dir, require_file, require_lengths)

__all__ = ["LIVE"]

FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
# dmos.mat spans about 0-112 and the realigned DMOS goes slightly past 0-100 on both sides:
# these bounds hold both; the flip is mos = lo + hi - dmos.
DMOS_BOUNDS = (-10.0, 120.0)


@dataclass
class LIVE(DatasetAdapter):
    """LIVE IQA release 2: 779 distorted images from 29 references, 5 distortions; DMOS flipped to MOS.

    ``realigned=True`` reads ``dmos_realigned.mat`` (DMOS realigned across sessions, with std).
    """

    name: ClassVar[str] = "live"
    env_var: ClassVar[str | None] = "IQA_LIVE_ROOT"
    layout: ClassVar[str] = ("ROOT/dmos.mat (dmos, orgs), ROOT/refnames_all.mat, ROOT/jp2k/ jpeg/ wn/ gblur/ "
                             "fastfading/ (imgN.bmp), ROOT/refimgs/; optional ROOT/dmos_realigned.mat")
    citation: ClassVar[str] = ("H. R. Sheikh, M. F. Sabir, A. C. Bovik. A statistical evaluation of recent full "
                               "reference image quality assessment algorithms. IEEE Transactions on Image Processing "
                               "15(11), 3440-3451, 2006.")
    published: ClassVar[Published] = Published(779, "DMOS about 0-112, lower is better (MOS = 110 - DMOS)",
                                                references=29)

    realigned: bool = False

    def read(self, root: Path) -> Manifest:
        label_name, score_name = ("dmos_realigned.mat", "dmos_new") if self.realigned else ("dmos.mat", "dmos")
        labels = require_file(root, [label_name], dataset=self.name, layout=self.layout)
        base = labels.parent
        refnames_path = require_file(base, ["refnames_all.mat"], dataset=self.name, layout=self.layout)
        contents = read_mat(labels)
        dmos = mat_numbers(contents, labels, score_name)
        orgs = mat_numbers(contents, labels, "orgs")
        std = mat_numbers(contents, labels, "dmos_std") if self.realigned else None
        refnames = mat_strings(read_mat(refnames_path), refnames_path, "refnames_all")
        total = sum(count for _, count in FOLDERS)
        lengths = {f"{labels.name} {score_name}": dmos.size, f"{labels.name} orgs": orgs.size,
                   f"{refnames_path.name} refnames_all": len(refnames), "images in the five folders": total}
        if std is not None:
            lengths[f"{labels.name} dmos_std"] = std.size
        require_lengths(lengths, dataset=self.name)
        references = FolderIndex(root, require_dir(base, ["refimgs"], dataset=self.name, layout=self.layout))
        records = []
        for index, image in enumerate(_image_names()):
            if orgs[index] == 1:
                continue
            where = f"{labels}, entry {index + 1} ({image})"
            records.append({"image_id": image, "path": _inside(base, root, image),
                            "mos_original": in_range(dmos[index], DMOS_BOUNDS, source=where, what=score_name),
                            "mos_std": np.nan if std is None else non_negative(std[index], source=where,
                                                                               what="dmos_std"),
                            "reference_id": references.resolve(refnames[index],
                                                               source=f"{refnames_path}, entry {index + 1}")})
        if not records:
            raise ManifestError(f"{labels}: every entry is marked a reference copy (orgs == 1)")
        table = pd.DataFrame.from_records(records)
        table["mos"] = flip_scale(table["mos_original"].to_numpy(np.float64), DMOS_BOUNDS)
        return Manifest(self.name, root, table, DMOS_BOUNDS, "lower_better",
                        {"label_file": labels.relative_to(root).as_posix(), "score": score_name})


def _image_names() -> list[str]:
    """``folder/img<j>.bmp`` for every entry of the label vectors, in their order."""
    return [f"{folder}/img{j}.bmp" for folder, count in FOLDERS for j in range(1, count + 1)]


def _inside(base: Path, root: Path, image: str) -> str:
    return (base / image).relative_to(root).as_posix()
