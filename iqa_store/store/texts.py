"""Text tables in the store: ``texts/<dataset>/<key>.csv.gz`` with ``<key>.json`` beside it.

The store keeps a table it is given and knows nothing of how it was made: the key (a fingerprint
of the images, their labels and the annotation settings, made by the caller) is what keeps a
changed manifest or other settings from being served someone else's texts. The rows go to a
gzipped CSV (millions of texts stay small, and pandas reads them back fast); the JSON (columns,
the caller's info, when) is written last and marks the table complete. Every value is kept
as text.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from iqa_store.store.featureset import now_iso
from iqa_store.store.files import read_json, storage_errors, write_json_atomic

__all__ = ["list_texts", "load_texts", "save_texts"]


def _paths(folder: Path, dataset: str, key: str) -> tuple[Path, Path]:
    for part, what in ((dataset, "dataset"), (key, "key")):
        if not part or "/" in part or part.startswith("."):
            raise ValueError(f"text table {what} {part!r} must be a plain name")
    return folder / dataset / f"{key}.csv.gz", folder / dataset / f"{key}.json"


def save_texts(folder: Path, dataset: str, key: str, table: pd.DataFrame, info: dict[str, Any] | None = None) -> Path:
    """Write ``table`` (its values as text) and then its record; returns the record's path."""
    rows, record = _paths(folder, dataset, key)
    with storage_errors(f"the texts of dataset {dataset} in {folder}"):
        rows.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=rows.parent, prefix=f".{rows.name}.", suffix=".tmp")
        os.close(fd)
        try:
            table.to_csv(tmp, index=False, compression={"method": "gzip", "compresslevel": 1, "mtime": 0})
            os.replace(tmp, rows)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        write_json_atomic(record, {"dataset": dataset, "key": key, "columns": list(table.columns), "rows": len(table),
                                   "info": info or {}, "saved": now_iso()})
    return record


def load_texts(folder: Path, dataset: str, key: str | None = None) -> pd.DataFrame | None:
    """The table saved under ``key`` (the latest saved for ``dataset`` when None), or None;
    ``attrs`` carry its ``key`` and ``info``."""
    if key is None:
        saved = list_texts(folder, dataset)
        if not saved:
            return None
        key = saved[-1]["key"]
    rows, record = _paths(folder, dataset, key)
    if not record.is_file():
        return None
    data = read_json(record)
    try:
        table = pd.read_csv(rows, dtype=str, keep_default_na=False, compression="gzip")
    except (OSError, EOFError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"damaged store file {rows}: {error}; delete it and its record {record.name} and annotate "
                         "again") from None
    if list(table.columns) != data["columns"] or len(table) != data["rows"]:
        raise ValueError(f"damaged store file {rows}: not the {data['rows']} rows of columns {data['columns']} its "
                         f"record {record.name} names; delete both and annotate again")
    table.attrs.update({"key": data["key"], "info": data["info"]})
    return table


def list_texts(folder: Path, dataset: str | None = None) -> list[dict[str, Any]]:
    """``dataset``, ``key``, ``rows`` and ``saved`` of each complete stored table, oldest first."""
    records = sorted(folder.glob(f"{dataset or '*'}/*.json"), key=lambda p: p.stat().st_mtime_ns) if folder.is_dir() else []
    listed = []
    for path in records:
        data = read_json(path)
        listed.append({"dataset": data["dataset"], "key": data["key"], "rows": data["rows"], "saved": data["saved"]})
    return listed
