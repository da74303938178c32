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
"""

from __future__ import annotations

import concurrent.futures
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator

__all__ = ["DaskExecutor", "dask_executor"]

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
        n_workers = workers or min(4, cores)
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
