"""The boson q_T spectrum: a resummation-like model with independent handles per q_T region.

For a boson of mass Q (the pole mass of W or Z) at rapidity y,

    p(q_T | y) = p0(q_T / s) / s,     s(y) = qt_scale * (1 + y_slope |y|),

with the y-independent spectrum p0 normalised on [0, QT_MAX] (so q_T < s QT_MAX),

    p0(q) ∝ T(q) R(q) + (1 - T(q)) F(q).

* **Resummed part** ``R(q) = q ∫ db b J0(q b) W(b)`` (the b-space form of transverse-momentum
  resummation), ``W(b) = exp(-S_pert(b) - S_NP(b))``, ``W(0) = 1``:

  - perturbative (:attr:`QtParams.cusp`, ``cusp_running``, ``noncusp``): with
    ``b* = b / sqrt(1 + b²/b_max²)`` and ``L = ln(1 + (Q b*/b0)²)``, ``b0 = 2 e^-γE``,
    ``S_pert = cusp [-L/λ - ln(1 - λL)/λ²] + noncusp ln(1 + (Q b/b0)² / (1 + b²/b_h²))``.
    The first term is a double-logarithmic Sudakov with a running-coupling-like growth λ; the
    second a single-log, hard-region (boundary-term-like) term that saturates above ``b_h``.
    They shape the intermediate region q_T ≈ 5-30 GeV (and the second mostly its upper half).
  - nonperturbative: intrinsic k_T, *separate for W and Z*,
    ``kt² b²/2 · b²/(b² + kt_b²)`` (quartic at small b, Gaussian at large b: acts at q_T ≲ 5 GeV),
    and a Collins-Soper-kernel-like term, *one value for W and Z* whose effect grows with
    ln Q², ``cs_kernel · ln(Q²/cs_q0²) · b_cs (sqrt(1 + b²/b_cs²) - 1)``, asymptotically linear in
    b, so its q_T shape differs from the k_T term (it reaches further, to q_T ≈ 10 GeV).
* **Fixed-order tail** ``F(q) = fo_norm/Q · (Q/(2q))^fo_power · (1.25/(1 + q²/Q²))^fo_falloff``
  (a power law that steepens above q ~ Q, where the parton luminosity falls).
* **Matching**: ``T(q) = 1 - smoothstep(u)``, ``u = (ln(q/q_m)/ln(width) + 1)/2`` clipped to
  [0, 1], with ``q_m = matching_scale · Q``: the resummed part hands over to the fixed-order one
  between q_m/width and q_m·width (paper: transition at 0.5 m_V, varied to 0.35 and 0.75).

The knobs act on different regions, so their q_T-shape derivatives are not proportional to each
other (:mod:`wmnb.universe.theorychecks` measures the overlaps); in the previous model k_T, the
CS kernel and the perturbative scale entered through one combination ``q0``.

**Beyond the family** (data only, :attr:`QtParams.kt_smear`): the data universe can add a
Gaussian convolution of the q_T *vector* with a rapidity-dependent width
``kt_smear (1 + kt_smear_dy |y|)`` (an x-dependent intrinsic k_T).  No point of the family above
produces it, so a theory model fitted to such data cannot describe it exactly.  Such a density has
no closed form: :func:`density` refuses it (the simulation's LHE weights need exact densities) and
:func:`smeared_density` evaluates it numerically.

Numerics: W(b) on a uniform b grid, R(q) by a Simpson-rule Hankel transform on a q grid
(:data:`GRID`, up to :data:`RES_MAX`), p0 is piecewise linear between the grid nodes and sampled
by the exact inverse of its (piecewise quadratic) cumulative, so the sampler and the density agree
exactly and LHE weights are exact density ratios.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import lru_cache

import numpy as np

B0 = 2.0 * np.exp(-np.euler_gamma)   # b0 = 2 exp(-gamma_E) ~ 1.123: the canonical b <-> mu relation
QT_MAX = 400.0                        # GeV: p0 is normalised (and sampled) on [0, QT_MAX]
RES_MAX = 170.0                       # GeV: highest q_T at which the resummed part is evaluated
#: (start, step) of the uniform segments of the q_T nodes of p0: fine where the spectrum has
#: structure, coarse in the tail
_SEGMENTS = ((0.0, 0.05), (30.0, 0.25), (130.0, 1.0))
_SEG_ENDS = (30.0, 130.0, QT_MAX)
GRID = np.concatenate([lo + step * np.arange(round((hi - lo) / step) + (hi == QT_MAX))
                       for (lo, step), hi in zip(_SEGMENTS, _SEG_ENDS)])
_RES = GRID[GRID <= RES_MAX]
_DB = 0.0025                          # GeV^-1: b step; with Simpson's rule the transform is good
_B = np.arange(0.0, 12.0 + 1e-12, _DB)  # to ~3e-5 of the peak up to q ~ 150 GeV (checked on a 10x finer grid)


@dataclass(frozen=True)
class QtParams:
    """Parameters of one boson's q_T density at one point of theory space (units: GeV, GeV^-1)."""

    mass: float            # Q: the boson pole mass
    cusp: float
    cusp_running: float
    noncusp: float
    noncusp_b: float
    b_max: float
    kt: float
    kt_b: float
    cs_kernel: float
    cs_b: float
    cs_q0: float
    matching_scale: float
    matching_width: float
    fo_power: float
    fo_norm: float
    fo_falloff: float
    qt_scale: float = 1.0
    y_slope: float = 0.0
    kt_smear: float = 0.0
    kt_smear_dy: float = 0.0

    def __post_init__(self) -> None:
        lmax = np.log1p((self.mass * self.b_max / B0) ** 2)
        if self.cusp_running * lmax >= 0.95:
            raise ValueError(f"qt resummation: cusp_running * L_max = {self.cusp_running * lmax:.3f} >= 0.95 "
                             f"(the running-coupling term diverges); lower cusp_running or b_max")
        if self.matching_scale * self.mass * self.matching_width > RES_MAX:
            raise ValueError(f"qt matching: the transition ends at {self.matching_scale * self.mass * self.matching_width:.0f} GeV "
                             f"> {RES_MAX:g} GeV, beyond the resummed grid; lower matching scale or width")
        if self.qt_scale <= 0:
            raise ValueError(f"qt_scale must be positive, got {self.qt_scale}")

    def shape_key(self) -> tuple[float, ...]:
        """The parameters p0 depends on (not the y scaling, not the beyond-family smearing)."""
        return tuple(getattr(self, f.name) for f in fields(self)[:_N_SHAPE])


