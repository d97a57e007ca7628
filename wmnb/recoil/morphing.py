"""N-dimensional k-conditional quantile morphing of the hadronic recoil (chapter 04).

For a variable x with conditioning variables c (q_T, boson rapidity, number of vertices) every
simulated event is moved to

    x' = F_data^{-1}(F_MC(x | c) | c),

the data's value at the simulated event's conditional CDF value.  The conditional CDFs are
represented by conditional quantiles q_1 < … < q_L at L levels p_1 < … < p_L (default
:data:`QUANTILE_LEVELS`, 15 of them) and completed per event into a continuous, strictly increasing
CDF (:func:`cdf`, :func:`inverse_cdf`):

* between the outermost quantiles a monotone piecewise-cubic Hermite (PCHIP) interpolation of the
  points (q_i, p_i), with Fritsch–Butland weighted-harmonic-mean slopes at the interior knots (the
  ones of :class:`scipy.interpolate.PchipInterpolator`, vectorised here over events);
* **the tail rule**: exponential tails beyond the outermost quantiles,

      F(x) = p_1 · exp((x − q_1) / s_lo)             for x < q_1,
      1 − F(x) = (1 − p_L) · exp(−(x − q_L) / s_hi)  for x > q_L,

  with the scale the log-secant of ln F from the outermost quantile to the one nearest the
  quartile, s_lo = (q_m − q_1) / ln(p_m / p_1) with p_m ≈ 0.25 (likewise s_hi with 1 − F and
  p ≈ 0.75).  The wide span keeps the scale sane when the two outermost quantiles of a fitted
  model nearly coincide (the two-point rule s = (q_2 − q_1) / ln(p_2 / p_1) then goes to zero and
  the tail map s_data / s_MC flings tail events to ±∞); for an exactly exponential tail both agree.
  The cubic's end slope is set to the tail's density (p_1 / s_lo, (1 − p_L) / s_hi), so the density
  is continuous at q_1 and q_L and the CDF is C¹ everywhere; s is floored so that this slope stays
  within 3× the end secant (the Fritsch–Carlson bound: the end pieces stay monotone).
  Exponential tails are heavier than Gaussian ones: far-tail events are moved by the linear map
  the two tails imply, never to infinity.

Two variables (u_∥, u_⊥) are morphed as a chain (:class:`ChainedMorph`): u_∥ first, conditioned on
c; then u_⊥ conditioned on (c, u_∥), where the simulation's model is evaluated at the event's
*original* u_∥ (that is where the event sits in the simulation's conditional distribution) and
the data's model at the *corrected* u_∥ (where the event will sit in the data's).  That keeps the
correlation of the two: morphing them independently would leave the simulation's.

Conditional quantiles come from either regressor (both satisfy :class:`QuantileModel`):

* :class:`BinnedQuantiles` — weighted quantiles in bins of one conditioning variable (q_T),
  linearly interpolated between the bins (the paper's method);
* :class:`BDTQuantiles` — one multi-output xgboost quantile regression (pinball loss) on any
  number of conditioning columns, its quantile crossings repaired per event.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import xgboost as xgb

from ..artefacts import atomic_path

__all__ = [
    "QUANTILE_LEVELS", "BDTQuantiles", "BinnedQuantiles", "ChainedMorph", "MorphingError", "QuantileModel",
    "cdf", "inverse_cdf", "morph_1d", "repair_crossing", "weighted_quantiles",
]

#: default quantile levels: 15 from 0.02 to 0.98, with the median, denser in the tails where the
#: CDF bends most
QUANTILE_LEVELS: np.ndarray = np.array(
    [0.02, 0.05, 0.1, 0.16, 0.25, 0.33, 0.42, 0.5, 0.58, 0.67, 0.75, 0.84, 0.9, 0.95, 0.98])
#: probabilities are clipped into [P_CLIP, 1 − P_CLIP] before inversion, so a CDF value of exactly
#: 0 or 1 (a far-tail event) maps to a finite value
P_CLIP = 1e-12
#: the exponential tails' scale is the log-secant from the outermost quantile to the one nearest
#: this level (1 − it above): a wide span, robust against nearly coinciding outer quantiles
TAIL_SPAN_LEVEL = 0.25
#: the floor of :func:`repair_crossing`: consecutive quantiles at least this × (spread + 1) apart
CROSSING_FLOOR = 1e-6
#: the BDT file's attributes (stored in xgboost's own JSON, so the model is one file, no pickle)
_FORMAT = "wmnb.recoil.BDTQuantiles/1"
_ATTR_FORMAT, _ATTR_LEVELS, _ATTR_NCOND = "wmnb_format", "wmnb_levels", "wmnb_n_cond"


class MorphingError(ValueError):
    """Bad input to the quantile morphing: the message names the argument, column or bin and the fix."""


@runtime_checkable
class QuantileModel(Protocol):
    """Anything that predicts conditional quantiles at fixed ``levels``: ``predict(cond) -> (n, L)``.

    ``predict`` must return quantiles strictly increasing along the levels for every event
    (:func:`repair_crossing` makes them so).
    """

    @property
    def levels(self) -> np.ndarray: ...

    def predict(self, cond: np.ndarray) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------
# input checks: every failure names the argument, so a notebook user sees what to fix


def _levels(levels: np.ndarray) -> np.ndarray:
    lv = np.asarray(levels, dtype=np.float64)
    if lv.ndim != 1 or lv.size < 2:
        raise MorphingError(f"levels must be a 1-D array of at least 2 quantile levels, got shape {lv.shape}")
    if not (np.all(np.isfinite(lv)) and np.all(lv > 0.0) and np.all(lv < 1.0) and np.all(np.diff(lv) > 0.0)):
        raise MorphingError(f"levels must be strictly increasing and inside (0, 1), got {lv.tolist()}")
    return lv


def _vector(name: str, a: np.ndarray) -> np.ndarray:
    v = np.asarray(a, dtype=np.float64)
    if v.ndim != 1:
        raise MorphingError(f"{name} must be 1-D (one value per event), got shape {v.shape}")
    bad = ~np.isfinite(v)
    if bad.any():
        raise MorphingError(f"{name} holds {int(bad.sum())} NaN/inf values (first at event {int(np.argmax(bad))}); "
                            "drop or fix those events first")
    return v


def _matrix(name: str, a: np.ndarray, n: int | None = None) -> np.ndarray:
    """A (n, k) float array; 1-D input is one column.  NaN/inf raise naming the column index."""
    m = np.asarray(a, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2:
        raise MorphingError(f"{name} must be (n_events, n_columns), got shape {m.shape}")
    if n is not None and m.shape[0] != n:
        raise MorphingError(f"{name} has {m.shape[0]} events, expected {n} (one row per event of x)")
    bad = ~np.isfinite(m)
    if bad.any():
        col = int(np.argmax(bad.any(axis=0)))
        raise MorphingError(f"{name} column {col} holds {int(bad[:, col].sum())} NaN/inf values; "
                            "drop or fix those events first (the regressors would treat NaN as 'missing')")
    return m


def _first_column(cond: np.ndarray) -> np.ndarray:
    """Column 0 of ``cond`` ((n,) or (n, k)): the one conditioning variable of the binned model."""
    cm = np.asarray(cond, dtype=np.float64)
    if cm.ndim == 2:
        cm = cm[:, 0]
    return _vector("cond[:, 0]", cm)


def _weights(weight: np.ndarray | None, n: int) -> np.ndarray:
    if weight is None:
        return np.ones(n)
    w = _vector("weight", weight)
    if w.size != n:
        raise MorphingError(f"weight has {w.size} entries, expected {n} (one per event)")
    if np.any(w < 0.0):
        raise MorphingError(f"weight: quantiles need non-negative weights, {int(np.sum(w < 0))} are negative; "
                            "drop or absorb the negative-weight events before fitting")
    if not w.sum() > 0.0:
        raise MorphingError("weight: the weights sum to zero; nothing to fit")
    return w


def _quantile_grid(levels: np.ndarray, q: np.ndarray, n: int) -> np.ndarray:
    """``q`` as (n, L), strictly increasing per event; (L,) is broadcast to every event."""
    qq = np.asarray(q, dtype=np.float64)
    if qq.ndim == 1:
        qq = np.broadcast_to(qq, (n, qq.size))
    if qq.shape != (n, levels.size):
        raise MorphingError(f"quantiles q must be (n_events, n_levels) = ({n}, {levels.size}), got {qq.shape}")
    if not np.all(np.isfinite(qq)):
        raise MorphingError("quantiles q hold NaN/inf values")
    if not np.all(qq[:, 1:] > qq[:, :-1]):
        raise MorphingError("quantiles q must be strictly increasing along the levels for every event; "
                            "pass them through repair_crossing first")
    return qq


# ---------------------------------------------------------------------------------------------
# the per-event CDF: PCHIP between the quantiles, exponential tails beyond


def repair_crossing(q: np.ndarray) -> np.ndarray:
    """Quantiles ``q`` (n, L) made strictly increasing along L, per event.

    Each event's quantiles are sorted (the rearrangement that never increases the pinball loss),
    then pushed apart to at least ``CROSSING_FLOOR × (spread + 1)`` per step, so that the CDF
    through them is strictly increasing and invertible; quantiles already that far apart are
    unchanged.
    """
    qq = np.asarray(q, dtype=np.float64)
    if qq.ndim == 1:
        qq = qq[None, :]
    if qq.ndim != 2:
        raise MorphingError(f"repair_crossing: q must be (n_events, n_levels), got shape {qq.shape}")
    if not np.all(np.isfinite(qq)):
        raise MorphingError("repair_crossing: q holds NaN/inf values")
    qs = np.sort(qq, axis=1)
    floor = CROSSING_FLOOR * (qs[:, -1:] - qs[:, :1] + 1.0) * np.arange(qs.shape[1])
    # q'_i - floor_i is the running maximum of q_i - floor_i, hence q'_{i+1} >= q'_i + step
    return np.maximum.accumulate(qs - floor, axis=1) + floor


def span_knots(levels: np.ndarray) -> tuple[int, int]:
    """The knots the tails' log-secants reach to: the ones nearest ``TAIL_SPAN_LEVEL`` and its
    complement, never the outermost two."""
    m_lo = max(1, int(np.argmin(np.abs(levels - TAIL_SPAN_LEVEL))))
    m_hi = min(levels.size - 2, int(np.argmin(np.abs(levels - (1.0 - TAIL_SPAN_LEVEL)))))
    return m_lo, m_hi


def _tail_scales(levels: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event the exponential tails' scales (s_lo, s_hi).

    Each is the log-secant from the outermost quantile to the one nearest the quartile on that
    side (``TAIL_SPAN_LEVEL``): for an exponential tail any span gives its scale, and the wide
    span does not let two nearly coinciding outer quantiles (an under-fitted regressor, a
    repaired crossing) make a near-zero scale that would fling tail events far out.  The scale is
    at least p_1 h_1 / (3 Δp_1), so that the cubic's end slope (the tail's density p_1 / s_lo)
    stays within 3× the end secant: the Fritsch–Carlson box, i.e. a monotone end piece.
    """
    m_lo, m_hi = span_knots(levels)
    s_lo = (q[:, m_lo] - q[:, 0]) / np.log(levels[m_lo] / levels[0])
    s_hi = (q[:, -1] - q[:, m_hi]) / np.log((1.0 - levels[m_hi]) / (1.0 - levels[-1]))
    s_lo = np.maximum(s_lo, levels[0] * (q[:, 1] - q[:, 0]) / (3.0 * (levels[1] - levels[0])))
    s_hi = np.maximum(s_hi, (1.0 - levels[-1]) * (q[:, -1] - q[:, -2]) / (3.0 * (levels[-1] - levels[-2])))
    return s_lo, s_hi


