"""Measurements on the universe's theory model (for its tests and for chapter 00's report).

* :func:`qt_shape`: expected fractions of a boson's events in q_T (and |y|) bins at a card's
  physics, exact for the simulation's family and numerical for a data point with the
  beyond-family smearing.
* :func:`derivative_overlaps`: the Fisher-metric cosines between the q_T-shape derivatives of card
  knobs and the condition number of their Gram matrix: a model whose knobs enter through one
  combination (the previous ``q0``) has cosines of 1.
* :func:`family_fit`: the best fit of the simulation's q_T family (its knobs floated) to a target
  spectrum, as chi2/ndf at a stated number of events.
* :func:`mw_bias_from_qt`: the generator-level m_W bias of fitting muon (eta, pT) templates of the
  simulation to pseudo-data that differ only by the data's q_T(|y) spectrum.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..conventions import MUON_MASS, dlog_breit_wigner_dmass
from . import kinematics as kin
from . import physics as ph
from . import qtmodel

#: Knobs of the simulation's q_T family that a theory model would float (card paths below
#: ``physics``); per boson the intrinsic kT of the other boson is left out (it does not act).
QT_FAMILY_KNOBS = ("qt.resummation.cusp", "qt.resummation.noncusp", "qt.nonperturbative.cs_kernel",
                   "qt.nonperturbative.kt_w", "qt.nonperturbative.kt_z", "qt.matching.scale",
                   "qt.matching.fo_power", "qt.matching.fo_norm", "qt.matching.fo_falloff", "qt.y_slope")

QT_EDGES = np.concatenate([np.arange(0.0, 100.0 + 1e-9, 1.0), [150.0, 1.5 * qtmodel.QT_MAX]])   # q_T < s(y) QT_MAX
SMEAR_QT_MAX = 60.0   # GeV: the data-only smearing is evaluated numerically below this q_T
ABSY_EDGES = np.concatenate([np.arange(0.0, 2.5 + 1e-9, 0.25), [3.0, 3.5, 4.0, ph.Y_MAX]])


def knobs_for(boson: str, knobs: Sequence[str] = QT_FAMILY_KNOBS) -> list[str]:
    """``knobs`` without the intrinsic kT of the other boson."""
    other = "qt.nonperturbative.kt_z" if boson != "z" else "qt.nonperturbative.kt_w"
    return [k for k in knobs if k != other]


def with_knobs(physics: dict[str, Any], values: dict[str, float]) -> dict[str, Any]:
    """A deep copy of ``physics`` with card paths (below ``physics``) set to ``values``."""
    out = copy.deepcopy(physics)
    for path, v in values.items():
        node = out
        *head, leaf = path.split(".")
        for k in head:
            node = node[k]
        if leaf not in node:
            raise KeyError(f"no card knob 'physics.{path}'")
        node[leaf] = float(v)
    return out


def get_knob(physics: dict[str, Any], path: str) -> float:
    node: Any = physics
    for k in path.split("."):
        node = node[k]
    return float(node)


def _y_nodes(lo: float, hi: float, step: float = 0.05) -> np.ndarray:
    n = max(2, int(np.ceil((hi - lo) / step)))
    return lo + (np.arange(n) + 0.5) * (hi - lo) / n


def qt_shape(physics: dict[str, Any], boson: str, qt_edges: np.ndarray = QT_EDGES,
             absy_edges: np.ndarray | None = None) -> np.ndarray:
    """Fractions of the boson's events in ``qt_edges`` bins (y-integrated with the card's
    rapidity density), or in (|y|, q_T) bins (shape (n_y, n_qt)) with ``absy_edges``; they sum
    to 1 over the whole range.  Exact (cumulatives) for a family point; for a point with the
    data-only smearing, by :func:`wmnb.universe.qtmodel.smeared_density` on |y| nodes."""
    tp = ph.theory_point(physics, boson)
    ay = np.array([0.0, ph.Y_MAX]) if absy_edges is None else np.asarray(absy_edges, dtype=float)
    out = np.zeros((ay.size - 1, qt_edges.size - 1))
    for j in range(ay.size - 1):
        nodes = _y_nodes(ay[j], ay[j + 1], 0.05 if tp.qt.kt_smear == 0 else 0.25)
        wy = 2.0 * ph.y_density(nodes, tp) * (ay[j + 1] - ay[j]) / nodes.size   # p(|y|) dy
        for y, w in zip(nodes, wy):
            out[j] += w * _qt_fractions(qt_edges, float(y), tp.qt)
    return out[0] if absy_edges is None else out


def _qt_fractions(edges: np.ndarray, y: float, qp: qtmodel.QtParams) -> np.ndarray:
    if qp.kt_smear == 0:
        s = float(qtmodel.scale(np.array([y]), qp)[0])
        return np.diff(qtmodel.base_cdf(edges / s, qp))
    s = float(qtmodel.scale(np.array([y]), qp)[0])
    fine = np.concatenate([np.arange(0.0, SMEAR_QT_MAX, 0.1), s * qtmodel.GRID[s * qtmodel.GRID >= SMEAR_QT_MAX]])
    d = np.empty(fine.size)
    low = fine < SMEAR_QT_MAX
    d[low] = qtmodel.smeared_density(fine[low], y, qp)
    # above SMEAR_QT_MAX a smearing of ~1 GeV changes the smooth tail by ~ sigma^2/q^2 < 1e-3
    base = replace(qp, kt_smear=0.0)
    d[~low] = qtmodel.density(fine[~low], np.full((~low).sum(), y), base)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (d[1:] + d[:-1]) * np.diff(fine))])
    return np.diff(np.interp(edges, fine, cdf / cdf[-1]))


def derivative_overlaps(physics: dict[str, Any], boson: str, knobs: Sequence[str],
                        qt_edges: np.ndarray = QT_EDGES, rel_step: float = 0.05) -> tuple[np.ndarray, float]:
    """(cosine matrix, condition number) of the knobs' q_T-shape derivatives in the Fisher metric
    (each derivative divided by sqrt of the expected fraction per bin, then normalised)."""
    n0 = qt_shape(physics, boson, qt_edges)
    rows = []
    for k in knobs:
        v = get_knob(physics, k)
        h = max(abs(v) * rel_step, 1e-3)
        up = qt_shape(with_knobs(physics, {k: v + h}), boson, qt_edges)
        dn = qt_shape(with_knobs(physics, {k: v - h}), boson, qt_edges)
        rows.append((up - dn) / (2 * h) / np.sqrt(np.maximum(n0, 1e-300)))
    d = np.array(rows)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    gram = d @ d.T
    return gram, float(np.linalg.cond(gram))


def family_fit(target: np.ndarray, physics: dict[str, Any], boson: str, knobs: Sequence[str],
               n_events: float, qt_edges: np.ndarray = QT_EDGES,
               absy_edges: np.ndarray | None = None) -> tuple[float, dict[str, float]]:
    """Fit the simulation's family (``physics`` with ``knobs`` floated) to the ``target``
    fractions (shape as :func:`qt_shape`) scaled to ``n_events``; returns (chi2/ndf of the
    noise-free target, i.e. the excess over statistics, best knob values).  Bins with fewer than
    1 expected event are left out."""
    from scipy.optimize import least_squares

    t = np.asarray(target, dtype=float).ravel() * n_events
    use = t >= 1.0
    start = np.array([get_knob(physics, k) for k in knobs])
    scale = np.maximum(np.abs(start) * 0.1, 0.01)

    def model(x: np.ndarray) -> np.ndarray:
        p = with_knobs(physics, dict(zip(knobs, x)))
        return qt_shape(p, boson, qt_edges, absy_edges).ravel() * n_events

    def resid(x: np.ndarray) -> np.ndarray:
        try:
            m = model(x)
        except ValueError:            # outside the model's validity (QtParams checks)
            return np.full(int(use.sum()), 1e3)
        return (m - t)[use] / np.sqrt(t[use])

    r = least_squares(resid, start, x_scale=scale, method="trf")
    ndf = int(use.sum()) - len(knobs)
    return float(np.sum(r.fun**2) / ndf), dict(zip(knobs, map(float, r.x)))


def _qt_ratio_grid(sim: dict[str, Any], data: dict[str, Any], boson: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|y| nodes, q_T nodes, p_data/p_sim on them) of the conditional q_T densities."""
    ys = np.arange(0.0, ph.Y_MAX + 1e-9, 0.125)
    qs = np.concatenate([np.arange(0.0, 100.0, 0.1), np.arange(100.0, 1.5 * qtmodel.QT_MAX + 1e-9, 2.0)])
    tps, tpd = ph.theory_point(sim, boson), ph.theory_point(data, boson)
    ratio = np.ones((ys.size, qs.size))
    for i, y in enumerate(ys):
        ps = qtmodel.density(qs, np.full(qs.size, y), tps.qt)
        pd = qtmodel.smeared_density(qs, float(y), tpd.qt) if tpd.qt.kt_smear > 0 else \
            qtmodel.density(qs, np.full(qs.size, y), tpd.qt)
        ratio[i] = np.where(ps > 0, pd / np.where(ps > 0, ps, 1.0), 1.0)
    ratio[:, 0] = ratio[:, 1]
    return ys, qs, ratio


