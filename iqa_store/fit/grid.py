"""Fit every (feature combination, split, regressor) cell and tabulate the test metrics.

Listing the cells (``list_cells``) and fitting one (``fit_cell``) are separate, plain
functions, so the loop in ``fit_grid`` can be swapped for another executor: any
``concurrent.futures.Executor`` (a process pool, ``dask.distributed.Client.get_executor()``)
may be passed; by default cells run in this process, in order. Results are always returned
in cell order, whatever order the executor finishes them in.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import clone

from iqa_store.fit.combinations import combination_name, split_combination
from iqa_store.fit.metrics import METRIC_NAMES, compute_metrics
from iqa_store.fit.regressors import REGRESSORS
from iqa_store.fit.splits import Split

__all__ = ["TABLE_COLUMNS", "Cell", "CellPrediction", "CellResult", "GridResult",
           "combine_features", "fit_cell", "fit_grid", "list_cells", "usable_rows"]

TABLE_COLUMNS = ("dataset", "combination", "regressor", "protocol", "split", "n_train", "n_val", "n_test",
                 "alpha", *METRIC_NAMES)


@dataclass(frozen=True)
class Cell:
    """One fit: a feature combination, a split and a regressor name."""

    combination: tuple[str, ...]
    split: Split
    regressor: str


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


@dataclass
class GridResult:
    """``table``: one tidy row per cell (``TABLE_COLUMNS``); ``predictions``: per cell, if kept."""

    table: pd.DataFrame
    predictions: list[CellPrediction] = field(default_factory=list)


def list_cells(combinations: Sequence[tuple[str, ...]], splits: Sequence[Split],
               regressors: Sequence[str]) -> list[Cell]:
    """All cells, combination-major, then split, then regressor."""
    return [Cell(tuple(combo), split, name) for combo in combinations for split in splits for name in regressors]


def combine_features(features: Mapping[str, np.ndarray], combination: Sequence[str]) -> np.ndarray:
    """The named feature matrices side by side (a 1-D feature is one column), float32 or wider."""
    missing = [name for name in combination if name not in features]
    if missing:
        raise ValueError(f"features {missing} are not loaded; available: {sorted(features)}")
    blocks = [np.asarray(features[name]) for name in combination]
    blocks = [b.reshape(-1, 1) if b.ndim == 1 else b for b in blocks]
    # Keep float32 features float32: the matrix travels to every cell (and, with a process or
    # Dask executor, is pickled per cell); the regressors cast to float64 themselves.
    dtype = np.result_type(*blocks, np.float32)
    rows = {b.shape[0] for b in blocks}
    if len(rows) != 1 or any(b.ndim != 2 for b in blocks):
        raise ValueError(f"features of {combination_name(combination)} differ in rows or are not 2-D: "
                         f"{[b.shape for b in blocks]}")
    return np.hstack(blocks).astype(dtype, copy=False)


def usable_rows(features: Mapping[str, np.ndarray], combination: Sequence[str], mos: np.ndarray,
                valid: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Rows valid in every feature of the combination, with finite features and MOS."""
    mask = np.isfinite(np.asarray(mos, dtype=np.float64))
    for name in combination:
        block = np.asarray(features[name], dtype=np.float64)
        mask &= np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
        if valid is not None and name in valid:
            flags = np.asarray(valid[name], dtype=bool).ravel()
            if flags.shape != mask.shape:
                raise ValueError(f"valid mask of {name!r} has {flags.size} rows, expected {mask.size}")
            mask &= flags
    return mask


def _accepts_validation(estimator: Any) -> bool:
    return "X_val" in inspect.signature(estimator.fit).parameters


