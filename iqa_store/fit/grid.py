"""Fit every (feature combination, split, regressor) cell and tabulate the test metrics.

The cells are grouped into tasks (``plan_tasks``): a task holds whole splits, or, when there
are few splits and many workers, a slice of one split's combinations. Inside a task, the
ridge cells of a split are fitted together with shared linear algebra (``ridge_grid``); any
other regressor is fitted cell by cell (``fit_cell``), a fresh clone of its template each time.

Tasks run in this process, on any ``concurrent.futures.Executor``, or where a ``layout``
(``cluster.LocalLayout``) chooses once the cells left to fit are known: their time in one
process is estimated from the cost model below, and where that estimate cannot be trusted
(regressors fitted cell by cell, such as the MLP, whose cost it does not model) the first task
is timed here and the rest extrapolated from it before choosing again. An executor may offer:
``share(data)`` to place the feature matrix on every worker once (Dask: a broadcast scatter)
instead of sending it with every task; ``parallelism`` (worker threads), which sizes tasks;
``blas_threads``, the BLAS thread count each task runs with. With a ``RunLog``, each task's
cells are appended to the run's table as it finishes, and cells already in it are not fitted
again, so an interrupted grid resumes. Results are returned in cell order.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import clone

from iqa_store.fit.cells import (TABLE_COLUMNS, Cell, CellContext, CellPrediction, CellResult, FeatureMatrix,
                                 cell_key, cell_result, usable_parts)
from iqa_store.fit.combinations import combination_name, split_combination
from iqa_store.fit.regressors import REGRESSORS, RidgeRegressor
from iqa_store.fit.ridge_grid import fit_ridge_cells
from iqa_store.splits import Split

__all__ = ["TABLE_COLUMNS", "Cell", "CellPrediction", "CellResult", "FeatureMatrix", "GridData", "GridResult",
           "GridTask", "fit_cell", "fit_grid", "list_cells", "plan_tasks", "run_task"]

# Task sizing from a rough cost model: (n_train + d) * d^2 multiply-adds per cell at about
# 1e10 per second. A task should take at least ~100 ms, so that scheduling overhead (a few
# ms per Dask task) stays small, and there should be a few tasks per worker thread, so a slow
# worker does not hold up the end of the run.
_MIN_TASK_FLOPS = 1e9
_TASKS_PER_WORKER = 4
# The same cost model's units per second for ridge cells in one process with one BLAS thread,
# measured by ``benchmarks/bench_grid.py --crossover`` (RESULTS.md, "Fit grid: where local
# workers pay off"); a layout compares the estimate with the cluster's crossover.
COST_PER_SECOND = 1e10


@dataclass
class GridResult:
    """``table``: one tidy row per cell (``TABLE_COLUMNS``); ``predictions``: per cell, if kept."""

    table: pd.DataFrame
    predictions: list[CellPrediction]


@dataclass(frozen=True, eq=False)
class GridData:
    """What every task reads: the feature matrix and the MOS, in manifest row order."""

    matrix: FeatureMatrix
    mos: np.ndarray


@dataclass(frozen=True)
class GridTask:
    """Cells fitted together on one worker; ``blas_threads`` None leaves BLAS as it is."""

    cells: tuple[Cell, ...]
    templates: dict[str, Any]
    context: CellContext
    blas_threads: int | None = None


def list_cells(combinations: Sequence[tuple[str, ...]], splits: Sequence[Split],
               regressors: Sequence[str]) -> list[Cell]:
    """All cells, combination-major, then split, then regressor."""
    return [Cell(tuple(combo), split, name) for combo in combinations for split in splits for name in regressors]


def _accepts_validation(estimator: Any) -> bool:
    return "X_val" in inspect.signature(estimator.fit).parameters


def fit_cell(cell: Cell, X: np.ndarray, mos: np.ndarray, usable: np.ndarray, template: Any, context: CellContext,
             columns: np.ndarray | None = None) -> CellResult:
    """Fit a fresh clone of ``template`` on the cell's usable training rows; score its test rows.

    ``columns`` picks the combination's columns of ``X`` (all when None), row by row, so no
    copy of the whole combination is made. Validation rows are passed as ``X_val``/``y_val``
    when the split has them and the estimator's ``fit`` takes them; ``n_val`` counts them.
    """
    train, val, test = usable_parts(cell.split, usable, f"{context.dataset} {combination_name(cell.combination)}")

    def take(rows: np.ndarray) -> np.ndarray:
        return X[rows] if columns is None else X[np.ix_(rows, columns)]

    estimator = clone(template)  # never reuse a fitted object
    extra = {"X_val": take(val), "y_val": mos[val]} if val.size and _accepts_validation(estimator) else {}
    estimator.fit(take(train), mos[train], **extra)
    return cell_result(cell, context, (train, val.size if extra else 0, test), mos[test],
                       estimator.predict(take(test)), getattr(estimator, "alpha_", np.nan))


def _shares_work(template: Any) -> bool:
    # Exactly our ridge: a subclass could change what fit does, so it is fitted cell by cell.
    return type(template) is RidgeRegressor


def run_task(task: GridTask, data: GridData) -> list[CellResult]:
    """Fit the task's cells, split by split; ridge cells of one split share their linear algebra."""
    from threadpoolctl import threadpool_limits

    limit = threadpool_limits(task.blas_threads) if task.blas_threads else nullcontext()
    results: list[CellResult] = []
    with limit:
        for _, group in groupby(task.cells, key=lambda cell: cell.split.index):
            cells = list(group)
            for name, template in task.templates.items():
                mine = [cell for cell in cells if cell.regressor == name]
                if mine and _shares_work(template):
                    results += fit_ridge_cells(data.matrix, data.mos, mine[0].split, [c.combination for c in mine],
                                               template, name, task.context)
                else:
                    results += [_fit_one(cell, data, template, task.context) for cell in mine]
    return results


