"""A feature set: one extractor's vectors for one dataset manifest, in a Zarr v3 group.

Layout of ``features/<dataset>/<extractor>/<fingerprint>/``::

    zarr.json            group attributes, written once at creation and never again
    features/            float32 [N, D], chunked by rows; NaN in rows that are not done
    status/              int8 [N]: 0 pending, 1 done, 2 failed (same row chunks)
    ids/, paths/         image ids and relative paths in manifest order
    sizes/, mtimes/      file identity of each image when the set was created
    chunks/<k>.json      commit marker of row chunk k (rows, failure reasons), written after its data
    locks/<k>.lock       flock held by the process computing chunk k
    COMPLETE             written last, when every chunk is committed

A chunk counts only once its marker exists, so a writer killed mid-chunk leaves nothing
that a reader trusts; the next run recomputes that chunk. Each writer owns whole chunks
(it holds the chunk's lock), so two processes never write the same chunk file, and nobody
rewrites the attributes after creation, so a stale writer cannot clobber them.
"""

from __future__ import annotations

import datetime as _dt
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from iqa_store.store.files import DamagedFileError, FileLock, read_json, storage_errors, write_json_atomic
from iqa_store.store.scope import Scope, scope_from_dict

PENDING, DONE, FAILED = 0, 1, 2
STATUS_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed"}
FORMAT_VERSION = 1


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ChunkResult:
    """What one writer commits for one row chunk (rows start..stop of the set)."""

    index: int
    values: np.ndarray  # float32 [stop - start, D], NaN where not done
    status: np.ndarray  # int8 [stop - start]
    failures: dict[int, str]  # absolute row -> reason
    reused: int = 0


