"""Text tables in the store: ``texts/<dataset>/<key>.json``, one file per (images, settings) key.

The store keeps a table it is given and knows nothing of how it was made: the key (a fingerprint
of the images, their labels and the annotation settings, made by the caller) is what keeps a
changed manifest or other settings from being served someone else's texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from iqa_store.store.featureset import now_iso
from iqa_store.store.files import read_json, storage_errors, write_json_atomic

__all__ = ["list_texts", "load_texts", "save_texts"]


def _path(folder: Path, dataset: str, key: str) -> Path:
    for part, what in ((dataset, "dataset"), (key, "key")):
        if not part or "/" in part or part.startswith("."):
            raise ValueError(f"text table {what} {part!r} must be a plain name")
    return folder / dataset / f"{key}.json"


def save_texts(folder: Path, dataset: str, key: str, table: pd.DataFrame, info: dict[str, Any] | None = None) -> Path:
    """Write ``table`` (any columns of text or numbers) atomically; returns the file."""
    path = _path(folder, dataset, key)
    data = {"dataset": dataset, "key": key, "info": info or {}, "saved": now_iso(), "columns": list(table.columns),
            "table": table.astype(object).where(table.notna(), None).to_dict(orient="list")}
    with storage_errors(f"the texts of dataset {dataset} in {folder}"):
        write_json_atomic(path, data)
    return path


def load_texts(folder: Path, dataset: str, key: str | None = None) -> pd.DataFrame | None:
    """The table saved under ``key`` (the latest saved for ``dataset`` when None), or None;
    ``attrs`` carry its ``key`` and ``info``."""
    if key is None:
        saved = list_texts(folder, dataset)
        if not saved:
            return None
        key = saved[-1]["key"]
    path = _path(folder, dataset, key)
    if not path.is_file():
        return None
    data = read_json(path)
    table = pd.DataFrame(data["table"], columns=data["columns"])
    table.attrs.update({"key": data["key"], "info": data["info"]})
    return table


def list_texts(folder: Path, dataset: str | None = None) -> list[dict[str, Any]]:
    """``dataset``, ``key``, ``path`` and ``modified`` of each stored table, oldest first."""
    files = sorted(folder.glob(f"{dataset or '*'}/*.json"), key=lambda p: p.stat().st_mtime_ns) if folder.is_dir() else []
    return [{"dataset": p.parent.name, "key": p.stem, "path": str(p), "modified": p.stat().st_mtime} for p in files]
