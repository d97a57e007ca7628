"""The q_T prediction: an analytic, offline stand-in for a resummed + fixed-order calculation.

The paper corrects its simulation to a resummed N³LL + NNLO prediction whose uncertainties are
*theory nuisance parameters* (TNPs), nonperturbative parameters, a matching variation and quark-
mass thresholds.  Those calculations use private grids; this book computes its prediction itself,
in impact-parameter (b) space, with the structure of transverse-momentum resummation:

    p(q_T | y) ∝ T(q_T) · q_T ∫ db b J0(q_T b) exp(−S(b; y)) + (1 − T(q_T)) · F(q_T),

with ``S = S_pert + S_NP``, a matching function T handing the resummed part over to a
fixed-order tail F around q_T = ``matching_scale`` · m_V, and the rapidity dependence of a q_T
scaling ``p(q_T | y) = p0(q_T / s) / s``, ``s = 1 + y_slope |y|``.  The exponent uses
``L = ln(1 + (Q b*/b0)²)``, ``b* = b / sqrt(1 + b²/b_max²)``, ``b0 = 2 e^(−γE)``:

* perturbative: a cusp Sudakov ``cusp · [−L/λ − ln(1 − λL)/λ²]`` and a hard-region single log
  ``noncusp · ln(1 + (Q b/b0)² / (1 + b²/b_h²))``;
* nonperturbative: intrinsic k_T ``kt² b⁴ / (2 (b² + kt_b²))`` (separate for W and Z) and a
  Collins–Soper-kernel term ``cs · ln(Q²/Q0²) · cs_b (sqrt(1 + b²/cs_b²) − 1)`` (one value for W
  and Z: its size follows ln Q², so it correlates the two);
* fixed order: ``F = fo_norm/Q · (Q/2q)^fo_power · (1.25/(1 + q²/Q²))^fo_falloff``.

**Central values.**  This universe has no calculation better than its generator, so the
prediction's central inputs are the generator's published settings (the *simulation's* card,
read through :func:`wmnb.truth.simulation`, as one would read a generator's configuration):
the central prediction reproduces the simulation, and the chapter checks that it does (the
reweighting factor is one within the simulation's statistics).  What the prediction adds are its
**uncertainties**, the :data:`NUISANCES` below: each is a term added to S(b) (or a change of the
matching or fixed-order inputs) scaled by its parameter θ with a unit Gaussian prior, built to act
where its physics acts — the nonperturbative ones at low q_T, the anomalous dimensions and
boundary terms at intermediate q_T, the hard function, matching and fixed order at high q_T,
and the five beam-function terms, one per partonic channel, where that channel's luminosity
dominates in |y|.  The data universe's q_T spectrum lies outside this family (an x-dependent
intrinsic k_T): the prediction's band has to cover it, not to contain it exactly.

Numerics: Simpson-rule Hankel transform on a uniform b grid (step :data:`DB`), q_T nodes every
:data:`DQ` GeV up to :data:`Q_RES`, the fixed-order tail on a coarser grid to :data:`Q_MAX`;
bin fractions from the trapezoid cumulative.  All terms are smooth in θ, so derivatives by finite
differences are well defined (``fractions`` at θ ± h).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from .moments import Edges

BOSONS = ("wplus", "wminus", "z")
B0 = 2.0 * np.exp(-np.euler_gamma)
DB = 0.0025                      # GeV^-1
B_GRID = np.arange(0.0, 12.0 + 1e-12, DB)
DQ = 0.05                        # GeV: q_T nodes of the resummed part
Q_RES = 120.0                    # GeV: the resummed part is computed up to here (T = 0 above)
Q_MAX = 400.0                    # GeV: the spectrum is normalised on [0, Q_MAX]
_Q_FINE = np.arange(0.0, Q_RES + 1e-9, DQ)
_Q_TAIL = np.arange(Q_RES + 0.5, Q_MAX + 1e-9, 0.5)
Q_NODES = np.concatenate([_Q_FINE, _Q_TAIL])
#: quark masses of the threshold terms (GeV)
MB, MC = 4.78, 1.67


class PredictionError(ValueError):
    """Inputs the prediction cannot use (names the input and what to do)."""


@dataclass(frozen=True)
class PredictionInputs:
    """Central inputs of the calculation (GeV, GeV⁻¹), per boson where they differ."""

    mass: Mapping[str, float]
    kt: Mapping[str, float]
    cusp: float
    cusp_running: float
    noncusp: float
    noncusp_b: float
    b_max: float
    kt_b: float
    cs_kernel: float
    cs_b: float
    cs_q0: float
    matching_scale: float
    matching_width: float
    fo_power: float
    fo_norm: float
    fo_falloff: float
    y_slope: float

    @classmethod
    def from_generator_settings(cls, physics: Mapping[str, Any]) -> PredictionInputs:
        """The generator's q_T settings (a card's ``physics`` block: ``qt``, ``mw_mev``, ``mz_mev``)."""
        try:
            qt = physics["qt"]
            res, npt, mat = qt["resummation"], qt["nonperturbative"], qt["matching"]
            mw, mz = physics["mw_mev"] / 1e3, physics["mz_mev"] / 1e3
            return cls(mass={"wplus": mw, "wminus": mw, "z": mz},
                       kt={"wplus": npt["kt_w"], "wminus": npt["kt_w"], "z": npt["kt_z"]},
                       cusp=res["cusp"], cusp_running=res["cusp_running"], noncusp=res["noncusp"],
                       noncusp_b=res["noncusp_b"], b_max=res["b_max"], kt_b=npt["kt_b"], cs_kernel=npt["cs_kernel"],
                       cs_b=npt["cs_b"], cs_q0=npt["cs_q0"], matching_scale=mat["scale"], matching_width=mat["width"],
                       fo_power=mat["fo_power"], fo_norm=mat["fo_norm"], fo_falloff=mat["fo_falloff"],
                       y_slope=qt["y_slope"])
        except KeyError as err:
            raise PredictionError(f"generator settings lack {err}: pass a truth card's 'physics' block "
                                  "(wmnb.truth.simulation('physics'))") from None


@dataclass(frozen=True)
class Context:
    """What a nuisance term may depend on: b grid, boson, its mass, |y|, central inputs."""

    b: np.ndarray
    boson: str
    q: float
    absy: float
    inputs: PredictionInputs

    @cached_property
    def log_qb(self) -> np.ndarray:
        """L = ln(1 + (Q b*/b0)²)."""
        bs = self.b / np.sqrt(1.0 + (self.b / self.inputs.b_max) ** 2)
        return np.log1p((self.q * bs / B0) ** 2)


@dataclass(frozen=True)
class TheoryNuisance:
    """One parameter of the prediction's uncertainty (θ = ±1 is its prior's ±1σ).

    ``term(ctx)`` is the change of the exponent S(b) for θ = +1 (None for the nuisances that
    change the matching or fixed-order inputs instead: ``inputs_at(θ)``); ``bosons`` the bosons it
    acts on (a shared parameter is correlated between them); ``region`` the q_T range (GeV) where
    it is built to act."""

    name: str
    kind: str                 # "tnp", "np", "matching", "threshold", "fixed_order"
    bosons: tuple[str, ...]
    region: tuple[float, float]
    description: str
    term: Callable[[Context], np.ndarray] | None = None
    inputs_at: Callable[[PredictionInputs, float], PredictionInputs] | None = None
    absy_centre: float | None = None    # beam-function terms: |y| where the channel dominates


def _sudakov(ctx: Context) -> np.ndarray:
    lam, lg = ctx.inputs.cusp_running, ctx.log_qb
    return -lg / lam - np.log1p(-lam * lg) / lam**2 if lam > 0 else 0.5 * lg * lg


def _hard_log(ctx: Context) -> np.ndarray:
    return np.log1p((ctx.q * ctx.b / B0) ** 2 / (1.0 + (ctx.b / ctx.inputs.noncusp_b) ** 2))


def _kt_shape(ctx: Context) -> np.ndarray:
    b2 = ctx.b * ctx.b
    return 0.5 * b2 * b2 / (b2 + ctx.inputs.kt_b**2)


def _cs_shape(ctx: Context) -> np.ndarray:
    i = ctx.inputs
    return np.log(ctx.q**2 / i.cs_q0**2) * i.cs_b * (np.sqrt(1.0 + (ctx.b / i.cs_b) ** 2) - 1.0)


def _threshold(mass: float) -> Callable[[Context], np.ndarray]:
    def term(ctx: Context) -> np.ndarray:
        x = np.log(np.maximum(ctx.b, 1e-12) * mass / B0)
        return 0.03 * np.exp(-0.5 * (x / 0.6) ** 2)
    return term


#: |y| centres and width of the five partonic channels' luminosity profiles (a stand-in: the
#: valence-dominated channels at central rapidity, gluon-initiated ones further out)
BEAM_CHANNELS = (("qqbar", 0.0), ("qg", 1.0), ("gqbar", 2.0), ("qq", 3.0), ("gg", 4.0))
_BEAM_WIDTH = 0.8


def channel_weight(absy: float | np.ndarray, centre: float) -> np.ndarray:
    """Share of the channel centred at ``centre`` at |y| (the five shares sum to 1)."""
    g = {c: np.exp(-0.5 * ((np.asarray(absy, dtype=float) - c) / _BEAM_WIDTH) ** 2) for _, c in BEAM_CHANNELS}
    return g[centre] / sum(g.values())


def _beam(centre: float) -> Callable[[Context], np.ndarray]:
    def term(ctx: Context) -> np.ndarray:
        return 0.02 * ctx.log_qb * channel_weight(ctx.absy, centre)
    return term


ALL = BOSONS
W_ONLY = ("wplus", "wminus")

NUISANCES: tuple[TheoryNuisance, ...] = (
    TheoryNuisance("tnp_gamma_cusp", "tnp", ALL, (0.0, 80.0), "cusp anomalous dimension: 5 % of the Sudakov term",
                   term=lambda c: 0.05 * c.inputs.cusp * _sudakov(c)),
    TheoryNuisance("tnp_gamma_mu", "tnp", ALL, (0.0, 80.0), "non-cusp anomalous dimension gamma_mu: a single log 0.01 L",
                   term=lambda c: 0.01 * c.log_qb),
    TheoryNuisance("tnp_gamma_nu", "tnp", ALL, (0.0, 25.0),
                   "rapidity anomalous dimension gamma_nu: 0.004 ln(Q^2/(10 GeV)^2) ln(1 + b^2/0.25 GeV^-2)",
                   term=lambda c: 0.004 * np.log(c.q**2 / 100.0) * np.log1p((c.b / 0.5) ** 2)),
    TheoryNuisance("tnp_hard", "tnp", ALL, (5.0, 100.0), "hard-function boundary term: 0.01 of the hard-region log",
                   term=lambda c: 0.01 * _hard_log(c)),
    TheoryNuisance("tnp_soft", "tnp", ALL, (0.0, 30.0), "soft-function boundary term: 0.02 L b^2/(b^2 + 0.3^2)",
                   term=lambda c: 0.02 * c.log_qb * c.b**2 / (c.b**2 + 0.09)),
    *(TheoryNuisance(f"tnp_beam_{ch}", "tnp", ALL, (0.0, 80.0),
                     f"beam-function boundary term of the {ch} channel (|y| around {yc:g}): 0.02 L x channel share",
                     term=_beam(yc), absy_centre=yc) for ch, yc in BEAM_CHANNELS),
    TheoryNuisance("np_cs_kernel", "np", ALL, (0.0, 25.0),
                   "Collins-Soper kernel: 25 % of the central value, one parameter for W and Z (size follows ln Q^2)",
                   term=lambda c: 0.25 * c.inputs.cs_kernel * _cs_shape(c)),
    TheoryNuisance("np_kt_w", "np", W_ONLY, (0.0, 8.0), "intrinsic kT^2 of the W: 25 % of the central value",
                   term=lambda c: 0.25 * c.inputs.kt[c.boson] ** 2 * _kt_shape(c)),
    TheoryNuisance("np_kt_z", "np", ("z",), (0.0, 8.0), "intrinsic kT^2 of the Z: 25 % of the central value",
                   term=lambda c: 0.25 * c.inputs.kt[c.boson] ** 2 * _kt_shape(c)),
    TheoryNuisance("np_lambda4_w", "np", W_ONLY, (0.0, 10.0), "quartic nonperturbative term of the W: 0.01 b^4/(1 + b^4/16)",
                   term=lambda c: 0.01 * c.b**4 / (1.0 + c.b**4 / 16.0)),
    TheoryNuisance("np_lambda4_z", "np", ("z",), (0.0, 10.0), "quartic nonperturbative term of the Z: 0.01 b^4/(1 + b^4/16)",
                   term=lambda c: 0.01 * c.b**4 / (1.0 + c.b**4 / 16.0)),
    TheoryNuisance("matching_transition", "matching", ALL, (15.0, 150.0),
                   "matching transition at 0.5 m_V moved to 0.75 (up) and 0.35 m_V (down)",
                   inputs_at=lambda i, t: replace(i, matching_scale=i.matching_scale * (1.5 if t > 0 else 0.7) ** abs(t))),
    TheoryNuisance("threshold_mb", "threshold", ALL, (1.5, 40.0), "b-quark mass threshold (b ~ b0/m_b)",
                   term=_threshold(MB)),
    TheoryNuisance("threshold_mc", "threshold", ALL, (0.0, 20.0), "c-quark mass threshold (b ~ b0/m_c)",
                   term=_threshold(MC)),
    TheoryNuisance("fixed_order_scale", "fixed_order", ALL, (25.0, 400.0),
                   "renormalisation scale of the fixed-order tail: its power +-0.12",
                   inputs_at=lambda i, t: replace(i, fo_power=i.fo_power + 0.12 * t)),
)
NUISANCE_NAMES = tuple(n.name for n in NUISANCES)
GROUP = "pTV"


def get_nuisance(name: str) -> TheoryNuisance:
    """The nuisance called ``name`` (:data:`NUISANCES`)."""
    for n in NUISANCES:
        if n.name == name:
            return n
    raise KeyError(f"unknown theory nuisance {name!r}; known: {list(NUISANCE_NAMES)}")


def nuisances_for(boson: str) -> tuple[TheoryNuisance, ...]:
    """The nuisances acting on ``boson``."""
    _check_boson(boson)
    return tuple(n for n in NUISANCES if boson in n.bosons)


def _check_boson(boson: str) -> None:
    if boson not in BOSONS:
        raise PredictionError(f"unknown boson {boson!r}; expected one of {BOSONS}")


@lru_cache(maxsize=1)
def _kernel() -> np.ndarray:
    """Simpson weights times J0 on the (resummed q nodes × b grid): the Hankel transform."""
    from scipy.special import j0

    w = np.full(B_GRID.size, 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    return j0(np.outer(_Q_FINE, B_GRID)) * (B_GRID * w * DB / 3.0)[None, :]


class QtPrediction:
    """The prediction at any point θ of its nuisances, as q_T fractions in (|y|, q_T) bins."""

    def __init__(self, inputs: PredictionInputs):
        self.inputs = inputs

    def exponent(self, boson: str, absy: float, shifts: Mapping[str, float] | None = None,
                 inputs: PredictionInputs | None = None) -> np.ndarray:
        """S(b) on :data:`B_GRID` at |y| for nuisance values ``shifts`` (name -> θ)."""
        i = inputs or self.inputs
        ctx = Context(B_GRID, boson, float(i.mass[boson]), float(absy), i)
        s = i.cusp * _sudakov(ctx) + i.noncusp * _hard_log(ctx) + i.kt[boson] ** 2 * _kt_shape(ctx) \
            + i.cs_kernel * _cs_shape(ctx)
        for name, theta in (shifts or {}).items():
            nuis = get_nuisance(name)
            if nuis.term is not None and boson in nuis.bosons and theta != 0.0:
                s = s + theta * nuis.term(ctx)
        return s

    def _inputs_at(self, boson: str, shifts: Mapping[str, float]) -> PredictionInputs:
        out = self.inputs
        for name, theta in shifts.items():
            nuis = get_nuisance(name)
            if nuis.inputs_at is not None and boson in nuis.bosons and theta != 0.0:
                out = nuis.inputs_at(out, float(theta))
        return out

    def base_spectra(self, boson: str, absy: Edges, shifts: Mapping[str, float] | None = None
                     ) -> np.ndarray:
        """p0(q) on :data:`Q_NODES` (normalised on [0, Q_MAX]) at each |y| (rows)."""
        _check_boson(boson)
        shifts = dict(shifts or {})
        inputs = self._inputs_at(boson, shifts)
        q_v = float(inputs.mass[boson])
        if inputs.cusp_running * np.log1p((q_v * inputs.b_max / B0) ** 2) >= 0.95:
            raise PredictionError("cusp_running * L(b_max) >= 0.95: the Sudakov term diverges")
        if inputs.matching_scale * q_v * inputs.matching_width > Q_RES:
            raise PredictionError(f"the matching transition ends above {Q_RES:g} GeV, beyond the resummed grid")
        w_b = np.stack([np.exp(-self.exponent(boson, y, shifts, inputs)) for y in absy], axis=1)
        res = _Q_FINE[:, None] * (_kernel() @ w_b)                      # (n_fine, n_y)
        t = _transition(Q_NODES, inputs, q_v)
        fo = _fixed_order(Q_NODES, inputs, q_v)
        resummed = np.zeros((Q_NODES.size, len(absy)))
        resummed[: _Q_FINE.size] = np.maximum(res, 0.0)
        dens = t[:, None] * resummed + (1.0 - t[:, None]) * fo[:, None]
        dens[0] = 0.0
        norm = np.trapezoid(dens, Q_NODES, axis=0)
        return (dens / norm).T

    def fractions(self, boson: str, qt_edges: Edges, absy_edges: Edges,
                  shifts: Mapping[str, float] | None = None) -> np.ndarray:
        """Fractions of each |y| bin's events in the q_T bins (shape (n_y, n_qt)); a last edge
        at or above :data:`Q_MAX` collects the whole tail, so each row sums to 1 then.  The
        q_T shape of a |y| bin is evaluated at its centre."""
        qe = _edges(qt_edges, "qt_edges")
        ye = _edges(absy_edges, "absy_edges")
        centres = 0.5 * (ye[1:] + ye[:-1])
        p0 = self.base_spectra(boson, centres, shifts)
        cum = np.concatenate([np.zeros((p0.shape[0], 1)),
                              np.cumsum(0.5 * (p0[:, 1:] + p0[:, :-1]) * np.diff(Q_NODES), axis=1)], axis=1)
        out = np.empty((centres.size, qe.size - 1))
        for j, y in enumerate(centres):
            s = 1.0 + self.inputs.y_slope * y
            c = np.interp(np.minimum(qe / s, Q_MAX), Q_NODES, cum[j])
            out[j] = np.diff(c)
        return out

    def variations(self, boson: str, qt_edges: Edges, absy_edges: Edges
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Nuisance -> (fractions at θ = +1, at θ = −1) for every nuisance acting on ``boson``."""
        return {n.name: (self.fractions(boson, qt_edges, absy_edges, {n.name: 1.0}),
                         self.fractions(boson, qt_edges, absy_edges, {n.name: -1.0}))
                for n in nuisances_for(boson)}


def _edges(edges: Edges, what: str) -> np.ndarray:
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0) or e[0] < 0 or not np.all(np.isfinite(e)):
        raise PredictionError(f"{what} must be at least two increasing, finite, non-negative edges; got {edges!r}")
    return e


def _transition(q: np.ndarray, i: PredictionInputs, mass: float) -> np.ndarray:
    qm = i.matching_scale * mass
    with np.errstate(divide="ignore"):
        u = np.clip(0.5 * (np.log(np.maximum(q, 1e-300) / qm) / np.log(i.matching_width) + 1.0), 0.0, 1.0)
    return 1.0 - u * u * (3.0 - 2.0 * u)


def _fixed_order(q: np.ndarray, i: PredictionInputs, mass: float) -> np.ndarray:
    x = np.maximum(q, 1e-12) / mass
    return i.fo_norm / mass * (0.5 / x) ** i.fo_power * (1.25 / (1.0 + x * x)) ** i.fo_falloff