def _fit_one(cell: Cell, data: GridData, template: Any, context: CellContext) -> CellResult:
    return fit_cell(cell, data.matrix.values, data.mos, data.matrix.usable(cell.combination, data.mos), template,
                    context, columns=data.matrix.columns(cell.combination))


def _flops(cell: Cell, matrix: FeatureMatrix) -> float:
    d = float(matrix.columns(cell.combination).size)
    return (cell.split.train.size + d) * d * d


def plan_tasks(cells: Sequence[Cell], matrix: FeatureMatrix, parallelism: int | None,
               packed: bool = True) -> list[tuple[Cell, ...]]:
    """Cells grouped into tasks: whole splits (small ones joined until a task is worth ~100 ms,
    unless not ``packed``: for regressors the cost model does not know), and, with
    ``parallelism`` worker threads and too few splits to give each ~4 tasks, splits cut into
    slices of whole combinations. None (one process): splits are never cut."""
    by_split = [list(group) for _, group in groupby(sorted(cells, key=lambda c: c.split.index),
                                                    key=lambda c: c.split.index)]
    costs = [sum(_flops(cell, matrix) for cell in group) for group in by_split]
    balance = math.inf if parallelism is None else max(_MIN_TASK_FLOPS,
                                                       sum(costs) / (_TASKS_PER_WORKER * parallelism))
    tasks, whole = [], []
    for group, cost in zip(by_split, costs):
        if cost > 2 * balance:  # cutting loses some sharing, so only when workers would idle
            tasks += _pack(_by_combination(group, matrix), balance)
        else:
            whole.append((group, cost))
    return tasks + _pack(whole, _MIN_TASK_FLOPS if packed else 0.0)


def _by_combination(cells: list[Cell], matrix: FeatureMatrix) -> Iterator[tuple[list[Cell], float]]:
    for _, group in groupby(sorted(cells, key=lambda c: c.combination), key=lambda c: c.combination):
        mine = list(group)
        yield mine, sum(_flops(cell, matrix) for cell in mine)


