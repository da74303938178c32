"""Benchmark: the ridge fit grid against a straightforward scikit-learn loop, in one run.

All non-empty subsets of six KonIQ-sized feature sets (10,073 rows; 512, 640, 768, 768, 36
and 2048 dimensions: 63 combinations) x 10 splits x ridge with the 13-value alpha grid
1e-3..1e3. The default protocol is random-70-10-20 (alpha chosen on the validation rows by
SRCC, the Re-IQA/SLIQUE protocol); ``--protocol random-80-20`` chooses alpha by inner 5-fold
CV instead (13 x 5 + 1 sklearn fits per cell).

Baseline: per cell, per alpha, ``make_pipeline(StandardScaler(), Ridge(alpha))`` fitted on
the training rows and scored on the validation rows; the best alpha's test predictions are
kept. That loop takes hours, so a sample of cells spread over the combination sizes is
timed and the rest extrapolated with a least-squares fit of time ~ c0 + c2 d^2 + c3 d^3 (the
costs of X'X and of the Cholesky solve). The sampled cells' alphas and predictions are
compared with the grid's.

The grid runs on a Dask LocalCluster of 1 and of 2 workers (``--workers``); BLAS threads
are set deliberately: the baseline uses all cores, each worker cores / workers.

    .venv/bin/python benchmarks/bench_grid.py              # the full run (~1 h on 2 cores)
    .venv/bin/python benchmarks/bench_grid.py --splits 1 --sample 3 --workers 2   # a quick look

``--crossover`` measures instead where a LocalCluster starts to pay off, the rule behind
``iqa-store fit``'s default layout (``iqa_store.fit.cluster.choose_workers``): grids of 4 to
``--max-splits`` splits (doubling; from 4 splits on, two workers' tasks are whole splits) of the
3 combinations of clip and brisque (``--rows`` rows), each fitted in one process (one BLAS thread, as the default runs it; and with a BLAS thread
per core, the default before) and on a LocalCluster of the default size, the cluster's start,
scatter and close included, in alternation, ``--repeat`` times. A line through cluster time against one-process time gives the crossover in seconds of
one-process work; the grid's cost-model units fitted per second in one process are printed too.

    .venv/bin/python benchmarks/bench_grid.py --crossover --rows 3000   # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from iqa_store.fit.cells import FeatureMatrix
from iqa_store.fit.cluster import PARALLEL_FROM_SECONDS, dask_executor, default_local_workers
from iqa_store.fit.combinations import combination_name, parse_combinations
from iqa_store.fit.grid import COST_PER_SECOND, GridResult, _cost, fit_grid, list_cells
from iqa_store.fit.regressors import DEFAULT_ALPHAS
from iqa_store.splits import ProtocolSpec, Split, make_splits

SETS = {"clip": 512, "align": 640, "altclip": 768, "hps": 768, "brisque": 36, "reiqa": 2048}


def koniq_like(n_rows: int, seed: int = 0) -> tuple[FeatureMatrix, np.ndarray]:
    """Correlated features (a shared 64-d latent seen through each set, plus noise, on
    different scales and offsets) and a MOS on 1..5 that depends on the latent."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_rows, 64))
    matrix = FeatureMatrix.allocate(n_rows, SETS)
    for name, d in SETS.items():
        mixing = rng.normal(size=(64, d)) / 8
        block = (latent @ mixing + rng.normal(size=(n_rows, d))) * rng.uniform(0.05, 5, d) + rng.uniform(-3, 3, d)
        matrix.block(name)[...] = block
    mos = 3 + latent[:, :8].sum(axis=1) / 6 + rng.normal(0, 0.3, n_rows)
    return matrix, np.clip(mos, 1, 5)


@dataclass(frozen=True)
class Timed:
    combination: tuple[str, ...]
    split: int
    seconds: float
    alpha: float
    y_pred: np.ndarray


def sklearn_cell(matrix: FeatureMatrix, mos: np.ndarray, combo: tuple[str, ...], split: Split, cv: int = 5) -> Timed:
    """The straightforward loop for one cell: a StandardScaler + Ridge pipeline per alpha."""
    from scipy import stats
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from iqa_store.fit.regressors import cv_folds

    start = time.perf_counter()
    X = matrix.values[:, matrix.columns(combo)].astype(np.float64)
    train, val, test = split.train, split.val, split.test
    if val.size:
        folds = [(train, val)]
    else:
        folds = [(train[inside], train[held]) for inside, held in cv_folds(train.size, cv, 0)]
    scores = [np.mean([stats.spearmanr(mos[te], make_pipeline(StandardScaler(), Ridge(alpha=a))
                                       .fit(X[tr], mos[tr]).predict(X[te])).statistic for tr, te in folds])
              for a in DEFAULT_ALPHAS]
    alpha = DEFAULT_ALPHAS[int(np.argmax(scores))]
    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X[train], mos[train])
    return Timed(combo, split.index, time.perf_counter() - start, alpha, model.predict(X[test]))


