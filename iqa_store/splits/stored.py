"""Stored splits: a dataset's splits as a store resource, made once and read by every user.

A dataset's splits are made once per (protocol settings, rows, groups, strata, official
labels) and saved as ``STORE/splits/<dataset>/<protocol>-<key>.json``; every combination,
regressor, training stage and later run with the same settings reads that file, so their
numbers are computed on the same rows, and an encoder trained on split ``i``'s training part
names exactly the rows a fit will test it against. Groups are the manifest's ``split_groups``
(reference images of synthetic datasets, CID2013's scene subsets), strata its ``strata``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iqa_store.splits.protocols import ProtocolSpec, Split, make_splits, splits_from_json, splits_key, splits_to_json

__all__ = ["StoredSplits", "list_stored_splits", "stored_splits"]


def stored_splits(splits_dir: Path, manifest: Any, spec: ProtocolSpec) -> list[Split]:
    """The splits of ``spec`` on ``manifest``: read from the store, or made and saved there."""
    inputs = {"groups": manifest.split_groups, "official": manifest.official_split, "strata": manifest.strata}
    key = splits_key(spec, len(manifest), **inputs)
    path = Path(splits_dir) / manifest.dataset / f"{spec.name}-{key}.json"
    if path.exists():
        return splits_from_json(path.read_text())
    splits = make_splits(spec, len(manifest), **inputs)
    meta = {"dataset": manifest.dataset, "protocol": spec.to_dict(), "n_rows": len(manifest),
            "grouped_by": _grouped_by(manifest), "manifest_hash": manifest.manifest_hash(), "ids": manifest.ids}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(splits_to_json(splits, meta))
    partial.replace(path)  # a reader never sees half a file
    return splits


def _grouped_by(manifest: Any) -> str | None:
    if manifest.strata is not None:
        return "group within stratum"
    return None if manifest.split_groups is None else ("group" if manifest.table["group"].notna().any()
                                                        else "reference image")


@dataclass(frozen=True)
class StoredSplits:
    """One stored split set and what it was made for (``meta`` is empty for sets stored before it existed)."""

    path: Path
    key: str
    meta: dict[str, Any]
    splits: list[Split]

    @property
    def dataset(self) -> str:
        return self.path.parent.name

    def summary(self) -> dict[str, Any]:
        protocol = self.meta.get("protocol") or {"name": self.path.stem.rsplit("-", 1)[0]}
        sizes = {part: [int(getattr(s, part).size) for s in self.splits] for part in ("train", "val", "test")}
        return {"dataset": self.dataset, "protocol": protocol["name"], "key": self.key,
                "n_splits": len(self.splits), "seed": protocol.get("seed"), "ratios": protocol.get("ratios"),
                "n_rows": self.meta.get("n_rows"), "grouped_by": self.meta.get("grouped_by"),
                **{f"n_{part}": sorted(set(n)) for part, n in sizes.items()}, "path": str(self.path)}

    def detail(self) -> dict[str, Any]:
        """The summary and every split's rows, as image ids when the ids were stored."""
        ids = self.meta.get("ids")
        name = (lambda rows: [ids[r] for r in rows]) if ids else (lambda rows: rows.tolist())
        return {**self.summary(), "splits": [{"index": s.index, **{p: name(getattr(s, p)) for p in ("train", "val", "test")}}
                                             for s in self.splits]}


def list_stored_splits(splits_dir: Path, dataset: str | None = None, protocol: str | None = None) -> list[StoredSplits]:
    """Stored split sets, by dataset then file name."""
    folder = Path(splits_dir)
    files = sorted(folder.glob(f"{dataset or '*'}/*.json")) if folder.is_dir() else []
    found = []
    for path in files:
        data = json.loads(path.read_text())
        stored = StoredSplits(path, data.get("key", ""), data.get("meta", {}), splits_from_json(path.read_text()))
        if protocol is None or stored.summary()["protocol"] == protocol:
            found.append(stored)
    return found
