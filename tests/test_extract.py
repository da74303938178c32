"""The extraction runner end to end: kill -9 and resume, two writers, bad images, caching,
incremental datasets and fingerprints. Real tiny open_clip model, real CLI in subprocesses.

The CLI always opens the store with the default chunk size (one chunk for these datasets). To
get many chunks, tests create the (empty) feature set first through ``FeatureStore(...,
chunk_bytes=...)``: an existing set keeps its own layout, and the CLI then fills it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import start_together, write_images
from iqa_store.datasets import load_manifest
from iqa_store.extraction.runner import extract, feature_identity
from iqa_store.extractors import RunOptions, create_extractor
from iqa_store.extractors.clip import OpenClipExtractor
from iqa_store.store import DONE, FAILED, FeatureSet, FeatureStore
from iqa_store.store.files import read_json

MODEL = "openclip:TinyViT-test:none"
ROWS_PER_CHUNK = 4
CHUNK_BYTES = ROWS_PER_CHUNK * 32 * 4
CLI = str(Path(sys.executable).parent / "iqa-store")
BIG = 96  # images in the kill / concurrency dataset: 24 chunks of 4

# Runs the real CLI with OpenClipExtractor.prepare/compute recording each call to a file.
SPY_CLI = """
import os, sys
from iqa_store.extractors import clip
calls = os.environ["IQA_TEST_CALLS"]
for name in ("prepare", "compute"):
    def spy(self, *args, _name=name, _original=getattr(clip.OpenClipExtractor, name), **kwargs):
        with open(calls, "a") as handle:
            handle.write(_name + "\\n")
        return _original(self, *args, **kwargs)
    setattr(clip.OpenClipExtractor, name, spy)
from iqa_store.cli import main
sys.argv[0] = "iqa-store"
main()
"""


def _labels(root: Path, names: list[str]) -> None:
    pd.DataFrame({"path": names, "mos": np.linspace(1, 5, len(names))}).to_csv(root / "labels.csv", index=False)


def _manifest(root: Path):
    return load_manifest("csv", root, labels="labels.csv", dataset_name="toy")


def _cli_args(root: Path, store: Path, *extra: str) -> list[str]:
    return ["extract", "--model", MODEL, "--random-init", "-d", "csv", "--root", str(root), "-o", "labels=labels.csv",
            "-o", "dataset_name=toy", "--store", str(store), "--workers", "0", "--batch-size", "2", "--device", "cpu",
            "-q", *extra]


def _precreate(store: Path, root: Path) -> FeatureSet:
    """The set the CLI will fill, created with 4-row chunks."""
    fs, created = FeatureStore(store, chunk_bytes=CHUNK_BYTES).open_or_create(
        _manifest(root), feature_identity(create_extractor(MODEL, random_init=True)))
    assert created and fs.rows_per_chunk == ROWS_PER_CHUNK
    return fs


def _run_inprocess(manifest, extractor, store: FeatureStore, batch_size: int = 2):
    return extract(manifest, extractor, store, RunOptions(batch_size=batch_size), progress=False, log=lambda _: None)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def big_dataset(tiny_clip_env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big") / "data"
    _labels(root, write_images(root, BIG, size=(48, 64), seed=1))
    return root


@pytest.fixture(scope="module")
def big_reference(big_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """An uninterrupted single-process run into its own store, default layout (one chunk)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    store = FeatureStore(tmp_path_factory.mktemp("reference") / "store")
    try:
        report = _run_inprocess(_manifest(big_dataset), create_extractor(MODEL, random_init=True), store)
    finally:
        torch.set_num_threads(before)
    assert report.status == "complete" and report.computed == BIG
    values = store.get(report.feature_set).read()
    assert np.isfinite(values).all()
    return values


