"""Sharded extraction: --shard I/N (fixed, disjoint chunk sets; the last shard completes the set),
two shard processes through the real CLI at once, --scheduler on a real Dask LocalCluster
(daemonic workers decode in the task's thread), failures that keep committed chunks, and two
creators of one set racing.

As in test_extract.py, sets with several chunks are created first with a small ``chunk_bytes``
(the CLI uses the default layout, one chunk here); an existing set keeps its own layout.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import one_line_error, start_together, write_images
from iqa_store import api
from iqa_store.datasets import load_manifest
from iqa_store.extraction.runner import _Images, extract, feature_identity
from iqa_store.extractors import RunOptions, create_extractor
from iqa_store.store import FeatureSet, FeatureStore
from iqa_store.store.files import read_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL = "openclip:TinyViT-test:none"
N_IMAGES = 24
ROWS_PER_CHUNK = 4
CHUNK_BYTES = ROWS_PER_CHUNK * 32 * 4  # 4 rows per chunk at dim 32: 6 chunks
N_CHUNKS = N_IMAGES // ROWS_PER_CHUNK
CLI = str(Path(sys.executable).parent / "iqa-store")
DATASET_OPTIONS = {"labels": "labels.csv", "dataset_name": "toy"}


@pytest.fixture(scope="module")
def dataset(tiny_clip_env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shards") / "data"
    names = write_images(root, N_IMAGES, size=(48, 64), seed=4)
    pd.DataFrame({"path": names, "mos": np.linspace(1, 5, N_IMAGES)}).to_csv(root / "labels.csv", index=False)
    return root


def _manifest(root: Path):
    return load_manifest("csv", root, **DATASET_OPTIONS)


def _extractor():
    return create_extractor(MODEL, random_init=True, seed=0)


def _run(root: Path, store: FeatureStore, **kwargs):
    return extract(_manifest(root), _extractor(), store, RunOptions(batch_size=2), progress=False,
                   log=lambda _: None, **kwargs)


@pytest.fixture(scope="module")
def reference(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """An unsharded in-process run, same layout."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        store = FeatureStore(tmp_path_factory.mktemp("reference") / "S", chunk_bytes=CHUNK_BYTES)
        report = _run(dataset, store)
    finally:
        torch.set_num_threads(before)
    assert report.status == "complete" and report.computed == N_IMAGES and report.shard is None
    values = store.get(report.feature_set).read()
    assert np.isfinite(values).all()
    return values


def _chunk_rows(chunks) -> list[int]:
    return [row for k in chunks for row in range(k * ROWS_PER_CHUNK, (k + 1) * ROWS_PER_CHUNK)]


