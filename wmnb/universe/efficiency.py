"""Muon efficiencies of the synthetic detector, step by step, and their truth for tag and probe.

The detector simulation (:mod:`wmnb.universe.detector`) draws every muon's reconstruction,
identification and trigger decisions from the functions here, and the truth gate
(:func:`wmnb.truth.efficiency_scale_factors`) evaluates the same functions for closure tests, so
the two cannot drift apart.

The steps, in the paper's order, with the probes of the tag-and-probe measurement of each
(:data:`wmnb.conventions.TNP_STEPS`):

``reco``       a standalone muon for a muon with an inner track (probes: tracks);
``tracking``   the global match of a standalone muon: inner track found (:data:`TRACK_EFF`) and
               matched (probes: standalone muons);
``id``         medium ID + |dxy| < 0.05 cm of a global muon;
``trigger``    single-muon trigger match of an ID-passing muon: L1/HLT muon with its pT turn-on,
               times the HLT isolation;
``isolation``  offline relative isolation < 0.15 of a triggering, ID-passing muon.
``veto``       loose ID of a muon with an inner track (the W selection's veto on a second muon;
               the card's flat ``loose_id``, probes: tracks).

The reco, tracking, ID and trigger-muon efficiencies are

    eff = plateau(eta) * (1 + q * charge_asym(eta)) * S(pT, eta) [* step factors],  clipped to [0, 1]

with the card's per-eta plateau and charge asymmetry (``detector.efficiency.<step>``) and the
pT shape of ``detector.efficiency_pt.<step>``

    S = (1 - depth(eta) * exp(-(pT - 15 GeV) / scale)) * (1 + slope(eta) * (pT - 40 GeV)),

a turn-on plus a slope that differ between the data and simulation cards, so the scale factors
depend on pT (the paper smooths them with 2nd-3rd order polynomials in pT per eta bin).  They are
evaluated at the generator-level (post-FSR) muon pT and eta.  Step factors: the standalone
reconstruction vanishes below ~3 GeV (:func:`reco_efficiency`); the ID has the card's low-pT drop;
the trigger has its threshold turn-on in the *reconstructed* pT.

Trigger isolation and offline isolation are not efficiency knobs: they follow from the isolation
cone of :mod:`~wmnb.universe.detector` (underlying event, pileup, the recoil leaking into the cone
when it points along the muon), so their efficiencies depend on pT (a fixed cone against a
relative cut) and on u_par.  **u_par** here is the paper's: the boson q_T projected on the muon
direction, u_par = q_T . p_mu / |p_mu| (the recoil is -q_T, so the recoil leaks into the cone for
u_par < 0).  Their truth is an integral over the cone model (:func:`isolation_tables`).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import erf, gammainc, ndtr
from scipy.stats import gamma as gamma_dist

from ..conventions import DXY_MAX, ISO_MAX
from .card import eta_bin

STEPS = ("reco", "tracking", "id", "trigger", "isolation", "veto")
#: steps whose efficiency is measured per charge (the isolation is charge-independent)
CHARGE_STEPS = ("reco", "tracking", "id", "trigger")
#: steps measured versus u_par as well
UPAR_STEPS = ("trigger", "isolation")
#: probability that a muon's inner track is reconstructed (a fixed part of the tracking step)
TRACK_EFF = 0.998
#: the pT where the turn-on of the pT shape starts, and the pivot of its slope (GeV)
PT_TURNON_START = 15.0
PT_PIVOT = 40.0
#: offline isolation and impact-parameter cuts of the ID and isolation steps (the analysis's)
ISO_CUT = ISO_MAX
DXY_CUT = DXY_MAX
#: the grid of the isolation tables: generator pT (GeV) and recoil leak lever max(-u_par, 0) (GeV)
#: (1 GeV steps where the probes are, coarser above: the probabilities are smooth in both)
TABLE_PT = np.concatenate([np.arange(10.0, 60.0, 1.0), np.arange(60.0, 120.0 + 0.5, 4.0)])
TABLE_LEVER = np.arange(0.0, 100.0 + 0.5, 2.5)
#: grid of the UE + pileup distribution, of the leak into the cone (GeV; beyond it no muon passes
#: either isolation), and the Gauss-Hermite nodes of the HLT-isolation smearing
CONE_BINS = 20000
LEAK_GRID = np.arange(0.0, 60.0 + 1e-9, 0.05)
QUAD_NODES = 48


def _per_eta(values: list[float], ibin: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)[ibin]


def _plateau(step: dict[str, Any], ib: np.ndarray, charge: np.ndarray) -> np.ndarray:
    return np.clip(_per_eta(step["plateau"], ib) * (1.0 + charge * _per_eta(step["charge_asym"], ib)), 0.0, 1.0)


def _pt_shape(shape: dict[str, Any], pt: np.ndarray, ib: np.ndarray) -> np.ndarray:
    pt = np.asarray(pt, dtype=np.float64)
    turn = 1.0 - _per_eta(shape["depth"], ib) * np.exp(-np.maximum(pt - PT_TURNON_START, 0.0) / shape["scale"])
    return turn * (1.0 + _per_eta(shape["slope"], ib) * (pt - PT_PIVOT))


def step_efficiency(step: dict[str, Any], eta: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """plateau * (1 + q * charge_asym) per eta bin, clipped to [0, 1]."""
    return _plateau(step, eta_bin(eta), charge)


def pt_shape(shape: dict[str, Any], pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """The card's pT shape of a step: (1 - depth e^{-(pT-15)/scale}) (1 + slope (pT - 40))."""
    return _pt_shape(shape, pt, eta_bin(eta))


