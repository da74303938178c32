"""Running the fit grid on Dask: a LocalCluster of worker processes, or an existing cluster.

``DaskExecutor`` is a ``concurrent.futures.Executor`` with the three extras the grid uses
(see ``grid``): ``share`` scatters the feature matrix to every worker once (a worker keeps one
copy, and fetches it from a peer that still has it when it starts later), ``parallelism`` is
the cluster's thread count, and ``blas_threads`` is what each task sets with threadpoolctl.

A worker that dies mid-task (killed, out of memory) is noticed by the scheduler, which runs
its tasks again elsewhere (up to ``distributed.scheduler.allowed-failures`` times). Scattered
data cannot be recomputed, and Dask's active memory manager drops copies nobody waits on, so
a dead worker can take the last copy with it: the scheduler then cancels the tasks that need
it, and the grid scatters it again and resubmits them. Results reach the grid only from tasks
that finished, so the table gets each cell once.

``LocalLayout`` decides where a grid runs when nobody passed an executor: in this process, or
on a LocalCluster it starts when the first grid worth it comes (``choose_workers``, from the
crossover that ``benchmarks/bench_grid.py --crossover`` measured) and keeps for the grids after.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator

__all__ = ["PARALLEL_FROM_SECONDS", "DaskExecutor", "LocalLayout", "choose_workers", "dask_executor",
           "default_local_workers"]

# Where a LocalCluster of single-threaded workers (one per core) starts to beat one process
# with one BLAS thread per worker's share of the cores, its start-up included: a grid whose
# cells would take this long in one process. Measured by ``benchmarks/bench_grid.py
# --crossover`` on the project's 2-core machine (RESULTS.md, "Fit grid: where local workers pay
# off", 2026-12-03): it never did. Near idle (load 0.1-1.3) the cluster took ~3.4 s + 1.41x the
# one-process time (a task in a Dask worker used ~2.7x the CPU of the same task here), and
# under the usual load it was 2.6-8x slower; the default before (one process, a BLAS thread per
# core) was 3-19x slower than one process with one BLAS thread. So the default is one process
# with one BLAS thread; rerun the benchmark on a bigger machine and put its crossover here.
PARALLEL_FROM_SECONDS = float("inf")

_BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class DaskExecutor(concurrent.futures.Executor):
    """Tasks on a ``distributed.Client``; see the module docstring."""

    def __init__(self, client: Any, blas_threads: int) -> None:
        self.client = client
        self.blas_threads = blas_threads
        self._executor = client.get_executor(pure=False)  # tasks are never deduplicated by content

    @property
    def parallelism(self) -> int:
        return max(1, sum(w["nthreads"] for w in self.client.scheduler_info()["workers"].values()))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        return self._executor.submit(fn, *args, **kwargs)

    def share(self, value: Any) -> Any:
        return self.client.scatter(value, broadcast=True, hash=False)

    def lost(self) -> str | None:
        """Why the tasks can no longer finish (the client closed after losing its scheduler), or None."""
        status = str(getattr(self.client, "status", ""))
        return f"the Dask client is {status}: its scheduler went away" if status in ("closing", "closed") else None

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=wait)


def _cluster_blas_threads(client: Any) -> int:
    """Per host, its cores divided by the worker threads it runs; the smallest over hosts."""
    workers = client.scheduler_info()["workers"]
    cores = client.run(os.cpu_count)
    threads: dict[str, int] = {}
    host_cores: dict[str, int] = {}
    for address, info in workers.items():
        threads[info["host"]] = threads.get(info["host"], 0) + info["nthreads"]
        host_cores[info["host"]] = cores.get(address) or 1
    return max(1, min((host_cores[h] // max(1, t) for h, t in threads.items()), default=1))


def default_local_workers(cores: int | None = None) -> int:
    """The LocalCluster's size when none is asked for: one worker per core, at most 4 (each
    worker holds a copy of the feature matrix)."""
    return min(4, cores or os.cpu_count() or 1)


def choose_workers(seconds: float, tasks: int, *, requested: int | None = None, cores: int | None = None,
                   cluster_running: bool = False) -> int:
    """Local worker processes for a grid's remaining cells; 1 means this process.

    ``seconds``: their estimated time in one process; ``tasks``: how many tasks they make.
    ``requested``: the caller's number (1 forces this process, N > 1 a cluster of N); None
    chooses: a cluster when there are at least two tasks and cores for two workers and the
    cells would take ``PARALLEL_FROM_SECONDS`` or more here (any time at all once a cluster
    is running, since its start-up is paid).
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"workers must be at least 1 (1: fit in this process); got {requested}")
        return requested
    workers = default_local_workers(cores)
    if workers < 2 or tasks < 2:
        return 1
    return workers if cluster_running or seconds >= PARALLEL_FROM_SECONDS else 1