@pytest.mark.slow  # end to end across processes: the slow suite
def test_kill9_midway_then_resume_is_bit_identical(big_dataset: Path, big_reference: np.ndarray, tmp_path: Path) -> None:
    store = tmp_path / "S"
    fs = _precreate(store, big_dataset)
    assert fs.n_chunks == BIG // ROWS_PER_CHUNK
    # Hold the last 4 chunks' locks, as a second writer would: whatever the timing, the killed
    # run cannot finish, so the kill always lands on a partial set.
    held = list(range(fs.n_chunks - 4, fs.n_chunks))
    locks = [fs.chunk_lock(k) for k in held]
    assert all(lock.acquire() for lock in locks)
    try:
        with open(tmp_path / "killed.log", "w") as log:
            proc = subprocess.Popen([CLI, *_cli_args(big_dataset, store)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while not fs.done_chunks():  # the first committed chunk marker
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no chunk committed in 180 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        for lock in locks:
            lock.release()

    committed = fs.done_chunks()
    print(f"killed after {len(committed)} of {fs.n_chunks} chunks")
    assert committed and committed.isdisjoint(held) and not fs.is_complete
    assert len(committed) < fs.n_chunks
    status = fs.status()
    assert (status == DONE).sum() == ROWS_PER_CHUNK * len(committed) and (status != FAILED).all()
    before = {k: (fs.path / "chunks" / f"{k}.json").read_text() for k in committed}
    assert {read_json(fs.path / "chunks" / f"{k}.json")["writer"] for k in committed} == {
        f"{socket.gethostname()} {proc.pid}"}

    # the same command again resumes: only the missing rows are computed
    result = subprocess.run([CLI, *_cli_args(big_dataset, store, "--format", "json")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["feature_set"] == fs.name and report["status"] == "complete"
    assert report["rows"] == BIG and report["reused"] == 0 and report["failed"] == 0
    assert report["computed"] == BIG - ROWS_PER_CHUNK * len(committed) < BIG
    resumed = FeatureSet(fs.path)
    assert resumed.is_complete and resumed.done_chunks() == set(range(fs.n_chunks))
    assert {k: (fs.path / "chunks" / f"{k}.json").read_text() for k in committed} == before  # not redone
    assert read_json(fs.path / "COMPLETE")["done"] == BIG
    values = resumed.read()
    assert values.dtype == np.float32 and np.array_equal(values, big_reference)
    assert resumed.ids == _manifest(big_dataset).ids

    # a further run: cached, and the model is never prepared nor called
    calls = tmp_path / "calls.txt"
    result = subprocess.run([sys.executable, "-c", SPY_CLI, *_cli_args(big_dataset, store, "--format", "json")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "IQA_TEST_CALLS": str(calls)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "cached" and report["computed"] == 0 and report["feature_set"] == fs.name
    assert not calls.exists(), calls.read_text()
    assert np.array_equal(FeatureSet(fs.path).read(), big_reference)


@pytest.mark.slow  # end to end across processes: the slow suite
def test_two_processes_on_one_set(big_dataset: Path, big_reference: np.ndarray, tmp_path: Path) -> None:
    store = tmp_path / "S"
    fs = _precreate(store, big_dataset)
    # Hold the set exclusively (as `rm` would) so both processes line up on the writer lock after
    # their slow start-up, then let them go together. Only the timing depends on this.
    procs = start_together([[CLI, *_cli_args(big_dataset, store, "--format", "json")]] * 2,
                           FeatureStore(store).writer_lock(fs, exclusive=True))
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    reports = [json.loads(out) for out, _ in outputs]
    assert all(r["feature_set"] == fs.name and r["failed"] == 0 and r["reused"] == 0 for r in reports)
    assert sum(r["computed"] for r in reports) == BIG  # no row computed twice, none skipped

    final = FeatureSet(fs.path)
    assert final.is_complete and final.done_chunks() == set(range(fs.n_chunks))
    assert final.counts() == {"pending": 0, "done": BIG, "failed": 0}
    writers = {f"{socket.gethostname()} {proc.pid}" for proc in procs}
    by_writer: dict[str, int] = {}
    for k in range(fs.n_chunks):
        marker = read_json(fs.path / "chunks" / f"{k}.json")
        assert marker["rows"] == [ROWS_PER_CHUNK * k, ROWS_PER_CHUNK * (k + 1)] and marker["failures"] == {}
        assert marker["writer"] in writers
        by_writer[marker["writer"]] = by_writer.get(marker["writer"], 0) + 1
    # each process committed exactly the chunks it computed
    for proc, report in zip(procs, reports):
        assert by_writer.get(f"{socket.gethostname()} {proc.pid}", 0) * ROWS_PER_CHUNK == report["computed"]
    assert np.array_equal(final.read(), big_reference)
    assert not list(fs.path.rglob(".*.tmp"))
    print(f"chunks per writer: {by_writer}")  # both usually contribute; not asserted (timing)


@pytest.fixture()
def broken_dataset(image_dataset: Path) -> Path:
    good = pd.read_csv(image_dataset / "labels.csv")["path"].tolist()
    jpeg = (image_dataset / good[0]).read_bytes()
    (image_dataset / "bad_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (image_dataset / "bad_empty.jpg").write_bytes(b"")
    names = good[:3] + ["bad_truncated.jpg"] + good[3:10] + ["bad_empty.jpg"] + good[10:] + ["bad_missing.jpg"]
    _labels(image_dataset, names)
    return image_dataset


def test_unreadable_images_fail_alone(tiny_clip: str, broken_dataset: Path, tmp_path: Path) -> None:
    store = tmp_path / "S"
    bad = {"bad_truncated.jpg": "cannot decode", "bad_empty.jpg": "empty file (0 bytes)",
           "bad_missing.jpg": "file not found"}
    result = subprocess.run([CLI, *_cli_args(broken_dataset, store, "--format", "json")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "complete" and report["rows"] == 27 and report["computed"] == 27
    assert report["failed"] == 3
    failed = {Path(f["path"]).name: f for f in report["failures"]}
    assert set(failed) == set(bad)
    for name, reason in bad.items():
        assert reason in failed[name]["reason"] and failed[name]["image_id"] == name

    fs = FeatureStore(store).get(report["feature_set"])
    assert fs.is_complete and fs.counts() == {"pending": 0, "done": 24, "failed": 3}
    rows = {image_id: row for row, image_id in enumerate(fs.ids)}
    status, values = fs.status(), fs.read()
    for name in bad:
        assert status[rows[name]] == FAILED and np.isnan(values[rows[name]]).all()
    good = [row for image_id, row in rows.items() if image_id not in bad]
    assert (status[good] == DONE).all() and np.isfinite(values[good]).all()
    assert {fs.ids[row] for row in fs.failures()} == set(bad)

    # --strict (in-process CLI): same, now cached, set; the failures named by file in the summary; exit 1
    from click.testing import CliRunner

    from iqa_store.cli import cli
    result = CliRunner().invoke(cli, _cli_args(broken_dataset, store, "--strict"))
    assert result.exit_code == 1, result.output
    assert "cached" in result.stdout and "3 image(s) failed" in result.stdout
    for name, reason in bad.items():
        assert any(name in line and reason in line for line in result.stdout.splitlines()), result.stdout


def test_cached_run_never_prepares_the_model(tiny_clip: str, image_dataset: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for name in ("prepare", "compute", "load_item"):
        original = getattr(OpenClipExtractor, name)
        monkeypatch.setattr(OpenClipExtractor, name,
                            lambda self, *a, _o=original, _n=name, **k: (calls.append(_n), _o(self, *a, **k))[1])
    store = FeatureStore(tmp_path / "S", chunk_bytes=CHUNK_BYTES)
    first = _run_inprocess(_manifest(image_dataset), create_extractor(tiny_clip, random_init=True), store)
    assert first.status == "complete" and first.computed == 24
    assert calls.count("prepare") == 1 and calls.count("compute") == 12 and calls.count("load_item") == 24
    values = store.get(first.feature_set).read()

    calls.clear()
    again = _run_inprocess(_manifest(image_dataset), create_extractor(tiny_clip, random_init=True), store)
    assert again.status == "cached" and again.computed == 0 and again.feature_set == first.feature_set
    assert calls == []
    assert "nothing to compute" in again.summary()
    assert np.array_equal(store.get(first.feature_set).read(), values)


def test_new_images_compute_only_the_new_rows(tiny_clip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    old_names = write_images(root, 14, size=(48, 64), seed=2)
    _labels(root, old_names)
    store = FeatureStore(tmp_path / "S", chunk_bytes=CHUNK_BYTES)
    old = _run_inprocess(_manifest(root), create_extractor(tiny_clip, random_init=True), store)
    old_fs = store.get(old.feature_set)
    old_values, old_digest = old_fs.read(), _tree_digest(old_fs.path)

    new_names = [f"more/{n}" for n in write_images(root / "more", 8, size=(48, 64), seed=3)]
    _labels(root, old_names + new_names)  # appended: chunk 3 mixes reused rows 12-13 and new rows 14-15
    computed_rows: list[int] = []
    original = OpenClipExtractor.compute
    monkeypatch.setattr(OpenClipExtractor, "compute",
                        lambda self, batch: (computed_rows.append(len(batch)), original(self, batch))[1])
    new = _run_inprocess(_manifest(root), create_extractor(tiny_clip, random_init=True), store)
    assert new.feature_set != old.feature_set and new.status == "complete"
    assert (new.reused, new.computed) == (14, 8) and sum(computed_rows) == 8
    new_fs = store.get(new.feature_set)
    assert new_fs.ids == old_names + new_names and new_fs.is_complete
    values = new_fs.read()
    assert np.array_equal(values[:14], old_values)
    assert [read_json(new_fs.path / "chunks" / f"{k}.json")["reused"] for k in range(new_fs.n_chunks)] == [4, 4, 4, 2, 0, 0]

    # the new rows are what a run from scratch computes
    scratch = FeatureStore(tmp_path / "scratch", chunk_bytes=CHUNK_BYTES)
    report = _run_inprocess(_manifest(root), create_extractor(tiny_clip, random_init=True), scratch)
    assert report.computed == 22
    np.testing.assert_allclose(values, scratch.get(report.feature_set).read(), atol=1e-5, rtol=0)
    assert old_fs.is_complete and _tree_digest(old_fs.path) == old_digest


def test_fingerprints_follow_inputs_and_never_overwrite(tiny_clip: str, image_dataset: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file
    store = FeatureStore(tmp_path / "S", chunk_bytes=CHUNK_BYTES)
    base = create_extractor(tiny_clip, random_init=True)
    assert base.fingerprint() == create_extractor(tiny_clip, random_init=True).fingerprint()
    assert _manifest(image_dataset).manifest_hash() == _manifest(image_dataset).manifest_hash()

    first = _run_inprocess(_manifest(image_dataset), base, store)
    fs = store.get(first.feature_set)
    values, digest = fs.read(), _tree_digest(fs.path)
    same, created = store.open_or_create(_manifest(image_dataset),
                                         feature_identity(create_extractor(tiny_clip, random_init=True)))
    assert not created and same.path == fs.path

    # every setting that changes the numbers changes the extractor fingerprint
    other_name = OpenClipExtractor(arch="TinyViT-test", pretrained="none", random_init=True)
    torch.manual_seed(5)
    import open_clip
    model = open_clip.create_model("TinyViT-test", pretrained=None)
    weights_a, weights_b = tmp_path / "a" / "w.safetensors", tmp_path / "b" / "w.safetensors"
    for path, scale in ((weights_a, 1.0), (weights_b, 2.0)):
        path.parent.mkdir()
        save_file({k: (v * scale).contiguous() for k, v in model.state_dict().items()}, str(path))
    variants = [base, create_extractor(tiny_clip, random_init=True, normalize=True),
                create_extractor(tiny_clip, random_init=True, seed=1),
                create_extractor(tiny_clip, weights=str(weights_a)), create_extractor(tiny_clip, weights=str(weights_b))]
    fingerprints = [v.fingerprint() for v in variants]
    assert len(set(fingerprints)) == len(variants), fingerprints
    assert other_name.fingerprint() != base.fingerprint()  # another extractor name

    # a changed setting is a new set; the old one is untouched
    normalized = _run_inprocess(_manifest(image_dataset), variants[1], store)
    assert normalized.feature_set != first.feature_set and normalized.computed == 24 and normalized.reused == 0
    np.testing.assert_allclose(store.get(normalized.feature_set).read(),
                               values / np.linalg.norm(values, axis=1, keepdims=True), atol=1e-5, rtol=0)
    assert _tree_digest(fs.path) == digest

    # touching one image: new manifest hash, new set; only that image is recomputed
    touched = image_dataset / "img005.jpg"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert _manifest(image_dataset).manifest_hash() != fs.attrs["manifest_hash"]
    again = _run_inprocess(_manifest(image_dataset), create_extractor(tiny_clip, random_init=True), store)
    assert again.feature_set != first.feature_set
    assert (again.computed, again.reused) == (1, 23)
    new_values = store.get(again.feature_set).read()
    assert np.array_equal(np.delete(new_values, 5, axis=0), np.delete(values, 5, axis=0))  # reused bit for bit
    np.testing.assert_allclose(new_values[5], values[5], atol=1e-5, rtol=0)  # same pixels, recomputed
    assert _tree_digest(fs.path) == digest and FeatureSet(fs.path).is_complete
    assert len(store.feature_sets("toy")) == 3


def test_worker_processes_give_the_same_result(tiny_clip: str, broken_dataset: Path, tmp_path: Path) -> None:
    """Decoding in DataLoader worker processes: same rows, same failures, same numbers."""
    results = []
    for workers in (0, 2):
        store = FeatureStore(tmp_path / f"S{workers}", chunk_bytes=CHUNK_BYTES)
        report = extract(_manifest(broken_dataset), create_extractor(tiny_clip, random_init=True), store,
                         RunOptions(batch_size=2, workers=workers), progress=False, log=lambda _: None)
        assert report.status == "complete" and report.computed == 27 and len(report.failures) == 3
        fs = store.get(report.feature_set)
        results.append((fs.read(), fs.status(), fs.failures()))
    (v0, s0, f0), (v2, s2, f2) = results
    assert np.array_equal(s0, s2) and f0 == f2
    assert np.array_equal(v0, v2, equal_nan=True)


def test_interrupt_keeps_finished_chunks_and_frees_locks(tiny_clip: str, image_dataset: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = FeatureStore(tmp_path / "S", chunk_bytes=CHUNK_BYTES)
    original, calls = OpenClipExtractor.compute, []

    def compute(self, batch):
        calls.append(len(batch))
        if len(calls) == 5:  # Ctrl-C during the first batch of chunk 2
            raise KeyboardInterrupt
        return original(self, batch)
    monkeypatch.setattr(OpenClipExtractor, "compute", compute)
    report = _run_inprocess(_manifest(image_dataset), create_extractor(tiny_clip, random_init=True), store)
    assert report.status == "interrupted" and report.computed == 8
    assert "run the same command to resume" in report.summary()
    fs = store.get(report.feature_set)
    assert fs.done_chunks() == {0, 1} and not fs.is_complete
    for k in range(fs.n_chunks):  # nothing left locked by the interrupted run
        lock = fs.chunk_lock(k)
        assert lock.acquire()
        lock.release()

    monkeypatch.setattr(OpenClipExtractor, "compute", original)
    resumed = _run_inprocess(_manifest(image_dataset), create_extractor(tiny_clip, random_init=True), store)
    assert resumed.status == "complete" and resumed.computed == 16
    scratch = FeatureStore(tmp_path / "scratch", chunk_bytes=CHUNK_BYTES)
    reference = _run_inprocess(_manifest(image_dataset), create_extractor(tiny_clip, random_init=True), scratch)
    assert np.array_equal(store.get(resumed.feature_set).read(), scratch.get(reference.feature_set).read())
