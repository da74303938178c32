"""Several iqa-store processes on one store at the same moment: nothing corrupt, no work done twice.

- 2 and 4 ``extract`` processes on one feature set (20 row chunks), released together from the
  set's writer lock: every chunk is committed once, by one of them (its marker names the
  writer), the rows they report computing add up to the dataset exactly, and the set is
  bit-equal to a single-process run. The same with 4 processes racing to *create* the set.
- 2 and 4 ``extract`` processes on different feature sets (one dataset name each, the same
  images) started together on a fresh store: each set complete and bit-equal to the
  single-process run, every process computing its own rows once, nothing left in staging.
- 2 concurrent ``fit`` processes, the same grid and two different grids: each table complete,
  every cell once (a cell fitted twice would be appended twice), equal to a single-process fit.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import _flock_waiters
from tests.reliability.trials import (GRID_COMBOS, IMAGES, KEY, extract_args, fit_args, grid_store, image_tree,
                                      precreate, rerun, results_table, rows_differing)

pytestmark = pytest.mark.reliability

MODULE = "test_concurrency.py"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_tree(tmp_path_factory.mktemp("concurrent") / "data")


@pytest.fixture(scope="module")
def reference(images: Path, forkserver, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    store = tmp_path_factory.mktemp("concurrent-reference") / "store"
    report = json.loads(forkserver.complete(extract_args(images, store), name="concurrent-reference").stdout)
    from iqa_store.store import FeatureStore
    fs = FeatureStore(store).get(report["feature_set"])
    return fs.read(), fs.status()


def released_together(forkserver, commands: list[list[str]], gate, name: str) -> list:
    """Fork the commands while ``gate`` (an exclusive writer lock) is held, wait until each is
    blocked on it, then release it: they start computing at the same moment."""
    assert gate.__enter__()
    try:
        children = [forkserver.run(argv, name=f"{name}-{i}") for i, argv in enumerate(commands)]
        deadline = time.monotonic() + 60
        while _flock_waiters() < {child.pid for child in children}:
            assert all(child.alive() for child in children) and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        gate.__exit__(None, None, None)
    return children


def _reports(children: list) -> list[dict]:
    statuses = [child.wait() for child in children]
    assert statuses == [0] * len(children), [child.stderr[-2000:] for child in children]
    return [json.loads(child.stdout) for child in children]


@pytest.mark.parametrize("processes, precreated", [(2, True), (4, True), (4, False)])
def test_concurrent_extractions_of_one_feature_set(processes: int, precreated: bool, images: Path, reference,
                                                   forkserver, ledger, tmp_path: Path) -> None:
    from iqa_store.store import FeatureSet, FeatureStore
    from iqa_store.store.files import read_json
    expected, expected_status = reference
    store = tmp_path / "store"
    argv = extract_args(images, store)
    started = time.monotonic()
    if precreated:  # 20 chunks to share
        trial = f"{processes} concurrent extractions of one feature set ({IMAGES // 3} chunks)"
        fs = precreate(store, images)
        children = released_together(forkserver, [argv] * processes, FeatureStore(store).writer_lock(fs, exclusive=True),
                                     f"same-{processes}")
    else:  # all racing to create it (the CLI's own layout: one chunk)
        trial = f"{processes} concurrent extractions creating one feature set"
        children = [forkserver.run(argv, name=f"create-{i}") for i in range(processes)]
    reports = _reports(children)
    seconds = time.monotonic() - started
    [name] = {r["feature_set"] for r in reports}
    final = FeatureSet(FeatureStore(store).get(name).path)
    writers = {f"{socket.gethostname()} {child.pid}": child for child in children}
    by_writer = {w: 0 for w in writers}
    for k in range(final.n_chunks):
        marker = read_json(final.path / "chunks" / f"{k}.json")
        by_writer[marker["writer"]] += marker["rows"][1] - marker["rows"][0]
    computed = {f"{socket.gethostname()} {child.pid}": r["computed"] for child, r in zip(children, reports)}
    lost = rows_differing(final.read(), final.status(), expected, expected_status)
    duplicated = max(0, sum(computed.values()) - IMAGES)
    survived = (final.is_complete and lost == 0 and duplicated == 0 and by_writer == computed
                and len(FeatureStore(store).feature_sets()) == 1 and not any((store / ".staging").glob("*")))
    ledger.record(trial, rerun(MODULE, f"one_feature_set and {processes}-{precreated}"), survived=survived,
                  rows_lost=lost, rows_duplicated=duplicated, recover_seconds=seconds)
    print(f"{trial}: rows computed per process {sorted(computed.values())}")
    assert survived, (computed, by_writer, lost)


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_extractions_of_different_feature_sets(processes: int, images: Path, reference, forkserver,
                                                          ledger, tmp_path: Path) -> None:
    from iqa_store.store import FeatureStore
    expected, expected_status = reference
    trial = f"{processes} concurrent extractions of different feature sets"
    store = tmp_path / "store"
    started = time.monotonic()
    children = [forkserver.run(extract_args(images, store, "brisque", f"toy{i}"), name=f"different-{i}")
                for i in range(processes)]
    reports = _reports(children)
    seconds = time.monotonic() - started
    sets = FeatureStore(store).feature_sets()
    lost = sum(rows_differing(fs.read(), fs.status(), expected, expected_status) for fs in sets)
    lost += IMAGES * (processes - len(sets))
    duplicated = sum(max(0, r["computed"] - IMAGES) for r in reports)
    survived = (len(sets) == processes and all(fs.is_complete for fs in sets) and lost == 0 and duplicated == 0
                and {fs.dataset for fs in sets} == {f"toy{i}" for i in range(processes)}
                and FeatureStore(store).datasets() == sorted(f"toy{i}" for i in range(processes))
                and not any((store / ".staging").glob("*")))
    ledger.record(trial, rerun(MODULE, f"different_feature_sets and {processes}"), survived=survived,
                  rows_lost=lost, rows_duplicated=duplicated, recover_seconds=seconds)
    assert survived, ([fs.name for fs in sets], [r["computed"] for r in reports], lost)


class _RunLock:
    """The flock a fit holds on its run folder (``fit.results.RunLog``), taken here as a gate."""

    def __init__(self, path: Path) -> None:
        self.path, self._handle = path, None

    def __enter__(self) -> bool:
        import fcntl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a")
        fcntl.flock(self._handle, fcntl.LOCK_EX)
        return True

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


@pytest.fixture(scope="module")
def base_grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return grid_store(tmp_path_factory.mktemp("concurrent-grid"))


@pytest.mark.parametrize("grids", ["same", "different"])
def test_two_concurrent_fits(grids: str, base_grid: Path, forkserver, ledger, tmp_path: Path) -> None:
    import pandas as pd
    trial = f"2 concurrent fits ({grids} grid)"
    combos = [GRID_COMBOS, GRID_COMBOS] if grids == "same" else [GRID_COMBOS[:2], GRID_COMBOS[2:]]
    alone, runs = [], []
    for i, combo in enumerate(dict.fromkeys(combos)):  # each grid once, alone, on its own copy
        solo = tmp_path / f"solo-{i}"
        shutil.copytree(base_grid, solo)
        runs.append(Path(json.loads(forkserver.complete(fit_args(solo, combo), name=f"fit-solo-{i}").stdout)["run"]).name)
        alone.append(results_table(solo, runs[-1]).sort_values(KEY, ignore_index=True))
    expected = alone * 2 if grids == "same" else alone
    store = tmp_path / "shared"
    shutil.copytree(base_grid, store)
    started = time.monotonic()
    # the run folder's lock held here until both processes wait on it (same grid: the same folder,
    # named by the same fingerprint as the solo run's), so they really run into each other
    gate = _RunLock(store / "results" / runs[0] / "grid" / "lock")
    assert gate.__enter__()
    try:
        children = [forkserver.run(fit_args(store, combo), name=f"fit-{grids}-{i}") for i, combo in enumerate(combos)]
        if grids == "same":
            deadline = time.monotonic() + 60
            while _flock_waiters() < {child.pid for child in children}:
                assert all(child.alive() for child in children) and time.monotonic() < deadline
                time.sleep(0.01)
    finally:
        gate.__exit__(None, None, None)
    statuses = [child.wait() for child in children]
    seconds = time.monotonic() - started
    outputs = [json.loads(child.stdout) if status == 0 else None for child, status in zip(children, statuses)]
    lost = duplicated = 0
    equal = None not in outputs
    for output, want in zip(outputs, expected):
        table = results_table(store, Path(output["run"]).name) if output else pd.DataFrame(columns=KEY)
        duplicated += int(table.duplicated(KEY).sum())
        table = table.drop_duplicates(KEY).sort_values(KEY, ignore_index=True)
        lost += len(want) - len(want.merge(table[KEY], on=KEY))
        equal = equal and table.equals(want)
    waited = grids != "same" or all("waiting for another process fitting into" in c.stderr for c in children)
    survived = statuses == [0, 0] and lost == 0 and duplicated == 0 and equal and waited
    ledger.record(trial, rerun(MODULE, f"concurrent_fits and {grids}"), survived=survived, rows_lost=lost,
                  rows_duplicated=duplicated, recover_seconds=seconds)
    assert statuses == [0, 0], [child.stderr[-2000:] for child in children]
    assert survived, (lost, duplicated)