def fit_cell(cell: Cell, X: np.ndarray, mos: np.ndarray, usable: np.ndarray, template: Any, *,
             dataset: str, protocol: str, keep_prediction: bool = True) -> CellResult:
    """Fit a fresh clone of ``template`` on the cell's usable training rows; score its test rows.

    Validation rows are passed as ``X_val``/``y_val`` when the split has them and the
    estimator's ``fit`` takes them; ``n_val`` counts the rows passed (0 otherwise).
    """
    split = cell.split
    train, val, test = (part[usable[part]] for part in (split.train, split.val, split.test))
    name = combination_name(cell.combination)
    if train.size < 2 or test.size < 2:
        raise ValueError(f"{dataset} {name} split {split.index}: {train.size} usable train and "
                         f"{test.size} usable test rows; need at least 2 of each")
    estimator = clone(template)  # never reuse a fitted object
    extra = {}
    if val.size and _accepts_validation(estimator):
        extra = {"X_val": X[val], "y_val": mos[val]}
    estimator.fit(X[train], mos[train], **extra)
    y_pred = np.asarray(estimator.predict(X[test]), dtype=np.float64).ravel()
    y_true = mos[test]
    row = {"dataset": dataset, "combination": name, "regressor": cell.regressor, "protocol": protocol,
           "split": split.index, "n_train": int(train.size), "n_val": int(val.size) if extra else 0,
           "n_test": int(test.size), "alpha": float(getattr(estimator, "alpha_", np.nan)),
           **compute_metrics(y_true, y_pred)}
    prediction = (CellPrediction(dataset, name, cell.regressor, protocol, split.index, test, y_true, y_pred)
                  if keep_prediction else None)
    return CellResult(row, prediction)


def _templates(regressors: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(regressors, Mapping):
        templates = dict(regressors)
    elif isinstance(regressors, str):
        templates = {regressors: REGRESSORS.get(regressors)()}
    else:
        templates = {name: REGRESSORS.get(name)() for name in regressors}
    if not templates:
        raise ValueError("no regressors given")
    return templates


def fit_grid(features: Mapping[str, np.ndarray], combinations: Sequence[Sequence[str] | str], mos: np.ndarray,
             splits: Sequence[Split], regressors: Sequence[str] | Mapping[str, Any], *, dataset: str,
             protocol: str, valid: Mapping[str, np.ndarray] | None = None, progress: bool = True,
             keep_predictions: bool = True,
             executor: concurrent.futures.Executor | None = None) -> GridResult:
    """Fit and score every (combination, split, regressor) cell.

    ``features``: name -> (n_rows, d) matrix in manifest row order; ``combinations``: tuples
    of names or "a+b" strings; ``regressors``: registry names or name -> estimator template;
    ``valid``: name -> per-row bool (rows that are NaN are invalid too). One combination's
    matrix is built at a time, and all its cells are handed to the executor together.
    """
    from tqdm import tqdm

    mos = np.asarray(mos, dtype=np.float64).ravel()
    combos = list(dict.fromkeys(split_combination(c) if isinstance(c, str) else tuple(c) for c in combinations))
    if not combos or not splits:
        raise ValueError("fit_grid needs at least one combination and one split")
    templates = _templates(regressors)
    cells = list_cells(combos, splits, list(templates))
    results: list[CellResult] = []
    with tqdm(total=len(cells), desc=f"fit {dataset}", file=sys.stderr, disable=not progress) as bar:
        for combo in combos:
            X = combine_features(features, combo)
            if X.shape[0] != mos.size:
                raise ValueError(f"{combination_name(combo)} has {X.shape[0]} rows but mos has {mos.size}")
            usable = usable_rows(features, combo, mos, valid)
            jobs = [(cell, X, mos, usable, templates[cell.regressor]) for cell in cells if cell.combination == combo]
            options = {"dataset": dataset, "protocol": protocol, "keep_prediction": keep_predictions}
            if executor is None:
                for job in jobs:
                    results.append(fit_cell(*job, **options))
                    bar.update()
            else:
                futures = [executor.submit(fit_cell, *job, **options) for job in jobs]
                for _ in concurrent.futures.as_completed(futures):
                    bar.update()
                results.extend(f.result() for f in futures)
    table = pd.DataFrame([r.row for r in results], columns=list(TABLE_COLUMNS))
    return GridResult(table, [r.prediction for r in results if r.prediction is not None])
