"""The fit grid on a real Dask LocalCluster: same numbers as in process, and workers killed
mid-run (SIGKILL to their processes: one busy worker, or all of them with every copy of the
shared matrix) still leave a complete table with each cell once."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iqa_store.fit.cluster import DaskExecutor, dask_executor
from iqa_store.fit.combinations import parse_combinations
from iqa_store.fit.grid import GridResult, fit_grid
from iqa_store.fit.results import RunLog
from iqa_store.splits import ProtocolSpec, make_splits

N = 1200
DIMS = {"a": 30, "b": 60, "c": 100, "d": 10}


@pytest.fixture(scope="module")
def grid_args() -> tuple:
    rng = np.random.default_rng(5)
    features = {k: (rng.normal(size=(N, d)) * rng.uniform(0.5, 20, d)).astype(np.float32) for k, d in DIMS.items()}
    mos = features["a"][:, :4].sum(1) / 20 + features["c"][:, 0] / 10 + rng.normal(0, 1, N)
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=6), N)
    return features, parse_combinations(all_combos=list(DIMS)), mos, splits, ["ridge"]


@pytest.fixture(scope="module")
def in_process(grid_args: tuple) -> GridResult:
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        return fit_grid(*grid_args, dataset="toy", protocol="p", progress=False)


@pytest.fixture(scope="module")
def executor() -> DaskExecutor:
    with dask_executor(workers=2) as executor:
        yield executor


def assert_same(a: GridResult, b: GridResult) -> None:
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=False, rtol=1e-9)
    for x, y in zip(a.predictions, b.predictions, strict=True):
        np.testing.assert_array_equal(x.test_index, y.test_index)
        np.testing.assert_allclose(x.y_pred, y.y_pred, rtol=1e-9)


def test_local_cluster_equals_in_process(executor: DaskExecutor, grid_args: tuple, in_process: GridResult) -> None:
    assert executor.parallelism == 2
    assert executor.blas_threads == max(1, (os.cpu_count() or 1) // 2)
    from threadpoolctl import threadpool_info
    per_worker = executor.client.run(lambda: [pool["num_threads"] for pool in threadpool_info()])
    assert all(threads == [executor.blas_threads] for threads in per_worker.values()), per_worker
    assert_same(fit_grid(*grid_args, dataset="toy", protocol="p", progress=False, executor=executor), in_process)


def first_rows_on_disk(results: Path) -> None:
    deadline = time.monotonic() + 60
    while not (results.exists() and len(results.read_text().splitlines()) > 1):
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def kill_a_busy_worker(executor: DaskExecutor, results: Path, killed: list[int]) -> None:
    """Once the first task's rows are on disk, SIGKILL a worker that has tasks: they run
    again elsewhere (and if it held the last copy of the shared matrix, that is scattered again)."""
    pids = executor.client.run(os.getpid)
    first_rows_on_disk(results)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        busy = [address for address, keys in executor.client.processing().items() if keys]
        if busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(pids[busy[0]])
            return
        time.sleep(0.01)


def kill_every_worker(executor: DaskExecutor, results: Path, killed: list[int]) -> None:
    """Once the first task's rows are on disk, SIGKILL all workers: every copy of the shared
    matrix is gone, so the scheduler cancels the tasks that need it instead of rerunning them."""
    pids = executor.client.run(os.getpid)
    first_rows_on_disk(results)
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    killed += pids.values()


@pytest.mark.parametrize("kill, n_killed", [(kill_a_busy_worker, 1), (kill_every_worker, 2)])
def test_killed_workers_still_give_a_complete_table(executor: DaskExecutor, grid_args: tuple, in_process: GridResult,
                                                    tmp_path: Path, kill, n_killed: int) -> None:
    killed: list[int] = []
    killer = threading.Thread(target=kill, args=(executor, tmp_path / "results.csv", killed))
    killer.start()
    with RunLog(tmp_path, {"grid": "toy"}) as log:
        result = fit_grid(*grid_args, dataset="toy", protocol="p", progress=False, executor=executor, log=log)
    killer.join()
    assert len(killed) == n_killed, "the grid finished before the workers could be killed"
    assert not set(killed) & set(executor.client.run(os.getpid).values())
    assert_same(result, in_process)
    stored = pd.read_csv(tmp_path / "results.csv")
    assert len(stored) == len(in_process.table)
    assert not stored.duplicated(["combination", "regressor", "split"]).any()
    executor.client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed workers


def test_choose_workers_keeps_small_grids_and_workers_1_in_this_process() -> None:
    from iqa_store.fit.cluster import PARALLEL_FROM_SECONDS, choose_workers
    assert choose_workers(0.5, 10, cores=2) == 1  # tiny grid
    assert choose_workers(1e6, 1, cores=2) == 1  # one task: nothing side by side
    assert choose_workers(1e6, 40, cores=1) == 1  # one core
    assert choose_workers(1e6, 40, requested=1, cores=2) == 1  # workers=1 forces this process
    assert choose_workers(0.5, 10, requested=3, cores=2) == 3  # an explicit number is obeyed
    assert choose_workers(0.5, 10, cores=2, cluster_running=True) == 2  # start-up already paid
    big = choose_workers(1e6, 40, cores=2)
    assert big == (2 if PARALLEL_FROM_SECONDS <= 1e6 else 1)
    with pytest.raises(ValueError, match="at least 1"):
        choose_workers(1.0, 2, requested=0)


def test_default_layout_fits_here_with_the_workers_blas_threads(grid_args: tuple, in_process: GridResult) -> None:
    """The default keeps this grid in one process, with the workers' BLAS thread count, so its table
    equals the one-thread in-process table (and, through the test above, the cluster's). With the
    BLAS threads as they are (workers=1), the logistic PLCC fit magnifies rounding past 1e-9."""
    from iqa_store.fit.cluster import LocalLayout
    lines: list[str] = []
    with LocalLayout(None, lines.append) as layout:
        auto = fit_grid(*grid_args, dataset="toy", protocol="p", progress=False, layout=layout)
    assert len(lines) == 1 and "cells in this process" in lines[0], lines
    assert layout.blas_threads == max(1, (os.cpu_count() or 1) // 2)
    assert_same(auto, in_process)


def test_tasks_that_can_never_finish_end_in_a_connection_error() -> None:
    """A Dask client that gave up on its scheduler leaves its futures pending for ever: the grid asks the
    executor whether it can still finish and stops with a ConnectionError (the CLI's one error line)."""
    import concurrent.futures

    from iqa_store.fit.grid import _submit_and_collect

    class Abandoned(concurrent.futures.Executor):
        def submit(self, fn, /, *args, **kwargs):
            return concurrent.futures.Future()  # never resolved, as a closed client's

        def lost(self) -> str:
            return "the Dask client is closed: its scheduler went away"

    with pytest.raises(ConnectionError, match="client is closed.*2 grid task"):
        list(_submit_and_collect(["a", "b"], None, Abandoned(), []))
