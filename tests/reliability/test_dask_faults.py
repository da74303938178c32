"""Dask faults: a worker killed mid-grid and mid-extraction, and the scheduler restarted mid-fit.

The cluster is a real ``distributed.LocalCluster`` with worker processes (two single-threaded
workers under their nannies), started in its own process with a fixed scheduler address, so the
CLI reaches it with ``--scheduler`` as it would reach any cluster:

- worker killed mid-grid: ``iqa-store fit --scheduler`` runs, and once a drawn number of tasks
  are in the results table, one worker process gets SIGKILL (its nanny starts a new one). The
  table must be complete, every cell once, equal to a single-process fit of the same grid.
- worker killed mid-extraction: ``iqa-store extract --scheduler --shards 4`` on a set of 20 row
  chunks; once a chunk is committed by a worker, that worker gets SIGKILL. Its shard runs again
  elsewhere from the chunks it committed: the set must be complete and bit-equal to a
  single-process run, and the chunks the killed worker committed plus the rows the finished
  shards computed must add up to the dataset exactly (nothing computed twice).
- scheduler restarted: the cluster's process (scheduler and nannies) is killed with SIGKILL mid-fit;
  the fit must end with exit 1 and one error line (no uncaught traceback; distributed's client
  logs the lost connection itself); a new cluster at the same address, and
  the same command again completes the table, every cell once, equal to the single-process fit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import write_images
from tests.reliability.trials import KEY, committed_cells, draws, fit_args, grid_store, precreate, rerun, results_table

pytestmark = pytest.mark.reliability

MODULE = "test_dask_faults.py"
WORKER_KILLS = 3  # per kind: each costs a nanny restart of a worker (a fresh interpreter)

CLUSTER = """
import sys, time
from distributed import LocalCluster
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                       scheduler_port=int(sys.argv[1]), host="127.0.0.1",
                       env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
cluster.wait_for_workers(2)
print(cluster.scheduler_address, flush=True)
while True:
    time.sleep(60)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Live worker processes of the cluster process: its multiprocessing-spawned children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != "Z" and b"spawn_main" in command:
            found.append(int(entry.name))
    return sorted(found)


class Cluster:
    """A LocalCluster in its own process group at ``tcp://127.0.0.1:PORT``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.address = f"tcp://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", CLUSTER, str(self.port)], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert self.process.stdout.readline().strip() == self.address
        self.wait_for_workers()

    def workers(self) -> list[int]:
        return _children(self.process.pid)

    def wait_for_workers(self, count: int = 2, timeout: float = 120) -> None:
        """Until ``count`` worker processes run and have said hello to the scheduler."""
        from distributed import Client
        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(count, timeout=timeout)
            deadline = time.monotonic() + timeout
            while len(client.scheduler_info()["workers"]) != count or len(self.workers()) != count:
                assert time.monotonic() < deadline, "the nanny did not restart the killed worker"
                time.sleep(0.1)

    def kill(self) -> None:
        """The whole cluster at once, SIGKILL (no goodbye to anyone)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for pid in _children(self.process.pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    running = Cluster(_free_port())
    running.start()
    yield running
    running.kill()


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory, forkserver) -> tuple[Path, pd.DataFrame]:
    """The grid store, and the table of its fit in one process."""
    base = grid_store(tmp_path_factory.mktemp("dask-grid"))
    solo = tmp_path_factory.mktemp("dask-solo") / "store"
    shutil.copytree(base, solo)
    forkserver.complete(fit_args(solo), name="dask-fit-solo")
    return base, results_table(solo).sort_values(KEY, ignore_index=True)


def _on(args: list[str], address: str) -> list[str]:
    """The fit command on the cluster at ``address`` (instead of in one process)."""
    at = args.index("--workers")
    return [*args[:at], "--scheduler", address, *args[at + 2:]]


def _compare(store: Path, expected: pd.DataFrame) -> tuple[int, int, bool]:
    """Cells lost, cells duplicated, and whether the table equals the single-process one."""
    table = results_table(store) if list(store.glob("results/*/grid/results.csv")) else pd.DataFrame(columns=KEY)
    duplicated = int(table.duplicated(KEY).sum())
    table = table.drop_duplicates(KEY).sort_values(KEY, ignore_index=True)
    lost = len(expected) - len(expected.merge(table[KEY], on=KEY))
    try:
        pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-9)
        equal = True
    except AssertionError:
        equal = False
    return lost, duplicated, equal


def test_a_worker_killed_mid_grid(cluster: Cluster, grid, forkserver, ledger, tmp_path: Path) -> None:
    base, expected = grid
    trial = "Dask worker killed mid-grid (SIGKILL)"
    tasks = len(expected) // 3  # a task per split
    for number, fraction in enumerate(draws(trial, WORKER_KILLS, 0.0, 0.5)):
        store = tmp_path / f"store-{number}"
        shutil.copytree(base, store)
        appended = 1 + int(fraction * tasks)
        fitting = forkserver.run(_on(fit_args(store), cluster.address), name=f"dask-grid-{number}")
        while fitting.alive() and committed_cells(store) < 3 * appended:
            time.sleep(0.002)
        killed = cluster.workers()[number % 2] if fitting.alive() else None
        if killed:
            os.kill(killed, signal.SIGKILL)
        status = fitting.wait()
        lost, duplicated, equal = _compare(store, expected)
        survived = killed is not None and status == 0 and lost == 0 and duplicated == 0 and equal
        ledger.record(trial, rerun(MODULE, "mid_grid"), survived=survived, rows_lost=lost,
                      rows_duplicated=duplicated, recover_seconds=fitting.seconds)
        assert killed, "the grid finished before a worker could be killed"
        assert status == 0, fitting.stderr[-3000:]
        assert survived, (lost, duplicated, equal)
        cluster.wait_for_workers()


