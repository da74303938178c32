"""Extraction: dataset manifest + extractor -> feature set in the store, chunk by chunk.

Each row chunk is claimed with a lock, computed in batches that start at the chunk's first
row (so a resumed run computes exactly the batches an uninterrupted one would), and
committed by a background writer while the model works on the next batches.

Sharding: shard ``i`` of ``n`` owns the row chunks ``k`` with ``k % n == i``, a fixed, disjoint
split that does not depend on timing. Shards are separate processes (one per GPU, or on several
machines sharing the store's filesystem) running the same command; each computes only its own
chunks, never waits for another shard's, and whichever commits the last chunk of the set writes
its COMPLETE marker. An unsharded run on a partly sharded set simply computes what is left.
Concurrent writers of one set (shards, or plain runs) are safe: each chunk is computed under its
own lock, and the set's writer lock is shared by extractions (only ``rm``/``gc`` take it alone).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import operator
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from iqa_store.datasets.manifest import Manifest
from iqa_store.extractors.base import Extractor, RunOptions
from iqa_store.images import ImageReadError
from iqa_store.store import DONE, FAILED, ChunkResult, FeatureIdentity, FeatureSet, FeatureStore, Scope

_WAIT_SECONDS = 2.0
_SHARD_FORMAT = "I/N (shard I of N, 0 <= I < N), e.g. 0/4"


def resolve_device(device: str = "auto") -> str:
    """``"auto"``: ``cuda`` when torch sees a GPU, else ``cpu``; any other name as given.

    Only called where a model is about to run (or its fingerprint depends on the device):
    importing torch costs more than a cached extraction, which must not pay for it.
    """
    if device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_shard(shard: Any) -> tuple[int, int]:
    """``(i, n)`` as two ints with ``n >= 1`` and ``0 <= i < n``; ValueError otherwise."""
    try:
        index, count = (operator.index(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"a shard must be two integers I/N (shard I of N, 0 <= I < N); got {shard!r}") from None
    if count < 1:
        raise ValueError(f"shard {index}/{count}: the number of shards N must be at least 1")
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: the shard index I must be in 0..{count - 1} (shards count from 0)")
    return index, count


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (as given to ``--shard``) -> ``(I, N)``; ValueError with the expected form otherwise."""
    index, sep, count = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError
        shard = int(index), int(count)
    except ValueError:
        raise ValueError(f"--shard must look like {_SHARD_FORMAT}; got {text!r}") from None
    try:
        return check_shard(shard)
    except ValueError as error:
        raise ValueError(f"--shard {text.strip()}: {str(error).split(': ', 1)[1]}") from None


def shard_chunks(n_chunks: int, shard: tuple[int, int] | None) -> list[int]:
    """The row chunks shard ``(i, n)`` owns: ``k % n == i``; all chunks without a shard."""
    if shard is None:
        return list(range(n_chunks))
    index, count = shard
    return list(range(index, n_chunks, count))


@dataclass(frozen=True)
class Failure:
    row: int
    image_id: str
    path: str
    reason: str


