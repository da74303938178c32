"""What the fit grid works on and produces: the feature matrix, cells, and their results.

``FeatureMatrix`` holds every feature set of a grid side by side in one array, so a worker
keeps one copy of the features, whatever the number of combinations; a combination is a
list of column ranges into it, never a copied matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from iqa_store.fit.combinations import combination_name
from iqa_store.fit.metrics import compute_metrics
from iqa_store.fit.schema import TABLE_COLUMNS
from iqa_store.splits import Split

__all__ = ["TABLE_COLUMNS", "Cell", "CellContext", "CellPrediction", "CellResult", "FeatureMatrix", "cell_key",
           "cell_result", "usable_parts"]



@dataclass(frozen=True)
class Cell:
    """One fit: a feature combination, a split and a regressor name."""

    combination: tuple[str, ...]
    split: Split
    regressor: str


def cell_key(combination: str, regressor: str, split: int) -> tuple[str, str, int]:
    """How a cell is found again in a results table (within one run and dataset)."""
    return combination, regressor, int(split)


@dataclass(frozen=True)
class CellPrediction:
    """Test predictions of one cell (``test_index`` are manifest rows)."""

    dataset: str
    combination: str
    regressor: str
    protocol: str
    split: int
    test_index: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray


@dataclass(frozen=True)
class CellResult:
    row: dict[str, Any]
    prediction: CellPrediction | None

    @property
    def key(self) -> tuple[str, str, int]:
        return cell_key(self.row["combination"], self.row["regressor"], self.row["split"])


@dataclass(frozen=True)
class CellContext:
    """The labels of a grid's cells and whether their predictions are kept."""

    dataset: str
    protocol: str
    keep_prediction: bool = True


def cell_result(cell: Cell, context: CellContext, rows: tuple[np.ndarray, int, np.ndarray], y_true: np.ndarray,
                y_pred: np.ndarray, alpha: float) -> CellResult:
    """The table row (metrics of the test predictions) and, if kept, the predictions of a cell.

    ``rows``: the usable train rows, the number of validation rows given to the regressor,
    and the usable test rows.
    """
    train, n_val, test = rows
    name = combination_name(cell.combination)
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    row = {"dataset": context.dataset, "combination": name, "regressor": cell.regressor,
           "protocol": context.protocol, "split": cell.split.index, "n_train": int(train.size), "n_val": int(n_val),
           "n_test": int(test.size), "alpha": float(alpha), **compute_metrics(y_true, y_pred)}
    prediction = (CellPrediction(context.dataset, name, cell.regressor, context.protocol, cell.split.index, test,
                                 y_true, y_pred) if context.keep_prediction else None)
    return CellResult(row, prediction)


def usable_parts(split: Split, usable: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The split's (train, val, test) rows that are usable; an error when too few remain."""
    train, val, test = (part[usable[part]] for part in (split.train, split.val, split.test))
    if train.size < 2 or test.size < 2:
        raise ValueError(f"{label} split {split.index}: {train.size} usable train and "
                         f"{test.size} usable test rows; need at least 2 of each")
    return train, val, test


@dataclass(frozen=True, eq=False)
class FeatureMatrix:
    """Feature sets side by side: ``values`` (rows, total dims), ``ranges`` name -> (start, stop),
    ``ok`` (rows, sets): the row is valid and finite in that set (sets in ``ranges`` order)."""

    values: np.ndarray
    ranges: dict[str, tuple[int, int]]
    ok: np.ndarray

    @classmethod
    def allocate(cls, n_rows: int, dims: Mapping[str, int], dtype: Any = np.float32) -> "FeatureMatrix":
        """An empty matrix to fill set by set with ``block(name)[...] = ...`` and ``ok[:, i] = ...``."""
        stops = np.cumsum([0, *dims.values()])
        ranges = {name: (int(stops[i]), int(stops[i + 1])) for i, name in enumerate(dims)}
        return cls(np.empty((n_rows, int(stops[-1])), dtype), ranges, np.ones((n_rows, len(dims)), bool))

    @classmethod
    def from_features(cls, features: Mapping[str, np.ndarray], names: Sequence[str],
                      valid: Mapping[str, np.ndarray] | None = None) -> "FeatureMatrix":
        """The named matrices (a 1-D feature is one column) in one array, float32 or wider."""
        missing = [name for name in names if name not in features]
        if missing:
            raise ValueError(f"features {missing} are not loaded; available: {sorted(features)}")
        blocks = {name: np.asarray(features[name]) for name in names}
        blocks = {name: b.reshape(-1, 1) if b.ndim == 1 else b for name, b in blocks.items()}
        rows = {b.shape[0] for b in blocks.values()}
        if len(rows) != 1 or any(b.ndim != 2 for b in blocks.values()):
            raise ValueError(f"features differ in rows or are not 2-D: { {n: b.shape for n, b in blocks.items()} }")
        # float32 features stay float32: the matrix is what travels to every worker.
        dtype = np.result_type(*blocks.values(), np.float32)
        matrix = cls.allocate(rows.pop(), {name: b.shape[1] for name, b in blocks.items()}, dtype)
        for i, (name, block) in enumerate(blocks.items()):
            matrix.block(name)[...] = block
            matrix.ok[:, i] = _valid_flags(valid, name, block.shape[0])
        matrix.mark_non_finite()
        return matrix

    def mark_non_finite(self) -> None:
        """Rows with a NaN or infinity in a set are not usable for that set."""
        for i, name in enumerate(self.ranges):
            self.ok[:, i] &= np.isfinite(self.block(name)).all(axis=1)

    def block(self, name: str) -> np.ndarray:
        start, stop = self.ranges[name]
        return self.values[:, start:stop]

    def columns(self, combination: Sequence[str]) -> np.ndarray:
        """Column indices of a combination, its sets in the given order."""
        self._check(combination)
        return np.concatenate([np.arange(*self.ranges[name]) for name in combination])

    def usable(self, combination: Sequence[str], mos: np.ndarray) -> np.ndarray:
        """Rows valid and finite in every set of the combination, with a finite MOS."""
        self._check(combination)
        names = list(self.ranges)
        return np.isfinite(mos) & self.ok[:, [names.index(n) for n in combination]].all(axis=1)

    def _check(self, combination: Sequence[str]) -> None:
        missing = [name for name in combination if name not in self.ranges]
        if missing:
            raise ValueError(f"features {missing} are not loaded; available: {sorted(self.ranges)}")


def _valid_flags(valid: Mapping[str, np.ndarray] | None, name: str, n_rows: int) -> np.ndarray:
    if valid is None or name not in valid:
        return np.ones(n_rows, bool)
    flags = np.asarray(valid[name], dtype=bool).ravel()
    if flags.shape != (n_rows,):
        raise ValueError(f"valid mask of {name!r} has {flags.size} rows, expected {n_rows}")
    return flags
