"""The feature store without a model: export/import, rm, gc, encoders, names, manifests.

Feature sets here come from ``import_feature_set`` with known matrices, so every stored value
is checked against the matrix it came from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from conftest import write_images
from iqa_store.cli import cli
from iqa_store.datasets import load_manifest
from iqa_store.store import DONE, FAILED, PENDING, ChunkResult, FeatureSet, FeatureStore, StoreError
from iqa_store.store import get_encoder, list_encoders, save_encoder
from iqa_store.store.featureset import build_feature_set
from iqa_store.store.transfer import import_feature_set, imported_identity

DIM = 8
CHUNK_BYTES = 4 * DIM * 4  # 4 rows per chunk


@pytest.fixture()
def toy(tmp_path: Path):
    root = tmp_path / "data"
    names = write_images(root, 10, size=(16, 16))
    pd.DataFrame({"path": names, "mos": np.linspace(1, 5, len(names))}).to_csv(root / "labels.csv", index=False)
    return load_manifest("csv", root, labels="labels.csv", dataset_name="toy")


@pytest.fixture()
def store(tmp_path: Path) -> FeatureStore:
    return FeatureStore(tmp_path / "S", chunk_bytes=CHUNK_BYTES)


def _npy(folder: Path, stem: str, values: np.ndarray, ids: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{stem}.npy", values)
    (folder / f"{stem}.ids.txt").write_text("\n".join(ids) + "\n")
    return folder / f"{stem}.npy"


def _import(store: FeatureStore, manifest, name: str, seed: int, folder: Path) -> tuple[FeatureSet, np.ndarray]:
    values = np.random.default_rng(seed).normal(size=(len(manifest), DIM)).astype(np.float32)
    fs = import_feature_set(store, _npy(folder, f"{name}-{seed}", values, manifest.ids), manifest, name)
    return fs, values


def _invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_export_and_import_round_trip(store: FeatureStore, toy, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(10, DIM)).astype(np.float32)
    values[3] = np.nan  # non-finite row -> failed
    ids = [i for i in toy.ids if i != toy.ids[7]][::-1]  # id 7 absent -> failed; others in reverse order
    by_id = dict(zip(toy.ids[::-1], values[::-1]))
    source = _npy(tmp_path / "in", "src", np.stack([by_id[i] for i in ids]), ids)
    fs = import_feature_set(store, source, toy, "feat")
    assert fs.is_complete and fs.n_chunks == 3 and fs.ids == toy.ids
    assert fs.counts() == {"pending": 0, "done": 8, "failed": 2}
    failures = fs.failures()
    assert sorted(failures) == [3, 7] and "non-finite" in failures[3] and "not in imported file" in failures[7]
    expected = np.array([by_id[i] for i in toy.ids], np.float32)
    expected[7] = np.nan
    assert np.array_equal(fs.read(), expected, equal_nan=True)

    s = str(store.root)
    result = _invoke("export", fs.name, str(tmp_path / "out.h5"), "--store", s)
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "out.h5", "r") as handle:
        assert np.array_equal(handle["features"][:], expected, equal_nan=True)
        assert [v.decode() for v in handle["ids"][:]] == toy.ids
        assert np.array_equal(handle["status"][:], fs.status())
        assert handle.attrs["feature_set"] == fs.name
    assert _invoke("export", fs.name, str(tmp_path / "out.npy"), "--store", s).exit_code == 0
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected, equal_nan=True)
    assert (tmp_path / "out.ids.txt").read_text().split() == toy.ids

    for exported in ("out.h5", "out.npy"):
        result = _invoke("import", str(tmp_path / exported), "--dataset", "toy", "--name", "back", "--store", s)
        assert result.exit_code == 0, result.output
    backs = FeatureStore(store.root).feature_sets("toy", "back")
    assert len(backs) == 2  # two files, two fingerprints
    for back in backs:
        assert back.is_complete and back.ids == fs.ids
        assert np.array_equal(back.read(), fs.read(), equal_nan=True)
        assert np.array_equal(back.status(), fs.status())

    # an id the dataset does not have is an error naming it; nothing is registered
    bad = _npy(tmp_path / "in", "bad", np.zeros((2, DIM), np.float32), [toy.ids[0], "ghost.jpg"])
    result = _invoke("import", str(bad), "--dataset", "toy", "--name", "ghost", "--store", s)
    assert result.exit_code == 2 and "ghost.jpg" in result.stderr and "Traceback" not in result.output
    with pytest.raises(StoreError, match="ghost.jpg"):
        import_feature_set(store, bad, toy, "ghost")
    assert store.feature_sets("toy", "ghost") == []


def test_rm_removes_and_refuses_while_written(store: FeatureStore, toy, tmp_path: Path) -> None:
    fs, _ = _import(store, toy, "feat", 0, tmp_path / "in")
    keep, _ = _import(store, toy, "feat", 1, tmp_path / "in")
    s = str(store.root)
    with store.writer_lock(fs):  # an extraction writing it
        result = _invoke("rm", fs.name, "--yes", "--store", s)
        assert result.exit_code == 2 and "busy" in result.stderr
        with pytest.raises(StoreError, match="busy"):
            store.remove(fs.name)
    assert (fs.path / "zarr.json").exists()
    assert _invoke("rm", fs.name, "--store", s, input="n\n").exit_code == 1  # declined
    assert fs.path.exists()

    result = _invoke("rm", fs.name[:-10], "--yes", "--store", s)  # a fingerprint prefix is enough
    assert result.exit_code == 0 and f"removed {fs.name}" in result.output
    assert not fs.path.exists()
    names = [x["name"] for x in json.loads(_invoke("ls", "--format", "json", "--store", s).output)["feature_sets"]]
    assert names == [keep.name]
    assert not list((store.root / ".staging").iterdir())


def test_gc_collects_only_abandoned_work(store: FeatureStore, toy, tmp_path: Path) -> None:
    complete, _ = _import(store, toy, "done", 0, tmp_path / "in")
    partial, _ = store.open_or_create(toy, imported_identity(name="partial", source_sha256="a", source_dim=DIM))
    lock = partial.chunk_lock(0)
    assert lock.acquire()
    partial.commit_chunk(ChunkResult(0, np.ones((4, DIM), np.float32), np.full(4, DONE, np.int8), {}), lock.holder())
    lock.release()
    busy, _ = store.open_or_create(toy, imported_identity(name="busy", source_sha256="b", source_dim=DIM))
    assert not partial.is_complete and not busy.is_complete

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = store.staging_dir / f"{int(dead.stdout)}-deadbeef0000"
    live = store.staging_dir / f"{os.getppid()}-0123456789ab"  # a live process other than us
    for folder in (leftover, live):
        (folder / "sub").mkdir(parents=True)
    old_tmp = complete.path / "chunks" / ".0.json.x1.tmp"
    fresh_tmp = complete.path / "chunks" / ".1.json.x2.tmp"  # a writer may be renaming it right now
    chunk = next(f for f in sorted(complete.path.rglob("*")) if f.is_file() and f.parent != complete.path)
    old_partial = chunk.with_name(f"{chunk.name}.{'a' * 32}.partial")  # zarr's write in progress, killed
    fresh_partial = chunk.with_name(f"{chunk.name}.{'b' * 32}.partial")
    for file in (old_tmp, fresh_tmp, old_partial, fresh_partial):
        file.write_text("{")
    for file in (old_tmp, old_partial):
        os.utime(file, (time.time() - 7200, time.time() - 7200))

    with store.writer_lock(busy):
        items = store.gc(dry_run=True)
        expected = {str(leftover), str(partial.path), str(old_tmp), str(old_partial)}
        assert {i.path for i in items} == expected
        assert all(Path(p).exists() for p in expected)
        result = _invoke("gc", "--store", str(store.root), "--format", "json")
        assert result.exit_code == 0
        assert {i["path"] for i in json.loads(result.output)} == expected
    assert not any(Path(p).exists() for p in expected)
    assert live.exists() and fresh_tmp.exists() and fresh_partial.exists() and busy.path.exists()
    assert FeatureSet(complete.path).is_complete and complete.counts()["done"] == 10
    # its writer gone, the other partial set goes too
    assert [i.path for i in store.gc()] == [str(busy.path)] and not busy.path.exists()
    assert _invoke("gc", "--store", str(store.root)).output.strip() == "nothing to collect"


def test_import_waits_for_rm_and_gc(store: FeatureStore, toy, tmp_path: Path) -> None:
    """An import writes under the set's writer lock, so rm/gc (exclusive) never pull a set from under it."""
    import threading
    values = np.random.default_rng(3).normal(size=(len(toy), DIM)).astype(np.float32)
    source = _npy(tmp_path / "in", "src", values, toy.ids)
    fs, _ = store.open_or_create(toy, imported_identity(name="feat", source_sha256=_sha(source), source_dim=DIM))
    with store.writer_lock(fs, exclusive=True, blocking=False) as held:
        assert held
        worker = threading.Thread(target=import_feature_set, args=(store, source, toy, "feat"))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and fs.done_chunks() == set()  # waiting, nothing written
    worker.join(timeout=30)
    assert not worker.is_alive() and FeatureSet(fs.path).is_complete
    assert np.array_equal(fs.read(), values)