def _pack(units: Iterable[tuple[list[Cell], float]], target: float) -> list[tuple[Cell, ...]]:
    """Consecutive units joined into pieces that cost at least ``target`` (the last may cost less)."""
    pieces: list[tuple[Cell, ...]] = []
    current: list[Cell] = []
    cost = 0.0
    for cells, unit_cost in units:
        current += cells
        cost += unit_cost
        if cost >= target:
            pieces.append(tuple(current))
            current, cost = [], 0.0
    if current:
        pieces.append(tuple(current))
    return pieces


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


_SHARE_ATTEMPTS = 3
_LIVENESS_SECONDS = 1.0  # how often a wait with nothing finished asks whether the executor can still finish


def _run_tasks(tasks: list[GridTask], data: GridData,
               executor: concurrent.futures.Executor | None) -> Iterator[list[CellResult]]:
    """Each task's results as it finishes (in order when run here).

    An executor cancels the tasks whose shared data it lost (Dask: every worker holding the
    scattered matrix died; its memory manager keeps one copy once few tasks still wait on it),
    so those tasks are submitted again with the data shared again, a bounded number of times.
    """
    if executor is None:
        for task in tasks:
            yield run_task(task, data)
        return
    share = getattr(executor, "share", lambda value: value)
    todo = tasks
    for _ in range(_SHARE_ATTEMPTS):
        cancelled: list[GridTask] = []
        yield from _submit_and_collect(todo, share(data), executor, cancelled)
        if not cancelled:
            return
        todo = cancelled
    raise RuntimeError(f"the executor cancelled {len(todo)} grid task(s) {_SHARE_ATTEMPTS} times in a row "
                       "(its workers keep dying or losing the shared feature matrix); with a run log, the "
                       "cells that finished are kept and the same call resumes")


def _submit_and_collect(tasks: list[GridTask], shared: Any, executor: concurrent.futures.Executor,
                        cancelled: list[GridTask]) -> Iterator[list[CellResult]]:
    """Results of the tasks that finish; the tasks the executor cancelled go to ``cancelled``."""
    futures = {executor.submit(run_task, task, shared): task for task in tasks}
    lost = getattr(executor, "lost", lambda: None)
    pending = set(futures)
    try:
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=_LIVENESS_SECONDS,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                try:
                    result = future.result()
                except concurrent.futures.CancelledError:
                    cancelled.append(futures[future])
                    continue
                yield result
            # a client that gave up on its scheduler leaves its futures pending for ever (distributed 2026.8)
            if not done and (reason := lost()):
                raise ConnectionError(f"{reason}; {len(pending)} grid task(s) unfinished")
    finally:
        for future in futures:  # after an error, do not leave the rest running
            future.cancel()


def _modelled(templates: Mapping[str, Any]) -> bool:
    """Whether the cost model knows every regressor: only our ridge (the MLP's cost is its
    training budget, seconds whatever the shape, which the model would put at microseconds)."""
    return all(_shares_work(template) for template in templates.values())


def _cost(cells: Iterable[Cell], matrix: FeatureMatrix) -> float:
    return sum(_flops(cell, matrix) for cell in cells)


def _laid_out(todo: list[Cell], matrix: FeatureMatrix, data: GridData, templates: dict[str, Any],
              context: CellContext, layout: Any) -> Iterator[list[CellResult]]:
    """The cells' results, fitted where ``layout`` chooses (see the module docstring)."""
    modelled = _modelled(templates)
    tasks = [GridTask(group, templates, context, layout.blas_threads)
             for group in plan_tasks(todo, matrix, layout.parallelism, packed=modelled)]
    label = f"{context.dataset}: {len(todo)} cells"
    executor = None
    if modelled or not layout.automatic or len(tasks) == 1:
        executor = layout.executor_for(_cost(todo, matrix) / COST_PER_SECOND, len(tasks), label)
    else:
        started = time.perf_counter()
        yield from _run_tasks(tasks[:1], data, None)
        per_unit = (time.perf_counter() - started) / max(_cost(tasks[0].cells, matrix), 1.0)
        tasks = tasks[1:]
        rest = [cell for task in tasks for cell in task.cells]
        executor = layout.executor_for(per_unit * _cost(rest, matrix), len(tasks),
                                       f"{context.dataset}: {len(rest)} cells (the first task took "
                                       f"{time.perf_counter() - started:.1f} s here)")
    yield from _run_tasks(tasks, data, executor)