EXTRACT_IMAGES = 40
EXTRACT_ROWS_PER_CHUNK = 2


@pytest.fixture(scope="module")
def large_images(tmp_path_factory: pytest.TempPathFactory, forkserver) -> tuple[Path, np.ndarray]:
    """40 larger images (BRISQUE takes a while on each), and their features from one process."""
    root = tmp_path_factory.mktemp("dask-images") / "data"
    names = write_images(root, EXTRACT_IMAGES, size=(192, 256), seed=9)
    pd.DataFrame({"path": names, "mos": np.linspace(1, 5, len(names))}).to_csv(root / "labels.csv", index=False)
    store = tmp_path_factory.mktemp("dask-extract-solo") / "store"
    precreate(store, root, rows_per_chunk=EXTRACT_ROWS_PER_CHUNK)
    from tests.reliability.trials import extract_args
    report = json.loads(forkserver.complete(extract_args(root, store), name="dask-extract-solo").stdout)
    from iqa_store.store import FeatureStore
    return root, FeatureStore(store).get(report["feature_set"]).read()


def test_a_worker_killed_mid_extraction(cluster: Cluster, large_images, forkserver, ledger, tmp_path: Path) -> None:
    from iqa_store.store import FeatureSet
    from iqa_store.store.files import read_json
    from tests.reliability.trials import extract_args
    root, expected = large_images
    trial = "Dask worker killed mid-extraction (SIGKILL)"
    host = socket.gethostname()
    for number in range(WORKER_KILLS - 1):
        store = tmp_path / f"store-{number}"
        fs = precreate(store, root, rows_per_chunk=EXTRACT_ROWS_PER_CHUNK)
        workers = {f"{host} {pid}": pid for pid in cluster.workers()}
        extracting = forkserver.run([*extract_args(root, store), "--scheduler", cluster.address, "--shards", "4"],
                                    name=f"dask-extract-{number}")
        killed = None
        while extracting.alive() and killed is None:
            writers = {read_json(fs.path / "chunks" / f"{k}.json")["writer"] for k in fs.done_chunks()}
            busy = sorted(workers[w] for w in writers if w in workers)
            if busy:
                killed = busy[number % len(busy)]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.002)
        status = extracting.wait()
        report = json.loads(extracting.stdout) if status == 0 else {}
        final = FeatureSet(fs.path)
        by_killed = sum(marker["rows"][1] - marker["rows"][0] for marker in
                        (read_json(final.path / "chunks" / f"{k}.json") for k in final.done_chunks())
                        if marker["writer"] == f"{host} {killed}")
        values = final.read()
        lost = int((~np.array([np.array_equal(a, b) for a, b in zip(values, expected)])).sum())
        duplicated = max(0, report.get("computed", 0) + by_killed - EXTRACT_IMAGES)
        survived = (killed is not None and status == 0 and report.get("status") == "complete" and lost == 0
                    and report.get("computed", 0) + by_killed == EXTRACT_IMAGES)
        ledger.record(trial, rerun(MODULE, "mid_extraction"), survived=survived, rows_lost=lost,
                      rows_duplicated=duplicated, recover_seconds=extracting.seconds)
        print(f"{trial}: run {number}: killed worker {killed} had committed {by_killed} rows; "
              f"the shards that finished computed {report.get('computed')}")
        assert killed, "the extraction finished before a worker could be killed"
        assert status == 0, extracting.stderr[-3000:]
        assert survived, (report, by_killed, lost)
        cluster.wait_for_workers()


def test_the_scheduler_restarted_mid_fit(cluster: Cluster, grid, forkserver, ledger, tmp_path: Path) -> None:
    base, expected = grid
    trial = "Dask scheduler killed mid-fit and restarted, command re-run"
    store = tmp_path / "store"
    shutil.copytree(base, store)
    argv = _on(fit_args(store), cluster.address)
    # how long the client keeps trying a scheduler that is gone (a user setting; distributed's default is 30 s)
    fitting = forkserver.run(argv, {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s"}, name="dask-restart-1")
    while fitting.alive() and committed_cells(store) < 3:
        time.sleep(0.002)
    assert fitting.alive(), "the grid finished before the scheduler could be killed"
    cluster.kill()
    deadline = time.monotonic() + 90
    while fitting.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    hung = fitting.alive()
    status = fitting.kill() if hung else fitting.wait()
    errors = [line for line in fitting.stderr.splitlines() if line.startswith("error:")]
    # distributed's client logs its lost connections itself (with their tracebacks, as log records);
    # the command's own end must be one error line, not an uncaught exception
    last = fitting.stderr.strip().splitlines()[-1:] if fitting.stderr.strip() else []
    clean = not hung and status == 1 and len(errors) == 1 and last == errors
    restarted = time.monotonic()
    cluster.start()
    again = forkserver.run(argv, name="dask-restart-2")
    again_status = again.wait()
    lost, duplicated, equal = _compare(store, expected)
    survived = clean and again_status == 0 and lost == 0 and duplicated == 0 and equal
    ledger.record(trial, rerun(MODULE, "scheduler_restarted"), survived=survived, rows_lost=lost,
                  rows_duplicated=duplicated, recover_seconds=time.monotonic() - restarted)
    print(f"{trial}: first run exit {status}{' (hung: killed after 90 s)' if hung else ''}: {errors}")
    assert clean, (status, fitting.stderr[-3000:])
    assert again_status == 0, again.stderr[-3000:]
    assert survived, (lost, duplicated, equal)
