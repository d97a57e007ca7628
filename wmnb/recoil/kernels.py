"""Compiled per-event kernels of the quantile morphing (numba), for applying it to every
simulated W event and for the recoil nuisances.

They evaluate exactly the rule of :mod:`wmnb.recoil.morphing` (PCHIP between the quantiles with
Fritsch–Butland slopes, exponential tails with the log-secant scales, the tails' closed-form
linear map, the safeguarded Newton inversion), one event at a time instead of one numpy array
operation at a time: no (n_events × n_levels) temporaries, one pass over memory.  The
vectorised numpy functions of :mod:`wmnb.recoil.morphing` stay the reference; the tests check
that both agree to 1e-10.

* :func:`morph_rows` — x moved from per-event quantiles ``q_from`` to ``q_to`` (any regressor);
* :func:`morph_binned` — the same with both quantile sets interpolated in q_T between bin
  centres inside the kernel (the binned method: nothing per event is materialised).

Both run in parallel over events (``prange``) and are cached on disk after the first compile.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .morphing import span_knots

__all__ = ["morph_binned", "morph_rows"]

_NEWTON_TOL = 1e-13
_NEWTON_MAX = 100


@numba.njit(cache=True, inline="always")
def _tail_scales(lv: np.ndarray, q: np.ndarray, m_lo: int, m_hi: int) -> tuple[float, float]:
    n = lv.size
    s_lo = (q[m_lo] - q[0]) / math.log(lv[m_lo] / lv[0])
    s_hi = (q[n - 1] - q[m_hi]) / math.log((1.0 - lv[m_hi]) / (1.0 - lv[n - 1]))
    s_lo = max(s_lo, lv[0] * (q[1] - q[0]) / (3.0 * (lv[1] - lv[0])))
    s_hi = max(s_hi, (1.0 - lv[n - 1]) * (q[n - 1] - q[n - 2]) / (3.0 * (lv[n - 1] - lv[n - 2])))
    return s_lo, s_hi


@numba.njit(cache=True, inline="always")
def _slope(lv: np.ndarray, q: np.ndarray, j: int, s_lo: float, s_hi: float) -> float:
    last = lv.size - 1
    if j == 0:
        return lv[0] / s_lo
    if j == last:
        return (1.0 - lv[last]) / s_hi
    h0 = q[j] - q[j - 1]
    h1 = q[j + 1] - q[j]
    w1 = 2.0 * h1 + h0
    w2 = h1 + 2.0 * h0
    return (w1 + w2) / (w1 * h0 / (lv[j] - lv[j - 1]) + w2 * h1 / (lv[j + 1] - lv[j]))


@numba.njit(cache=True, inline="always")
def _hermite(t: float, dp: float, m0: float, m1: float) -> tuple[float, float]:
    t2 = t * t
    t3 = t2 * t
    f = dp * (3.0 * t2 - 2.0 * t3) + m0 * (t3 - 2.0 * t2 + t) + m1 * (t3 - t2)
    df = dp * (6.0 * t - 6.0 * t2) + m0 * (3.0 * t2 - 4.0 * t + 1.0) + m1 * (3.0 * t2 - 2.0 * t)
    return f, df


@numba.njit(cache=True)
def _morph_one(x: float, lv: np.ndarray, qf: np.ndarray, qt: np.ndarray, m_lo: int, m_hi: int) -> float:
    """One event: the data's value at the simulation's CDF value (morphing.morph_1d)."""
    n = lv.size
    sf_lo, sf_hi = _tail_scales(lv, qf, m_lo, m_hi)
    st_lo, st_hi = _tail_scales(lv, qt, m_lo, m_hi)
    if x < qf[0]:
        return qt[0] + st_lo / sf_lo * (x - qf[0])
    if x > qf[n - 1]:
        return qt[n - 1] + st_hi / sf_hi * (x - qf[n - 1])
    # the CDF in the simulation's model: the piece holding x
    k = 0
    for i in range(1, n - 1):
        if qf[i] <= x:
            k += 1
    h = qf[k + 1] - qf[k]
    m0 = h * _slope(lv, qf, k, sf_lo, sf_hi)
    m1 = h * _slope(lv, qf, k + 1, sf_lo, sf_hi)
    t = min(max((x - qf[k]) / h, 0.0), 1.0)
    rise, _ = _hermite(t, lv[k + 1] - lv[k], m0, m1)
    p = lv[k] + rise
    # its inverse in the data's model: the piece holding p (searchsorted right, minus one)
    k = 0
    for i in range(n):
        if lv[i] <= p:
            k = i
    k = min(k, n - 2)
    dp = lv[k + 1] - lv[k]
    h = qt[k + 1] - qt[k]
    m0 = h * _slope(lv, qt, k, st_lo, st_hi)
    m1 = h * _slope(lv, qt, k + 1, st_lo, st_hi)
    target = min(max(p - lv[k], 0.0), dp)
    t = min(max(target / dp, 0.0), 1.0)
    lo, hi = 0.0, 1.0
    for _ in range(_NEWTON_MAX):
        f, df = _hermite(t, dp, m0, m1)
        g = f - target
        if g < 0.0:
            lo = t
        elif g > 0.0:
            hi = t
        if g == 0.0:
            break
        tn = t - g / df
        if not (lo <= tn <= hi):
            tn = 0.5 * (lo + hi)
        done = abs(tn - t) <= _NEWTON_TOL
        t = tn
        if done:
            break
    return qt[k] + h * t


@numba.njit(cache=True, parallel=True)
def _morph_rows(x: np.ndarray, lv: np.ndarray, qf: np.ndarray, qt: np.ndarray, m_lo: int, m_hi: int) -> np.ndarray:
    out = np.empty_like(x)
    for i in numba.prange(x.size):
        out[i] = _morph_one(x[i], lv, qf[i], qt[i], m_lo, m_hi)
    return out


def morph_rows(x: np.ndarray, levels: np.ndarray, q_from: np.ndarray, q_to: np.ndarray) -> np.ndarray:
    """Per event x moved from the quantiles ``q_from`` (n, L) to ``q_to`` (n, L): the compiled
    :func:`wmnb.recoil.morphing.morph_1d` on checked inputs (strictly increasing quantiles)."""
    lv = np.ascontiguousarray(levels, dtype=np.float64)
    m_lo, m_hi = span_knots(lv)
    return _morph_rows(np.ascontiguousarray(x, dtype=np.float64), lv, np.ascontiguousarray(q_from, dtype=np.float64),
                       np.ascontiguousarray(q_to, dtype=np.float64), m_lo, m_hi)


@numba.njit(cache=True, inline="always")
def _interpolated(c: float, centres: np.ndarray, values: np.ndarray, out: np.ndarray) -> None:
    """BinnedQuantiles.predict of one event into ``out``: linear between centres, constant beyond."""
    nc = centres.size
    if nc == 1:
        out[:] = values[0]
        return
    j = 0
    for i in range(nc):                              # searchsorted(centres, c, side="right")
        if centres[i] <= c:
            j = i + 1
    j = min(max(j, 1), nc - 1)
    f = min(max((c - centres[j - 1]) / (centres[j] - centres[j - 1]), 0.0), 1.0)
    for level in range(values.shape[1]):
        out[level] = (1.0 - f) * values[j - 1, level] + f * values[j, level]


@numba.njit(cache=True, parallel=True)
def _morph_binned(x: np.ndarray, c: np.ndarray, lv: np.ndarray, centres_from: np.ndarray, values_from: np.ndarray,
                  centres_to: np.ndarray, values_to: np.ndarray, m_lo: int, m_hi: int) -> np.ndarray:
    out = np.empty_like(x)
    n_levels = lv.size
    for i in numba.prange(x.size):
        qf = np.empty(n_levels)
        qt = np.empty(n_levels)
        _interpolated(c[i], centres_from, values_from, qf)
        _interpolated(c[i], centres_to, values_to, qt)
        out[i] = _morph_one(x[i], lv, qf, qt, m_lo, m_hi)
    return out


def morph_binned(x: np.ndarray, cond: np.ndarray, levels: np.ndarray, centres_from: np.ndarray,
                 values_from: np.ndarray, centres_to: np.ndarray, values_to: np.ndarray) -> np.ndarray:
    """Per event x moved between two binned quantile models evaluated at ``cond`` (q_T): the
    compiled ``morph_1d(x, levels, from.predict(cond), to.predict(cond))``."""
    lv = np.ascontiguousarray(levels, dtype=np.float64)
    m_lo, m_hi = span_knots(lv)
    f64 = np.float64
    return _morph_binned(np.ascontiguousarray(x, dtype=f64), np.ascontiguousarray(cond, dtype=f64), lv,
                         np.ascontiguousarray(centres_from, dtype=f64), np.ascontiguousarray(values_from, dtype=f64),
                         np.ascontiguousarray(centres_to, dtype=f64), np.ascontiguousarray(values_to, dtype=f64),
                         m_lo, m_hi)