class LocalLayout:
    """Chooses, grid by grid, between this process and a LocalCluster it starts once (a context
    manager: the cluster closes with it). ``workers``: as ``choose_workers``' ``requested``.

    Cells fitted here in automatic mode use the workers' BLAS thread count, so a table is the
    same to the bit whichever way a grid went (a resumed run may go the other way).
    """

    def __init__(self, workers: int | None = None, log: Callable[[str], None] = lambda line: None) -> None:
        self.requested = workers
        choose_workers(0.0, 0, requested=workers)  # a bad number fails here, before any work
        self.cores = os.cpu_count() or 1
        self.parallelism = workers or default_local_workers(self.cores)  # the cluster's worker threads
        self.log = log
        self._stack = ExitStack()
        self._executor: DaskExecutor | None = None
        self._said: set[int] = set()

    @property
    def automatic(self) -> bool:
        return self.requested is None

    @property
    def blas_threads(self) -> int | None:
        """BLAS threads per task: the workers' share of the cores; None (as it is) for workers=1."""
        return None if self.requested == 1 else max(1, self.cores // self.parallelism)

    def executor_for(self, seconds: float, tasks: int, cells: str) -> DaskExecutor | None:
        """The executor for a grid (None: this process); ``cells`` names them for the log line."""
        workers = choose_workers(seconds, tasks, requested=self.requested, cores=self.cores,
                                 cluster_running=self._executor is not None)
        if self.automatic and workers not in self._said:  # one line per layout chosen, not per grid
            self._said.add(workers)
            self.log(self._describe(workers, seconds, tasks, cells))
        if workers == 1:
            return None
        if self._executor is None:
            self._executor = self._stack.enter_context(dask_executor(workers=workers))
        return self._executor

    def _describe(self, workers: int, seconds: float, tasks: int, cells: str) -> str:
        if workers > 1:
            return (f"fit {cells} on {workers} local single-threaded workers (chosen: ~{seconds:.0f} s of work in "
                    f"one process; workers=1 fits in this process)")
        pays = f"from ~{PARALLEL_FROM_SECONDS:.0f} s" if math.isfinite(PARALLEL_FROM_SECONDS) else "never on this machine"
        why = (f"~{seconds:.1f} s of work, local workers pay off {pays}" if tasks > 1
               else "one task, nothing to run side by side")
        return f"fit {cells} in this process (chosen: {why}; workers=N fits on N local worker processes)"

    def __enter__(self) -> "LocalLayout":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()


@contextmanager
def dask_executor(scheduler: str | None = None, workers: int | None = None) -> Iterator[DaskExecutor]:
    """A ``DaskExecutor`` on an existing cluster (``scheduler`` address) or on a new
    LocalCluster of ``workers`` single-threaded processes (default: one per core, at most 4).

    Local workers get ``cores // workers`` BLAS threads each, in their environment (read when
    numpy loads) and per task, so two workers on two cores do not run four BLAS threads.
    """
    from distributed import Client, LocalCluster

    if scheduler and workers:
        raise ValueError("give a scheduler address or a number of local workers, not both")
    cores = os.cpu_count() or 1
    if scheduler:
        cluster, client = None, Client(scheduler)
        blas_threads = _cluster_blas_threads(client)
    else:
        n_workers = workers or default_local_workers(cores)
        blas_threads = max(1, cores // n_workers)
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               env=dict.fromkeys(_BLAS_VARIABLES, str(blas_threads)))
        client = Client(cluster)
    try:
        yield DaskExecutor(client, blas_threads)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