def sample_cells(combos: list[tuple[str, ...]], splits: list[Split], count: int) -> list[tuple[tuple[str, ...], Split]]:
    """``count`` cells spread evenly over the combinations sorted by width, splits in turn."""
    by_width = sorted(combos, key=lambda c: sum(SETS[n] for n in c))
    picks = np.unique(np.linspace(0, len(by_width) - 1, count).round().astype(int))
    return [(by_width[i], splits[k % len(splits)]) for k, i in enumerate(picks)]


def extrapolate(timed: list[Timed], combos: list[tuple[str, ...]], n_splits: int) -> float:
    """Seconds for every cell, from time ~ c0 + c2 d^2 + c3 d^3 fitted to the sample."""
    from scipy.optimize import nnls

    def terms(combo: tuple[str, ...]) -> list[float]:
        d = sum(SETS[n] for n in combo) / 1000
        return [1.0, d ** 2, d ** 3]

    coef, _ = nnls(np.array([terms(t.combination) for t in timed]), np.array([t.seconds for t in timed]))
    return n_splits * float(sum(np.dot(terms(c), coef) for c in combos))


def timed_grid(matrix: FeatureMatrix, mos: np.ndarray, combos: list, splits: list, protocol: str,
               workers: int) -> tuple[GridResult, float, float]:
    started = time.perf_counter()
    with dask_executor(workers=workers) as executor:
        executor.client.wait_for_workers(workers)
        ready = time.perf_counter()
        result = fit_grid(matrix, combos, mos, splits, ["ridge"], dataset="koniq-like", protocol=protocol,
                          executor=executor)
        done = time.perf_counter()
    return result, done - ready, ready - started


def compare(result: GridResult, timed: list[Timed]) -> tuple[float, bool]:
    """Largest relative prediction difference over the sampled cells, and whether alphas agree."""
    table = result.table.reset_index(drop=True)
    worst, same_alpha = 0.0, True
    for t in timed:
        row = table.index[(table.combination == combination_name(t.combination)) & (table.split == t.split)][0]
        worst = max(worst, float(np.max(np.abs(result.predictions[row].y_pred - t.y_pred) / np.abs(t.y_pred))))
        same_alpha &= bool(table.loc[row, "alpha"] == t.alpha)
    return worst, same_alpha


@dataclass(frozen=True)
class Crossing:
    splits: int
    cells: int
    cost: float  # the grid's cost-model units
    here: float  # seconds in one process, BLAS threads as the default layout gives them
    here_all_blas: float  # seconds in one process with a BLAS thread per core (the default before)
    cluster: float  # seconds on a LocalCluster, from starting it to closing it
    load: float  # the 1-minute load average before the runs