@dataclass
class ExtractionReport:
    feature_set: str
    # "cached", "complete", "interrupted", or "partial": a shard that committed all its chunks
    # while other shards' chunks are still pending (the set is complete when those are done)
    status: str
    rows: int
    computed: int = 0
    reused: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    prepare_seconds: float = 0.0  # of ``seconds``: building the model and loading its weights, once
    shard: tuple[int, int] | None = None
    chunks: int = 0  # row chunks of the set
    pending: int = 0  # chunks of the set not committed when this run ended
    warnings: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    @property
    def shard_name(self) -> str | None:
        return f"{self.shard[0]}/{self.shard[1]}" if self.shard else None

    def to_dict(self) -> dict[str, Any]:
        return {"feature_set": self.feature_set, "status": self.status, "rows": self.rows, "computed": self.computed,
                "reused": self.reused, "failed": len(self.failures), "seconds": round(self.seconds, 3),
                "prepare_seconds": round(self.prepare_seconds, 3),
                "images_per_second": round(self.images_per_second, 2), "shard": self.shard_name,
                "chunks": self.chunks, "pending_chunks": self.pending, "warnings": list(self.warnings),
                "failures": [f.__dict__ for f in self.failures]}

    def summary(self) -> str:
        where = f" (shard {self.shard_name})" if self.shard else ""
        if self.status == "cached":
            head = f"{self.feature_set}: cached, {self.rows} rows, nothing to compute"
        elif self.status == "interrupted":
            head = (f"{self.feature_set}{where}: interrupted after {self.computed} new rows; finished chunks are "
                    "saved, run the same command to resume")
        elif self.status == "partial" and not self.shard:  # only if a shared filesystem lags behind another writer
            head = (f"{self.feature_set}: {self.pending} of {self.chunks} chunks not visible as committed yet; "
                    "run the same command again")
        elif self.status == "partial":
            head = (f"{self.feature_set}: shard {self.shard_name} done ({self.computed} rows computed, {self.reused} "
                    f"reused, in {self.seconds:.1f} s): {self.pending} of {self.chunks} chunks still pending in other "
                    "shards; the set is complete when they finish (or run without --shard to compute them here)")
        else:
            head = (f"{self.feature_set}: complete, {self.rows} rows ({self.computed} computed, {self.reused} reused"
                    f"{', this shard ' + str(self.shard_name) + ' finished last' if self.shard else ''}) "
                    f"in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s)")
        lines = [head] + [f"warning: {w}" for w in self.warnings]
        if self.failures:
            lines.append(f"{len(self.failures)} image(s) failed:")
            lines += [f"  {f.path}: {f.reason}" for f in self.failures]
        return "\n".join(lines)


class _Images:
    """Map-style dataset for the DataLoader: runs ``load_item`` in worker processes.

    Indices are (chunk, row) pairs; (chunk, None) is an empty marker for a chunk whose rows
    are all reused from another set, so it still flows through the same commit path.
    """

    def __init__(self, extractor: Extractor, paths: list[Path]) -> None:
        self.extractor, self.paths = extractor, paths

    def __getitem__(self, index: tuple[int, int | None]) -> tuple[int, int | None, Any, str | None]:
        chunk, row = index
        if row is None:
            return chunk, None, None, None
        try:
            return chunk, row, self.extractor.load_item(self.paths[row]), None
        except ImageReadError as error:
            return chunk, row, None, str(error)

    def collate(self, samples: list[tuple[int, int | None, Any, str | None]]) -> dict[str, Any]:
        good = [s for s in samples if s[1] is not None and s[3] is None]
        return {"chunks": sorted({s[0] for s in samples}),
                "rows": [s[1] for s in good],
                "batch": self.extractor.collate([s[2] for s in good]) if good else None,
                "failures": [(s[1], s[3]) for s in samples if s[3] is not None]}


class _ChunkPlan:
    """The batch sampler: claims chunks one at a time, lazily, and yields their batches."""

    def __init__(self, fs: FeatureSet, chunks: list[int], reuse: dict[int, tuple[FeatureSet, int]], batch_size: int):
        self.fs, self.chunks, self.reuse, self.batch_size = fs, chunks, reuse, batch_size
        self.locks: dict[int, Any] = {}
        self.to_compute: dict[int, list[int]] = {}
        self.busy: list[int] = []

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        for chunk in self.chunks:
            lock = self.fs.chunk_lock(chunk)
            if chunk in self.fs.done_chunks():
                continue
            if not lock.acquire():
                self.busy.append(chunk)
                continue
            if chunk in self.fs.done_chunks():  # committed between our check and our lock
                lock.release()
                continue
            self.locks[chunk] = lock
            start, stop = self.fs.chunk_rows(chunk)
            rows = [r for r in range(start, stop) if r not in self.reuse]
            self.to_compute[chunk] = rows
            if not rows:
                yield [(chunk, None)]
            for i in range(0, len(rows), self.batch_size):
                yield [(chunk, r) for r in rows[i:i + self.batch_size]]


