"""Export feature sets to HDF5 or .npy + ids, and import features computed elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from iqa_store.fingerprint import file_sha256, fingerprint
from iqa_store.store.featureset import DONE, FAILED, ChunkResult, FeatureSet
from iqa_store.store.store import FeatureIdentity, StoreError

if TYPE_CHECKING:
    from iqa_store.datasets.manifest import Manifest
    from iqa_store.store.store import FeatureStore


def export_feature_set(fs: FeatureSet, out: Path) -> list[Path]:
    """``.h5``: one HDF5 file (features, ids, status, attributes); otherwise ``out.npy`` + ``out.ids.txt``."""
    values, ids, status = fs.read(), fs.ids, fs.status()
    if out.suffix in (".h5", ".hdf5"):
        import h5py
        with h5py.File(out, "w") as handle:
            handle.create_dataset("features", data=values, compression="gzip")
            handle.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
            handle.create_dataset("status", data=status)
            handle.attrs["feature_set"] = fs.name
            handle.attrs["attributes"] = json.dumps(fs.attrs, default=str)
        return [out]
    stem = out.with_suffix("") if out.suffix == ".npy" else out
    np.save(stem.with_suffix(".npy"), values)
    stem.with_suffix(".ids.txt").write_text("\n".join(ids) + "\n")
    return [stem.with_suffix(".npy"), stem.with_suffix(".ids.txt")]


def imported_identity(name: str, source_sha256: str, source_dim: int) -> FeatureIdentity:
    """The identity of imported features: the file's hash (they cannot compute new images)."""
    settings = {"name": name, "source_sha256": source_sha256, "source_dim": source_dim}
    inputs = {"extractor": name, "version": "1", "settings": settings, "weights": {}}
    return FeatureIdentity(name, fingerprint(inputs), inputs, settings, source_dim)


def read_features_file(path: Path, ids_file: Path | None = None) -> tuple[np.ndarray, list[str]]:
    if path.suffix in (".h5", ".hdf5"):
        import h5py
        try:
            handle = h5py.File(path, "r")
        except OSError as error:  # h5py's refusal of a file that is not HDF5
            raise StoreError(f"{path}: not an HDF5 file ({error})") from None
        with handle:
            for key in ("features", "ids"):
                if key not in handle:
                    raise StoreError(f"{path}: no dataset {key!r} (found {list(handle.keys())})")
            values = np.asarray(handle["features"][:], dtype=np.float32)
            ids = [v.decode() if isinstance(v, bytes) else str(v) for v in handle["ids"][:]]
    else:
        try:
            values = np.load(path, allow_pickle=False).astype(np.float32)
        except (ValueError, EOFError):  # not a .npy array: text, empty, pickled objects (never unpickled)
            raise StoreError(f"{path}: not a numeric .npy array (an HDF5 file must end in .h5 or .hdf5)") from None
        ids_file = ids_file or path.with_suffix(".ids.txt")
        if not ids_file.exists():
            raise StoreError(f"{path}: ids file {ids_file} not found (one image id per line, in row order)")
        ids = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
    if values.ndim != 2 or len(values) != len(ids):
        raise StoreError(f"{path}: features of shape {values.shape} do not match {len(ids)} ids")
    return values, ids


def import_feature_set(store: "FeatureStore", path: Path, manifest: "Manifest", name: str,
                       ids_file: Path | None = None) -> FeatureSet:
    """Import a feature matrix, aligning its rows to ``manifest`` by image id.

    Ids in the file but not in the manifest are an error (listed); manifest images missing
    from the file, and rows with NaN, become failed rows.
    """
    values, ids = read_features_file(path, ids_file)
    known = {image_id: row for row, image_id in enumerate(manifest.ids)}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise StoreError(f"{path}: {len(unknown)} id(s) are not in dataset {manifest.dataset!r}: {unknown[:10]}")
    fs, _ = store.open_or_create(manifest, imported_identity(name, file_sha256(path), values.shape[1]))
    by_row = {known[i]: r for r, i in enumerate(ids)}
    with store.writer_lock(fs):  # like an extraction: rm and gc leave it alone meanwhile
        for chunk in fs.pending_chunks():
            start, stop = fs.chunk_rows(chunk)
            block = np.full((stop - start, fs.dim), np.nan, np.float32)
            status = np.full(stop - start, FAILED, np.int8)
            failures = {}
            for row in range(start, stop):
                source = by_row.get(row)
                if source is None:
                    failures[row] = f"not in imported file {path.name}"
                elif not np.isfinite(values[source]).all():
                    failures[row] = f"non-finite values in imported file {path.name}"
                else:
                    block[row - start], status[row - start] = values[source], DONE
            lock = fs.chunk_lock(chunk)
            lock.acquire(blocking=True)  # a concurrent import of the same file: wait, then skip what it did
            try:
                if chunk not in fs.done_chunks():
                    fs.commit_chunk(ChunkResult(chunk, block, status, failures), writer=lock.holder())
            finally:
                lock.release()
        fs.mark_complete_if_done()
    return fs