def _shaped(det: dict[str, Any], step: str, pt: np.ndarray, eta: np.ndarray, charge: np.ndarray) -> np.ndarray:
    ib = eta_bin(eta)
    return _plateau(det["efficiency"][step], ib, charge) * _pt_shape(det["efficiency_pt"][step], pt, ib)


def reco_efficiency(det: dict[str, Any], pt: np.ndarray, eta: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Standalone-muon reconstruction probability of a muon at generator (pt, eta, charge)."""
    turn = np.clip(1.0 - np.exp(-(np.asarray(pt) - 2.0) / 1.5), 0.0, 1.0)
    return np.clip(_shaped(det, "reco", pt, eta, charge) * turn, 0.0, 1.0)


def tracking_efficiency(det: dict[str, Any], pt: np.ndarray, eta: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Probability that a standalone muon with an inner track is matched into a global muon."""
    return np.clip(_shaped(det, "tracking", pt, eta, charge), 0.0, 1.0)


def id_efficiency(det: dict[str, Any], pt: np.ndarray, eta: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Medium-ID probability of a global muon (with the card's low-pT drop)."""
    idp = det["efficiency"]["id"]
    drop = 1.0 - idp["low_pt_drop"] * np.exp(-np.maximum(np.asarray(pt) - 15.0, 0.0) / idp["low_pt_scale"])
    return np.clip(_shaped(det, "id", pt, eta, charge) * drop, 0.0, 1.0)


def trigger_muon_efficiency(det: dict[str, Any], pt: np.ndarray, eta: np.ndarray, charge: np.ndarray,
                            pt_reco: np.ndarray) -> np.ndarray:
    """Trigger-muon probability of a global muon before the HLT isolation: the plateau and pT
    shape at the generator (pt, eta) times the threshold turn-on in the reconstructed pT."""
    tr = det["efficiency"]["trigger"]
    turn = ndtr((np.asarray(pt_reco) - tr["threshold"]) / tr["turnon_width"])
    return np.clip(_shaped(det, "trigger", pt, eta, charge), 0.0, 1.0) * turn


# ------------------------------------------------------------------ truth for tag and probe

@dataclass(frozen=True)
class IsolationTables:
    """Probabilities on the grid (:data:`TABLE_PT` x :data:`TABLE_LEVER`) of a prompt muon from a
    boson, versus its *reconstructed* pT (the isolations are relative to it) and u_par:
    ``trig_iso`` = P(HLT isolation passes), ``both`` = P(HLT and offline isolation pass)."""

    trig_iso: np.ndarray
    both: np.ndarray

    def _interp(self, table: np.ndarray, pt: np.ndarray, upar: np.ndarray) -> np.ndarray:
        from scipy.interpolate import RegularGridInterpolator

        lever = np.maximum(-np.asarray(upar, dtype=np.float64), 0.0)
        f = RegularGridInterpolator((TABLE_PT, TABLE_LEVER), table, bounds_error=False, fill_value=None)
        x = np.stack([np.clip(np.asarray(pt, dtype=np.float64), TABLE_PT[0], TABLE_PT[-1]),
                      np.clip(lever, TABLE_LEVER[0], TABLE_LEVER[-1])], axis=-1)
        return np.clip(f(x.reshape(-1, 2)).reshape(x.shape[:-1]), 0.0, 1.0)

    def trigger(self, pt: np.ndarray, upar: np.ndarray) -> np.ndarray:
        """P(HLT isolation passes) at reconstructed pT and u_par."""
        return self._interp(self.trig_iso, pt, upar)

    def isolation(self, pt: np.ndarray, upar: np.ndarray) -> np.ndarray:
        """P(offline isolation passes | HLT isolation passes) at reconstructed pT and u_par."""
        t = self._interp(self.trig_iso, pt, upar)
        return np.where(t > 0, self._interp(self.both, pt, upar) / np.maximum(t, 1e-300), 1.0)


def isolation_tables(det: dict[str, Any]) -> IsolationTables:
    """The isolation probabilities of a prompt muon from a boson (no jet activity around it) for
    the detector card section ``det``, integrated over the cone model of the detector simulation:

    cone = UE + pileup + leak, UE ~ Gamma(ue_shape, ue_scale), pileup = pu_per_vertex * npv *
    Gamma(2, 0.5), npv = 1 + Poisson(vertex_eff * n_true), n_true ~ Gamma(shape, mean/shape),
    leak = recoil_leak * max(-u_par, 0) * Exp(1); offline: cone / pT < 0.15; HLT:
    (cone + 2 leak) / pT * max(1 + iso_smear * N(0,1), 0) < iso_cut, pT the reconstructed one.

    No sampling: the distribution of UE + pileup is computed on a fine grid (npv is negative
    binomial, summed term by term; the UE density convolved with the pileup CDF), the HLT
    smearing is integrated with :data:`QUAD_NODES` Gauss-Hermite nodes at fixed leak, and the leak
    (exponential) on a fine grid, so the tails (high pileup, large leaks) that make the
    inefficiency at high pT are exact to ~1e-5 and the data and simulation tables carry no
    integration noise.  Outside the grid the nearest grid value is
    used.  Cached per card section."""
    return _isolation_tables(json.dumps({k: det[k] for k in ("efficiency", "pileup")}, sort_keys=True))


def _cone_cdf(iso: dict[str, Any], pu: dict[str, Any]) -> tuple[np.ndarray, float]:
    """CDF of UE + pileup on the grid ``x = i * step`` (i = 0 .. CONE_BINS), and the step."""
    from scipy.stats import nbinom

    k, theta = iso["ue_shape"], iso["ue_scale"]
    # npv - 1 = Poisson(vertex_eff * Gamma(shape, mean/shape)): negative binomial
    p_nb = pu["shape"] / (pu["shape"] + pu["vertex_eff"] * pu["mean"])
    j = np.arange(int(nbinom.ppf(1 - 1e-13, pu["shape"], p_nb)) + 2)
    w = nbinom.pmf(j, pu["shape"], p_nb)
    scale = 0.5 * iso["pu_per_vertex"] * (1.0 + j)                   # pileup | npv ~ Gamma(2, scale)
    x_max = float(gamma_dist.ppf(1 - 1e-13, k) * theta) + 2.0 * float(gamma_dist.ppf(1 - 1e-13, 2.0) * scale[-1]) + 1.0
    step = x_max / CONE_BINS
    x = np.arange(CONE_BINS + 1) * step
    if iso["pu_per_vertex"] > 0:
        cdf_pu = np.zeros(x.size)
        for wj, sj in zip(w, scale):
            cdf_pu += wj * gammainc(2.0, x / sj)
    else:
        cdf_pu = np.ones(x.size)
    if theta <= 0:
        return cdf_pu, step
    # UE probability of each grid cell, placed at the cell's centre: a half-step shift, so the
    # convolution is evaluated at x - step/2 and interpolated back (second-order accurate)
    mass = np.diff(gammainc(k, x / theta))
    conv = fftconvolve(mass, cdf_pu)[: x.size]                       # F(x_i + step/2) approximately
    cdf = np.concatenate([[0.0], 0.5 * (conv[:-1] + conv[1:])])
    return np.clip(cdf, 0.0, 1.0), step


@functools.lru_cache(maxsize=16)
def _isolation_tables(key: str) -> IsolationTables:
    det = json.loads(key)
    iso, tr, pu = det["efficiency"]["isolation"], det["efficiency"]["trigger"], det["pileup"]
    cdf, step = _cone_cdf(iso, pu)

    def cone_cdf(c: np.ndarray) -> np.ndarray:
        # linear interpolation on the uniform grid, by hand (np.interp is ten times slower here)
        x = np.clip(c / step, 0.0, CONE_BINS - 1e-9)
        i = x.astype(np.intp)
        f = x - i
        return np.where(c < 0, 0.0, cdf[i] * (1.0 - f) + cdf[i + 1] * f)

    # 1) fixed leak L: average over the HLT smearing (Gauss-Hermite nodes)
    z, wz = np.polynomial.hermite_e.hermegauss(QUAD_NODES)
    wz = wz / wz.sum()
    smear = np.maximum(1.0 + tr["iso_smear"] * z, 0.0)[None, None, :]
    pt = TABLE_PT[:, None, None]
    leak = LEAK_GRID[None, :, None]
    c_off = ISO_CUT * pt - leak
    with np.errstate(divide="ignore"):
        c_hlt = np.where(smear > 0, tr["iso_cut"] * pt / np.where(smear > 0, smear, 1.0), np.inf) - 3.0 * leak
    g_trig = cone_cdf(c_hlt) @ wz                                    # (pt, leak)
    g_both = cone_cdf(np.minimum(c_off, c_hlt)) @ wz
    # 2) the leak recoil_leak * lever * Exp(1): integrate over the exponential on a fine grid
    e = np.linspace(0.0, 40.0, 4001)
    we = np.exp(-e) * np.gradient(e)
    we /= we.sum()
    dl = LEAK_GRID[1] - LEAK_GRID[0]
    trig = np.empty((TABLE_PT.size, TABLE_LEVER.size))
    both = np.empty_like(trig)
    for j, lever in enumerate(TABLE_LEVER):
        x = np.clip(iso["recoil_leak"] * lever * e / dl, 0.0, LEAK_GRID.size - 1 - 1e-9)
        i = x.astype(np.intp)
        f = x - i
        trig[:, j] = (g_trig[:, i] * (1.0 - f) + g_trig[:, i + 1] * f) @ we
        both[:, j] = (g_both[:, i] * (1.0 - f) + g_both[:, i + 1] * f) @ we
    return IsolationTables(trig_iso=trig, both=both)


def dxy_efficiency(det: dict[str, Any]) -> float:
    """P(|dxy| < 0.05 cm) of a prompt muon (Gaussian impact-parameter resolution)."""
    s = det["vertexing"]["dxy_sigma_cm"]
    return float(erf(DXY_CUT / (s * np.sqrt(2.0)))) if s > 0 else 1.0


def truth_efficiency(det: dict[str, Any], step: str, eta: Any, pt: Any, charge: Any, upar: Any = 0.0,
                     pt_reco: Any = None) -> np.ndarray:
    """The tag-and-probe efficiency of ``step`` for a prompt muon from a boson at generator-level
    (``eta``, ``pt``, ``charge``) and ``upar`` (boson q_T projected on the muon, GeV), with
    reconstructed pT ``pt_reco`` (default: ``pt``), for the detector card section ``det``: the
    probability that a probe of the step (as :data:`wmnb.conventions.TNP_STEPS` defines
    them) passes it.  Arrays broadcast.

    reco: standalone reconstruction; tracking: TRACK_EFF x global match; id: medium ID x
    P(|dxy| < 0.05); trigger: trigger muon x HLT isolation; isolation: P(offline isolation | HLT
    isolation); veto: the loose ID of a muon with an inner track (the W selection's second-muon
    veto).  The plateaus and pT shapes are functions of the generator pT, the trigger
    threshold turn-on and the isolations of the reconstructed one (as in the detector
    simulation), so given both the result is exact.  ``charge`` is ignored for the isolation,
    ``upar`` for the reco, tracking and ID steps."""
    if step not in STEPS:
        raise ValueError(f"unknown efficiency step {step!r}; choose one of {list(STEPS)}")
    eta, pt, charge, upar, pt_reco = (np.asarray(x, dtype=np.float64) for x in np.broadcast_arrays(
        eta, pt, charge, upar, pt if pt_reco is None else pt_reco))
    if step == "reco":
        return reco_efficiency(det, pt, eta, charge)
    if step == "tracking":
        return TRACK_EFF * tracking_efficiency(det, pt, eta, charge)
    if step == "id":
        return id_efficiency(det, pt, eta, charge) * dxy_efficiency(det)
    if step == "veto":
        return np.full(eta.shape, float(det["efficiency"]["loose_id"]))
    tables = isolation_tables(det)
    if step == "trigger":
        return trigger_muon_efficiency(det, pt, eta, charge, pt_reco) * tables.trigger(pt_reco, upar)
    return tables.isolation(pt_reco, upar)


# ------------------------------------------------------------------ binned truth scale factors

@dataclass(frozen=True)
class BinnedEfficiencies:
    """Truth efficiencies of one step in (eta, pT, charge[, u_par]) bins: ``eff_data``,
    ``eff_mc`` and ``sf`` = eff_data / eff_mc have shape (n_eta, n_pt, n_charge) or, with
    ``upar_edges``, (n_eta, n_pt, n_charge, n_upar); empty bins of a probe average are NaN.
    ``method`` is ``"bin-centre"`` or ``"probe-average"``; ``n_probes`` counts the probes per bin
    (probe average only)."""

    step: str
    eta_edges: np.ndarray
    pt_edges: np.ndarray
    charges: tuple[int, ...]
    upar_edges: np.ndarray | None
    eff_data: np.ndarray
    eff_mc: np.ndarray
    sf: np.ndarray
    method: str
    n_probes: np.ndarray | None = None


def _edges(x: Any, name: str) -> np.ndarray:
    e = np.asarray(x, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ValueError(f"{name} must be at least two increasing finite bin edges, got {x!r}")
    return e


def binned_efficiencies(det_data: dict[str, Any], det_mc: dict[str, Any], step: str, eta_edges: Any, pt_edges: Any,
                        charges: tuple[int, ...] = (-1, 1), upar_edges: Any = None,
                        probes: dict[str, Any] | None = None) -> BinnedEfficiencies:
    """:func:`truth_efficiency` of ``step`` for two detector cards and their ratio, per bin.

    Without ``probes``: at the bin centres, taken as both generator and reconstructed pT (u_par = 0
    when no ``upar_edges`` are given).  With ``probes`` (a mapping of arrays ``eta``, ``pt``,
    ``charge``, ``upar`` at generator level, optionally ``pt_reco`` (the reconstructed pT, default
    ``pt``), ``weight``, and the ``bin_eta``, ``bin_pt``, ``bin_charge``, ``bin_upar`` values that
    decide each probe's bin, by default ``eta``, ``pt_reco``, ``charge``, ``upar``): the average
    over the probes in each bin of each card's efficiency, the same probes for both cards.  That is what a tag-and-probe
    measurement in the bin estimates (the efficiency averaged over the bin's probe population), so
    it is the truth to compare a measured scale factor with; the bin centre is the truth of a
    smoothed scale factor evaluated there (the two differ at second order in the bin width where
    the efficiency curves, e.g. near the trigger threshold).  A pT measured differently for
    passing and failing probes (the tracking step's failing probes without an inner track carry
    the standalone pT) moves probes between bins unequally; bin such steps by a pT measured alike
    for both (generator-level in closure tests)."""
    if step not in STEPS:
        raise ValueError(f"unknown efficiency step {step!r}; choose one of {list(STEPS)}")
    ee, pe = _edges(eta_edges, "eta_edges"), _edges(pt_edges, "pt_edges")
    ue = None if upar_edges is None else _edges(upar_edges, "upar_edges")
    qs = tuple(int(q) for q in charges)
    if not qs or any(q not in (-1, 1) for q in qs):
        raise ValueError(f"charges must be a non-empty tuple of -1 and/or +1, got {charges!r}")
    shape = (ee.size - 1, pe.size - 1, len(qs)) + (() if ue is None else (ue.size - 1,))
    if probes is None:
        centres = [0.5 * (e[1:] + e[:-1]) for e in (ee, pe)]
        grids = np.meshgrid(centres[0], centres[1], np.asarray(qs, float),
                            0.5 * (ue[1:] + ue[:-1]) if ue is not None else np.zeros(1), indexing="ij")
        eta, pt, q, u = (g.reshape(shape) for g in grids)
        ed, em = (truth_efficiency(d, step, eta, pt, q, u) for d in (det_data, det_mc))
        with np.errstate(divide="ignore", invalid="ignore"):
            return BinnedEfficiencies(step, ee, pe, qs, ue, ed, em, ed / em, "bin-centre")
    missing = [k for k in ("eta", "pt", "charge", "upar") if k not in probes]
    if missing:
        raise KeyError(f"probes lack the generator-level arrays {missing} (need eta, pt, charge, upar)")
    val = {k: np.asarray(probes[k], dtype=np.float64) for k in ("eta", "pt", "charge", "upar")}
    n = val["eta"].size
    if any(v.shape != (n,) for v in val.values()):
        raise ValueError("the probes' eta, pt, charge and upar must be 1-d arrays of one length")
    w = np.asarray(probes.get("weight", np.ones(n)), dtype=np.float64)
    pt_reco = np.asarray(probes.get("pt_reco", val["pt"]), dtype=np.float64)
    if w.shape != (n,) or pt_reco.shape != (n,):
        raise ValueError("the probes' weight and pt_reco must be 1-d arrays of the probes' length")
    default = {**val, "pt": pt_reco}
    where = {k: np.asarray(probes.get(f"bin_{k}", default[k]), dtype=np.float64) for k in ("eta", "pt", "charge", "upar")}
    idx = [np.searchsorted(ee, where["eta"], side="right") - 1, np.searchsorted(pe, where["pt"], side="right") - 1,
           np.select([where["charge"] == q for q in qs], list(range(len(qs))), -1)]
    if ue is not None:
        idx.append(np.searchsorted(ue, where["upar"], side="right") - 1)
    ok = np.isfinite(w) & np.all([(i >= 0) & (i < m) for i, m in zip(idx, shape)], axis=0)
    ok &= np.all([np.isfinite(v) for v in val.values()], axis=0) & np.isfinite(pt_reco)
    flat = np.ravel_multi_index(tuple(i[ok] for i in idx), shape)
    size = int(np.prod(shape))
    den = np.bincount(flat, w[ok], size)
    count = np.bincount(flat, minlength=size)
    effs = []
    for d in (det_data, det_mc):
        e = truth_efficiency(d, step, val["eta"][ok], val["pt"][ok], val["charge"][ok], val["upar"][ok], pt_reco[ok])
        with np.errstate(divide="ignore", invalid="ignore"):
            effs.append(np.where(den > 0, np.bincount(flat, w[ok] * e, size) / den, np.nan).reshape(shape))
    with np.errstate(divide="ignore", invalid="ignore"):
        return BinnedEfficiencies(step, ee, pe, qs, ue, effs[0], effs[1], effs[0] / effs[1], "probe-average",
                                  count.reshape(shape))


__all__ = ["CHARGE_STEPS", "STEPS", "TRACK_EFF", "UPAR_STEPS", "BinnedEfficiencies", "IsolationTables",
           "binned_efficiencies", "id_efficiency",
           "isolation_tables", "pt_shape", "reco_efficiency", "step_efficiency", "tracking_efficiency",
           "trigger_muon_efficiency", "truth_efficiency"]
