"""Information on m_W per selected W -> mu nu event, computed from the generator's own functions.

Chapter 08's data-statistics uncertainty on m_W, scaled to the paper's 117 M selected events,
comes out well below the paper's 2.4 MeV.  This module finds out why without generating files:
it draws W+ and W- events in memory with the universe's own generator
(:func:`wmnb.universe.processes.generate_w_munu`) and detector
(:func:`wmnb.universe.detector.simulate`), applies the W selection of chapter 00/01 (one
trigger-matched medium muon, 26 < pT < 56 GeV, |eta| < 2.4, |dxy| < 0.05 cm, iso < 0.15,
m_T > 40 GeV, vetoes: the same cuts as :func:`wmnb.universe.validation.w_selection`), histograms
the muon in chapter 08's (eta, pT, charge) binning (48 x 30 x 2) and evaluates the Fisher
information on the W mass,

    I = sum_b (dn_b/dM)^2 / n_b,    dn_b/dM = sum_{i in b} w_i d ln BW(m_i; M, Gamma(M)) / dM,

with chapter 08's mass reweighting: the running-width Breit-Wigner of
:mod:`wmnb.conventions`, the width following the mass as M^3, the weights normalised over the
generator's mass window.  The finite sample adds noise sum_i (w_i d_i)^2 to each (dn_b/dM)^2; it
is subtracted (and the bin's denominator loses one event's weight accordingly), so the estimate
is unbiased (tested on a toy with an exactly computable answer).  The per-event resolution

    sigma_1 = sqrt(N_selected / I)    (GeV),    sigma(N) = sigma_1 / sqrt(N),

is independent of the luminosity: sigma(117 M) = sigma_1 / sqrt(117e6) is the number to compare
with the paper's 2.4 MeV (which counts every selected event, backgrounds included).  Backgrounds
enter as an extra term in n_b with a fixed shape and a chosen share of the selected sample
(:class:`Background`).

Everything the tool varies is a card knob: :func:`vary` returns a modified copy of a card, so a
variation that brings sigma(117 M) to the paper's value is a concrete proposal for the card.
Nothing here changes the generator.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from scipy import integrate

from ..conventions import GENERATED_MASS_RANGE_GEV, breit_wigner, breit_wigner_mass_density, width_for_mass
from . import detector as det_mod
from . import processes as proc
from .validation import ETA_EDGES, PAPER_SELECTED_W, PAPER_STAT_ERR_MEV, PT_EDGES

CHARGE_EDGES = np.array([-2.0, 0.0, 2.0])
SHAPE = (len(ETA_EDGES) - 1, len(PT_EDGES) - 1, 2)
BOSONS = ("wplus", "wminus")

#: The paper's selected sample (PHYSICS.md): 117 M events, 89 % W -> mu nu.
PAPER_SIGNAL_FRACTION = 0.89

#: Reference W q_T deciles at 13 TeV (GeV), facts from public CMS code: the 10 % quantiles of the
#: aMC@NLO W q_T used in CMS SMP-18-012 (the 2016 W helicity/rapidity measurement; WRemnants
#: ``common.py``, ``ptV_10quantiles_binning``), and the decile-like q_T binning of an earlier CMS
#: W-helicity framework (from 9.6 GeV up, rounded, these are the q_T edges of the paper's helicity
#: fit, PHYSICS.md).  The aMC@NLO set is the harder one; the data-like Z spectrum below lies
#: between the two.
REFERENCE_QT_DECILES = {
    "aMC@NLO (SMP-18-012)": (2.95, 4.73, 6.68, 8.98, 11.78, 15.33, 20.11, 27.17, 40.15),
    "helicity-fit deciles": (2.54, 4.22, 5.70, 7.54, 9.62, 12.37, 16.01, 21.35, 29.50),
}

#: Finer reference quantiles (GeV, equal-probability interior edges): the 5 % quantiles of the same
#: aMC@NLO W q_T (WRemnants ``ptV_20quantiles_binning``) and the approximate 2.5 % quantiles of the
#: selected CMS 2016 Z -> mu mu dimuon pT (``ptZ_binning``, SMP-25-016/017 detector-level fits).
REFERENCE_QT_QUANTILES = {
    "W aMC@NLO 5 %": (1.971, 2.949, 3.838, 4.733, 5.674, 6.684, 7.781, 8.979, 10.303, 11.777, 13.435, 15.332,
                      17.525, 20.115, 23.245, 27.173, 32.414, 40.151, 53.858),
    "Z data-like 2.5 %": (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5,
                          10.0, 10.5, 11.0, 11.5, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 22.0, 24.0,
                          26.0, 28.0, 30.0, 33.0, 37.0, 44.0),
}

#: Reference deciles of the *Z* dimuon pT (GeV) of the selected CMS 2016 Z -> mu mu sample: every
#: fourth edge of the "approximate 2.5 % quantiles" binning of the Z detector-level fits
#: (WRemnants ``ptZ_binning``, CMS SMP-25-016/017); its 97.5 % point is 44 GeV.  The Z is
#: measured directly in data, so this is the firmest anchor; the W is expected a little softer.
REFERENCE_Z_PTLL_DECILES = (2.5, 4.5, 6.5, 8.5, 10.5, 13.0, 17.0, 22.0, 30.0)


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class Cuts:
    """The W selection's kinematic cuts (GeV; PHYSICS.md)."""

    pt_min: float = 26.0
    pt_max: float = 56.0
    eta_max: float = 2.4
    mt_min: float = 40.0
    iso_max: float = 0.15


