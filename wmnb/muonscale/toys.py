"""Toy dimuon samples with known injected scale biases and resolution (tests, benchmarks).

A resonance of mass ``mass`` (width ``width``) is produced with a falling pT spectrum and a flat
rapidity, decays isotropically to two muons, and each muon is "reconstructed" with
``k_reco = k_gen (1 + delta(k_gen)) + k_gen * sigma_rel * N(0, 1)`` (scale bias
:func:`wmnb.muonscale.scale_model.delta`, Gaussian curvature resolution).  A combinatorial
background with an exponential mass spectrum can be added (data only).  The column names are the
chapter-01 dimuon skim columns, so toys and real skims go through the same code.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..conventions import JPSI_MASS, MUON_MASS_CALIB, UPSILON_1S_MASS, Z_MASS_PDG, Z_WIDTH_PDG
from .kinematics import dimuon_mass
from .scale_model import ScaleParams, delta, eta_edges

ResolutionFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def default_resolution(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Relative pT resolution of the toys: a^2 + c^2 pT^2 + b^2/(1 + d^2/pT^2), growing with |eta|."""
    a = 0.006 + 0.004 * np.abs(eta)
    c = 1.5e-4
    b = 0.004
    d = 5.0
    return np.sqrt(a ** 2 + (c * pt) ** 2 + b ** 2 / (1.0 + d ** 2 / pt ** 2))


def random_scale_params(rng: np.random.Generator, edges: np.ndarray | None = None,
                        A: float = 3e-4, e: float = 1e-3, M: float = 3e-5) -> ScaleParams:
    """Random (A, e, M) per eta bin with the given spreads (typical sizes of the paper's residuals)."""
    edges = eta_edges() if edges is None else edges
    n = len(edges) - 1
    return ScaleParams(edges, rng.normal(0, A, n), rng.normal(0, e, n), rng.normal(0, M, n))


def _decay(rng: np.random.Generator, m: np.ndarray, pt: np.ndarray, y: np.ndarray):
    """Isotropic two-body decay of a parent (m, pT, y, random phi) to two muons."""
    n = len(m)
    phi = rng.uniform(-np.pi, np.pi, n)
    mt = np.sqrt(m ** 2 + pt ** 2)
    P = np.stack([pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)], axis=1)
    E = mt * np.cosh(y)
    p_star = np.sqrt(np.maximum(m ** 2 / 4 - MUON_MASS_CALIB ** 2, 1e-12))
    cth = rng.uniform(-1, 1, n)
    ph = rng.uniform(-np.pi, np.pi, n)
    sth = np.sqrt(1 - cth ** 2)
    p1 = p_star[:, None] * np.stack([sth * np.cos(ph), sth * np.sin(ph), cth], axis=1)
    e1 = np.sqrt(p_star ** 2 + MUON_MASS_CALIB ** 2)
    # boost from the rest frame to the lab
    beta = P / E[:, None]
    b2 = np.sum(beta ** 2, axis=1)
    gamma = 1.0 / np.sqrt(1 - b2)
    out = []
    for sign in (+1, -1):
        p = sign * p1
        bp = np.sum(beta * p, axis=1)
        coef = (gamma - 1) * bp / np.maximum(b2, 1e-300) + gamma * e1
        lab = p + coef[:, None] * beta
        ptl = np.hypot(lab[:, 0], lab[:, 1])
        out.append((ptl, np.arcsinh(lab[:, 2] / ptl), np.arctan2(lab[:, 1], lab[:, 0])))
    return out


