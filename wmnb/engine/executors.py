"""Executors: run a list of independent tasks locally or on Dask, results in task order.

``local`` runs the tasks one after the other in this process; ``dask`` submits them to a
``distributed`` scheduler (an address such as ``tcp://host:8786``, or a 2-worker ``LocalCluster``
when the address is None).  Both yield the results **in task order**, so that reductions
(summing histograms and templates, concatenating skims) happen in the same order and the outputs
are bit-identical whichever executor ran the tasks.  Both show a tqdm progress bar.

:func:`run_tasks` is the one abstraction every heavy step goes through: universe generation (one
task per output file), selection (one per NanoAOD chunk), template building (one per skim chunk)
and toy fits (one per toy).  ``executor=None`` means the process's choice
(:func:`wmnb.execution.active`, the profile's ``executor``/``dask_scheduler`` in a notebook);
without a ``client`` the dask executor uses :func:`shared_client`, one client per scheduler
address kept for the life of the process (a LocalCluster is started once, not per step).

Task functions must be importable module-level functions (Dask pickles them by reference).  What
every task needs (a recipe and its corrections, a fit model) is passed once as ``shared``: Dask
scatters it to the workers a single time, and each task receives it as its second argument.
"""
from __future__ import annotations

import atexit
import contextlib
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

from ..execution import EXECUTOR_NAMES, resolve

EXECUTORS = EXECUTOR_NAMES
#: clients of :func:`shared_client`: scheduler address (None: LocalCluster) -> (client, cluster)
_SHARED: dict[str | None, tuple[Any, Any]] = {}
_NO_SHARED = object()


def _bar(total: int, desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, desc=desc, disable=not progress, unit="task", leave=False)


def _local_cluster(n_workers: int) -> Any:
    from distributed import LocalCluster

    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    # dashboard on a free port: a fixed one collides with any other cluster on the machine
    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0")


#: ``dask_scheduler: "dask-gateway:<cluster name>"``: a running cluster of the facility's Dask Gateway
GATEWAY_PREFIX = "dask-gateway:"


def connect(scheduler: str) -> Any:
    """A ``distributed.Client`` to a scheduler address (``tcp://host:8786``, ``tls://...`` with
    its credentials in the Dask configuration) or to the Dask Gateway cluster named after
    :data:`GATEWAY_PREFIX` (through the facility's gateway configuration and authentication)."""
    if scheduler.startswith(GATEWAY_PREFIX):
        name = scheduler[len(GATEWAY_PREFIX):].strip()
        if not name:
            raise ValueError(f"dask_scheduler {scheduler!r}: give the cluster's name after {GATEWAY_PREFIX!r} "
                             "(gateway.list_clusters() lists them)")
        try:
            from dask_gateway import Gateway
        except ImportError as err:
            raise ImportError(f"dask_scheduler {scheduler!r} needs the dask-gateway package "
                              "(pip install dask-gateway, or pip install -e '.[cluster]')") from err
        return Gateway().connect(name).get_client()
    from distributed import Client

    return Client(scheduler)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int = 2) -> Iterator[Any]:
    """A ``distributed.Client`` to ``scheduler`` (see :func:`connect`), or to a new
    ``LocalCluster`` of ``n_workers`` single-threaded worker processes (closed again on exit)."""
    from distributed import Client

    if scheduler:
        client = connect(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = _local_cluster(n_workers)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def shared_client(scheduler: str | None = None) -> Any:
    """This process's client to ``scheduler`` (:func:`connect`; None: a 2-worker LocalCluster),
    made on first use and kept until :func:`close_shared_clients` or the end of the process."""
    if scheduler in _SHARED:
        client, _ = _SHARED[scheduler]
        if client.status == "running":
            return client
        _close(_SHARED.pop(scheduler))
    from distributed import Client

    if scheduler:
        _SHARED[scheduler] = (connect(scheduler), None)
    else:
        cluster = _local_cluster(2)
        _SHARED[scheduler] = (Client(cluster), cluster)
    return _SHARED[scheduler][0]


def _close(pair: tuple[Any, Any]) -> None:
    client, cluster = pair
    with contextlib.suppress(Exception):
        client.close()
    if cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close()


@atexit.register
def close_shared_clients() -> None:
    """Close the clients (and LocalClusters) of :func:`shared_client`."""
    while _SHARED:
        _close(_SHARED.popitem()[1])


@contextlib.contextmanager
def task_client(executor: str | None = None, scheduler: str | None = None, client: Any = None
                ) -> Iterator[Any]:
    """The client the tasks of one step run on: None for the local executor, ``client`` if
    given, else :func:`shared_client` of the (resolved) scheduler address."""
    chosen = resolve(executor, scheduler)
    if chosen.executor == "local":
        yield None
    elif client is not None:
        yield client
    else:
        yield shared_client(chosen.scheduler)


def n_workers(client: Any) -> int:
    """Number of workers a client's scheduler has now (1 for the local executor: ``None``)."""
    return 1 if client is None else len(client.scheduler_info().get("workers", {}))


def run_tasks(func: Callable[..., Any], tasks: Sequence[Any], *, executor: str | None = None,
              scheduler: str | None = None, client: Any = None, progress: bool = True,
              desc: str = "", shared: Any = _NO_SHARED) -> Generator[Any, None, None]:
    """Yield ``func(task)`` -- or ``func(task, shared)`` when ``shared`` is given -- for every
    task, in task order, with the chosen executor.

    ``executor`` None: the process's choice (:func:`wmnb.execution.active`).  For ``dask``, pass
    an existing ``client`` or a ``scheduler`` address (None: the LocalCluster of
    :func:`shared_client`).  ``shared`` is scattered to the workers once, not shipped with each
    task.  Tasks not yet gathered are cancelled when the caller stops early (an error, a
    ``break``, SIGTERM), so a failed step leaves nothing running on the cluster.
    """
    if executor is not None and executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    with_shared = shared is not _NO_SHARED
    bar = _bar(len(tasks), desc, progress)
    try:
        if resolve(executor, scheduler).executor == "local":
            for task in tasks:
                yield func(task, shared) if with_shared else func(task)
                bar.update(1)
            return
        with task_client(executor, scheduler, client) as cl:
            yield from _dask_results(cl, func, tasks, shared if with_shared else _NO_SHARED, bar)
    finally:
        bar.close()


def _dask_results(client: Any, func: Callable[..., Any], tasks: Sequence[Any], shared: Any, bar: Any
                  ) -> Iterator[Any]:
    kwargs: dict[str, Any] = {}
    scattered = None
    if shared is not _NO_SHARED:
        # one copy per worker, sent once (in a list: scatter would split a tuple into its items);
        # hash=False: tokenising a large object costs more than it saves
        scattered = client.scatter([shared], broadcast=True, hash=False)[0]
        kwargs["shared"] = scattered
    name = getattr(func, "__name__", "task").strip("_") or "task"     # task keys <name>-<uuid>
    futures = client.map(_call, [func] * len(tasks), list(tasks), key=name, pure=False, **kwargs) if tasks else []
    done = 0
    try:
        for fut in futures:
            result = fut.result()
            fut.release()
            done += 1
            yield result
            bar.update(1)
    finally:
        pending = futures[done:]
        if pending:
            client.cancel(pending)
        if scattered is not None:
            scattered.release()


def _call(func: Callable[..., Any], task: Any, shared: Any = _NO_SHARED) -> Any:
    """One task on a worker: ``func(task)`` or ``func(task, shared)``."""
    return func(task) if shared is _NO_SHARED else func(task, shared)
