"""KADID-10k, read from the official release.

Layout (``ROOT`` is what the user passes, or ``$IQA_KADID_ROOT``; ``ROOT/kadid10k/`` is accepted)::

    ROOT/dmos.csv          dist_img,ref_img,dmos,var
    ROOT/images/I01_01_01.png ...   distorted images, and the references I01.png .. I81.png beside them

Despite its name the ``dmos`` column is a mean opinion score, 1-5, higher is better (the
release's own readme); ``var`` is the variance of the ratings, so the std is its square root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.csv_folder import parse_number, read_label_csv
from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.datasets.official import (FolderIndex, Published, in_range, require_dir, require_file,
                                         std_from_variance)

__all__ = ["KADID10k"]

MOS_RANGE = (1.0, 5.0)


@dataclass
class KADID10k(DatasetAdapter):
    """KADID-10k: 10,125 images from 81 references, 25 distortions x 5 levels; MOS 1-5 (higher is better)."""

    name: ClassVar[str] = "kadid10k"
    env_var: ClassVar[str | None] = "IQA_KADID_ROOT"
    layout: ClassVar[str] = ("ROOT/dmos.csv (dist_img,ref_img,dmos,var) and ROOT/images/ holding distorted and "
                             "reference images; the same one level down (ROOT/kadid10k/...) is accepted")
    citation: ClassVar[str] = ("H. Lin, V. Hosu, D. Saupe. KADID-10k: A large-scale artificially distorted IQA "
                               "database. QoMEX 2019.")
    published: ClassVar[Published] = Published(10125, "MOS 1-5 (column 'dmos'), higher is better", references=81)

    def read(self, root: Path) -> Manifest:
        labels = require_file(root, ["dmos.csv"], dataset=self.name, layout=self.layout)
        images = FolderIndex(root, require_dir(labels.parent, ["images"], dataset=self.name, layout=self.layout))
        table = read_label_csv(labels)
        table.require(["dist_img", "ref_img", "dmos", "var"])
        records = []
        for line, row in table.rows:
            where = f"{table.where(line)} ({row['dist_img'].strip()})"
            if not row["dist_img"].strip() or not row["ref_img"].strip():
                raise ManifestError(f"{where}: empty dist_img or ref_img")
            mos = in_range(parse_number(row["dmos"], source=where, what="dmos"), MOS_RANGE, source=where,
                           what="dmos (a MOS, higher is better)")
            std = std_from_variance(parse_number(row["var"], source=where, what="var"), source=where)
            records.append({"image_id": row["dist_img"].strip(), "path": images.resolve(row["dist_img"], source=where),
                            "mos": mos, "mos_std": std, "reference_id": images.resolve(row["ref_img"], source=where),
                            "source": where})
        if not records:
            raise ManifestError(f"{labels}: no data rows after the header")
        return Manifest(self.name, root, pd.DataFrame.from_records(records), MOS_RANGE, "higher_better",
                        {"label_file": labels.relative_to(root).as_posix()})