@pytest.fixture()
def loaded_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows whose image the runner loads (computes), in order."""
    rows: list[int] = []
    original = _Images.__getitem__

    def spy(self, index):
        if index[1] is not None:
            rows.append(index[1])
        return original(self, index)
    monkeypatch.setattr(_Images, "__getitem__", spy)
    return rows


def test_shards_partition_the_chunks(tiny_clip: str, dataset: Path, reference: np.ndarray, tmp_path: Path,
                                     loaded_rows: list[int]) -> None:
    store = FeatureStore(tmp_path / "S", chunk_bytes=CHUNK_BYTES)
    first = _run(dataset, store, shard=(0, 2))
    fs = store.get(first.feature_set)
    assert fs.n_chunks == N_CHUNKS
    assert sorted(loaded_rows) == _chunk_rows([0, 2, 4]) and first.computed == 12
    assert fs.done_chunks() == {0, 2, 4} and not fs.is_complete
    assert (first.status, first.shard, first.pending, first.chunks) == ("partial", (0, 2), 3, N_CHUNKS)
    assert "shard 0/2 done" in first.summary() and "3 of 6 chunks still pending in other shards" in first.summary()
    assert first.to_dict()["shard"] == "0/2" and first.to_dict()["pending_chunks"] == 3

    again = _run(dataset, store, shard=(0, 2))  # its part is done: nothing computed, still waiting for shard 1
    assert (again.status, again.computed, again.pending) == ("partial", 0, 3)

    loaded_rows.clear()
    second = _run(dataset, store, shard=(1, 2))
    assert sorted(loaded_rows) == _chunk_rows([1, 3, 5]) and second.computed == 12
    assert (second.status, second.pending) == ("complete", 0) and "shard 1/2 finished last" in second.summary()
    final = FeatureSet(fs.path)
    assert final.is_complete and read_json(fs.path / "COMPLETE")["done"] == N_IMAGES
    assert np.array_equal(final.read(), reference)  # the union is the unsharded run, bit for bit
    assert _run(dataset, store, shard=(1, 2)).status == "cached"

    # the "merge": an unsharded run on a partly sharded set computes just the rest
    loaded_rows.clear()
    merged = FeatureStore(tmp_path / "M", chunk_bytes=CHUNK_BYTES)
    assert _run(dataset, merged, shard=(2, 3)).status == "partial"
    assert sorted(loaded_rows) == _chunk_rows([2, 5])
    loaded_rows.clear()
    rest = _run(dataset, merged)
    assert rest.status == "complete" and rest.shard is None and sorted(loaded_rows) == _chunk_rows([0, 1, 3, 4])
    assert np.array_equal(merged.get(rest.feature_set).read(), reference)


def test_failed_shard_keeps_committed_chunks(tiny_clip: str, dataset: Path, reference: np.ndarray, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, loaded_rows: list[int]) -> None:
    store = FeatureStore(tmp_path / "S", chunk_bytes=CHUNK_BYTES)
    extractor = _extractor()
    kind, original, calls = type(extractor), type(extractor).compute, []

    def compute(self, batch):
        calls.append(len(batch))
        if len(calls) == 3:  # the first batch of shard 1/2's second chunk (chunk 3)
            raise RuntimeError("CUDA error: device lost")
        return original(self, batch)
    monkeypatch.setattr(kind, "compute", compute)
    with pytest.raises(RuntimeError, match="device lost"):
        extract(_manifest(dataset), extractor, store, RunOptions(batch_size=2), shard=(1, 2), progress=False,
                log=lambda _: None)
    fs = store.feature_sets("toy")[0]
    assert fs.done_chunks() == {1} and not fs.is_complete
    before = (fs.path / "chunks" / "1.json").read_text()
    for k in range(N_CHUNKS):  # no chunk left locked
        lock = fs.chunk_lock(k)
        assert lock.acquire()
        lock.release()

    # Ctrl-C in the rerun: interrupted, its finished chunk kept as well
    def interrupted(self, batch):
        if len(loaded_rows) > 4:  # the first batch of chunk 5, after chunk 3
            raise KeyboardInterrupt
        return original(self, batch)
    monkeypatch.setattr(kind, "compute", interrupted)
    loaded_rows.clear()
    stopped = _run(dataset, store, shard=(1, 2))
    assert stopped.status == "interrupted" and stopped.shard == (1, 2) and "resume" in stopped.summary()
    assert fs.done_chunks() == {1, 3}

    monkeypatch.setattr(kind, "compute", original)
    loaded_rows.clear()
    resumed = _run(dataset, store, shard=(1, 2))
    assert resumed.status == "partial" and sorted(loaded_rows) == _chunk_rows([5])
    assert (fs.path / "chunks" / "1.json").read_text() == before  # not redone
    assert _run(dataset, store, shard=(0, 2)).status == "complete"
    assert np.array_equal(store.get(resumed.feature_set).read(), reference)


def _cli_args(root: Path, store: Path, *extra: str) -> list[str]:
    return ["extract", "--model", MODEL, "--random-init", "-d", "csv", "--root", str(root), "-o", "labels=labels.csv",
            "-o", "dataset_name=toy", "--store", str(store), "--workers", "0", "--batch-size", "2", "--device", "cpu",
            "-q", "--format", "json", *extra]


@pytest.mark.slow  # end to end across processes: the slow suite
def test_two_shard_processes_through_the_cli(tiny_clip: str, dataset: Path, reference: np.ndarray,
                                             tmp_path: Path) -> None:
    store = tmp_path / "S"
    fs, created = FeatureStore(store, chunk_bytes=CHUNK_BYTES).open_or_create(_manifest(dataset), feature_identity(_extractor()))
    assert created and fs.n_chunks == N_CHUNKS
    # Hold the set exclusively (as `rm` would) until both processes wait on its writer lock, then
    # let them go together: both then hold the (shared) writer lock at the same time.
    procs = start_together([[CLI, *_cli_args(dataset, store, "--shard", f"{i}/2")] for i in range(2)],
                           FeatureStore(store).writer_lock(fs, exclusive=True))
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    reports = [json.loads(out) for out, _ in outputs]
    assert [r["shard"] for r in reports] == ["0/2", "1/2"]
    assert all(r["feature_set"] == fs.name and r["computed"] == 12 and r["failed"] == 0 for r in reports)
    # the one that ended last completed the set; one that ended first says what is left
    assert "complete" in {r["status"] for r in reports}
    assert all(r["pending_chunks"] > 0 for r in reports if r["status"] == "partial")

    final = FeatureSet(fs.path)
    assert final.is_complete and np.array_equal(final.read(), reference)
    for k in range(N_CHUNKS):  # chunk k committed by the process of shard k % 2
        assert read_json(fs.path / "chunks" / f"{k}.json")["writer"] == f"{socket.gethostname()} {procs[k % 2].pid}"


@pytest.mark.parametrize("extra, expected", [
    (["--shard", "2/2"], "--shard 2/2: the shard index I must be in 0..1"),
    (["--shard", "a/b"], "--shard must look like I/N"),
    (["--shard", "0/0"], "--shard 0/0: the number of shards N must be at least 1"),
    (["--shard", "3"], "--shard must look like I/N"),
    (["--shard", "-1/4"], "must be in 0..3"),
    (["--shards", "2"], "--shards (the number of shard tasks) needs --scheduler"),
    (["--shard", "0/2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
])
def test_bad_shard_options_are_one_line_errors(tmp_path: Path, extra: list[str], expected: str) -> None:
    from iqa_store.cli import cli
    result = CliRunner().invoke(cli, _cli_args(tmp_path / "data", tmp_path / "S", *extra))
    assert expected in one_line_error(result)
    assert not (tmp_path / "S").exists()


@pytest.mark.slow  # end to end across processes: the slow suite
def test_local_dask_cluster(tiny_clip: str, dataset: Path, reference: np.ndarray, tmp_path: Path) -> None:
    from distributed import LocalCluster
    store = FeatureStore(tmp_path / "S", chunk_bytes=CHUNK_BYTES)
    lines: list[str] = []
    common = dict(root=dataset, store=store, dataset_options=DATASET_OPTIONS, device="auto", batch_size=2,
                  random_init=True, progress=False, log=lines.append)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        # workers=1 asks for a decoding process, which a daemonic (nanny-started) worker cannot start
        report = api.extract(MODEL, "csv", workers=1, scheduler=cluster.scheduler_address, **common)
        assert report.status == "complete", report.summary()
        assert (report.shards, report.computed, report.rows, report.pending) == (2, N_IMAGES, N_IMAGES, 0)
        assert np.array_equal(store.get(report.feature_set).read(), reference)
        assert sorted(report.runs) == [0, 1] and {run.device for run in report.runs.values()} == {"cpu"}
        assert [run.report.computed for _, run in sorted(report.runs.items())] == [12, 12]
        assert sum(line.startswith("shard ") and " done on " in line for line in lines) == 2, lines
        assert len(report.warnings) == 1 and "daemonic" in report.warnings[0] and "--no-nanny" in report.warnings[0]
        assert any("warning:" in line and "daemonic" in line for line in lines)
        data = report.to_dict()
        assert data["shards"] == 2 and [r["shard"] for r in data["shard_reports"]] == ["0/2", "1/2"]
        assert "complete" in report.summary() and "2 shard(s)" in report.summary()

        # the CLI, again: cached (3 shards, none with anything to do)
        from iqa_store.cli import cli
        result = CliRunner().invoke(cli, _cli_args(dataset, store.root, "--scheduler", cluster.scheduler_address,
                                                   "--shards", "3"))
        assert result.exit_code == 0, result.output
        again = json.loads(result.stdout)
        assert (again["status"], again["computed"], again["shards"]) == ("cached", 0, 3)
        assert again["feature_set"] == report.feature_set and "shard 2/3 done" in result.stderr

        # a shard task that fails: status "failed", each shard's error named, the command says resume
        lines.clear()
        failed = api.extract(MODEL, "csv", scheduler=cluster.scheduler_address, no_such_setting=1, **common)
        assert failed.status == "failed" and set(failed.errors) == {"0/2", "1/2"}
        assert "no_such_setting" in failed.errors["0/2"] and "run the same command again" in failed.summary()
        assert sum("failed:" in line for line in lines) == 2


def test_two_creators_race_to_one_set(tiny_clip: str, dataset: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two shards creating the set at the same moment, even with different chunk sizes, end up
    with one set: the first rename wins, the other drops its copy and uses it."""
    barrier = threading.Barrier(2, timeout=60)
    original = Path.rename

    def rename(self: Path, target):  # both staged copies are ready before either is moved in
        if self.parent.name == ".staging" and ".staging" not in str(target):
            barrier.wait()
        return original(self, target)
    monkeypatch.setattr(Path, "rename", rename)
    results: list = [None, None]

    def create(i: int, chunk_bytes: int) -> None:
        results[i] = FeatureStore(tmp_path / "S", chunk_bytes=chunk_bytes).open_or_create(
            _manifest(dataset), feature_identity(_extractor()))[0]
    threads = [threading.Thread(target=create, args=(i, b)) for i, b in enumerate((CHUNK_BYTES, 2 * CHUNK_BYTES))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    a, b = results
    assert a is not None and b is not None and a.path == b.path
    assert FeatureSet(a.path).rows_per_chunk == a.rows_per_chunk == b.rows_per_chunk in (4, 8)
    assert len(FeatureStore(tmp_path / "S").feature_sets()) == 1
    assert not list((tmp_path / "S" / ".staging").iterdir())  # the loser's copy is gone
    assert os.path.isdir(a.path / "locks")