def fit_grid(features: Mapping[str, np.ndarray] | FeatureMatrix, combinations: Sequence[Sequence[str] | str],
             mos: np.ndarray, splits: Sequence[Split], regressors: Sequence[str] | Mapping[str, Any], *,
             dataset: str, protocol: str, valid: Mapping[str, np.ndarray] | None = None, progress: bool = True,
             keep_predictions: bool = True, executor: concurrent.futures.Executor | None = None,
             layout: Any = None, log: Any = None) -> GridResult:
    """Fit and score every (combination, split, regressor) cell.

    ``features``: name -> (n_rows, d) matrix in manifest row order (or a ``FeatureMatrix``);
    ``combinations``: tuples of names or "a+b" strings; ``regressors``: registry names or
    name -> estimator template; ``valid``: name -> per-row bool (rows with NaN are invalid
    too); ``layout``: chooses the executor (instead of ``executor``); ``log``: a
    ``results.RunLog`` to append finished cells to and resume from.
    """
    if executor is not None and layout is not None:
        raise ValueError("give an executor or a layout that chooses one, not both")
    from tqdm import tqdm

    mos = np.asarray(mos, dtype=np.float64).ravel()
    combos = list(dict.fromkeys(split_combination(c) if isinstance(c, str) else tuple(c) for c in combinations))
    if not combos or not splits:
        raise ValueError("fit_grid needs at least one combination and one split")
    templates = _templates(regressors)
    names = list(dict.fromkeys(name for combo in combos for name in combo))
    matrix = features if isinstance(features, FeatureMatrix) else FeatureMatrix.from_features(features, names, valid)
    for combo in combos:
        matrix.columns(combo)  # unknown names fail here, before any work
    if matrix.values.shape[0] != mos.size:
        raise ValueError(f"features have {matrix.values.shape[0]} rows but mos has {mos.size}")
    cells = list_cells(combos, splits, list(templates))
    keys = [cell_key(combination_name(c.combination), c.regressor, c.split.index) for c in cells]
    done = log.finished() & set(keys) if log is not None else set()
    todo = [cell for cell, key in zip(cells, keys) if key not in done]
    context = CellContext(dataset, protocol, keep_predictions)
    data = GridData(matrix, mos)
    if layout is not None and todo:
        batches = _laid_out(todo, matrix, data, templates, context, layout)
    else:
        threads = getattr(executor, "blas_threads", None)
        tasks = [GridTask(group, templates, context, threads)
                 for group in plan_tasks(todo, matrix, _parallelism(executor), packed=_modelled(templates))] \
            if todo else []
        batches = _run_tasks(tasks, data, executor)
    fitted: dict[tuple[str, str, int], CellResult] = {}
    with tqdm(total=len(cells), initial=len(done), desc=f"fit {dataset}", file=sys.stderr,
              disable=not progress) as bar:
        for batch in batches:
            if log is not None:
                log.append(batch)
            fitted.update((result.key, result) for result in batch)
            bar.update(len(batch))
    if done:
        fitted.update(log.load(done))
    ordered = [fitted[key] for key in keys]
    table = pd.DataFrame([r.row for r in ordered], columns=list(TABLE_COLUMNS))
    return GridResult(table, [r.prediction for r in ordered if r.prediction is not None])


def _parallelism(executor: concurrent.futures.Executor | None) -> int | None:
    if executor is None:
        return None
    return int(getattr(executor, "parallelism", None) or os.cpu_count() or 1)
