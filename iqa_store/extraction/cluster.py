"""Extraction on an existing Dask cluster: the set's row chunks split into shards, one task each.

Each task runs the request's shard ``(i, n)`` on its worker (``jobs.run_shard``), exactly what
``iqa-store extract --shard i/n`` does on a machine: the device ("auto") is resolved there, so a worker with a GPU
computes on ``cuda``. When the workers advertise a ``GPU`` resource (``dask worker ...
--resources GPU=1``) each task asks for one, so a GPU runs one shard at a time; the default
number of shards is then the number of GPUs, otherwise the number of workers.

Workers share the store's filesystem (same path everywhere). Chunks are committed as they are
finished, under their own locks, so a task that fails or a worker that dies (the scheduler runs
its task again elsewhere, up to ``distributed.scheduler.allowed-failures`` times) loses at most
the chunks it was computing; the same command again computes only what is missing.

Dask worker processes started by a nanny are daemonic and cannot start DataLoader worker
processes: images are then decoded in the task's thread, with a warning in the report. Start
workers with ``--no-nanny`` (or ``distributed.worker.daemon: False``) for parallel decoding.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from iqa_store.extraction.runner import ExtractionReport, Failure
from iqa_store.requests import ExtractRequest

__all__ = ["ClusterReport", "extract_on_cluster"]

_logger = logging.getLogger("iqa_store.extraction.runner")


@dataclass
class ShardRun:
    """One shard task that finished: its report and where it ran."""

    report: ExtractionReport
    worker: str
    device: str


@dataclass
class ClusterReport:
    """The shard reports combined; ``status``: cached, complete, partial, failed or interrupted."""

    feature_set: str
    status: str
    rows: int
    shards: int
    scheduler: str
    runs: dict[int, ShardRun] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # "i/n" (a shard) or "set" -> message
    chunks: int = 0
    pending: int = 0
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def computed(self) -> int:
        return sum(run.report.computed for run in self.runs.values())

    @property
    def reused(self) -> int:
        return sum(run.report.reused for run in self.runs.values())

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"feature_set": self.feature_set, "status": self.status, "rows": self.rows, "computed": self.computed,
                "reused": self.reused, "failed": len(self.failures), "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 2), "scheduler": self.scheduler,
                "shards": self.shards, "chunks": self.chunks, "pending_chunks": self.pending,
                "warnings": list(self.warnings),
                "shard_reports": [{"shard": f"{i}/{self.shards}", "worker": run.worker, "device": run.device,
                                   **{k: v for k, v in run.report.to_dict().items() if k not in ("failures", "shard")}}
                                  for i, run in sorted(self.runs.items())],
                "errors": dict(self.errors),
                "failures": [f.__dict__ for f in self.failures]}

    def summary(self) -> str:
        name = self.feature_set or "extraction"
        on = f"{self.shards} shard(s) on {self.scheduler}"
        if self.status == "cached":
            head = f"{name}: cached, {self.rows} rows, nothing to compute"
        elif self.status == "complete":
            head = (f"{name}: complete, {self.rows} rows ({self.computed} computed, {self.reused} reused) in "
                    f"{self.seconds:.1f} s by {on} ({self.images_per_second:.1f} images/s)")
        elif self.status == "partial":
            head = f"{name}: {self.pending} of {self.chunks} chunks still pending after {on}; run the command again"
        else:
            failed = sum(1 for key in self.errors if key != "set")
            what = "interrupted" if self.status == "interrupted" else f"{failed} of {self.shards} shard(s) failed"
            pending = f"{self.pending} of {self.chunks} chunks pending" if self.chunks else "chunks pending"
            head = (f"{name}: {what} ({self.computed} rows computed); committed chunks are saved, {pending}: "
                    "run the same command again to resume")
        lines = [head] + [f"  {'set' if key == 'set' else 'shard ' + key}: {message}"
                          for key, message in self.errors.items()]
        lines += [f"warning: {w}" for w in self.warnings]
        if self.failures:
            lines.append(f"{len(self.failures)} image(s) failed:")
            lines += [f"  {f.path}: {f.reason}" for f in self.failures]
        return "\n".join(lines)


def extract_on_cluster(scheduler: str, request: ExtractRequest, store: Any, shards: int | None = None, *,
                       log: Callable[[str], None] = print) -> ClusterReport:
    """Run shard ``(i, n)`` of ``request`` for every ``i`` on the cluster at ``scheduler``.

    ``request`` and ``store`` with paths the workers can open (absolute, on the shared
    filesystem). Logs one line per finished shard; returns the combined report.
    """
    from distributed import Client, as_completed

    started = time.perf_counter()
    client = Client(scheduler)
    try:
        if not client.scheduler_info()["workers"]:
            log(f"waiting for a worker to join the cluster at {scheduler}")
            client.wait_for_workers(1, timeout=120)
        workers = client.scheduler_info()["workers"]
        gpus = sum(float((info.get("resources") or {}).get("GPU", 0)) for info in workers.values())
        count = shards or (int(gpus) if gpus >= 1 else len(workers))
        resources = {"GPU": 1} if gpus >= 1 else None
        log(f"extracting in {count} shard(s) on {len(workers)} worker(s) at {scheduler}"
            + (f", one shard per GPU at a time ({gpus:g} GPU(s))" if resources else ""))
        report = ClusterReport("", "failed", 0, count, scheduler)
        token = uuid.uuid4().hex[:8]
        futures = {client.submit(_shard_task, request, store, (i, count), key=f"iqa-extract-shard-{i}of{count}-{token}",
                                 resources=resources, pure=False): i for i in range(count)}
        interrupted = False
        try:
            for future in as_completed(list(futures)):
                i = futures[future]
                try:
                    run = future.result()
                except Exception as error:  # the task raised, or its worker died too often (KilledWorker)
                    message = report.errors[f"{i}/{count}"] = f"{type(error).__name__}: {error}"
                    log(f"shard {i}/{count} failed: {message} (chunks it committed are kept)")
                    continue
                report.runs[i] = run
                done = run.report
                log(f"shard {i}/{count} done on {run.worker} ({run.device}): {done.computed} rows computed, "
                    f"{done.reused} reused in {done.seconds:.1f} s; {done.pending} of {done.chunks} chunks pending")
                for warning in done.warnings:
                    log(f"shard {i}/{count}: warning: {warning}")
                    if warning not in report.warnings:
                        report.warnings.append(warning)
        except KeyboardInterrupt:
            interrupted = True
            client.cancel(list(futures))
        report.seconds = time.perf_counter() - started
        _combine(client, report, store, interrupted)
        return report
    finally:
        client.close()


def _combine(client: Any, report: ClusterReport, store: Any, interrupted: bool) -> None:
    names = sorted({run.report.feature_set for run in report.runs.values()})
    if len(names) > 1:  # e.g. a CPU worker and a GPU worker: another precision, another set
        report.errors["set"] = (f"the shards produced different feature sets ({', '.join(names)}): the workers "
                                "resolved different devices or precisions; give --device and --precision explicitly")
    if names:
        first = next(run.report for run in report.runs.values())
        report.feature_set, report.rows = names[0], first.rows
        report.chunks, report.pending, report.failures = first.chunks, first.pending, first.failures
    if names and not interrupted:
        # The last shard to finish has marked the set complete; this checks it once more from
        # one place (and marks it, should a shared filesystem have shown a shard a stale listing).
        try:
            complete, report.pending, report.failures = client.submit(
                _finish, store, names[0], pure=False, key=f"iqa-extract-finish-{uuid.uuid4().hex[:8]}").result()
        except Exception as error:
            complete = False
            report.errors.setdefault("set", f"could not check the set's completion: {type(error).__name__}: {error}")
    else:
        complete = False
    if interrupted:
        report.status = "interrupted"
    elif report.errors:
        report.status = "failed"
    elif report.runs and all(run.report.status == "cached" for run in report.runs.values()):
        report.status = "cached"
    else:
        report.status = "complete" if complete else "partial"


def _shard_task(request: ExtractRequest, store: Any, shard: tuple[int, int]) -> ShardRun:
    """Runs on a worker: one shard, the device resolved here."""
    from iqa_store.extraction.jobs import resolve_device, run_shard
    device = resolve_device(request.device)

    def log(line: str) -> None:
        _logger.warning("shard %d/%d: %s", *shard, line)  # in the worker's log

    report = run_shard(dataclasses.replace(request, device=device), store, shard, log=log)
    return ShardRun(report, _worker_name(), device)


def _finish(store: Any, name: str) -> tuple[bool, int, list[Failure]]:
    from iqa_store.extraction.runner import _failures
    fs = store.get(name)
    complete = fs.mark_complete_if_done()
    return complete, len(fs.pending_chunks()), _failures(fs)


def _worker_name() -> str:
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        import os
        import socket
        return f"{socket.gethostname()} {os.getpid()}"