def _knot_slopes(levels: np.ndarray, q: np.ndarray, j: np.ndarray, s_lo: np.ndarray, s_hi: np.ndarray
                 ) -> np.ndarray:
    """Per event the density dF/dx at its knot ``j`` (n,): the cubic's slope there.

    Interior knots: the weighted harmonic mean of the neighbouring secants (Fritsch–Butland, as in
    scipy's PCHIP), never more than 3× either secant, so each cubic piece is monotone (the
    Fritsch–Carlson box).  End knots: the tail's density, which keeps the density continuous
    there and is at most 3× the end secant (:func:`_tail_scales`), so the end pieces are monotone
    too.  Only the two knots of each event's piece are needed, so only those are computed.
    """
    rows = np.arange(q.shape[0])
    last = levels.size - 1
    jm, jj, jp = np.clip(j - 1, 0, last), j, np.clip(j + 1, 0, last)
    h0 = q[rows, jj] - q[rows, jm]
    h1 = q[rows, jp] - q[rows, jj]
    with np.errstate(divide="ignore", invalid="ignore"):    # the end knots' h0 or h1 is 0: replaced below
        w1 = 2.0 * h1 + h0
        w2 = h1 + 2.0 * h0
        d = (w1 + w2) / (w1 * h0 / (levels[jj] - levels[jm]) + w2 * h1 / (levels[jp] - levels[jj]))
    d = np.where(j == 0, levels[0] / s_lo, d)
    return np.where(j == last, (1.0 - levels[-1]) / s_hi, d)