@dataclass
class WEvents:
    """The selected events of one W charge (arrays over selected events) and the counts behind
    the acceptance.  ``weight`` is per event in pb (cross section / generated events, times the
    prefiring weight), so sums are yields per pb^-1."""

    boson: str
    n_generated: int
    xsec_pb: float
    gen_mass: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    charge: np.ndarray
    weight: np.ndarray
    qt: np.ndarray
    y: np.ndarray
    n_kinematic: float  # (weighted) events whose post-FSR muon is inside the pT/eta window (no m_T cut)

    @property
    def acceptance(self) -> float:
        """Selected fraction of the produced events (acceptance x efficiency)."""
        return float(self.weight.sum() / self.xsec_pb)

    @property
    def kinematic_acceptance(self) -> float:
        """Fraction of produced events whose post-FSR muon lies in the pT/eta window."""
        return self.n_kinematic / self.n_generated


def _w_selection(reco: dict[str, Any], cuts: Cuts) -> tuple[np.ndarray, np.ndarray]:
    """(selected mask, slot of the selected muon) on :func:`detector.simulate` output; the cuts
    of :func:`wmnb.universe.validation.w_selection` on the unsorted muon slots."""
    mu, ex = reco["muon"], reco["muon_exists"]
    good = (ex & mu["mediumId"] & (np.abs(mu["dxy"]) < 0.05) & (mu["pt"] > cuts.pt_min)
            & (mu["pt"] < cuts.pt_max) & (np.abs(mu["eta"]) < cuts.eta_max))
    loose = ex & mu["looseId"] & (mu["pt"] > 15.0)
    el, eex = reco["electron"], reco["electron_exists"]
    n_ele = np.sum(eex & (el["pt"] > 10.0) & (el["cutBased"] >= 1), axis=1)
    slot = np.argmax(good, axis=1)
    rows = np.arange(slot.size)
    sc = reco["scalars"]
    pt, phi = mu["pt"][rows, slot], mu["phi"][rows, slot]
    mt = np.sqrt(np.maximum(2 * pt * sc["MET_pt"] * (1 - np.cos(phi - sc["MET_phi"])), 0.0))
    sel = (sc["HLT_IsoMu24"] & (good.sum(axis=1) == 1) & (loose.sum(axis=1) == 1) & (n_ele == 0)
           & mu["triggerMatch"][rows, slot] & (mu["pfRelIso04_all"][rows, slot] < cuts.iso_max)
           & (mt > cuts.mt_min))
    return sel, slot


