"""Small, fast models for tests, examples and benchmarks of the fitter.

:func:`wmass_toy` is a miniature of the W-mass fit: muon (eta, pT, charge) templates from a
quick W -> mu nu simulation, a mass POI from Breit-Wigner reweighting by +-100 MeV, efficiency-
and scale-like nuisances, a background and MC statistical uncertainties. :func:`expected_at_mass`
gives the exact expectation at any mass (reweighting the same events), not an interpolation,
so injection tests probe the fitter's template interpolation honestly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..conventions import W_WIDTH_PDG, breit_wigner
from .model import Model, ModelBuilder

MW0, GW = 80.379, W_WIDTH_PDG


@dataclass
class WToy:
    """Events and binning of :func:`wmass_toy` (kept to reweight to other masses)."""

    m: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    q: np.ndarray
    edges: tuple[np.ndarray, np.ndarray, np.ndarray]
    scale: float

    def hist(self, weights: np.ndarray | None = None) -> np.ndarray:
        h = np.histogramdd((self.eta, self.pt, self.q), bins=self.edges, weights=weights)[0]
        return h.ravel() * self.scale

    def mass_weights(self, delta_gev: float) -> np.ndarray:
        """Breit-Wigner reweighting of the generated mass to M0 + delta."""
        return breit_wigner(self.m, MW0 + delta_gev, GW) / breit_wigner(self.m, MW0, GW)


def muon_kinematics(m: np.ndarray, qt: np.ndarray, y: np.ndarray, cos_theta: np.ndarray,
                    phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lab-frame (pT, eta) of the muon from a W of mass ``m``, transverse momentum ``qt`` and
    rapidity ``y`` (GeV) decaying at polar angle ``cos_theta`` and azimuth ``phi`` in its rest
    frame (massless leptons; transverse boost along x, then the longitudinal boost)."""
    sin_theta = np.sqrt(1 - cos_theta**2)
    p = m / 2
    px, py, pz, e = p * sin_theta * np.cos(phi), p * sin_theta * np.sin(phi), p * cos_theta, p
    et = np.sqrt(m**2 + qt**2)
    beta, gamma = qt / et, et / m
    px_lab, e_lab = gamma * (px + beta * e), gamma * (e + beta * px)
    pz_lab = np.cosh(y) * pz + np.sinh(y) * e_lab
    pt = np.hypot(px_lab, py)
    return pt, np.arcsinh(pz_lab / pt)


def _toy_w(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    m = MW0 + GW / 2 * np.tan(rng.uniform(-np.pi / 2 * 0.98, np.pi / 2 * 0.98, n))
    m = m[(m > 50) & (m < 110)]
    n = m.size
    qt = rng.gamma(1.6, 4.5, n)
    y = rng.normal(0, 1.9, n)
    q = np.where(rng.uniform(size=n) < 0.57, 1, -1)
    c = 2 * np.cbrt(rng.uniform(size=n)) - 1
    c = np.where(q > 0, -c, c)
    phi = rng.uniform(0, 2 * np.pi, n)
    pt_true, eta = muon_kinematics(m, qt, y, c, phi)
    pt = pt_true * rng.normal(1, 0.012, n)
    return m, pt, eta, q


def wmass_toy(n_events: int = 200_000, neta: int = 4, npt: int = 20, yield_w: float = 2.0e6,
              seed: int = 1, mc_stat: bool = True, n_eff: int = 2) -> tuple[Model, WToy]:
    """A small W-mass-like model: ``neta x npt x 2`` bins, POI ``mass`` (1 = +100 MeV).

    Nuisances: ``n_eff`` efficiency-like shapes per eta-charge slice (group ``eff``), a muon
    scale per eta slice (``scale``), luminosity, a background normalisation and shape.
    """
    rng = np.random.default_rng(seed)
    m, pt, eta, q = _toy_w(n_events, rng)
    edges = (np.linspace(-2.4, 2.4, neta + 1), np.linspace(26, 56, npt + 1), np.array([-2, 0, 2]))
    sel = (pt > 26) & (pt < 56) & (np.abs(eta) < 2.4)
    scale = yield_w / max(int(sel.sum()), 1)
    toy = WToy(m, pt, eta, q, edges, scale)
    W = toy.hist()
    up, dn = toy.hist(toy.mass_weights(0.1)), toy.hist(toy.mass_weights(-0.1))
    shape = (neta, npt, 2)
    pc = 0.5 * (edges[1][1:] + edges[1][:-1])
    P = np.broadcast_to(pc[None, :, None], shape)
    bkg = (0.08 * W.sum() * np.exp(-(P - 26) / 8) / np.exp(-(P - 26) / 8).sum()).ravel()
    b = ModelBuilder(W + bkg)
    b.add_process("W", W, sumw2=(W * scale) if mc_stat else None, signal=True)
    b.add_process("bkg", bkg, sumw2=(bkg * 0.02) if mc_stat else None)
    b.add_poi_shape("mass", "W", up=up, down=dn, scale=100.0)
    t = (P - 41) / 15
    leg = [np.ones_like(t), t, 1.5 * t**2 - 0.5]
    for ie in range(neta):
        for iq in range(2):
            for k in range(n_eff):
                v: np.ndarray = np.zeros(shape)
                v[ie, :, iq] = 0.003 * leg[k % 3][ie, :, iq]
                v = v.ravel()
                b.add_shape_systematic(f"eff_eta{ie}_q{iq}_{k}", ["W", "bkg"],
                                       up={"W": W * (1 + v), "bkg": bkg * (1 + v)},
                                       down={"W": W * (1 - v), "bkg": bkg * (1 - v)}, group="eff")
    dW = np.gradient(W.reshape(shape), pc, axis=1)
    for ie in range(neta):
        v = np.zeros(shape)
        v[ie] = -dW.reshape(shape)[ie] * 1e-4 * P[ie] / np.maximum(W.reshape(shape)[ie], 1)
        b.add_shape_systematic(f"scale_eta{ie}", "W", up=W * (1 + v.ravel()), group="scale")
    b.add_norm_systematic("lumi", ["W", "bkg"], 1.012, group="lumi")
    b.add_norm_systematic("bkgNorm", "bkg", (0.9, 1.12), group="bkg")
    slope = (0.05 * t).ravel()
    b.add_shape_systematic("bkgShape", "bkg", up=bkg * (1 + slope), down=bkg * (1 - slope), group="bkg")
    model = b.build()
    return model, toy


def expected_at_mass(model: Model, toy: WToy, delta_mev: float) -> np.ndarray:
    """Exact expected counts with the W events reweighted to M0 + delta (nuisances nominal)."""
    w = toy.hist(toy.mass_weights(delta_mev / 1000.0))
    iw = model.processes.index("W")
    other = model.nominal.sum(0) - model.nominal[iw]
    return w + other


def counting_model(s: float = 100.0, b: float = 50.0, kappa_b: float = 1.1) -> Model:
    """One-bin counting experiment: mu * s + b with a log-normal background uncertainty."""
    mb = ModelBuilder(np.array([s + b]))
    mb.add_process("sig", np.array([s]), signal=True)
    mb.add_process("bkg", np.array([b]))
    mb.add_norm_poi("mu", "sig")
    mb.add_norm_systematic("bkgNorm", "bkg", kappa_b, group="bkg")
    return mb.build()