def one_process_and_cluster(matrix: FeatureMatrix, mos: np.ndarray, combos: list, splits: list) -> Crossing:
    """The same grid in one process (BLAS threads as the default layout gives them) and on a
    LocalCluster of the default size, everything the user waits for included."""
    cores = os.cpu_count() or 1
    workers = default_local_workers(cores)
    fit = dict(dataset="koniq-like", protocol="random-80-20", progress=False, keep_predictions=False)
    load = os.getloadavg()[0]

    def in_process(blas_threads: int) -> float:
        with threadpool_limits(blas_threads):
            started = time.perf_counter()
            fit_grid(matrix, combos, mos, splits, ["ridge"], **fit)
            return time.perf_counter() - started

    here, here_all_blas = in_process(max(1, cores // workers)), in_process(cores)
    started = time.perf_counter()
    with dask_executor(workers=workers) as executor:
        fit_grid(matrix, combos, mos, splits, ["ridge"], executor=executor, **fit)
    cluster = time.perf_counter() - started
    cells = list_cells(combos, splits, ["ridge"])
    return Crossing(len(splits), len(cells), _cost(cells, matrix), here, here_all_blas, cluster, load)


def crossover(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    matrix, mos = koniq_like(args.rows)
    combos = parse_combinations(all_combos=["clip", "brisque"])
    sizes = [4 * 2 ** k for k in range(int(np.log2(args.max_splits / 4)) + 1)]
    print(f"date {datetime.date.today()}; {platform.processor() or platform.machine()}, {cores} cores; "
          f"numpy {np.__version__}; load average at start {os.getloadavg()}")
    print(f"{len(combos)} combinations of clip, brisque x {sizes} splits x ridge, {args.rows} rows; "
          f"one process with {max(1, cores // default_local_workers(cores))} BLAS thread(s) vs a LocalCluster of "
          f"{default_local_workers(cores)} single-threaded workers (start, scatter and close included)")
    runs = []
    for repeat in range(args.repeat):
        for n_splits in sizes:
            splits = make_splits(ProtocolSpec("random-80-20", n_splits=n_splits, seed=repeat), args.rows)
            runs.append(one_process_and_cluster(matrix, mos, combos, splits))
            r = runs[-1]
            print(f"  {r.cells:4d} cells ({r.splits} splits), load {r.load:.1f}: one process {r.here:6.1f} s "
                  f"({r.here_all_blas:.1f} s with {cores} BLAS threads), cluster {r.cluster:6.1f} s", flush=True)
    print(f"load average at end {os.getloadavg()}")
    here, cluster = np.array([r.here for r in runs]), np.array([r.cluster for r in runs])
    slope, start = np.polyfit(here, cluster, 1)  # cluster ~ start + slope * one-process time
    rate = sum(r.cost for r in runs) / here.sum()
    print(f"\n| cells | splits | load | one process (s) | one process, {cores} BLAS threads (s) | LocalCluster (s) | "
          "cluster / one process |\n|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(runs, key=lambda r: (r.splits, r.here)):
        print(f"| {r.cells} | {r.splits} | {r.load:.1f} | {r.here:.1f} | {r.here_all_blas:.1f} | {r.cluster:.1f} | "
              f"{r.cluster / r.here:.2f} |")
    print(f"\ncluster ~ {start:.1f} s + {slope:.2f} x one-process time; crossover "
          + (f"{start / (1 - slope):.1f} s of one-process work" if slope < 1 else "never (the cluster is not faster)")
          + f" (PARALLEL_FROM_SECONDS is {PARALLEL_FROM_SECONDS})")
    print(f"cost-model units per second in one process: {rate:.3g} (COST_PER_SECOND is {COST_PER_SECOND:.3g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10073)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--protocol", default="random-70-10-20")
    parser.add_argument("--sample", type=int, default=10, help="baseline cells timed")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--crossover", action="store_true", help="measure where a LocalCluster pays off instead")
    parser.add_argument("--max-splits", type=int, default=32, help="--crossover: the largest grid's splits")
    parser.add_argument("--repeat", type=int, default=2, help="--crossover: runs of each grid size")
    args = parser.parse_args()
    if args.crossover:
        crossover(args)
        return

    cores = os.cpu_count() or 1
    matrix, mos = koniq_like(args.rows)
    combos = parse_combinations(all_combos=list(SETS))
    splits = make_splits(ProtocolSpec(args.protocol, n_splits=args.splits), args.rows)
    print(f"date {datetime.date.today()}; {platform.processor() or platform.machine()}, {cores} cores; "
          f"numpy {np.__version__}; load average at start {os.getloadavg()}")
    print(f"{len(combos)} combinations x {args.splits} splits x ridge (13 alphas), {args.protocol}, "
          f"{args.rows} rows, {sum(SETS.values())} columns in all")

    with threadpool_limits(cores):  # the baseline gets the whole machine's BLAS
        timed = []
        for combo, split in sample_cells(combos, splits, args.sample):
            timed.append(sklearn_cell(matrix, mos, combo, split))
            print(f"  sklearn {combination_name(combo)} ({sum(SETS[n] for n in combo)} columns) split "
                  f"{split.index}: {timed[-1].seconds:.1f} s", flush=True)
    baseline = extrapolate(timed, combos, args.splits)
    print(f"sklearn loop: {len(timed)} cells measured in {sum(t.seconds for t in timed):.0f} s; "
          f"all {len(combos) * args.splits} cells extrapolated: {baseline:.0f} s")

    rows = []
    for workers in args.workers:
        result, seconds, startup = timed_grid(matrix, mos, combos, splits, args.protocol, workers)
        worst, same_alpha = compare(result, timed)
        rows.append((workers, seconds, startup, worst, same_alpha))
        print(f"grid, {workers} worker(s) x {max(1, cores // workers)} BLAS threads: {seconds:.1f} s "
              f"(+{startup:.1f} s cluster start); sklearn / grid = {baseline / seconds:.1f}; "
              f"same alphas: {same_alpha}; max relative prediction difference {worst:.1e}", flush=True)
    print(f"load average at end {os.getloadavg()}")
    print("\n| run | seconds | sklearn loop / this |\n|---|---:|---:|")
    print(f"| sklearn loop (extrapolated from {len(timed)} cells) | {baseline:.0f} | 1.0 |")
    for workers, seconds, _, _, _ in rows:
        print(f"| grid, {workers} worker(s) x {max(1, cores // workers)} BLAS threads | {seconds:.1f} | "
              f"{baseline / seconds:.1f} |")


if __name__ == "__main__":
    main()
