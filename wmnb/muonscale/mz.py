"""Dimuon m_Z after calibration: m_mumu (25 bins) x eta of the most forward muon (14 bins).

Simulated Z->mumu (smeared, with the calibration's weight variations) is fitted to the corrected
data with the project fitter (``wmnb.fit``): the mass enters as a shape POI built from
Breit-Wigner reweighting of the generator-level mass by +-100 MeV, the normalisation is free,
the calibration variations are log-normal shape nuisances (group ``muonScale``).  The
statistical and calibration components are the fitter's nominal impacts.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..conventions import Z_WIDTH_PDG, breit_wigner_fixed_width

MASS_EDGES = np.linspace(78.0, 104.0, 26)        # 25 bins of 1.04 GeV
ETA_EDGES = np.linspace(-2.4, 2.4, 15)            # 14 bins
DELTA_M = 0.100                                   # GeV, the +-100 MeV POI templates


def breit_wigner(m: np.ndarray, M: float, gamma: float = Z_WIDTH_PDG) -> np.ndarray:
    """The line shape of the m_Z templates: the *fixed-width* relativistic Breit-Wigner
    :func:`wmnb.conventions.breit_wigner_fixed_width` at the PDG Z width (the universe generates
    a running width; see the :mod:`wmnb.conventions` docstring)."""
    return breit_wigner_fixed_width(m, M, gamma)


def forward_eta(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Eta of the muon with the largest |eta|."""
    ep, em = np.asarray(cols["mup_eta"], float), np.asarray(cols["mum_eta"], float)
    return np.where(np.abs(ep) >= np.abs(em), ep, em)


def histogram(cols: dict[str, np.ndarray], weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (eta_fwd, m_mumu) histogram (sum of weights, sum of squared weights)."""
    w = np.ones(len(cols["mass"])) if weight is None else np.asarray(weight, float)
    h, _, _ = np.histogram2d(forward_eta(cols), np.asarray(cols["mass"], float), bins=(ETA_EDGES, MASS_EDGES), weights=w)
    h2, _, _ = np.histogram2d(forward_eta(cols), np.asarray(cols["mass"], float), bins=(ETA_EDGES, MASS_EDGES), weights=w * w)
    return h.ravel(), h2.ravel()


@dataclass
class MzResult:
    mz: float            # GeV
    err: float           # total (GeV)
    stat: float
    calib: float
    mc_mass: float       # generator mass of the simulation (GeV)
    n_data: float
    n_syst: int
    data: np.ndarray
    prefit: np.ndarray
    postfit: np.ndarray


def fit_mz(data_cols: dict[str, np.ndarray], mc_cols: dict[str, np.ndarray], mc_mass: float,
           variations: Iterable[tuple[str, str, np.ndarray, np.ndarray]] = (),
           min_mc: float = 1.0) -> MzResult:
    """Fit m_Z of corrected data with smeared simulation generated at ``mc_mass`` (GeV).

    ``variations``: iterable of ``(name, group, up, down)`` per-event weight factors of the
    simulation (e.g. ``MomentumCalibration.iter_variations``), consumed one at a time.
    Bins with fewer than ``min_mc`` effective simulated events are dropped.
    """
    from ..fit import ModelBuilder, fit

    if "gen_mass" not in mc_cols:
        raise KeyError("dimuon m_Z: the Z simulation skim lacks 'gen_mass' (needed for the mass templates)")
    w = np.asarray(mc_cols["weight"], float)
    gm = np.asarray(mc_cols["gen_mass"], float)
    ok = np.isfinite(gm) & (gm > 0)
    bw0 = breit_wigner(gm, mc_mass)
    r_up = np.where(ok, breit_wigner(gm, mc_mass + DELTA_M) / bw0, 1.0)
    r_dn = np.where(ok, breit_wigner(gm, mc_mass - DELTA_M) / bw0, 1.0)
    nom, nom2 = histogram(mc_cols, w)
    up, _ = histogram(mc_cols, w * r_up)
    dn, _ = histogram(mc_cols, w * r_dn)
    dat, _ = histogram(data_cols)
    keep = nom > 0
    neff = np.where(nom2 > 0, nom ** 2 / np.maximum(nom2, 1e-300), 0)
    keep &= neff >= min_mc
    scale = dat[keep].sum() / nom[keep].sum()          # start the free normalisation near 1
    b = ModelBuilder(dat[keep])
    b.add_process("Z", nom[keep] * scale, sumw2=nom2[keep] * scale ** 2, signal=True)
    b.add_poi_shape("mass", "Z", up=up[keep] * scale, down=dn[keep] * scale, scale=DELTA_M * 1000)
    b.add_norm_poi("norm_Z", "Z")
    n_syst = 0
    for base, group, f_up, f_dn in variations:
        hu, _ = histogram(mc_cols, w * f_up)
        hd, _ = histogram(mc_cols, w * f_dn)
        hu, hd = hu[keep], hd[keep]
        if np.all(np.abs(hu / nom[keep] - 1) < 1e-9):
            continue
        b.add_shape_systematic(base, "Z", up=np.maximum(hu, 1e-12) * scale, down=np.maximum(hd, 1e-12) * scale,
                               group=group)
        n_syst += 1
    model = b.build()
    res = fit(model, global_impacts=False)
    theta, err = res.value("mass"), res.error("mass")
    imp = res.impacts_nominal("mass") if n_syst else {}
    calib = float(imp.get("muonScale", 0.0))
    stat = float(np.sqrt(max(err ** 2 - calib ** 2, 0.0)))
    # full (14 x 25) grids with zeros where bins were dropped, for plots
    pre, post, dfull = np.zeros(len(nom)), np.zeros(len(nom)), np.zeros(len(nom))
    pre[keep] = np.asarray(model.expected())
    post[keep] = np.asarray(res.postfit_yields.total)
    dfull[keep] = dat[keep]
    return MzResult(mz=mc_mass + DELTA_M * theta, err=DELTA_M * err, stat=DELTA_M * stat, calib=DELTA_M * calib,
                    mc_mass=mc_mass, n_data=float(dat.sum()), n_syst=n_syst, data=dfull, prefit=pre, postfit=post)