def qt_quantile_weights(qt: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Per-event weights that make ``edges`` (k - 1 increasing positive q_T values) the
    equal-probability quantiles of the sample ``qt``: each of the k intervals (the last one open)
    gets weight 1/k, the shape inside an interval stays the sample's own.  With 9 edges these are
    deciles.  The weights average to one over ``qt``."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 1 or np.any(np.diff(e) <= 0) or e[0] <= 0:
        raise ValueError(f"quantile edges must be increasing positive q_T values, got {list(edges)}")
    k = e.size + 1
    idx = np.searchsorted(e, qt, side="right")
    frac = np.bincount(idx, minlength=k) / qt.size
    if np.any(frac == 0):
        raise ValueError("a quantile interval holds no generated event: use more events")
    return (1.0 / k) / frac[idx]


def simulate_w(card: dict[str, Any], boson: str, n: int, seed: int, cuts: Cuts = Cuts(),
               level: str = "reco", qt_quantiles: Sequence[float] | None = None) -> WEvents:
    """Generate ``n`` W -> mu nu events of ``boson`` ("wplus"/"wminus") with the card's physics
    and select them.

    ``level="reco"``: the card's detector (:func:`detector.simulate`, simulation mode) and the
    full W selection.  ``level="gen"``: the post-FSR generator muon and the generator neutrino
    (m_T from the two), only the kinematic cuts: the information the physics alone carries.
    ``qt_quantiles`` reweights the generated q_T spectrum to those equal-probability quantiles
    (:func:`qt_quantile_weights`), independently of the card's functional form."""
    if boson not in BOSONS:
        raise ValueError(f"boson must be one of {BOSONS}, got {boson!r}")
    if level not in ("reco", "gen"):
        raise ValueError(f"level must be 'reco' or 'gen', got {level!r}")
    if n < 1:
        raise ValueError(f"n must be a positive number of events, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), BOSONS.index(boson)]))
    phys = card["physics"]
    truth = proc.generate_w_munu(rng, n, phys, boson)
    mu = truth.mu_p4[:, 0]
    gpt = np.hypot(mu[:, 1], mu[:, 2])
    geta = np.arcsinh(mu[:, 3] / np.maximum(gpt, 1e-9))
    qt_w = qt_quantile_weights(truth.theory["qt"], qt_quantiles) if qt_quantiles is not None else np.ones(n)
    in_window = (gpt > cuts.pt_min) & (gpt < cuts.pt_max) & (np.abs(geta) < cuts.eta_max)
    if level == "reco":
        reco = det_mod.simulate(truth, card["detector"], rng, is_data=False)
        sel, slot = _w_selection(reco, cuts)
        rows = np.flatnonzero(sel)
        m = reco["muon"]
        pt, eta, q = m["pt"][rows, slot[rows]], m["eta"][rows, slot[rows]], m["charge"][rows, slot[rows]]
        wgt = reco["scalars"]["L1PreFiringWeight_Nom"][rows]
    else:
        nu_pt, nu_phi = truth.gen["pt"][:, 2], truth.gen["phi"][:, 2]
        mt = np.sqrt(np.maximum(2 * gpt * nu_pt * (1 - np.cos(np.arctan2(mu[:, 2], mu[:, 1]) - nu_phi)), 0.0))
        rows = np.flatnonzero(in_window & (mt > cuts.mt_min))
        pt, eta, q = gpt[rows], geta[rows], truth.mu_charge[rows, 0]
        wgt = np.ones(rows.size)
    xsec = float(phys["xsec_pb"][f"{boson}_munu"])
    return WEvents(boson=boson, n_generated=n, xsec_pb=xsec, gen_mass=truth.genv["mass"][rows],
                   pt=pt, eta=eta, charge=q.astype(np.int64), weight=wgt * qt_w[rows] * xsec / n,
                   qt=truth.theory["qt"][rows], y=truth.theory["y"][rows],
                   n_kinematic=float(np.sum(qt_w[in_window])))


# ------------------------------------------------------------------ Fisher information


def mass_score(gen_mass: np.ndarray, mass: float, width: float, step: float = 1e-3,
               sm_width: bool = True) -> np.ndarray:
    """d ln w / dM (1/GeV) per event of chapter 08's normalised Breit-Wigner weight
    w = BW(m; M', Gamma') / BW(m; M, Gamma) x (window integral ratio), at M' = M.

    Central difference of ln BW with ``step`` (GeV); the width follows the mass as M^3 when
    ``sm_width`` (chapter 08's default), else it is fixed.  The normalisation term makes the
    weights average to one over the generated line shape on the generator's mass window."""
    m = np.asarray(gen_mass, dtype=np.float64)

    def gamma(mm: float) -> float:
        return width_for_mass(mm, mass, width) if sm_width else width

    lo, hi = GENERATED_MASS_RANGE_GEV

    def log_norm(mm: float) -> float:
        g = gamma(mm)
        val, _ = integrate.quad(lambda x: float(breit_wigner_mass_density(np.asarray(x), mm, g)), lo, hi,
                                points=[mm - 5 * g, mm, mm + 5 * g], limit=400, epsabs=0.0, epsrel=1e-12)
        return float(np.log(val))

    up, dn = mass + step, mass - step
    d_bw = (np.log(breit_wigner(m, up, gamma(up))) - np.log(breit_wigner(m, dn, gamma(dn)))) / (2 * step)
    d_norm = (log_norm(up) - log_norm(dn)) / (2 * step)
    return d_bw - d_norm


def histogram(eta: np.ndarray, pt: np.ndarray, charge: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted (eta, pT, charge) histogram in chapter 08's binning (48 x 30 x 2)."""
    h, _ = np.histogramdd((eta, pt, charge.astype(np.float64)), bins=(ETA_EDGES, PT_EDGES, CHARGE_EDGES),
                          weights=weights)
    return h


@dataclass(frozen=True)
class Background:
    """A background of fixed (eta, pT, charge) ``shape`` that makes up ``fraction`` of the
    selected sample (signal + background)."""

    shape: np.ndarray
    fraction: float

    def __post_init__(self) -> None:
        if np.shape(self.shape) != SHAPE:
            raise ValueError(f"background shape must have shape {SHAPE}, got {np.shape(self.shape)}")
        if not (0.0 <= self.fraction < 1.0):
            raise ValueError(f"background fraction must be in [0, 1), got {self.fraction}")
        if np.any(np.asarray(self.shape) < 0) or not np.sum(self.shape) > 0:
            raise ValueError("background shape must be non-negative with a positive sum")

    def counts(self, signal_total: float) -> np.ndarray:
        """Background per bin for a signal of ``signal_total`` selected events."""
        s = np.asarray(self.shape, dtype=np.float64)
        return s / s.sum() * signal_total * self.fraction / (1.0 - self.fraction)


@dataclass
class FisherResult:
    """Information on the W mass per selected event and what it scales to."""

    sigma1_gev: float          # sqrt(N_selected / I): per selected event, backgrounds included
    stat_err_117m_mev: float   # sigma1 / sqrt(117e6)
    ratio_to_paper: float      # stat_err_117m_mev / 2.4
    n_selected: float          # selected yield (signal + background) per pb^-1
    signal_fraction: float
    noise_fraction: float      # share of the raw sum of squares that was sampling noise
    float_norm: bool
    acceptance: dict[str, float] = field(default_factory=dict)
    kinematic_acceptance: dict[str, float] = field(default_factory=dict)

    def stat_err_mev(self, n_events: float) -> float:
        """sigma(m_W) in MeV for ``n_events`` selected events."""
        return 1e3 * self.sigma1_gev / np.sqrt(n_events)


def fisher_information(samples: Sequence[WEvents], mass: float, width: float,
                       background: Background | None = None, float_norm: bool = False,
                       sm_width: bool = True) -> FisherResult:
    """Fisher information on m_W of the selected ``samples`` (both charges together), with the
    mass hypothesis (``mass``, ``width``) in GeV that the templates are reweighted from.

    ``float_norm`` profiles a free signal normalisation (chapter 08's stat-only fit has none, so
    the default matches it; a free normalisation removes the information carried by the
    acceptance's own mass dependence: 2 % on sigma_1 for the shipped card, up to 5 % with a
    harder q_T)."""
    if not samples:
        raise ValueError("fisher_information needs at least one sample of selected events")
    s = np.zeros(SHAPE)
    s2 = np.zeros(SHAPE)
    d = np.zeros(SHAPE)
    v = np.zeros(SHAPE)
    for ev in samples:
        r = mass_score(ev.gen_mass, mass, width, sm_width=sm_width)
        s += histogram(ev.eta, ev.pt, ev.charge, ev.weight)
        s2 += histogram(ev.eta, ev.pt, ev.charge, ev.weight**2)
        d += histogram(ev.eta, ev.pt, ev.charge, ev.weight * r)
        v += histogram(ev.eta, ev.pt, ev.charge, (ev.weight * r) ** 2)
    sig_total = float(s.sum())
    if not sig_total > 0:
        raise ValueError("no selected signal events: cannot compute the information")
    b = background.counts(sig_total) if background is not None else np.zeros(SHAPE)
    n = s + b
    ok = n > 0
    raw = float(np.sum(d[ok] ** 2 / n[ok]))
    # Unbiased per bin: d^2 - v keeps only the products of different events, k(k-1) terms for k
    # events, so the signal in the denominator loses one event's weight (k - 1 instead of k);
    # dividing by the plain n_b would bias the information low by 1/k per bin.
    den = s - np.divide(s2, s, out=np.zeros(SHAPE), where=s > 0) + b
    good = ok & (den > 0)
    i_mm = float(np.sum((d[good] ** 2 - v[good]) / den[good]))
    if float_norm:
        i_mn = float(np.sum(d[ok] * s[ok] / n[ok]))
        i_nn = float(np.sum(s[ok] ** 2 / n[ok]))
        i_mm = i_mm - i_mn**2 / i_nn
    if not i_mm > 0:
        raise ValueError("the sample is too small: the noise-corrected information is not positive")
    n_sel = float(n.sum())
    sigma1 = float(np.sqrt(n_sel / i_mm))
    err = 1e3 * sigma1 / np.sqrt(PAPER_SELECTED_W)
    return FisherResult(sigma1_gev=sigma1, stat_err_117m_mev=err, ratio_to_paper=err / PAPER_STAT_ERR_MEV,
                        n_selected=n_sel, signal_fraction=sig_total / n_sel, noise_fraction=1.0 - i_mm / raw,
                        float_norm=float_norm,
                        acceptance={ev.boson: ev.acceptance for ev in samples},
                        kinematic_acceptance={ev.boson: ev.kinematic_acceptance for ev in samples})


def card_fisher(card: dict[str, Any], n: int, seed: int, cuts: Cuts = Cuts(), level: str = "reco",
                background: Background | None = None, float_norm: bool = False,
                qt_quantiles: Sequence[float] | None = None) -> tuple[FisherResult, list[WEvents]]:
    """:func:`simulate_w` for W+ and W- (``n`` events each) and their :func:`fisher_information`,
    the templates reweighted from the card's own m_W and Gamma_W."""
    samples = [simulate_w(card, b, n, seed, cuts=cuts, level=level, qt_quantiles=qt_quantiles) for b in BOSONS]
    phys = card["physics"]
    res = fisher_information(samples, phys["mw_mev"] / 1e3, phys["gw_mev"] / 1e3, background=background,
                             float_norm=float_norm)
    return res, samples


# ------------------------------------------------------------------ spectra


def qt_spectrum_quantiles(card: dict[str, Any], boson: str, n: int = 400_000, seed: int = 1,
                          probs: Iterable[float] = np.arange(0.1, 0.95, 0.1)) -> np.ndarray:
    """Quantiles of the generated W q_T (GeV), inclusive, from the card's q_T and rapidity
    densities (:mod:`wmnb.universe.physics`)."""
    from . import physics as ph

    tp = ph.theory_point(card["physics"], boson)
    rng = np.random.default_rng(seed)
    y = ph.sample_y(rng, n, tp)
    return np.quantile(ph.sample_qt(rng, y, tp), list(probs))


# ------------------------------------------------------------------ card variations


def vary(card: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``card`` with ``changes`` applied: keys are dotted paths
    (``"physics.qt.matching.fo_norm"``); a value is either the new value or a callable of the old one
    (``lambda x: 1.5 * x``; list values are mapped element-wise).  Unknown paths raise."""
    out = copy.deepcopy(card)
    for path, change in changes.items():
        keys = path.split(".")
        node = out
        for k in keys[:-1]:
            if not isinstance(node, dict) or k not in node:
                raise KeyError(f"card has no key {path!r} (missing {k!r})")
            node = node[k]
        last = keys[-1]
        if not isinstance(node, dict) or last not in node:
            raise KeyError(f"card has no key {path!r} (missing {last!r})")
        old = node[last]
        if callable(change):
            node[last] = [change(x) for x in old] if isinstance(old, list) else change(old)
        else:
            node[last] = change
    return out


def scale_resolution(factor: float) -> dict[str, Callable[[Any], Any]]:
    """Changes that multiply the muon pT resolution by ``factor`` at every pT and eta (the a, b,
    c terms of (sigma/pT)^2 = a^2 + c^2 pT^2 + b^2/(1 + d^2/pT^2) together)."""
    def scaled(x: Any) -> Any:
        return factor * x

    return {f"detector.resolution.{t}": scaled for t in "abc"}


#: Key of a variation that reweights the generated q_T to given equal-probability quantiles
#: instead of changing the card.
QT_QUANTILES = "qt_quantiles"

#: The one-at-a-time variations of :func:`run_variations`: name -> card changes.
VARIATIONS: dict[str, dict[str, Any]] = {
    "nominal": {},
    # q_T model of universe v2 (wmnb.universe.qtmodel): the fixed-order tail and the cusp term
    "q_T tail harder: matching fo_norm x1.5": {"physics.qt.matching.fo_norm": lambda x: 1.5 * x},
    "q_T tail softer: matching fo_norm x0.67": {"physics.qt.matching.fo_norm": lambda x: x / 1.5},
    "q_T bulk: intrinsic kT (W) x2": {"physics.qt.nonperturbative.kt_w": lambda x: 2.0 * x},
    "q_T reweighted to helicity-fit deciles": {QT_QUANTILES: REFERENCE_QT_DECILES["helicity-fit deciles"]},
    "q_T reweighted to aMC@NLO deciles": {QT_QUANTILES: REFERENCE_QT_DECILES["aMC@NLO (SMP-18-012)"]},
    "q_T reweighted to the data-like Z deciles": {QT_QUANTILES: REFERENCE_Z_PTLL_DECILES},
    "q_T reweighted to the data-like Z 2.5 % quantiles": {QT_QUANTILES: REFERENCE_QT_QUANTILES["Z data-like 2.5 %"]},
    "q_T reweighted to aMC@NLO 5 % quantiles": {QT_QUANTILES: REFERENCE_QT_QUANTILES["W aMC@NLO 5 %"]},
    "rapidity wider: beta x1.25": {"physics.rapidity.wplus.beta": lambda x: 1.25 * x,
                                   "physics.rapidity.wminus.beta": lambda x: 1.25 * x},
    "rapidity narrower: beta x0.8": {"physics.rapidity.wplus.beta": lambda x: 0.8 * x,
                                     "physics.rapidity.wminus.beta": lambda x: 0.8 * x},
    "resolution x0 (perfect)": scale_resolution(0.0),
    "resolution x1.5": scale_resolution(1.5),
    "resolution x2": scale_resolution(2.0),
    "FSR off": {"physics.fsr.strength": 0.0},
    "FSR x2": {"physics.fsr.strength": 2.0},
    "W width 2085 -> 2500 MeV": {"physics.gw_mev": 2500.0},
    "recoil resolution x2": {"detector.recoil.sigma0": lambda x: 2.0 * x, "detector.recoil.sigma_pu": lambda x: 2.0 * x},
    "no A_i (a0..a4 = 0)": {"physics.angular.a0": 0.0, "physics.angular.a1": 0.0, "physics.angular.a2": 0.0,
                            "physics.angular.a3": 0.0, "physics.angular.a4_w": 0.0},
    "combined: helicity-fit q_T deciles + beta x1.2 + recoil x2": {
        QT_QUANTILES: REFERENCE_QT_DECILES["helicity-fit deciles"],
        "physics.rapidity.wplus.beta": lambda x: 1.2 * x, "physics.rapidity.wminus.beta": lambda x: 1.2 * x,
        "detector.recoil.sigma0": lambda x: 2.0 * x, "detector.recoil.sigma_pu": lambda x: 2.0 * x},
    "combined: aMC@NLO q_T deciles + beta x1.2 + recoil x2": {
        QT_QUANTILES: REFERENCE_QT_DECILES["aMC@NLO (SMP-18-012)"],
        "physics.rapidity.wplus.beta": lambda x: 1.2 * x, "physics.rapidity.wminus.beta": lambda x: 1.2 * x,
        "detector.recoil.sigma0": lambda x: 2.0 * x, "detector.recoil.sigma_pu": lambda x: 2.0 * x},

}


def iter_variations(card: dict[str, Any], n: int, seed: int, names: Sequence[str] | None = None,
                    background: Background | None = None, level: str = "reco") -> Iterator[dict[str, Any]]:
    """One row per variation of :data:`VARIATIONS` (or ``names``), as each is done: sigma(117 M),
    the ratio to the paper, the acceptance and the q_T median of the varied card."""
    names = list(names) if names is not None else list(VARIATIONS)
    unknown = [x for x in names if x not in VARIATIONS]
    if unknown:
        raise KeyError(f"unknown variation(s) {unknown}; choose from {sorted(VARIATIONS)}")
    for name in names:
        changes = dict(VARIATIONS[name])
        quantiles = changes.pop(QT_QUANTILES, None)
        c = vary(card, changes)
        res, samples = card_fisher(c, n, seed, level=level, background=background, qt_quantiles=quantiles)
        phys = c["physics"]
        free = fisher_information(samples, phys["mw_mev"] / 1e3, phys["gw_mev"] / 1e3, background=background,
                                  float_norm=True)
        tot_xs = sum(ev.xsec_pb for ev in samples)
        acc = sum(ev.weight.sum() for ev in samples) / tot_xs
        kin = sum(ev.kinematic_acceptance * ev.xsec_pb for ev in samples) / tot_xs
        sel_qt = np.concatenate([ev.qt for ev in samples])
        sel_w = np.concatenate([ev.weight for ev in samples])
        order = np.argsort(sel_qt)
        cdf = np.cumsum(sel_w[order]) / sel_w.sum()
        yield {"variation": name, "sigma1_gev": round(res.sigma1_gev, 3),
               "stat_err_117M_mev": round(res.stat_err_117m_mev, 3), "ratio_to_paper": round(res.ratio_to_paper, 3),
               "stat_err_117M_float_norm_mev": round(free.stat_err_117m_mev, 3),
               "acceptance": round(float(acc), 4), "kinematic_acceptance": round(float(kin), 4),
               "selected_qt_median": round(float(np.interp(0.5, cdf, sel_qt[order])), 2),
               "noise_fraction": round(res.noise_fraction, 3)}


def run_variations(card: dict[str, Any], n: int, seed: int, names: Sequence[str] | None = None,
                   background: Background | None = None, level: str = "reco") -> list[dict[str, Any]]:
    """:func:`iter_variations` as a list."""
    return list(iter_variations(card, n, seed, names=names, background=background, level=level))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wmnb.universe.sensitivity [--n N] [--seed S] [--card NAME] [--level reco|gen]
    [--background TEMPLATES.h5] [--only NAME ...]``: print the variation table as JSON lines.

    ``--background`` takes a chapter-08 ``templates.h5`` and uses its non-W processes as the
    background shape, at their share of that file's prediction (the universe's composition)."""
    import argparse

    from .card import load_card

    ap = argparse.ArgumentParser(prog="python -m wmnb.universe.sensitivity")
    ap.add_argument("--n", type=int, default=1_000_000, help="events per W charge")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--card", default="nominal")
    ap.add_argument("--level", default="reco", choices=("reco", "gen"))
    ap.add_argument("--background", default=None)
    ap.add_argument("--fraction", type=float, default=None,
                    help=f"background share (default: the file's; the paper's is {1 - PAPER_SIGNAL_FRACTION:.2f})")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args(argv)
    bkg = None
    if args.background:
        bkg = background_from_templates(args.background, args.fraction)
        print(json.dumps({"background_fraction": bkg.fraction}), flush=True)
    for row in iter_variations(load_card(args.card), args.n, args.seed, names=args.only, background=bkg,
                               level=args.level):
        print(json.dumps(row), flush=True)
    return 0


def background_from_templates(path: str, fraction: float | None = None) -> Background:
    """The non-W-signal processes of a chapter-08 ``templates.h5`` as a :class:`Background`
    (their summed shape; ``fraction`` defaults to their share of the file's prediction)."""
    from ..histio import load_hists

    h = load_hists(path)
    signal = ("wplus_munu", "wminus_munu")
    names = [k for k in h if k != "data" and "_mass" not in k and k not in signal]
    if not names:
        raise ValueError(f"{path} holds no background process (only {sorted(h)})")
    bkg = np.sum([np.asarray(h[k].values(), dtype=np.float64) for k in names], axis=0)
    sig = np.sum([np.asarray(h[k].values(), dtype=np.float64) for k in signal], axis=0)
    frac = float(bkg.sum() / (bkg.sum() + sig.sum())) if fraction is None else fraction
    return Background(shape=np.asarray(bkg, dtype=np.float64), fraction=frac)


__all__ = ["Background", "Cuts", "FisherResult", "REFERENCE_QT_DECILES", "REFERENCE_QT_QUANTILES",
           "REFERENCE_Z_PTLL_DECILES", "VARIATIONS", "WEvents", "background_from_templates", "card_fisher",
           "fisher_information", "histogram", "iter_variations", "mass_score", "qt_quantile_weights", "qt_spectrum_quantiles",
           "run_variations", "scale_resolution", "simulate_w", "vary"]

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
