"""The fit grid on a real Dask LocalCluster: same numbers as in process, and a worker killed
mid-run (SIGKILL to its process) still leaves a complete table with each cell once."""

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
from iqa_store.fit.splits import ProtocolSpec, make_splits

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


def kill_a_busy_worker(executor: DaskExecutor, results: Path, killed: list[int]) -> None:
    """Once the first task's rows are on disk, SIGKILL a worker that has tasks."""
    pids = executor.client.run(os.getpid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.exists() and len(results.read_text().splitlines()) > 1:
            busy = [address for address, keys in executor.client.processing().items() if keys]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(pids[busy[0]])
                return
        time.sleep(0.01)


def test_killed_worker_still_gives_a_complete_table(executor: DaskExecutor, grid_args: tuple, in_process: GridResult,
                                                    tmp_path: Path) -> None:
    killed: list[int] = []
    killer = threading.Thread(target=kill_a_busy_worker, args=(executor, tmp_path / "results.csv", killed))
    killer.start()
    with RunLog(tmp_path, {"grid": "toy"}) as log:
        result = fit_grid(*grid_args, dataset="toy", protocol="p", progress=False, executor=executor, log=log)
    killer.join()
    assert killed, "the grid finished before a worker could be killed"
    assert killed[0] not in executor.client.run(os.getpid).values()
    assert_same(result, in_process)
    stored = pd.read_csv(tmp_path / "results.csv")
    assert len(stored) == len(in_process.table)
    assert not stored.duplicated(["combination", "regressor", "split"]).any()
    executor.client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker


def kill_every_worker(executor: DaskExecutor, results: Path, killed: list[int]) -> None:
    """Once the first task's rows are on disk, SIGKILL all workers: every copy of the shared
    matrix is gone, so the tasks that need it are cancelled rather than rerun."""
    pids = executor.client.run(os.getpid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.exists() and len(results.read_text().splitlines()) > 1:
            for pid in pids.values():
                os.kill(pid, signal.SIGKILL)
            killed += pids.values()
            return
        time.sleep(0.01)


def test_losing_every_copy_of_the_shared_matrix_still_gives_a_complete_table(
        executor: DaskExecutor, grid_args: tuple, in_process: GridResult, tmp_path: Path) -> None:
    killed: list[int] = []
    killer = threading.Thread(target=kill_every_worker, args=(executor, tmp_path / "results.csv", killed))
    killer.start()
    with RunLog(tmp_path, {"grid": "toy"}) as log:
        result = fit_grid(*grid_args, dataset="toy", protocol="p", progress=False, executor=executor, log=log)
    killer.join()
    assert len(killed) == 2, "the grid finished before the workers could be killed"
    assert not set(killed) & set(executor.client.run(os.getpid).values())
    assert_same(result, in_process)
    stored = pd.read_csv(tmp_path / "results.csv")
    assert len(stored) == len(in_process.table)
    assert not stored.duplicated(["combination", "regressor", "split"]).any()
    executor.client.wait_for_workers(2, timeout=60)
