"""The Manifest: one dataset's images and labels in a fixed order.

Every adapter turns an official release into a Manifest; everything downstream (extraction,
fingerprints, splits, fits) reads only the Manifest, never the release's own files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from iqa_store.fingerprint import fingerprint

COLUMNS = ("image_id", "path", "mos", "mos_std", "mos_original", "reference_id", "split", "group", "stratum")


class ManifestError(ValueError):
    """A label file or image tree that cannot be turned into a valid manifest."""


def resolve_inside(root: Path, relative: str, *, source: str) -> str:
    """Return ``relative`` normalised, refusing anything that leaves ``root``.

    A label file is untrusted input: absolute paths, ``..`` segments and symlinks that lead
    outside the dataset root are rejected, naming ``source`` (file and row) in the error.
    """
    text = str(relative).strip().replace("\\", "/")
    if not text:
        raise ManifestError(f"{source}: empty image path")
    if os.path.isabs(text) or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise ManifestError(f"{source}: absolute image path {text!r} is not allowed; paths must be relative to the dataset root")
    root_real = os.path.realpath(root)
    target_real = os.path.realpath(os.path.join(root_real, text))
    if os.path.commonpath([root_real, target_real]) != root_real:
        raise ManifestError(f"{source}: image path {text!r} leads outside the dataset root {root}")
    return os.path.relpath(target_real, root_real).replace(os.sep, "/")


@dataclass(frozen=True)
class Manifest:
    """Images of one dataset with MOS (higher = better) and optional std, reference, split.

    ``table`` columns: image_id (unique str), path (relative to root), mos (float, higher is
    better), mos_std (float, NaN when unpublished), mos_original (the published value, before
    any direction or scale conversion), reference_id (the reference image's path relative to
    the root for synthetic datasets, else None), split (official assignment "train"/"val"/"test"
    or None), group and stratum (split groups other than references, e.g. CID2013's scene
    subsets "IS1/co1" within their image sets "IS1": no group is cut by a split, and groups are
    dealt within each stratum).

    An optional ``source`` column (the label file and row of each image, as adapters name them)
    is used in errors about repeated ids and missing scores, then dropped.

    ``info["preprocessing"]``, when an adapter sets it (SPAQ's resize), is part of the
    manifest hash: features of resized images are never mistaken for those of the originals.
    """

    dataset: str
    root: Path
    table: pd.DataFrame
    mos_range: tuple[float, float] = (0.0, 1.0)
    original_direction: str = "higher_better"  # of mos_original: "higher_better" or "lower_better"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "table", _normalise_table(self.table, self.dataset))

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> list[str]:
        return self.table["image_id"].tolist()

    @property
    def mos(self) -> np.ndarray:
        return self.table["mos"].to_numpy(dtype=np.float64)

    @property
    def paths(self) -> list[Path]:
        return [self.root / p for p in self.table["path"]]

    @property
    def reference_ids(self) -> list[str] | None:
        refs = self.table["reference_id"]
        return None if refs.isna().all() else refs.astype(str).tolist()

    @property
    def split_groups(self) -> list[str] | None:
        """What random splits must not cut: the ``group`` column, else the reference images."""
        groups = self.table["group"]
        return self.reference_ids if groups.isna().all() else groups.astype(str).tolist()

    @property
    def strata(self) -> list[str] | None:
        strata = self.table["stratum"]
        return None if strata.isna().all() else strata.astype(str).tolist()

    @property
    def official_split(self) -> list[str] | None:
        split = self.table["split"]
        return None if split.isna().all() else split.tolist()

    def file_identity(self) -> list[list[Any]]:
        """(id, size, mtime_ns) per image; size -1 for a missing file.

        This is what the manifest hash covers: a replaced or edited image changes it.
        """
        rows = []
        for image_id, path in zip(self.ids, self.paths):
            try:
                stat = path.stat()
                rows.append([image_id, stat.st_size, stat.st_mtime_ns])
            except OSError:
                rows.append([image_id, -1, 0])
        return rows

    def manifest_hash(self) -> str:
        payload: dict[str, Any] = {"dataset": self.dataset, "files": self.file_identity()}
        if self.info.get("preprocessing"):  # only when set, so hashes of existing sets stay valid
            payload["preprocessing"] = self.info["preprocessing"]
        return fingerprint(payload)

    def subset(self, mask: Sequence[bool] | np.ndarray) -> "Manifest":
        return Manifest(self.dataset, self.root, self.table[np.asarray(mask, bool)].reset_index(drop=True),
                        self.mos_range, self.original_direction, dict(self.info))


def _normalise_table(table: pd.DataFrame, dataset: str) -> pd.DataFrame:
    missing = [c for c in ("image_id", "path", "mos") if c not in table.columns]
    if missing:
        raise ManifestError(f"{dataset}: manifest lacks columns {missing}")
    out = table.copy()
    for column in COLUMNS:
        if column not in out.columns:
            out[column] = np.nan if column in ("mos_std", "mos_original") else None
    out["image_id"] = out["image_id"].astype(str)
    out["mos"] = pd.to_numeric(out["mos"], errors="coerce").astype(float)
    if out["mos_original"].isna().all():
        out["mos_original"] = out["mos"]
    out = out.reset_index(drop=True)
    repeated = out.index[out["image_id"].duplicated()]
    if len(repeated):
        image_id = out.at[repeated[0], "image_id"]
        first = out.index[out["image_id"] == image_id][0]
        raise ManifestError(f"{_source(out, repeated[0], dataset)}: duplicate image id {image_id!r} "
                            f"(first at {_source(out, first, dataset)})")
    bad = out.index[~np.isfinite(out["mos"].to_numpy())]
    if len(bad):
        rows = "; ".join(_source(out, i, dataset) for i in bad[:10])
        raise ManifestError(f"{dataset}: MOS missing or not a number for {len(bad)} image(s): {rows}")
    return out[list(COLUMNS)]


def _source(table: pd.DataFrame, row: int, dataset: str) -> str:
    """Where row ``row`` came from: the adapter's optional ``source`` column (label file and row), else its id."""
    source = table.at[row, "source"] if "source" in table.columns else None
    return str(source) if isinstance(source, str) else f"{dataset}: image {table.at[row, 'image_id']!r} (row {row})"