def generate_dimuons(n: int, rng: np.random.Generator, *, mass: float = JPSI_MASS, width: float = 0.0,
                     bias: ScaleParams | None = None, resolution: ResolutionFn = default_resolution,
                     pt_parent: tuple[float, float] = (8.0, 6.0), y_max: float = 2.4,
                     pt_min: float = 3.5, eta_max: float = 2.4, window: tuple[float, float] | None = None,
                     n_bkg: int = 0, bkg_slope: float = 2.0, gen: bool = True) -> dict[str, np.ndarray]:
    """Toy dimuon skim of ``n`` signal events (before acceptance) plus ``n_bkg`` background.

    ``pt_parent = (pt_min, scale)``: parent pT = pt_min + exponential(scale).  ``window``: keep
    only reco masses inside it.  Columns as in chapter 01's dimuon skims (``mup_*``, ``mum_*``,
    ``mass``, ``weight`` and, with ``gen``, ``*_gen_*`` and ``gen_mass``); background events
    have ``gen_mass = 0`` and ``is_signal = False``.
    """
    def parents(k: int, masses: np.ndarray) -> dict[str, np.ndarray]:
        pt = pt_parent[0] + rng.exponential(pt_parent[1], k)
        y = rng.uniform(-y_max, y_max, k)
        (pt1, eta1, phi1), (pt2, eta2, phi2) = _decay(rng, masses, pt, y)
        return {"mup_gen_pt": pt1, "mup_gen_eta": eta1, "mup_gen_phi": phi1,
                "mum_gen_pt": pt2, "mum_gen_eta": eta2, "mum_gen_phi": phi2, "gen_mass": masses}

    m_sig = mass + (width / 2 * np.tan(np.pi * (rng.uniform(size=n) - 0.5)) if width > 0 else np.zeros(n))
    cols = parents(n, m_sig)
    cols["is_signal"] = np.ones(n, dtype=bool)
    if n_bkg:
        lo, hi = window if window is not None else (0.9 * mass, 1.1 * mass)
        lo, hi = lo * 0.98, hi * 1.02
        u = rng.uniform(size=n_bkg)
        # exponential with slope bkg_slope (per GeV) truncated to [lo, hi]
        m_bkg = lo - np.log1p(-u * (1 - np.exp(-bkg_slope * (hi - lo)))) / bkg_slope
        b = parents(n_bkg, m_bkg)
        b["gen_mass"] = np.zeros(n_bkg)
        b["is_signal"] = np.zeros(n_bkg, dtype=bool)
        cols = {k: np.concatenate([cols[k], b[k]]) for k in cols}
    for p, q in (("mup", 1), ("mum", -1)):
        pt, eta = cols[f"{p}_gen_pt"], cols[f"{p}_gen_eta"]
        k = 1.0 / pt
        d = delta(pt, np.clip(eta, -eta_max, eta_max), np.full(len(pt), q), bias) if bias is not None else 0.0
        k_reco = k * (1 + d) + k * resolution(pt, eta) * rng.standard_normal(len(pt))
        cols[f"{p}_pt"] = 1.0 / np.abs(k_reco)
        cols[f"{p}_eta"] = eta.copy()
        cols[f"{p}_phi"] = cols[f"{p}_gen_phi"].copy()
    cols["mass"] = dimuon_mass(cols["mup_pt"], cols["mup_eta"], cols["mup_phi"],
                               cols["mum_pt"], cols["mum_eta"], cols["mum_phi"])
    keep = ((cols["mup_pt"] > pt_min) & (cols["mum_pt"] > pt_min)
            & (np.abs(cols["mup_eta"]) < eta_max) & (np.abs(cols["mum_eta"]) < eta_max))
    if window is not None:
        keep &= (cols["mass"] > window[0]) & (cols["mass"] < window[1])
    out = {k: v[keep] for k, v in cols.items()}
    out["weight"] = np.ones(int(keep.sum()))
    if not gen:
        out = {k: v for k, v in out.items() if "_gen_" not in k and k != "gen_mass"}
    return out


def toy_inputs(rng: np.random.Generator, bias: ScaleParams, n_jpsi: int = 400_000, n_z: int = 100_000,
               n_upsilon: int = 60_000, mz_data: float = Z_MASS_PDG, mz_mc: float = Z_MASS_PDG,
               res_scale_data: float = 1.05, mc_factor: float = 2.0) -> dict:
    """J/psi, Upsilon(1S) and Z toy samples (data with ``bias`` and ``res_scale_data`` times the
    simulated resolution, simulation unbiased) in the layout of :func:`wmnb.muonscale.chapter.load_inputs`."""
    from .chapter import Sample

    def res_data(pt, eta):
        return res_scale_data * default_resolution(pt, eta)

    spec = {
        "jpsi": dict(mass=JPSI_MASS, width=0.0, pt_parent=(18.0, 8.0), pt_min=3.0, window=(2.6, 3.6), n=n_jpsi, bkg=0.15),
        "upsilon": dict(mass=UPSILON_1S_MASS, width=0.0, pt_parent=(11.0, 8.0), pt_min=3.0, window=(8.0, 11.5), n=n_upsilon, bkg=0.3),
        "z": dict(mass=None, width=Z_WIDTH_PDG, pt_parent=(0.0, 12.0), pt_min=15.0, window=(50.0, 130.0), n=n_z, bkg=0.0),
    }
    out = {}
    for key, s in spec.items():
        md = mz_data if key == "z" else s["mass"]
        mm = mz_mc if key == "z" else s["mass"]
        y_max = 2.4
        data = generate_dimuons(s["n"], rng, mass=md, width=s["width"], bias=bias, resolution=res_data,
                                pt_parent=s["pt_parent"], pt_min=s["pt_min"], window=s["window"],
                                n_bkg=int(s["bkg"] * s["n"]), y_max=y_max, gen=False)
        mc = generate_dimuons(int(mc_factor * s["n"]), rng, mass=mm, width=s["width"], bias=None,
                              pt_parent=s["pt_parent"], pt_min=s["pt_min"], window=s["window"], y_max=y_max)
        mc["weight"] = np.full(len(mc["mass"]), 1.0 / mc_factor)
        data.pop("is_signal", None)
        mc.pop("is_signal", None)
        out[key] = Sample(data, mc)
    return out
