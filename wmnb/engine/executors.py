"""Executors: run a list of independent tasks locally or on Dask, results in task order.

``local`` runs the tasks one after the other in this process; ``dask`` submits them to a
``distributed`` scheduler (an address such as ``tcp://host:8786``, or a fresh 2-worker
``LocalCluster`` when the address is None).  Both yield the results **in task order**, so that
reductions (summing histograms, concatenating skims) happen in the same order and the outputs
are bit-identical whichever executor ran the tasks.  Both show a tqdm progress bar.

Task functions must be importable module-level functions (Dask pickles them by reference).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

EXECUTORS = ("local", "dask")


def _bar(total: int, desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, unit="chunk", leave=False)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int = 2) -> Iterator[Any]:
    """A ``distributed.Client`` to ``scheduler``, or to a new ``LocalCluster`` of ``n_workers``
    single-threaded worker processes (closed again on exit)."""
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def run_tasks(func: Callable[[Any], Any], tasks: Sequence[Any], *, executor: str = "local",
              scheduler: str | None = None, client: Any = None, progress: bool = True,
              desc: str = "") -> Iterator[Any]:
    """Yield ``func(task)`` for every task, in task order, with the chosen executor.

    For ``dask``, pass an existing ``client`` or a ``scheduler`` address (None: LocalCluster).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    bar = _bar(len(tasks), desc, progress)
    try:
        if executor == "local":
            for task in tasks:
                yield func(task)
                bar.update(1)
            return
        with contextlib.ExitStack() as stack:
            if client is None:
                client = stack.enter_context(dask_client(scheduler))
            futures = client.map(func, list(tasks), pure=False)
            for fut in futures:
                result = fut.result()
                fut.release()
                yield result
                bar.update(1)
    finally:
        bar.close()