_N_RESUMMED = 11   # QtParams fields (mass ... cs_q0) that W(b) depends on
_N_SHAPE = 16      # ... and with the matching and fixed-order ones: p0


# ---------------------------------------------------------------- b space

def b_space(b: np.ndarray, qp: QtParams) -> np.ndarray:
    """W(b) = exp(-S_pert(b) - S_NP(b)) of the resummed part (W(0) = 1)."""
    q = qp.mass
    bs = b / np.sqrt(1.0 + (b / qp.b_max) ** 2)
    lg = np.log1p((q * bs / B0) ** 2)
    lam = qp.cusp_running
    if lam > 0:
        sud = (-lg / lam - np.log1p(-lam * lg) / lam**2)
    else:
        sud = 0.5 * lg * lg
    hard = np.log1p((q * b / B0) ** 2 / (1.0 + (b / qp.noncusp_b) ** 2))
    s_pert = qp.cusp * sud + qp.noncusp * hard
    b2 = b * b
    s_kt = 0.5 * qp.kt**2 * b2 * b2 / (b2 + qp.kt_b**2)
    s_cs = qp.cs_kernel * np.log(q * q / qp.cs_q0**2) * qp.cs_b * (np.sqrt(1.0 + b2 / qp.cs_b**2) - 1.0)
    return np.exp(-s_pert - s_kt - s_cs)


@lru_cache(maxsize=4)
def _hankel_kernel() -> np.ndarray:
    from scipy.special import j0

    assert _B.size % 2 == 1, "Simpson's rule needs an even number of b intervals"
    w = np.full(_B.size, 2.0)       # Simpson weights (an even number of intervals)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    return j0(np.outer(_RES, _B)) * (_B * w * _DB / 3.0)[None, :]


