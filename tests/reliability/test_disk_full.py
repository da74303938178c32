"""Disk full in the middle of an extraction: a clear error, a readable store, and a resume once space is back.

The store lives on a small filesystem made for the test: a tmpfs mounted with a size limit
(``mount -t tmpfs -o size=...``), its size lowered with ``remount`` to what is used plus a drawn
allowance, so the extraction runs out of space part way through; ``remount`` to a larger size is
"space is back". Where the machine refuses mounting (not root, no CAP_SYS_ADMIN), the same runs
get ENOSPC injected at the OS boundary instead: every file write below the store (``io.open``
and ``os.write``) fails with ENOSPC once a drawn number of bytes has gone through
(``forkserver._inject_enospc``). Each run must show:

- exit status non-zero, one line ``error: ...`` naming the store and "No space left on device",
  no traceback;
- the store still readable: every chunk committed before the failure reads back exactly as in an
  uninterrupted run, the rest pending (never a half-written chunk), and ``iqa-store show`` works;
- the same command, once space is back, completes, computes only the rows not committed before
  (none twice) and gives a set bit-equal to the uninterrupted run.

One run per filesystem runs out of space before the feature set is even created: then nothing
of the set is visible, and the resume creates it and completes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.reliability.trials import (IMAGES, Snapshot, draws, extract_args, image_tree, precreate, rerun,
                                      rows_differing)

pytestmark = pytest.mark.reliability

MODULE = "test_disk_full.py"
POINTS = 4  # per filesystem: 3 allowances mid-extraction (drawn), one before the set exists
PAGE = 4096


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_tree(tmp_path_factory.mktemp("full") / "data")


@pytest.fixture(scope="module")
def reference(images: Path, forkserver, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    store = tmp_path_factory.mktemp("full-reference") / "store"
    precreate(store, images)
    report = json.loads(forkserver.complete(extract_args(images, store), name="full-reference").stdout)
    from iqa_store.store import FeatureStore
    fs = FeatureStore(store).get(report["feature_set"])
    return fs.read(), fs.status()


def _mount(folder: Path, size: int) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def _resize(folder: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True, capture_output=True)


def _used(folder: Path) -> int:
    stats = os.statvfs(folder)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


@contextmanager
def small_filesystem(folder: Path, mount: bool) -> Iterator[bool]:
    """A 4 MiB tmpfs at ``folder`` (True), or just the folder when not asked or refused (False)."""
    mounted = mount and _mount(folder, 4 << 20)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("fill", ["tmpfs", "injected"])
def test_disk_full_mid_extraction_fails_cleanly_and_resumes(fill: str, images: Path, reference, forkserver, ledger,
                                                            tmp_path: Path) -> None:
    expected, expected_status = reference
    trial = f"disk full mid-extraction ({'size-limited tmpfs' if fill == 'tmpfs' else 'ENOSPC injected at write calls'})"
    from iqa_store.store import FeatureSet, FeatureStore
    with small_filesystem(tmp_path / "disk", mount=fill == "tmpfs") as mounted:
        if fill == "tmpfs" and not mounted:
            pytest.skip("this machine refuses mounting a tmpfs (not root or no CAP_SYS_ADMIN): the injected "
                        "variant covers the same runs")
        allowances = [int(u) for u in np.array(draws(trial, POINTS - 1, 0.05, 0.85)) * 20] + [None]
        for number, chunks in enumerate(allowances):
            store = tmp_path / "disk" / f"store-{number}"
            fs = precreate(store, images) if chunks is not None else None
            # room for `chunks` chunks: ~4 pages each on tmpfs, ~600 bytes each through the injected writes
            budget = (chunks * 4 + 1) * PAGE if chunks is not None else 2 * PAGE
            argv = extract_args(images, store)
            if fill == "tmpfs":
                _resize(tmp_path / "disk", _used(tmp_path / "disk") + budget)
                failed = forkserver.run(argv, name=f"full-{fill}-{number}")
            else:
                failed = forkserver.run(argv, name=f"full-{fill}-{number}",
                                        enospc=(store, (chunks or 0) * 600 + 200))
            status = failed.wait()
            errors = _error_lines(failed.stderr)
            clean = (status not in (0, -9) and len(errors) == 1 and "Traceback" not in failed.stderr
                     and str(store) in errors[0] and "No space left on device" in errors[0])
            if fill == "tmpfs":
                _resize(tmp_path / "disk", 4 << 20)  # space is back
            if fs is None:  # out of space before the set existed: nothing of it is visible
                sets = FeatureStore(store).feature_sets()
                readable = not sets and not any((store / ".staging").glob("*"))
                before, committed = Snapshot({}, np.empty((0, 0)), np.empty(0)), 0
            else:
                before = Snapshot.of(FeatureSet(fs.path))
                committed = before.committed_rows(fs.rows_per_chunk, fs.n_rows)
                shown = forkserver.run(["show", fs.name, "--store", str(store), "--format", "json"],
                                       name=f"full-show-{number}")
                readable = before.intact(expected, expected_status) and shown.wait() == 0
            resumed = forkserver.run(argv, name=f"full-resume-{fill}-{number}")
            resumed_status = resumed.wait()
            outcome = json.loads(resumed.stdout) if resumed_status == 0 else {}
            final = FeatureStore(store).get(outcome["feature_set"]) if outcome else None
            lost = IMAGES if final is None else rows_differing(final.read(), final.status(), expected, expected_status)
            duplicated = max(0, outcome.get("computed", 0) + committed - IMAGES)
            survived = (clean and readable and resumed_status == 0 and outcome.get("status") == "complete"
                        and lost == 0 and duplicated == 0)
            ledger.record(trial, rerun(MODULE, fill), survived=survived, rows_lost=lost, rows_duplicated=duplicated,
                          recover_seconds=resumed.seconds)
            print(f"{trial}: run {number}, room for {chunks} chunk(s): exit {status}, "
                  f"{len(before.markers)} chunks committed; {errors[:1]}")
            assert clean, (status, failed.stderr[-3000:])
            assert readable, f"run {number}: the store after the failure is not what was committed"
            assert survived, (number, resumed.stderr[-2000:], outcome, lost, duplicated)
            shutil.rmtree(store)
