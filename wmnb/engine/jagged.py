"""Vectorised per-event reductions on flat collections (numpy only, no Python loops).

A collection of a chunk is a flat array per field plus ``offsets``; these helpers pick objects
per event (the leading one passing a mask, the count passing a mask) without building awkward
arrays, which keeps the selections fast.
"""
from __future__ import annotations

import numpy as np


_EVENT_INDEX_CACHE: list[tuple[np.ndarray, np.ndarray]] = []


def event_index(offsets: np.ndarray) -> np.ndarray:
    """Event number of every object (memoised on the identity of ``offsets``, which the
    selections never modify, because several cuts need it for the same collection)."""
    for off, ev in _EVENT_INDEX_CACHE:
        if off is offsets:
            return ev
    ev = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    _EVENT_INDEX_CACHE.insert(0, (offsets, ev))
    del _EVENT_INDEX_CACHE[8:]
    return ev


def count(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Number of objects per event with ``mask`` true."""
    n = len(offsets) - 1
    if mask.size == 0:
        return np.zeros(n, dtype=np.int64)
    return np.bincount(event_index(offsets)[mask], minlength=n)


def argmax_masked(values: np.ndarray, mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Flat index of the object with the largest ``values`` among those with ``mask`` true, per
    event (the first one on ties), or -1 for events without such object."""
    n = len(offsets) - 1
    out = np.full(n, -1, dtype=np.int64)
    if mask.size == 0 or not mask.any():
        return out
    v = np.where(mask, values, -np.inf)
    counts = np.diff(offsets)
    nonempty = counts > 0
    best = np.full(n, -np.inf)
    best[nonempty] = np.maximum.reduceat(v, offsets[:-1][nonempty])
    ev = event_index(offsets)
    cand = np.flatnonzero(mask & (v == best[ev]))
    ev_c = ev[cand]                     # non-decreasing: keep the first candidate of each event
    first = np.ones(ev_c.size, dtype=bool)
    first[1:] = ev_c[1:] != ev_c[:-1]
    out[ev_c[first]] = cand[first]
    return out


def take(values: np.ndarray, index: np.ndarray, fill: float | int = 0) -> np.ndarray:
    """``values[index]`` with ``fill`` where ``index`` is -1."""
    if values.size == 0:
        return np.full(index.shape, fill, dtype=values.dtype if values.dtype != bool else bool)
    out = values[np.where(index >= 0, index, 0)]
    return np.where(index >= 0, out, np.asarray(fill, dtype=out.dtype))