class _ChunkBuffer:
    def __init__(self, fs: FeatureSet, chunk: int, reuse: dict[int, tuple[FeatureSet, int]], expected: int,
                 sources: dict[Path, np.ndarray]) -> None:
        self.start, stop = fs.chunk_rows(chunk)
        self.values = np.full((stop - self.start, fs.dim), np.nan, np.float32)
        self.status = np.zeros(stop - self.start, np.int8)
        self.failures: dict[int, str] = {}
        self.remaining = expected
        self.reused = 0
        for row in range(self.start, stop):
            if row in reuse:
                source, source_row = reuse[row]
                if source.path not in sources:  # read each source set once, not once per row
                    sources[source.path] = source.read()
                self.values[row - self.start] = sources[source.path][source_row]
                self.status[row - self.start] = DONE
                self.reused += 1

    def put(self, rows: list[int], values: np.ndarray) -> None:
        for row, vector in zip(rows, values):
            if np.isfinite(vector).all():
                self.values[row - self.start], self.status[row - self.start] = vector, DONE
            else:
                self.fail(row, "extractor produced non-finite values (NaN or inf)")
        self.remaining -= len(rows)

    def fail(self, row: int, reason: str) -> None:
        self.status[row - self.start] = FAILED
        self.failures[row] = reason


def feature_identity(extractor: Extractor, scope: Scope | None = None, name: str | None = None) -> FeatureIdentity:
    """What the store records of an extractor: its identity, never the object; ``name`` replaces its name."""
    return FeatureIdentity(name or extractor.name, extractor.fingerprint(), extractor.fingerprint_inputs(),
                           extractor.settings(), extractor.dim, scope)


def extract(manifest: Manifest, extractor: Extractor, store: FeatureStore, options: RunOptions = RunOptions(), *,
            shard: tuple[int, int] | None = None, scope: Scope | None = None, name: str | None = None,
            progress: bool = True, log: Callable[[str], None] = print) -> ExtractionReport:
    """Compute ``extractor`` on every image of ``manifest`` that the store does not have yet.

    ``shard=(i, n)``: compute only the row chunks ``k`` with ``k % n == i`` (see the module
    docstring); the report's status is "partial" when other shards' chunks are still pending.
    ``scope``: the split the extractor's weights were trained on (from their registry record),
    kept with the feature set so a fit uses it on that split only. ``name``: the set's name in
    the store instead of the extractor's (variants of one model side by side).
    """
    shard = check_shard(shard) if shard is not None else None
    fs, _ = store.open_or_create(manifest, feature_identity(extractor, scope, name))
    report = ExtractionReport(fs.name, "cached", fs.n_rows, shard=shard, chunks=fs.n_chunks)
    if fs.is_complete:
        report.failures = _failures(fs)
        return report
    mine = set(shard_chunks(fs.n_chunks, shard))
    started = time.perf_counter()
    with store.writer_lock(fs):  # shared: shards and other runs write the set side by side
        reuse = store.reusable_rows(fs)
        prepared = False
        try:
            while pending := [k for k in fs.pending_chunks() if k in mine]:
                todo = sum(1 for k in pending for r in range(*fs.chunk_rows(k)) if r not in reuse)
                if todo and not prepared:
                    options = _decoding_options(dataclasses.replace(options, device=resolve_device(options.device)),
                                                report, log)
                    loading = time.perf_counter()
                    extractor.prepare(options)
                    report.prepare_seconds = time.perf_counter() - loading
                    prepared = True
                plan = _ChunkPlan(fs, pending, reuse, options.batch_size)
                _run_pass(fs, extractor, plan, reuse, options, report, progress)
                if plan.busy and not plan.locks:
                    holders = ", ".join(sorted({fs.chunk_lock(k).holder() for k in plan.busy}))
                    log(f"waiting for {len(plan.busy)} chunk(s) being computed by another process ({holders})")
                    time.sleep(_WAIT_SECONDS)
        except KeyboardInterrupt:
            report.status = "interrupted"
    report.seconds = time.perf_counter() - started
    if report.status != "interrupted":
        # Whoever commits the set's last chunk sees every marker here (each writer checks after
        # its own commits), so the last shard to finish marks the set complete.
        report.status = "complete" if fs.mark_complete_if_done() else "partial"
    report.pending = len(fs.pending_chunks())
    report.failures = _failures(fs)
    return report


