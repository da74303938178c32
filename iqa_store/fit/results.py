"""A fitted grid on disk: ``results.csv`` (tidy table), ``predictions.npz``, ``spec.json``.

Only the standard library, numpy and pandas: CSV keeps the table readable by anything, and
the npz holds plain arrays (loaded with ``allow_pickle=False``). Each file is written to a
temporary name and renamed; ``results.csv`` is written last, so a directory with it is a
complete run and ``load_results`` never reads a half-written one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from iqa_store.fit.grid import TABLE_COLUMNS, CellPrediction, GridResult

__all__ = ["load_predictions", "load_results", "load_spec", "save_run"]

RESULTS_FILE = "results.csv"
PREDICTIONS_FILE = "predictions.npz"
SPEC_FILE = "spec.json"
_CELL_FIELDS = ("dataset", "combination", "regressor", "protocol")


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store a {type(value).__name__} in spec.json: {value!r}")


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _save_predictions(path: Path, predictions: list[CellPrediction]) -> None:
    sizes = [p.test_index.size for p in predictions]
    arrays: dict[str, np.ndarray] = {f"cell_{f}": np.array([getattr(p, f) for p in predictions], dtype=str)
                                     for f in _CELL_FIELDS}
    arrays["cell_split"] = np.array([p.split for p in predictions], dtype=np.int64)
    arrays["cell_offsets"] = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    for name in ("test_index", "y_true", "y_pred"):
        dtype = np.int64 if name == "test_index" else np.float64
        parts = [np.asarray(getattr(p, name), dtype=dtype) for p in predictions]
        arrays[name] = np.concatenate(parts) if parts else np.empty(0, dtype)
    with open(path, "wb") as handle:  # a file handle, so numpy does not append ".npz" to the temp name
        np.savez_compressed(handle, **arrays)


def save_run(directory: str | Path, result: GridResult, spec: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write one run into ``directory`` (created if needed); returns the directory."""
    directory = Path(directory)
    if (directory / RESULTS_FILE).exists() and not overwrite:
        raise FileExistsError(f"{directory} already holds a run; pass overwrite=True to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    spec_text = json.dumps(spec, indent=2, sort_keys=True, default=_json_default)
    _write_atomic(directory / SPEC_FILE, lambda p: p.write_text(spec_text + "\n"))
    _write_atomic(directory / PREDICTIONS_FILE, lambda p: _save_predictions(p, result.predictions))
    _write_atomic(directory / RESULTS_FILE, lambda p: result.table.to_csv(p, index=False))
    return directory


def load_spec(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / SPEC_FILE).read_text())


def load_predictions(directory: str | Path) -> list[CellPrediction]:
    """The per-cell test predictions of a saved run, in cell order."""
    with np.load(Path(directory) / PREDICTIONS_FILE, allow_pickle=False) as data:
        offsets = data["cell_offsets"]
        return [CellPrediction(*(str(data[f"cell_{f}"][i]) for f in _CELL_FIELDS), int(data["cell_split"][i]),
                               *(data[name][offsets[i]:offsets[i + 1]] for name in ("test_index", "y_true", "y_pred")))
                for i in range(len(offsets) - 1)]


def load_results(results_root: str | Path) -> pd.DataFrame:
    """All runs under ``results_root`` in one table, with a ``run_id`` column first.

    The run id is the run directory's path relative to ``results_root`` ("." for the root).
    """
    root = Path(results_root)
    frames = []
    for path in sorted(root.rglob(RESULTS_FILE)):
        frame = pd.read_csv(path)
        frame.insert(0, "run_id", path.parent.relative_to(root).as_posix())
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run_id", *TABLE_COLUMNS])
    return pd.concat(frames, ignore_index=True)
