"""A fitted grid on disk, written as it runs: ``spec.json``, ``results.csv``, ``predictions/``.

Only the standard library, numpy and pandas: CSV keeps the table readable by anything, and
the npz parts hold plain arrays (loaded with ``allow_pickle=False``).

A run directory is append-only (``RunLog``): each finished task first writes its cells'
test predictions as one part file (temporary name, then rename), then appends their rows to
``results.csv`` in one write, flushed to disk. A row is a cell's commit marker: a crash
leaves at most a torn last line (cut off when the log is opened again) and perhaps a part
whose rows never landed (ignored), so a resumed run skips exactly the cells in the table.
One process appends at a time (an flock on ``lock``); a second run of the same grid waits for
it, then finds the cells it fitted in the table.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from iqa_store.fit.cells import CellPrediction, CellResult, cell_key
from iqa_store.fit.schema import CELL_KEYS, TABLE_COLUMNS

__all__ = ["RunLog", "load_predictions", "load_results", "load_spec", "save_run"]

RESULTS_FILE = "results.csv"
PREDICTIONS_DIR = "predictions"
SPEC_FILE = "spec.json"
LOCK_FILE = "lock"
_CELL_FIELDS = CELL_KEYS


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


def _save_predictions(path: Path, predictions: Sequence[CellPrediction]) -> None:
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


def _read_predictions(path: Path) -> list[CellPrediction]:
    with np.load(path, allow_pickle=False) as data:
        offsets = data["cell_offsets"]
        return [CellPrediction(*(str(data[f"cell_{f}"][i]) for f in _CELL_FIELDS), int(data["cell_split"][i]),
                               *(data[name][offsets[i]:offsets[i + 1]] for name in ("test_index", "y_true", "y_pred")))
                for i in range(len(offsets) - 1)]


def _spec_text(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=True, default=_json_default) + "\n"


class RunLog:
    """One grid run on one dataset, on disk. Reading needs nothing; appending happens inside
    ``with`` (which takes the lock, and writes ``spec``).

    A directory that already holds a run with a different spec is refused (``ValueError``):
    its cells would not be those of this grid.
    """

    def __init__(self, directory: str | Path, spec: dict[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        self._spec_text = None if spec is None else _spec_text(spec)
        self._lock: Any = None

    def __enter__(self) -> "RunLog":
        if self._spec_text is None:
            raise ValueError("a RunLog opened for writing needs its spec")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.directory / LOCK_FILE, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # the same grid running elsewhere: wait, then fit only what it left
            logging.getLogger(__name__).warning("waiting for another process fitting into %s", self.directory)
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        spec_path = self.directory / SPEC_FILE
        if spec_path.exists() and spec_path.read_text() != self._spec_text:
            self.__exit__()
            raise ValueError(f"{self.directory} holds a run with a different spec ({spec_path})")
        _write_atomic(spec_path, lambda p: p.write_text(self._spec_text))
        (self.directory / PREDICTIONS_DIR).mkdir(exist_ok=True)
        self._cut_torn_line()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None

    @property
    def _results(self) -> Path:
        return self.directory / RESULTS_FILE

    def _cut_torn_line(self) -> None:
        """A crash in the middle of an append leaves a last line without its newline: drop it."""
        if not self._results.exists():
            return
        data = self._results.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self._results, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def table(self) -> pd.DataFrame:
        if not self._results.exists() or self._results.stat().st_size == 0:
            return pd.DataFrame(columns=list(TABLE_COLUMNS))
        return pd.read_csv(self._results)

    def finished(self) -> set[tuple[str, str, int]]:
        table = self.table()
        return {cell_key(c, r, s) for c, r, s in zip(table["combination"], table["regressor"], table["split"])}

    def append(self, results: Sequence[CellResult]) -> None:
        """Record finished cells: predictions first, then the rows that commit them."""
        if self._lock is None:
            raise RuntimeError("RunLog.append outside its `with` block")
        predictions = [r.prediction for r in results if r.prediction is not None]
        if predictions:
            parts = self.directory / PREDICTIONS_DIR
            number = 1 + max((int(p.stem.split("-")[1]) for p in parts.glob("part-*.npz")), default=0)
            _write_atomic(parts / f"part-{number:06d}.npz", lambda p: _save_predictions(p, predictions))
        new = not self._results.exists() or self._results.stat().st_size == 0
        text = pd.DataFrame([r.row for r in results], columns=list(TABLE_COLUMNS)).to_csv(index=False, header=new)
        with open(self._results, "a") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def load(self, keys: Iterable[tuple[str, str, int]] | None = None) -> dict[tuple[str, str, int], CellResult]:
        """Finished cells (all, or those of ``keys``) with their predictions where stored."""
        wanted = None if keys is None else set(keys)
        predictions = _predictions_by_key(self.directory)
        out = {}
        for row in self.table().to_dict("records"):
            key = cell_key(row["combination"], row["regressor"], row["split"])
            if wanted is None or key in wanted:
                out[key] = CellResult(row, predictions.get(key))
        return out


def _predictions_by_key(directory: Path) -> dict[tuple[str, str, int], CellPrediction]:
    """Stored predictions by cell; a cell refitted after a crash keeps its first part."""
    out: dict[tuple[str, str, int], CellPrediction] = {}
    for path in sorted((directory / PREDICTIONS_DIR).glob("part-*.npz")):
        for p in _read_predictions(path):
            out.setdefault(cell_key(p.combination, p.regressor, p.split), p)
    return out


def save_run(directory: str | Path, result: Any, spec: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write a whole ``GridResult`` as one run into ``directory`` (created if needed)."""
    directory = Path(directory)
    if (directory / RESULTS_FILE).exists():
        if not overwrite:
            raise FileExistsError(f"{directory} already holds a run; pass overwrite=True to replace it")
        for name in (RESULTS_FILE, SPEC_FILE):
            (directory / name).unlink()
        shutil.rmtree(directory / PREDICTIONS_DIR, ignore_errors=True)
    _spec_text(spec)  # an unserialisable spec fails before anything is written
    predictions = {cell_key(p.combination, p.regressor, p.split): p for p in result.predictions}
    cells = [CellResult(row, predictions.get(cell_key(row["combination"], row["regressor"], row["split"])))
             for row in result.table.to_dict("records")]
    with RunLog(directory, spec) as log:
        log.append(cells)
    return directory


def load_spec(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / SPEC_FILE).read_text())


def load_predictions(directory: str | Path) -> list[CellPrediction]:
    """The per-cell test predictions of a saved run, in the order of its table."""
    return [r.prediction for r in RunLog(directory).load().values() if r.prediction is not None]


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