@lru_cache(maxsize=64)
def _resummed(key: tuple[float, ...]) -> np.ndarray:
    """R(q) on the resummed grid for the W(b) parameters ``key`` (the first fields of QtParams)."""
    names = [f.name for f in fields(QtParams)[:_N_RESUMMED]]
    qp = QtParams(**dict(zip(names, key)), matching_scale=0.5, matching_width=1.5, fo_power=3.0, fo_norm=0.4,
                  fo_falloff=0.0)
    return _RES * (_hankel_kernel() @ b_space(_B, qp))


def transition(q: np.ndarray, qp: QtParams) -> np.ndarray:
    """T(q): 1 below q_m/width, 0 above q_m*width, a smoothstep in ln q between."""
    qm = qp.matching_scale * qp.mass
    with np.errstate(divide="ignore"):
        u = np.clip(0.5 * (np.log(np.maximum(q, 1e-300) / qm) / np.log(qp.matching_width) + 1.0), 0.0, 1.0)
    return 1.0 - u * u * (3.0 - 2.0 * u)


def fixed_order(q: np.ndarray, qp: QtParams) -> np.ndarray:
    """F(q) = fo_norm/Q (Q/(2q))^fo_power (1.25/(1 + q²/Q²))^fo_falloff (used only where T < 1)."""
    x = np.maximum(q, 1e-12) / qp.mass
    return qp.fo_norm / qp.mass * (0.5 / x) ** qp.fo_power * (1.25 / (1.0 + x * x)) ** qp.fo_falloff