class FeatureSet:
    """Read access and chunk-level write access to one feature set on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- identity and attributes -------------------------------------------------------
    @cached_property
    def attrs(self) -> dict[str, Any]:
        try:
            attrs = dict(zarr.open_group(self.path, mode="r").attrs)
        except ValueError as error:  # zarr's own errors and JSONDecodeError: a damaged zarr.json
            raise DamagedFileError(f"damaged feature set {self.path}: {error}; remove it and extract again") from None
        missing = [key for key in ("dataset", "extractor", "fingerprint", "n_rows", "dim") if key not in attrs]
        if missing:
            raise DamagedFileError(f"damaged feature set {self.path}: its zarr.json lacks {missing}; "
                                   "remove it and extract again")
        return attrs

    @property
    def dataset(self) -> str:
        return self.attrs["dataset"]

    @property
    def extractor(self) -> str:
        return self.attrs["extractor"]

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.extractor}/{self.fingerprint}"

    @property
    def scope(self) -> "Scope | None":
        """The split the extractor's weights were trained on (``iqa_store.store.scope``); None: unscoped."""
        return scope_from_dict(self.attrs.get("scope"))

    @property
    def n_rows(self) -> int:
        return int(self.attrs["n_rows"])

    @property
    def dim(self) -> int:
        return int(self.attrs["dim"])

    @property
    def rows_per_chunk(self) -> int:
        return int(self.attrs["rows_per_chunk"])

    @property
    def n_chunks(self) -> int:
        return -(-self.n_rows // self.rows_per_chunk)

    def chunk_rows(self, index: int) -> tuple[int, int]:
        start = index * self.rows_per_chunk
        return start, min(start + self.rows_per_chunk, self.n_rows)

    @cached_property
    def ids(self) -> list[str]:
        return [str(v) for v in zarr.open_array(self.path / "ids", mode="r")[:]]

    @cached_property
    def rel_paths(self) -> list[str]:
        return [str(v) for v in zarr.open_array(self.path / "paths", mode="r")[:]]

    def file_identity(self) -> list[tuple[str, int, int]]:
        sizes = zarr.open_array(self.path / "sizes", mode="r")[:]
        mtimes = zarr.open_array(self.path / "mtimes", mode="r")[:]
        return [(i, int(s), int(m)) for i, s, m in zip(self.ids, sizes, mtimes)]

    # --- progress ------------------------------------------------------------------------
    def _marker(self, index: int) -> Path:
        return self.path / "chunks" / f"{index}.json"

    def done_chunks(self) -> set[int]:
        folder = self.path / "chunks"
        if not folder.is_dir():
            return set()
        return {int(p.stem) for p in folder.glob("*.json")}

    def pending_chunks(self) -> list[int]:
        done = self.done_chunks()
        return [k for k in range(self.n_chunks) if k not in done]

    @property
    def is_complete(self) -> bool:
        return (self.path / "COMPLETE").exists()

    def completion(self) -> dict[str, Any] | None:
        marker = self.path / "COMPLETE"
        return read_json(marker) if marker.exists() else None

    def chunk_lock(self, index: int) -> FileLock:
        return FileLock(self.path / "locks" / f"{index}.lock", f"the lock of chunk {index} of {self._where}")

    @property
    def _where(self) -> str:
        """How errors name this set: its name and its store (``STORE/features/<dataset>/<extractor>/<fp>``)."""
        return f"feature set {self.name} in store {self.path.parents[3]}"

    # --- reading -------------------------------------------------------------------------
    def status(self) -> np.ndarray:
        """Per-row status; rows of uncommitted chunks are pending whatever their bytes say."""
        stored = zarr.open_array(self.path / "status", mode="r")[:].astype(np.int8)
        committed = np.zeros(self.n_rows, bool)
        for k in self.done_chunks():
            start, stop = self.chunk_rows(k)
            committed[start:stop] = True
        return np.where(committed, stored, PENDING).astype(np.int8)

    def failures(self) -> dict[int, str]:
        reasons: dict[int, str] = {}
        for k in sorted(self.done_chunks()):
            marker = read_json(self._marker(k))
            reasons.update({int(row): reason for row, reason in marker.get("failures", {}).items()})
        return reasons

    def read(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """Features as float32 [N, D]; rows that are not done read as NaN."""
        values = zarr.open_array(self.path / "features", mode="r")[:]
        values[self.status() != DONE] = np.nan
        return values if rows is None else values[rows]

    def valid_mask(self) -> np.ndarray:
        return self.status() == DONE

    def counts(self) -> dict[str, int]:
        status = self.status()
        return {name: int((status == code).sum()) for code, name in STATUS_NAMES.items()}

    # --- writing -------------------------------------------------------------------------
    def commit_chunk(self, result: ChunkResult, writer: str = "") -> None:
        """Write one chunk's data and status, then its marker. Caller holds the chunk lock."""
        start, stop = self.chunk_rows(result.index)
        if result.values.shape != (stop - start, self.dim):
            raise ValueError(f"chunk {result.index}: expected shape {(stop - start, self.dim)}, got {result.values.shape}")
        with storage_errors(f"chunk {result.index} of {self._where}"):
            zarr.open_array(self.path / "features", mode="r+")[start:stop] = result.values.astype(np.float32)
            zarr.open_array(self.path / "status", mode="r+")[start:stop] = result.status.astype(np.int8)
            write_json_atomic(self._marker(result.index), {
                "rows": [start, stop], "failures": {str(k): v for k, v in result.failures.items()},
                "reused": result.reused, "writer": writer, "committed": now_iso()})

    def mark_complete_if_done(self) -> bool:
        """Write the COMPLETE marker once every chunk is committed (idempotent)."""
        if self.is_complete:
            return True
        if self.pending_chunks():
            return False
        counts = self.counts()
        with storage_errors(f"the COMPLETE marker of {self._where}"):
            write_json_atomic(self.path / "COMPLETE", {"completed": now_iso(), **counts})
        return True

    # --- description ---------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        done = len(self.done_chunks())
        return {"name": self.name, "path": str(self.path), "dataset": self.dataset, "extractor": self.extractor,
                "fingerprint": self.fingerprint, "rows": self.n_rows, "dim": self.dim,
                "chunks": f"{done}/{self.n_chunks}", "complete": self.is_complete, "counts": self.counts(),
                "created": self.attrs.get("created"), "completed": (self.completion() or {}).get("completed"),
                "attributes": self.attrs}


def build_feature_set(path: Path, staging: Path, attrs: dict[str, Any], ids: list[str], rel_paths: list[str],
                      identity: list[list[Any]], dim: int, rows_per_chunk: int) -> FeatureSet:
    """Create a feature set in ``staging`` and move it to ``path`` in one rename.

    If another process created the same set first, ours is discarded and theirs is used:
    same fingerprint means same contents, and nobody overwrites an existing set.
    """
    n_rows = len(ids)
    group = zarr.open_group(staging, mode="w", attributes={**attrs, "n_rows": n_rows, "dim": dim,
                                                           "rows_per_chunk": rows_per_chunk,
                                                           "format_version": FORMAT_VERSION})
    group.create_array("features", shape=(n_rows, dim), chunks=(rows_per_chunk, dim), dtype="float32", fill_value=np.nan)
    group.create_array("status", shape=(n_rows,), chunks=(rows_per_chunk,), dtype="int8", fill_value=PENDING)
    (staging / "locks").mkdir()  # exists from the start; lock users never create it (see _WriterLock)
    for name, values, dtype in (("ids", ids, str), ("paths", rel_paths, str),
                                ("sizes", [r[1] for r in identity], "int64"), ("mtimes", [r[2] for r in identity], "int64")):
        array = group.create_array(name, shape=(n_rows,), chunks=(max(n_rows, 1),), dtype=dtype)
        array[:] = np.asarray(values, dtype=object if dtype is str else dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(path)
    except OSError:
        if not (path / "zarr.json").exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return FeatureSet(path)