def _sha(path: Path) -> str:
    from iqa_store.fingerprint import file_sha256
    return file_sha256(path)


def test_existing_set_is_never_rebuilt(store: FeatureStore, toy, tmp_path: Path) -> None:
    fs, values = _import(store, toy, "feat", 0, tmp_path / "in")
    digest = {p: p.read_bytes() for p in fs.path.rglob("*") if p.is_file()}
    # a second creator losing the race: its staging copy is dropped, the existing set stays
    staging = store.staging_path()
    again = build_feature_set(fs.path, staging, {**fs.attrs, "created": "later"}, toy.ids, toy.table["path"].tolist(),
                              toy.file_identity(), DIM, 4)
    assert again.path == fs.path and not staging.exists()
    assert {p: p.read_bytes() for p in fs.path.rglob("*") if p.is_file()} == digest
    assert np.array_equal(FeatureSet(fs.path).read(), values)
    with pytest.raises(ValueError, match="expected shape"):
        fs.commit_chunk(ChunkResult(0, np.zeros((3, DIM), np.float32), np.zeros(3, np.int8), {}))


def test_uncommitted_rows_read_as_pending(store: FeatureStore, toy) -> None:
    import zarr
    fs, _ = store.open_or_create(toy, imported_identity(name="p", source_sha256="c", source_dim=DIM))
    # data written without its marker (a writer killed before committing) is not trusted
    zarr.open_array(fs.path / "features", mode="r+")[4:8] = np.ones((4, DIM), np.float32)
    zarr.open_array(fs.path / "status", mode="r+")[4:8] = np.full(4, DONE, np.int8)
    assert (fs.status() == PENDING).all() and np.isnan(fs.read()).all()
    fs.commit_chunk(ChunkResult(1, np.full((4, DIM), 2, np.float32), np.array([1, 1, 2, 1], np.int8), {6: "bad"}))
    assert fs.status().tolist() == [0] * 4 + [DONE, DONE, FAILED, DONE] + [0, 0]
    assert fs.failures() == {6: "bad"} and fs.pending_chunks() == [0, 2]
    assert not fs.mark_complete_if_done() and not fs.is_complete


