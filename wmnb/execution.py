"""Which executor this process runs its heavy steps on: the profile's ``executor`` and ``dask_scheduler``.

A profile's top-level ``executor`` (``local`` or ``dask``) and ``dask_scheduler`` (a scheduler
address such as ``tcp://host:8786``; null: a ``LocalCluster`` started on first use) reach a
chapter notebook as parameters, and :func:`wmnb.params.notebook_config` -- which every notebook
calls right after its parameters cell -- makes them this process's choice with :func:`activate`.
The shared layers' heavy steps (universe generation, selection, template building, toy fits) take
``executor=None`` to mean "the active choice" (:func:`resolve`); an explicit argument wins.

>>> from wmnb.execution import active, using
>>> active().executor
'local'
>>> with using("dask", "tcp://scheduler:8786"):
...     active()
Execution(executor='dask', scheduler='tcp://scheduler:8786')
>>> active().executor
'local'
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

#: executor names (the profile's choices; wmnb.engine.executors.EXECUTORS, a test keeps them equal)
EXECUTOR_NAMES = ("local", "dask")


@dataclass(frozen=True)
class Execution:
    """An executor and, for ``dask``, the scheduler address (None: a LocalCluster)."""

    executor: str = "local"
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTOR_NAMES:
            raise ValueError(f"executor must be one of {EXECUTOR_NAMES}, got {self.executor!r}")
        if self.scheduler is not None and (not isinstance(self.scheduler, str) or not self.scheduler.strip()):
            raise ValueError(f"dask_scheduler must be a scheduler address (e.g. 'tcp://host:8786') or None, "
                             f"got {self.scheduler!r}")


_ACTIVE = Execution()


def active() -> Execution:
    """The executor the process's heavy steps use when not told otherwise."""
    return _ACTIVE


def activate(executor: str = "local", scheduler: str | None = None) -> Execution:
    """Make ``executor`` (with ``scheduler``) the process's choice; return the previous one."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, Execution(executor, scheduler or None)
    return previous


@contextlib.contextmanager
def using(executor: str, scheduler: str | None = None) -> Iterator[Execution]:
    """:func:`activate` for the duration of a ``with`` block (the previous choice is restored)."""
    previous = activate(executor, scheduler)
    try:
        yield _ACTIVE
    finally:
        activate(previous.executor, previous.scheduler)


def resolve(executor: str | None = None, scheduler: str | None = None) -> Execution:
    """The explicit ``executor`` (with ``scheduler``) if given, else the active choice (whose
    scheduler an explicit ``scheduler`` still replaces)."""
    if executor is None:
        return Execution(_ACTIVE.executor, scheduler if scheduler is not None else _ACTIVE.scheduler)
    return Execution(executor, scheduler)


__all__ = ["EXECUTOR_NAMES", "Execution", "activate", "active", "resolve", "using"]