def _hermite(t: np.ndarray, dp: np.ndarray, m0: np.ndarray, m1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cubic piece's rise F − p_k at t ∈ [0, 1] and its derivative dF/dt.

    ``dp`` = p_{k+1} − p_k, ``m0``/``m1`` = h · slope at the piece's ends (slopes in units of t).
    """
    t2 = t * t
    t3 = t2 * t
    f = dp * (3.0 * t2 - 2.0 * t3) + m0 * (t3 - 2.0 * t2 + t) + m1 * (t3 - t2)
    df = dp * (6.0 * t - 6.0 * t2) + m0 * (3.0 * t2 - 4.0 * t + 1.0) + m1 * (3.0 * t2 - 2.0 * t)
    return f, df


def _pieces(levels: np.ndarray, q: np.ndarray, k: np.ndarray, tails: tuple[np.ndarray, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per event the cubic piece k: its left knot, width, p_k, rise and the scaled end slopes."""
    rows = np.arange(q.shape[0])
    q0 = q[rows, k]
    h = q[rows, k + 1] - q0
    s_lo, s_hi = tails
    m0 = h * _knot_slopes(levels, q, k, s_lo, s_hi)
    m1 = h * _knot_slopes(levels, q, k + 1, s_lo, s_hi)
    return q0, h, levels[k], levels[k + 1] - levels[k], m0, m1


def cdf(x: np.ndarray, levels: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per event the CDF at ``x`` (n,) of the distribution with quantiles ``q`` (n, L) at ``levels``.

    PCHIP between the quantiles, exponential tails beyond them (module docstring).  ``q`` of shape
    (L,) is shared by all events.  Values are not clipped: far in the tails they approach 0 or 1.
    """
    lv = _levels(levels)
    xx = _vector("x", x)
    return _cdf(lv, xx, _quantile_grid(lv, q, xx.size))


def _cdf(lv: np.ndarray, xx: np.ndarray, qq: np.ndarray) -> np.ndarray:
    """:func:`cdf` on checked inputs."""
    s_lo, s_hi = _tail_scales(lv, qq)
    # the piece holding x: the number of interior knots at or below it (tails handled after)
    k = np.sum(qq[:, 1:-1] <= xx[:, None], axis=1)
    q0, h, pk, dp, m0, m1 = _pieces(lv, qq, k, (s_lo, s_hi))
    t = np.clip((xx - q0) / h, 0.0, 1.0)
    rise, _ = _hermite(t, dp, m0, m1)
    out = pk + rise
    lo = xx < qq[:, 0]
    hi = xx > qq[:, -1]
    out[lo] = lv[0] * np.exp((xx[lo] - qq[lo, 0]) / s_lo[lo])
    out[hi] = 1.0 - (1.0 - lv[-1]) * np.exp(-(xx[hi] - qq[hi, -1]) / s_hi[hi])
    return out


def _solve_pieces(target: np.ndarray, dp: np.ndarray, m0: np.ndarray, m1: np.ndarray) -> np.ndarray:
    """t ∈ [0, 1] with rise(t) = target, per event: safeguarded Newton on the monotone cubic.

    Newton converges quadratically from the linear guess; a step leaving the bracket (where the
    cubic is flat) is replaced by bisection, so every event converges.  Only events not yet
    converged are iterated.
    """
    t = np.clip(target / dp, 0.0, 1.0)
    lo = np.zeros_like(t)
    hi = np.ones_like(t)
    active = np.arange(t.size)
    for _ in range(100):
        if active.size == 0:
            break
        ta = t[active]
        f, df = _hermite(ta, dp[active], m0[active], m1[active])
        g = f - target[active]
        lo[active] = np.where(g < 0.0, ta, lo[active])
        hi[active] = np.where(g > 0.0, ta, hi[active])
        with np.errstate(divide="ignore", invalid="ignore"):
            tn = ta - g / df
        outside = ~((tn >= lo[active]) & (tn <= hi[active]))
        tn[outside] = 0.5 * (lo[active][outside] + hi[active][outside])
        tn[g == 0.0] = ta[g == 0.0]
        t[active] = tn
        active = active[np.abs(tn - ta) > 1e-13]
    return t


def inverse_cdf(p: np.ndarray, levels: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per event the value with CDF ``p`` (n,): the inverse of :func:`cdf` for the same ``q``.

    ``p`` is clipped into [1e-12, 1 − 1e-12] first, so 0 and 1 map to finite values.  Inside the
    quantiles the monotone cubic is inverted numerically to machine precision; the exponential
    tails are inverted in closed form.
    """
    lv = _levels(levels)
    pp = np.asarray(p, dtype=np.float64)
    if pp.ndim != 1:
        raise MorphingError(f"p must be 1-D (one probability per event), got shape {pp.shape}")
    if not np.all((pp >= 0.0) & (pp <= 1.0)):
        raise MorphingError("p must hold probabilities in [0, 1] (NaN is not one)")
    return _inverse_cdf(lv, np.clip(pp, P_CLIP, 1.0 - P_CLIP), _quantile_grid(lv, q, pp.size))


def _inverse_cdf(lv: np.ndarray, pp: np.ndarray, qq: np.ndarray) -> np.ndarray:
    """:func:`inverse_cdf` on checked, clipped inputs."""
    s_lo, s_hi = _tail_scales(lv, qq)
    k = np.clip(np.searchsorted(lv, pp, side="right") - 1, 0, lv.size - 2)
    q0, h, pk, dp, m0, m1 = _pieces(lv, qq, k, (s_lo, s_hi))
    out = q0 + h * _solve_pieces(np.clip(pp - pk, 0.0, dp), dp, m0, m1)
    lo = pp < lv[0]
    hi = pp > lv[-1]
    out[lo] = qq[lo, 0] + s_lo[lo] * np.log(pp[lo] / lv[0])
    out[hi] = qq[hi, -1] - s_hi[hi] * np.log((1.0 - pp[hi]) / (1.0 - lv[-1]))
    return out


def morph_1d(x: np.ndarray, levels: np.ndarray, q_from: np.ndarray, q_to: np.ndarray) -> np.ndarray:
    """Per event ``inverse_cdf(cdf(x, levels, q_from), levels, q_to)``: x moved from one model to another.

    Beyond ``q_from``'s outermost quantiles the composition of the two exponential tails is the
    linear map x' = q_to,1 + (s_to / s_from) (x − q_from,1) (likewise above); it is evaluated in
    that closed form, which equals the composition but keeps far-tail events ordered and exact
    where CDF values of ~1e-12 (or 1 − 1e-12) would lose precision or hit the clip.
    """
    lv = _levels(levels)
    xx = _vector("x", x)
    qf = _quantile_grid(lv, q_from, xx.size)
    qt = _quantile_grid(lv, q_to, xx.size)
    out = np.empty_like(xx)
    lo = xx < qf[:, 0]
    hi = xx > qf[:, -1]
    bulk = ~(lo | hi)
    # the bulk's CDF values lie within [p_1, p_L]: no clipping needed
    out[bulk] = _inverse_cdf(lv, _cdf(lv, xx[bulk], qf[bulk]), qt[bulk])
    sf_lo, sf_hi = _tail_scales(lv, qf)
    st_lo, st_hi = _tail_scales(lv, qt)
    out[lo] = qt[lo, 0] + st_lo[lo] / sf_lo[lo] * (xx[lo] - qf[lo, 0])
    out[hi] = qt[hi, -1] + st_hi[hi] / sf_hi[hi] * (xx[hi] - qf[hi, -1])
    return out


# ---------------------------------------------------------------------------------------------
# regressor (a): binned weighted quantiles


def weighted_quantiles(x: np.ndarray, w: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Weighted quantiles of sorted ``x``: the midpoint rule, (cumulative weight − w/2) / total.

    With equal weights this is Hazen's (i − ½)/n plotting position, unbiased for the median.
    """
    cw = np.cumsum(w)
    pos = (cw - 0.5 * w) / cw[-1]
    return np.interp(levels, pos, x)


@dataclass(eq=False)
class BinnedQuantiles:
    """Conditional quantiles in bins of one conditioning variable (q_T: column 0 of ``cond``).

    ``values[b]`` are the weighted quantiles of the events in bin [edges[b], edges[b+1]) at
    ``levels``; ``centres[b]`` the bin's weighted mean of the conditioning variable, where those
    quantiles are placed (with a falling q_T spectrum a bin's events sit below its middle).
    :meth:`predict` is the smoothing across bins: linear interpolation between the centres,
    constant beyond the outer ones.  A convex combination of strictly increasing vectors is
    strictly increasing, so the prediction never crosses.  Other conditioning columns are ignored.
    """

    edges: np.ndarray
    levels: np.ndarray
    values: np.ndarray
    centres: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.edges = np.asarray(self.edges, dtype=np.float64)
        self.levels = _levels(self.levels)
        self.values = np.asarray(self.values, dtype=np.float64)
        nb = self.edges.size - 1
        if self.edges.ndim != 1 or nb < 1 or not np.all(np.diff(self.edges) > 0):
            raise MorphingError(f"edges must be strictly increasing with at least 2 entries, got {self.edges}")
        if self.values.shape != (nb, self.levels.size):
            raise MorphingError(f"values must be (n_bins, n_levels) = ({nb}, {self.levels.size}), "
                                f"got {self.values.shape}")
        _quantile_grid(self.levels, self.values, nb)
        if self.centres is None:
            self.centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        self.centres = np.asarray(self.centres, dtype=np.float64)
        if self.centres.shape != (nb,) or not np.all(np.diff(self.centres) > 0):
            raise MorphingError(f"centres must be {nb} strictly increasing values, got {self.centres}")

    @classmethod
    def fit(cls, x: np.ndarray, cond: np.ndarray, weight: np.ndarray | None, edges: np.ndarray | list[float],
            levels: np.ndarray = QUANTILE_LEVELS, min_events: int = 50) -> BinnedQuantiles:
        """Weighted quantiles of ``x`` in the bins ``edges`` of ``cond[:, 0]`` (``cond`` (n,) or (n, k)).

        Events outside the edges are left out (the last bin includes its upper edge).  A bin with
        fewer than ``min_events`` events raises :class:`MorphingError` naming it.
        """
        lv = _levels(levels)
        xx = _vector("x", x)
        c = _first_column(cond)
        if c.size != xx.size:
            raise MorphingError(f"cond has {c.size} events, expected {xx.size} (one row per event of x)")
        w = _weights(weight, xx.size)
        e = np.asarray(edges, dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) > 0):
            raise MorphingError(f"edges must be strictly increasing with at least 2 entries, got {e}")
        nb = e.size - 1
        b = np.searchsorted(e, c, side="right") - 1
        b[c == e[-1]] = nb - 1
        inside = (b >= 0) & (b < nb)
        b, xx, c, w = b[inside], xx[inside], c[inside], w[inside]
        order = np.lexsort((xx, b))
        b, xx, c, w = b[order], xx[order], c[order], w[order]
        starts = np.searchsorted(b, np.arange(nb + 1))
        values = np.empty((nb, lv.size))
        centres = np.empty(nb)
        for i in range(nb):
            sl = slice(starts[i], starts[i + 1])
            count = starts[i + 1] - starts[i]
            if count < min_events or not w[sl].sum() > 0.0:
                raise MorphingError(
                    f"BinnedQuantiles.fit: the bin [{e[i]:g}, {e[i + 1]:g}) of cond[:, 0] (bin {i}) holds {count} "
                    f"events (weight {w[sl].sum():g}), fewer than min_events={min_events} or zero weight; "
                    "use fewer or wider bins")
            values[i] = weighted_quantiles(xx[sl], w[sl], lv)
            centres[i] = np.average(c[sl], weights=w[sl])
        return cls(edges=e, levels=lv, values=repair_crossing(values), centres=centres)

    def predict(self, cond: np.ndarray) -> np.ndarray:
        """Quantiles (n, L) at ``cond[:, 0]``: linear between the bin centres, constant beyond."""
        c = _first_column(cond)
        centres = np.asarray(self.centres)
        if centres.size == 1:
            return np.repeat(self.values, c.size, axis=0)
        j = np.clip(np.searchsorted(centres, c, side="right"), 1, centres.size - 1)
        f = np.clip((c - centres[j - 1]) / (centres[j] - centres[j - 1]), 0.0, 1.0)[:, None]
        return (1.0 - f) * self.values[j - 1] + f * self.values[j]


# ---------------------------------------------------------------------------------------------
# regressor (b): one multi-output xgboost quantile regression


@dataclass(eq=False)
class BDTQuantiles:
    """Conditional quantiles from one xgboost model with the pinball loss at all ``levels`` at once.

    ``booster`` has one output per level (``objective="reg:quantileerror"``,
    ``quantile_alpha=levels``); ``n_cond`` is its number of conditioning columns.  Independent
    per-level trees can cross; :meth:`predict` repairs that per event (:func:`repair_crossing`).
    """

    booster: xgb.Booster
    levels: np.ndarray
    n_cond: int

    @classmethod
    def fit(cls, x: np.ndarray, cond: np.ndarray, weight: np.ndarray | None, levels: np.ndarray = QUANTILE_LEVELS,
            seed: int = 0, n_estimators: int = 200, max_depth: int = 4, learning_rate: float = 0.1,
            n_jobs: int = 2, subsample: float = 1.0) -> BDTQuantiles:
        """Train on ``x`` (n,) given ``cond`` (n, k) with event weights ``weight`` (non-negative);
        ``subsample`` < 1 grows each round's trees on that random share of the events (about
        half the time per round for 0.5, the pinball loss 0.1 % worse on a toy).

        ``tree_method="hist"``; deterministic for a given ``seed`` and ``n_jobs``.  On a machine whose
        cores are busy with other work, OpenMP's busy-waiting makes ``n_jobs`` > 1 several times
        slower than ``n_jobs=1`` unless ``OMP_WAIT_POLICY=PASSIVE`` is set in the environment.
        """
        lv = _levels(levels)
        xx = _vector("x", x)
        cm = _matrix("cond", cond, xx.size)
        w = _weights(weight, xx.size)
        params: dict[str, Any] = {
            "objective": "reg:quantileerror", "quantile_alpha": lv.tolist(), "tree_method": "hist",
            "max_depth": int(max_depth), "learning_rate": float(learning_rate), "nthread": int(n_jobs),
            "seed": int(seed), "subsample": float(subsample),
        }
        dtrain = xgb.QuantileDMatrix(cm, label=xx, weight=w, nthread=int(n_jobs))
        booster = xgb.train(params, dtrain, num_boost_round=int(n_estimators))
        # the levels and the input width travel inside the model file, as booster attributes
        booster.set_attr(**{_ATTR_FORMAT: _FORMAT, _ATTR_LEVELS: json.dumps(lv.tolist()),
                            _ATTR_NCOND: str(cm.shape[1])})
        return cls(booster=booster, levels=lv, n_cond=cm.shape[1])

    def predict_raw(self, cond: np.ndarray) -> np.ndarray:
        """The booster's quantiles (n, L) as trained, crossings included."""
        cm = _matrix("cond", cond)
        if cm.shape[1] != self.n_cond:
            raise MorphingError(f"cond has {cm.shape[1]} columns, the model was trained on {self.n_cond}")
        raw = np.asarray(self.booster.inplace_predict(cm), dtype=np.float64)
        return raw.reshape(cm.shape[0], self.levels.size)

    def predict(self, cond: np.ndarray) -> np.ndarray:
        """Quantiles (n, L) at ``cond`` (n, k), strictly increasing along the levels."""
        return repair_crossing(self.predict_raw(cond))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model in xgboost's own JSON format (levels and ``n_cond`` as its attributes).

        ``path`` must end in ``.json``; it is written atomically.  No pickle: the file is readable by
        any xgboost and by :meth:`load`.
        """
        p = Path(path)
        if p.suffix != ".json":
            raise MorphingError(f"BDTQuantiles.save: {p} must end in .json (xgboost's JSON model format)")
        raw = self.booster.save_raw(raw_format="json")
        with atomic_path(p) as tmp:
            tmp.write_bytes(bytes(raw))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str], n_jobs: int = 2) -> BDTQuantiles:
        """Read a model written by :meth:`save`; a missing or corrupt file raises naming it."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as err:
            raise MorphingError(f"BDTQuantiles.load: cannot read the model file {p} ({err.strerror}); "
                                "fit and save the model first") from err
        try:
            doc = json.loads(raw)
            attrs = doc["learner"].get("attributes", {})
            if attrs.get(_ATTR_FORMAT) != _FORMAT:
                raise KeyError(_ATTR_FORMAT)
            levels = _levels(np.array(json.loads(attrs[_ATTR_LEVELS]), dtype=np.float64))
            n_cond = int(attrs[_ATTR_NCOND])
            booster = xgb.Booster(params={"nthread": int(n_jobs)})
            booster.load_model(bytearray(raw))
        except (ValueError, KeyError, TypeError, AttributeError, xgb.core.XGBoostError) as err:
            raise MorphingError(f"BDTQuantiles.load: {p} is not a BDTQuantiles model in xgboost JSON "
                                f"(corrupt, truncated or another file?): {type(err).__name__}: {err}; "
                                "refit and save it") from err
        if booster.num_features() != n_cond:
            raise MorphingError(f"BDTQuantiles.load: {p} has {booster.num_features()} features but says "
                                f"n_cond={n_cond}; the file is inconsistent, refit and save it")
        return cls(booster=booster, levels=levels, n_cond=n_cond)


# ---------------------------------------------------------------------------------------------
# the chain


def _check_x(name: str, x: np.ndarray) -> np.ndarray:
    xx = np.asarray(x, dtype=np.float64)
    return _matrix(name, xx[:, None] if xx.ndim == 1 else xx)


@dataclass(eq=False)
class ChainedMorph:
    """Morph V variables in chain order: variable j conditioned on (cond, variables 0..j−1).

    ``mc[j]`` and ``data[j]`` model variable j given ``[cond, x[:, :j]]`` in the simulation and in
    data.  :meth:`apply` evaluates the simulation's model at the event's original earlier
    variables and the data's at the corrected ones (the chained rule).
    """

    mc: list[QuantileModel]
    data: list[QuantileModel]

    def __post_init__(self) -> None:
        if len(self.mc) != len(self.data) or not self.mc:
            raise MorphingError(f"ChainedMorph needs one simulation and one data model per variable, "
                                f"got {len(self.mc)} and {len(self.data)}")
        for j, (m, d) in enumerate(zip(self.mc, self.data)):
            if not np.array_equal(np.asarray(m.levels), np.asarray(d.levels)):
                raise MorphingError(f"ChainedMorph: variable {j}'s simulation and data models use different "
                                    "quantile levels; fit both with the same levels")

    @classmethod
    def fit(cls, x_mc: np.ndarray, cond_mc: np.ndarray, w_mc: np.ndarray | None,
            x_data: np.ndarray, cond_data: np.ndarray, w_data: np.ndarray | None,
            make: Callable[[np.ndarray, np.ndarray, np.ndarray | None], QuantileModel]) -> ChainedMorph:
        """Fit ``make(x[:, j], [cond, x[:, :j]], w)`` per variable j, in each sample on its own values.

        ``x_*`` (n, V) (1-D: V = 1), ``cond_*`` (n, k); ``make`` is a regressor's fit with its settings
        bound, e.g. ``functools.partial(BDTQuantiles.fit, n_estimators=100)``.
        """
        models: dict[str, list[QuantileModel]] = {}
        v_count: int | None = None
        for label, x, cond, w in (("mc", x_mc, cond_mc, w_mc), ("data", x_data, cond_data, w_data)):
            xx = _check_x(f"x_{label}", x)
            cc = _matrix(f"cond_{label}", cond, xx.shape[0])
            if v_count is not None and xx.shape[1] != v_count:
                raise MorphingError(f"x_data has {xx.shape[1]} variables, x_mc {v_count}: they must match")
            v_count = xx.shape[1]
            models[label] = [make(xx[:, j], np.hstack([cc, xx[:, :j]]), w) for j in range(xx.shape[1])]
        return cls(mc=models["mc"], data=models["data"])

    def apply(self, x: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """The simulated events ``x`` (n, V) given ``cond`` (n, k), morphed to data: (n, V).

        Evaluated by the compiled kernels of :mod:`wmnb.recoil.kernels` (the same rule as
        :func:`morph_1d`, checked against it by the tests)."""
        xx = _check_x("x", x)
        cc = _matrix("cond", cond, xx.shape[0])
        if xx.shape[1] != len(self.mc):
            raise MorphingError(f"x has {xx.shape[1]} variables, the chain was fitted on {len(self.mc)}")
        from . import kernels

        out = np.empty_like(xx)
        for j, (m, d) in enumerate(zip(self.mc, self.data)):
            lv = np.asarray(m.levels)
            if isinstance(m, BinnedQuantiles) and isinstance(d, BinnedQuantiles):
                # both conditioned on q_T alone: interpolated inside the compiled kernel
                out[:, j] = kernels.morph_binned(xx[:, j], cc[:, 0], lv, np.asarray(m.centres), m.values,
                                                 np.asarray(d.centres), d.values)
                continue
            q_from = _quantile_grid(lv, m.predict(np.hstack([cc, xx[:, :j]])), xx.shape[0])
            q_to = _quantile_grid(lv, d.predict(np.hstack([cc, out[:, :j]])), xx.shape[0])
            out[:, j] = kernels.morph_rows(xx[:, j], lv, q_from, q_to)
        return out

    def shifted(self, delta: np.ndarray) -> ChainedMorph:
        """This chain of :class:`BinnedQuantiles` with the quantile tables moved by ``delta``
        (shape ``(2V, n_bins, n_levels)``: the simulation's V models, then the data's), crossings
        repaired; the bin centres stay.  A statistical variation of the binned method."""
        models = [*self.mc, *self.data]
        d = np.asarray(delta, dtype=np.float64)
        if d.shape[0] != len(models):
            raise MorphingError(f"ChainedMorph.shifted: delta has {d.shape[0]} tables, the chain {len(models)} models")
        moved = []
        for m, dm in zip(models, d):
            if not isinstance(m, BinnedQuantiles):
                raise MorphingError("ChainedMorph.shifted: only chains of BinnedQuantiles can be shifted")
            if dm.shape != m.values.shape:
                raise MorphingError(f"ChainedMorph.shifted: a delta table is {dm.shape}, the model's {m.values.shape}")
            moved.append(BinnedQuantiles(m.edges, m.levels, repair_crossing(m.values + dm), m.centres))
        return ChainedMorph(moved[:len(self.mc)], moved[len(self.mc):])