@lru_cache(maxsize=128)
def _table(key: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(p0 at the GRID nodes, its cumulative at the nodes), normalised on [0, QT_MAX]."""
    qp = QtParams(*key)
    res = np.zeros(GRID.size)
    r = _resummed(key[:_N_RESUMMED])
    res[: r.size] = r
    t = transition(GRID, qp)
    if np.any(res[t > 0] < -1e-4 * res.max()):
        raise ValueError("qt resummation: the resummed q_T density is negative below the matching region "
                         f"for {qp}; the card's resummation knobs are outside the model's validity")
    dens = t * np.maximum(res, 0.0) + (1.0 - t) * fixed_order(GRID, qp)
    dens[0] = 0.0
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(GRID))])
    return dens / cdf[-1], cdf / cdf[-1]


_LUT_STEP = _SEGMENTS[0][1]     # every node is a multiple of the finest step
_LUT = np.clip(np.searchsorted(GRID, _LUT_STEP * np.arange(round(QT_MAX / _LUT_STEP) + 1) + 1e-9, side="right") - 1,
               0, GRID.size - 2)


def _cell(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(node index i with GRID[i] <= q < GRID[i+1], offset q - GRID[i] clipped to the cell, cell
    width) for q in [0, QT_MAX], by a lookup on the finest step (a binary search per event would
    dominate the cost of the LHE weights)."""
    i = _LUT[(q * (1.0 / _LUT_STEP)).astype(np.int64)]
    h = GRID[i + 1] - GRID[i]
    return i, np.clip(q - GRID[i], 0.0, h), h


def base_density(q: np.ndarray, qp: QtParams) -> np.ndarray:
    """p0(q): the y-independent spectrum (piecewise linear between :data:`GRID` nodes, 0 above
    QT_MAX)."""
    dens, _ = _table(qp.shape_key())
    q = np.asarray(q, dtype=float)
    i, t, h = _cell(np.clip(q, 0.0, QT_MAX))
    return np.where(q <= QT_MAX, dens[i] + (dens[i + 1] - dens[i]) * (t / h), 0.0)


def base_cdf(q: np.ndarray | float, qp: QtParams) -> np.ndarray:
    """Cumulative of :func:`base_density` (exact for the piecewise-linear density)."""
    dens, cdf = _table(qp.shape_key())
    i, t, h = _cell(np.clip(np.asarray(q, dtype=float), 0.0, QT_MAX))
    return cdf[i] + dens[i] * t + 0.5 * (dens[i + 1] - dens[i]) / h * t * t


def scale(y: np.ndarray, qp: QtParams) -> np.ndarray:
    """s(y) = qt_scale (1 + y_slope |y|): the family's rapidity dependence is a q_T scaling."""
    return qp.qt_scale * (1.0 + qp.y_slope * np.abs(y))


def smear_width(y: np.ndarray, qp: QtParams) -> np.ndarray:
    """Per-component width of the data-only Gaussian q_T smearing at rapidity y."""
    return qp.kt_smear * (1.0 + qp.kt_smear_dy * np.abs(y))


def density(qt: np.ndarray, y: np.ndarray, qp: QtParams) -> np.ndarray:
    """Normalised p(q_T | y) = p0(q_T/s)/s of a point of the family (exact; no smearing)."""
    if qp.kt_smear > 0:
        raise ValueError("qt density: this point has a beyond-family smearing (qt.beyond_family.kt_smear > 0), "
                         "which has no closed-form density; LHE-like weights need one (the simulation card must "
                         "have kt_smear = 0); use wmnb.universe.qtmodel.smeared_density for the data's spectrum")
    s = scale(y, qp)
    return base_density(qt / s, qp) / s


def sample(rng: np.random.Generator, y: np.ndarray, qp: QtParams) -> np.ndarray:
    """q_T given y: u from the exact inverse of the piecewise-quadratic cumulative of p0, q_T =
    s(y) u; then, for a data point with ``kt_smear > 0``, the q_T vector is convolved with a
    Gaussian of the rapidity-dependent width (two extra normal draws per event)."""
    dens, cdf = _table(qp.shape_key())
    c = rng.random(y.shape[0])
    i = np.clip(np.searchsorted(cdf, c, side="right") - 1, 0, GRID.size - 2)
    h = GRID[i + 1] - GRID[i]
    a = 0.5 * (dens[i + 1] - dens[i]) / h
    dc = c - cdf[i]
    disc = np.sqrt(np.maximum(dens[i] ** 2 + 4.0 * a * dc, 0.0))
    t = np.where(disc + dens[i] > 0, 2.0 * dc / np.maximum(disc + dens[i], 1e-300), 0.0)
    qt = scale(y, qp) * (GRID[i] + np.clip(t, 0.0, h))
    if qp.kt_smear > 0:
        w = smear_width(y, qp)
        kx = rng.normal(size=qt.size) * w
        ky = rng.normal(size=qt.size) * w
        qt = np.hypot(qt + kx, ky)
    return qt


def smeared_density(qt: np.ndarray, y: float, qp: QtParams, n_sigma: float = 8.0, n_steps: int = 160) -> np.ndarray:
    """p(q_T | y) at one rapidity for any point, the data's beyond-family smearing included: the
    family density convolved numerically with the 2-D Gaussian of width :func:`smear_width`
    (the Rice kernel (q/σ²) exp(-(q-k)²/2σ²) I0e(qk/σ²), integrated over k within ``n_sigma``
    widths of q).  For tests and plots; the generator samples the smearing directly."""
    from scipy.special import i0e

    qt = np.asarray(qt, dtype=float)
    if qp.kt_smear == 0:
        return density(qt, np.full(qt.shape, float(y)), qp)
    base = replace(qp, kt_smear=0.0)
    sig = float(smear_width(np.array([float(y)]), qp)[0])
    q = qt.reshape(-1, 1)
    offsets = np.linspace(-n_sigma * sig, n_sigma * sig, n_steps + 1)
    k = q + offsets[None, :]
    inside = k >= 0.0
    k = np.where(inside, k, 0.0)
    fk = density(k.ravel(), np.full(k.size, float(y)), base).reshape(k.shape)
    kern = (q / sig**2) * np.exp(-((q - k) ** 2) / (2 * sig**2)) * i0e(q * k / sig**2)
    w = np.full(offsets.size, offsets[1] - offsets[0])
    w[0] = w[-1] = 0.5 * w[0]
    return (np.where(inside, kern * fk, 0.0) @ w).reshape(qt.shape)