def _decoding_options(options: RunOptions, report: ExtractionReport, log: Callable[[str], None]) -> RunOptions:
    """Decoding worker processes are impossible in a daemonic process (a Dask worker under its
    nanny, a multiprocessing.Pool worker): decode in the calling thread there, and say so."""
    if options.workers > 0 and multiprocessing.current_process().daemon:
        warning = (f"this is a daemonic process (e.g. a Dask worker started by its nanny), which cannot start "
                   f"DataLoader worker processes: decoding images in this thread instead of {options.workers} "
                   "worker process(es); start Dask workers with --no-nanny (or distributed.worker.daemon: False) "
                   "for parallel decoding")
        report.warnings.append(warning)
        log(f"warning: {warning}")
        return dataclasses.replace(options, workers=0)
    return options


def _run_pass(fs: FeatureSet, extractor: Extractor, plan: _ChunkPlan, reuse: dict[int, tuple[FeatureSet, int]],
              options: RunOptions, report: ExtractionReport, progress: bool) -> None:
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    images = _Images(extractor, _paths(fs))
    loader = DataLoader(images, batch_sampler=plan, num_workers=options.workers, collate_fn=images.collate,
                        pin_memory=options.device.startswith("cuda"), worker_init_fn=_one_thread,
                        persistent_workers=False)
    buffers: dict[int, _ChunkBuffer] = {}
    sources: dict[Path, np.ndarray] = {}
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iqa-store-writer")
    commits: list[Future] = []
    bar = tqdm(total=sum(len(range(*fs.chunk_rows(k))) for k in plan.chunks), unit="img",
               desc=f"extract {fs.extractor} on {fs.dataset}", disable=not progress, leave=False)
    try:
        for batch in loader:
            chunk = batch["chunks"][0]  # a batch never spans chunks
            buffer = buffers.get(chunk)
            if buffer is None:
                buffer = buffers[chunk] = _ChunkBuffer(fs, chunk, reuse, len(plan.to_compute[chunk]), sources)
                bar.update(buffer.reused)
            for row, reason in batch["failures"]:
                buffer.fail(row, reason)
                buffer.remaining -= 1
            if batch["rows"]:
                with torch.inference_mode():
                    values = extractor.compute(batch["batch"])
                buffer.put(batch["rows"], values)
            done_rows = len(batch["rows"]) + len(batch["failures"])
            report.computed += done_rows
            bar.update(done_rows)
            if buffer.remaining == 0:
                result = ChunkResult(chunk, buffer.values, buffer.status, buffer.failures, buffer.reused)
                report.reused += buffer.reused
                commits.append(writer.submit(_commit, fs, result, plan.locks.pop(chunk)))
                del buffers[chunk]
    finally:
        bar.close()
        writer.shutdown(wait=True)  # finished chunks are saved even when interrupted
        for lock in plan.locks.values():
            lock.release()
    for commit in commits:
        commit.result()  # surface a failed write


def _commit(fs: FeatureSet, result: ChunkResult, lock: Any) -> None:
    try:
        fs.commit_chunk(result, writer=lock.holder())
    finally:
        lock.release()


def _paths(fs: FeatureSet) -> list[Path]:
    root = Path(fs.attrs["dataset_root"])
    return [root / p for p in fs.rel_paths]


def _one_thread(_: int) -> None:
    # Decoding workers each get one BLAS/torch thread: the cores belong to the workers as a whole.
    import torch
    torch.set_num_threads(1)


def _failures(fs: FeatureSet) -> list[Failure]:
    ids, paths = fs.ids, _paths(fs)
    return [Failure(row, ids[row], str(paths[row]), reason) for row, reason in sorted(fs.failures().items())]
