"""Termination signals turned into exceptions, so that clean-up code runs.

A process stopped by SIGTERM (a batch system, ``kill``, a CI timeout) runs no ``finally``
block unless a Python handler turns the signal into an exception.  :class:`TerminationGuard`
does that for a block of code: the runner raises its ``Terminated`` (a ``KeyboardInterrupt``,
so the running chapter's staging directory is moved aside like on Ctrl-C), the generator its
``GenerationTerminated`` (exit status 128 + signal).  :meth:`TerminationGuard.deferred` holds a
signal back during a short critical section (two renames that must happen together).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType, TracebackType
from typing import Any, Self


class TerminationGuard:
    """Context manager: while active, the ``signals`` raise ``make_error(signum)`` in the main
    thread (only there can Python handlers be installed); the previous handlers are restored on
    exit.  Elsewhere it does nothing."""

    def __init__(self, make_error: Callable[[int], BaseException],
                 signals: Sequence[signal.Signals] = (signal.SIGTERM,)) -> None:
        self._make_error = make_error
        self._signals = tuple(signals)
        self._previous: dict[signal.Signals, Any] = {}
        self._depth = 0
        self._pending: int | None = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self._signals}
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            # None means "installed from C": the closest we can restore is the default
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
        if self._pending is not None and exc_type is None:
            signum, self._pending = self._pending, None
            raise self._make_error(signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._depth:
            self._pending = signum
            return
        raise self._make_error(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold the signals back inside the block; raise when the block ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self._pending is not None:
            signum, self._pending = self._pending, None
            raise self._make_error(signum)