def test_encoders_round_trip_and_ls(store: FeatureStore) -> None:
    torch.manual_seed(0)
    state = {"head.weight": torch.randn(3, DIM), "head.bias": torch.zeros(3), "steps": torch.tensor([7])}
    record = save_encoder(store, "tiny-head", state, {"dim": DIM}, {"trained_on": "toy"})
    assert record.weights_path.name == "model.safetensors"
    assert save_encoder(store, "tiny-head", state, {"dim": DIM}, {"trained_on": "toy"}).path == record.path
    other = save_encoder(store, "tiny-head", {k: v + 1 for k, v in state.items()}, {"dim": DIM}, {})
    assert other.fingerprint != record.fingerprint
    assert [r.id for r in list_encoders(store)] == sorted([record.id, other.id])

    found = get_encoder(FeatureStore(store.root), f"tiny-head/{record.fingerprint[:6]}")
    assert (found.id, found.config, found.provenance) == (record.id, {"dim": DIM}, {"trained_on": "toy"})
    loaded = found.load_state_dict()
    assert sorted(loaded) == sorted(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    with pytest.raises(StoreError, match="matches 2"):
        get_encoder(store, "tiny-head")
    with pytest.raises(StoreError, match="matches 0"):
        get_encoder(store, "nothing")

    result = _invoke("ls", "--store", str(store.root))
    assert result.exit_code == 0 and record.id in result.output and other.id in result.output
    listed = json.loads(_invoke("ls", "--store", str(store.root), "--format", "json").output)["encoders"]
    assert {e["id"] for e in listed} == {record.id, other.id}


def test_short_names_resolve_per_dataset(store: FeatureStore, toy, tmp_path: Path) -> None:
    b16, _ = _import(store, toy, "clip-vitb16", 0, tmp_path / "in")
    brisque, _ = _import(store, toy, "brisque", 0, tmp_path / "in")
    store.open_or_create(toy, imported_identity(name="clip-vitl14", source_sha256="x", source_dim=DIM))  # partial
    assert store.resolve("clip-vitb16", "toy").path == b16.path
    assert store.resolve("clip", "toy").path == b16.path  # the only complete clip-* set
    assert store.resolve("brisque", "toy").path == brisque.path
    assert store.resolve(b16.name, "toy").path == b16.path
    with pytest.raises(StoreError, match="it has: brisque, clip-vitb16"):
        store.resolve("clip-vitl14", "toy")

    second, _ = _import(store, toy, "clip-vitb16", 1, tmp_path / "in")
    with pytest.raises(StoreError, match="ambiguous") as error:
        store.resolve("clip", "toy")
    assert b16.name in str(error.value) and second.name in str(error.value)
    assert store.resolve(f"clip-vitb16@{second.fingerprint[:8]}", "toy").path == second.path
    with pytest.raises(StoreError, match="no feature set"):
        store.get("toy/clip-vitb16/ffffffffffff")
    with pytest.raises(StoreError, match="DATASET/EXTRACTOR/FINGERPRINT"):
        store.get("clip-vitb16")


def test_an_extractor_name_is_not_widened_to_its_family(store: FeatureStore, toy, tmp_path: Path) -> None:
    embedding, _ = _import(store, toy, "qualiclip-embedding", 0, tmp_path / "in")
    extractors = {"qualiclip", "qualiclip-embedding", "clip-vitb16"}
    assert store.resolve("qualiclip", "toy").path == embedding.path  # without the names: the family shortcut
    with pytest.raises(StoreError, match="no complete feature set 'qualiclip' .* it has: qualiclip-embedding"):
        store.resolve("qualiclip", "toy", extractors=extractors)
    assert store.resolve("qualiclip-embedding", "toy", extractors=extractors).path == embedding.path
    b16, _ = _import(store, toy, "clip-vitb16", 0, tmp_path / "in")
    assert store.resolve("clip", "toy", extractors=extractors).path == b16.path  # 'clip' is no extractor: a family


def test_manifest_saved_with_the_features(store: FeatureStore, toy, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no labels for dataset 'toy'"):
        store.load_manifest("toy")
    _import(store, toy, "feat", 0, tmp_path / "in")
    loaded = FeatureStore(store.root).load_manifest("toy", toy.manifest_hash())
    assert loaded.ids == toy.ids and np.array_equal(loaded.mos, toy.mos)
    assert loaded.root == toy.root and loaded.manifest_hash() == toy.manifest_hash()
    assert store.datasets() == ["toy"]


@pytest.mark.parametrize("folder", ["plots", "reports"])
def test_a_folder_with_only_the_stores_figures_is_a_store(folder: str, tmp_path: Path) -> None:
    """The demo writes its figures to stores/plots and `report` to stores/reports: either alone is still a store."""
    (tmp_path / "root" / folder / "demo").mkdir(parents=True)
    assert _invoke("ls", "--store", str(tmp_path / "root")).exit_code == 0
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"not a store")
    refused = _invoke("ls", "--store", str(tmp_path / "photos"))
    assert refused.exit_code == 2 and "is not a store" in refused.output