def mw_bias_from_qt(sim: dict[str, Any], data: dict[str, Any], n: int = 1_000_000, seed: int = 1,
                    pt_range: tuple[float, float] = (26.0, 56.0)) -> dict[str, float]:
    """Generator-level m_W bias (MeV) of the q_T(|y) difference alone: W events of the
    simulation (``sim`` physics; muon before FSR, 26 < pT < 56 GeV, |eta| < 2.4, 48 x 30 (eta, pT)
    bins) reweighted by p_data(q_T|y)/p_sim(q_T|y) are fitted with the simulation's templates
    and their Breit-Wigner mass derivative (linear chi2, the simulation's statistics as the
    variance).  Returns the fitted shift per charge and for both charges together; positive: the
    uncorrected fit returns a larger m_W than the truth."""
    eta_edges = np.linspace(-2.4, 2.4, 49)
    pt_edges = np.linspace(pt_range[0], pt_range[1], 31)
    out: dict[str, float] = {}
    num = den = 0.0
    for k, boson in enumerate(("wplus", "wminus")):
        rng = np.random.default_rng([seed, k])
        tp = ph.theory_point(sim, boson)
        m = ph.sample_mass(rng, n, tp)
        y = ph.sample_y(rng, n, tp)
        qt = ph.sample_qt(rng, y, tp)
        cos_t, phi_cs = ph.sample_angles(rng, ph.angular_coefficients(qt, y, tp))
        p4 = kin.boson_p4(m, qt, y, rng.uniform(-np.pi, np.pi, n))
        mu, _ = kin.decay_two_body(p4, cos_t, phi_cs, MUON_MASS, 0.0)
        pt, eta, _ = kin.pt_eta_phi(mu)
        sel = (pt > pt_range[0]) & (pt < pt_range[1]) & (np.abs(eta) < 2.4)
        ys, qs, ratio = _qt_ratio_grid(sim, data, boson)
        w = _bilinear(ys, qs, ratio, np.abs(y[sel]), qt[sel])
        dm = dlog_breit_wigner_dmass(m[sel], tp.mass, tp.width) * 1e-3      # per MeV
        args = (eta[sel], pt[sel])
        h0, _, _ = np.histogram2d(*args, bins=(eta_edges, pt_edges))
        h1, _, _ = np.histogram2d(*args, bins=(eta_edges, pt_edges), weights=w)
        d, _, _ = np.histogram2d(*args, bins=(eta_edges, pt_edges), weights=dm)
        ok = h0 > 0
        h0, h1, d = h0[ok], h1[ok], d[ok]
        # the normalisation floats in the fit: project it out of the mass derivative
        d = d - h0 * d.sum() / h0.sum()
        a = float(np.sum((h1 - h0) * d / h0))
        b = float(np.sum(d * d / h0))
        out[boson] = a / b
        num += a
        den += b
    out["both"] = num / den
    return out


def _bilinear(xs: np.ndarray, ys: np.ndarray, z: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    i = np.clip(np.searchsorted(xs, x) - 1, 0, xs.size - 2)
    j = np.clip(np.searchsorted(ys, y) - 1, 0, ys.size - 2)
    tx = np.clip((x - xs[i]) / (xs[i + 1] - xs[i]), 0.0, 1.0)
    ty = np.clip((y - ys[j]) / (ys[j + 1] - ys[j]), 0.0, 1.0)
    return ((1 - tx) * (1 - ty) * z[i, j] + tx * (1 - ty) * z[i + 1, j]
            + (1 - tx) * ty * z[i, j + 1] + tx * ty * z[i + 1, j + 1])
