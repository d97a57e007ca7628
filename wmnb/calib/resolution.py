"""Muon momentum resolution: (sigma_pT/pT)^2 = a^2 + c^2 pT^2 + b^2 / (1 + d^2/pT^2) per eta bin.

* Simulation: measured directly from gen-matched muons (relative curvature residual
  ``k_reco/k_gen - 1``), binned in eta x pT, a robust width per bin and a fit of (a, b, c, d)
  per eta bin.
* Data minus simulation: each 4-D bin fit measures the extra relative mass variance
  ``dvar = (sigma_m/m)^2_data - (sigma_m/m)^2_sim``; since m ~ sqrt(pT+ pT-),
  ``dvar = (dr2(mu+) + dr2(mu-)) / 4`` with ``dr2 = d(a^2) + d(c^2) pT^2 + d(b^2) g(pT)``,
  ``g = 1/(1 + d^2/pT^2)`` with the simulated ``d``: a linear fit of (d(a^2), d(b^2), d(c^2)) per
  eta bin to all J/psi and Z 4-D bins together (J/psi pins the low-pT terms, Z the c term).
* Simulation is smeared by ``sqrt(max(dr2, 0))`` in quadrature (curvature smearing).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from .scale_model import eta_edges, eta_index

N_ETA_RES = 24


@dataclass
class ResolutionModel:
    """(a, b, c, d) per eta bin on ``edges`` and their fit errors."""

    edges: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    d: np.ndarray

    def rel2(self, pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """(sigma_pT/pT)^2 at (pt, eta)."""
        i = eta_index(eta, self.edges)
        pt = np.asarray(pt, dtype=np.float64)
        return (self.a[i] ** 2 + (self.c[i] * pt) ** 2
                + self.b[i] ** 2 / (1.0 + self.d[i] ** 2 / pt ** 2))

    def to_dict(self) -> dict:
        return {k: np.asarray(getattr(self, k)).tolist() for k in ("edges", "a", "b", "c", "d")}

    @classmethod
    def from_dict(cls, d: dict) -> "ResolutionModel":
        return cls(*(np.asarray(d[k], dtype=np.float64) for k in ("edges", "a", "b", "c", "d")))


def _robust_var(x: np.ndarray) -> float:
    """Variance from the 68 % central interval (insensitive to rare mismatches and tails)."""
    lo, hi = np.quantile(x, [0.16, 0.84])
    return float(((hi - lo) / 2) ** 2)


def measure_mc_resolution(pt: np.ndarray, eta: np.ndarray, gen_pt: np.ndarray, n_eta: int = N_ETA_RES,
                          n_pt: int = 8, min_muons: int = 200) -> tuple[ResolutionModel, dict]:
    """Fit (a, b, c, d) per eta bin to the width of k_reco/k_gen - 1 of gen-matched muons.

    Returns the model and the binned widths used (for plots).  Eta bins with too few muons get
    the parameters of the nearest fitted bin and are listed in ``info["filled_from_neighbour"]``.
    """
    pt, eta, gen_pt = (np.asarray(x, dtype=np.float64) for x in (pt, eta, gen_pt))
    ok = np.isfinite(gen_pt) & (gen_pt > 0) & np.isfinite(pt) & (pt > 0)
    if ok.sum() < min_muons:
        raise ValueError(f"resolution: only {int(ok.sum())} gen-matched muons (need >= {min_muons}); "
                         "check that the simulation skims carry <p>_gen_pt")
    x = gen_pt[ok] / pt[ok] - 1.0
    pt_g, eta = gen_pt[ok], eta[ok]
    edges = eta_edges(n_eta)
    ie = eta_index(eta, edges)
    pt_edges = np.unique(np.quantile(pt_g, np.linspace(0, 1, n_pt + 1)))
    ip = np.clip(np.searchsorted(pt_edges, pt_g, side="right") - 1, 0, len(pt_edges) - 2)
    pars = np.full((n_eta, 4), np.nan)
    table = {"pt_edges": pt_edges.tolist(), "pt_mean": [], "var": [], "var_err": []}
    for i in range(n_eta):
        pm, vv, ve = [], [], []
        for j in range(len(pt_edges) - 1):
            sel = (ie == i) & (ip == j)
            if sel.sum() >= min_muons // max(n_pt, 1) + 20:
                xs = x[sel]
                pm.append(pt_g[sel].mean())
                vv.append(_robust_var(xs))
                ve.append(vv[-1] * np.sqrt(2.0 / sel.sum()) * 1.3)
            else:
                pm.append(np.nan), vv.append(np.nan), ve.append(np.nan)
        table["pt_mean"].append(pm), table["var"].append(vv), table["var_err"].append(ve)
        pm, vv, ve = map(np.asarray, (pm, vv, ve))
        good = np.isfinite(vv)
        if good.sum() < 2:
            continue

        def resid(p, pm=pm[good], vv=vv[good], ve=ve[good]):
            a, b, c, d = p
            return (a * a + (c * pm) ** 2 + b * b / (1 + d * d / pm ** 2) - vv) / ve

        a0 = np.sqrt(max(np.min(vv[good]), 1e-8))
        fit = least_squares(resid, x0=[a0, 0.3 * a0, 1e-4, 10.0],
                            bounds=([0, 0, 0, 0], [0.5, 0.5, 0.05, 200.0]))
        pars[i] = fit.x
    filled = [int(i) for i in np.flatnonzero(~np.isfinite(pars[:, 0]))]
    good_i = np.flatnonzero(np.isfinite(pars[:, 0]))
    if good_i.size == 0:
        raise ValueError("resolution: no eta bin has enough gen-matched muons to fit")
    for i in filled:
        pars[i] = pars[good_i[np.argmin(np.abs(good_i - i))]]
    model = ResolutionModel(edges, *pars.T)
    return model, {"table": table, "filled_from_neighbour": filled}


def design_dvar(mc_res: ResolutionModel, moments: dict[str, np.ndarray]) -> np.ndarray:
    """Design matrix of dvar = (dr2+ + dr2-)/4 in (d(a^2), d(b^2), d(c^2)) per eta bin.

    ``moments``: per 4-D bin ``ieta_p, ieta_m`` (indices on ``mc_res.edges``), ``pt2_p``,
    ``pt2_m`` (mean pT^2) and ``g_p``, ``g_m`` (mean 1/(1 + d^2/pT^2)).
    """
    n = len(mc_res.edges) - 1
    rows = np.arange(len(moments["ieta_p"]))
    X = np.zeros((len(rows), 3 * n))
    for s in ("p", "m"):
        base = 3 * np.asarray(moments[f"ieta_{s}"])
        np.add.at(X, (rows, base), 0.25)
        np.add.at(X, (rows, base + 1), 0.25 * moments[f"g_{s}"])
        np.add.at(X, (rows, base + 2), 0.25 * moments[f"pt2_{s}"])
    return X


def resolution_moments(idx: np.ndarray, cols: dict[str, np.ndarray], bins: np.ndarray,
                       mc_res: ResolutionModel) -> dict[str, np.ndarray]:
    """Per 4-D bin (flat ids ``bins``) eta index on the resolution binning and pT moments."""
    pos = np.clip(np.searchsorted(bins, idx), 0, max(len(bins) - 1, 0))
    ok = (idx >= 0) & (bins[pos] == idx)
    cnt = np.maximum(np.bincount(pos[ok], minlength=len(bins)), 1)
    out = {}
    for p, s in (("mup", "p"), ("mum", "m")):
        pt = np.asarray(cols[f"{p}_pt"], dtype=np.float64)[ok]
        eta = np.asarray(cols[f"{p}_eta"], dtype=np.float64)[ok]
        i = eta_index(eta, mc_res.edges)
        g = 1.0 / (1.0 + mc_res.d[i] ** 2 / pt ** 2)
        out[f"pt2_{s}"] = np.bincount(pos[ok], weights=pt * pt, minlength=len(bins)) / cnt
        out[f"g_{s}"] = np.bincount(pos[ok], weights=g, minlength=len(bins)) / cnt
        eta_mean = np.bincount(pos[ok], weights=eta, minlength=len(bins)) / cnt
        out[f"ieta_{s}"] = eta_index(eta_mean, mc_res.edges)
    return out


@dataclass
class DataResolution:
    """Data-minus-simulation resolution differences per eta bin, with covariance."""

    mc: ResolutionModel
    d_a2: np.ndarray
    d_b2: np.ndarray
    d_c2: np.ndarray
    cov: np.ndarray
    chi2: float
    ndf: int

    def extra_rel2(self, pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Data minus simulation (sigma_pT/pT)^2 at (pt, eta) (may be negative)."""
        i = eta_index(eta, self.mc.edges)
        pt = np.asarray(pt, dtype=np.float64)
        g = 1.0 / (1.0 + self.mc.d[i] ** 2 / pt ** 2)
        return self.d_a2[i] + self.d_b2[i] * g + self.d_c2[i] * pt * pt

    def data_model(self) -> ResolutionModel:
        """(a, b, c, d) of data (differences added in quadrature, floored at zero)."""
        m = self.mc
        return ResolutionModel(m.edges, np.sqrt(np.maximum(m.a ** 2 + self.d_a2, 0)),
                               np.sqrt(np.maximum(m.b ** 2 + self.d_b2, 0)),
                               np.sqrt(np.maximum(m.c ** 2 + self.d_c2, 0)), m.d.copy())

    def to_dict(self) -> dict:
        return {"mc": self.mc.to_dict(), "d_a2": self.d_a2.tolist(), "d_b2": self.d_b2.tolist(),
                "d_c2": self.d_c2.tolist(), "chi2": self.chi2, "ndf": self.ndf}

    @classmethod
    def from_dict(cls, d: dict) -> "DataResolution":
        n = len(d["d_a2"])
        return cls(ResolutionModel.from_dict(d["mc"]), np.asarray(d["d_a2"]), np.asarray(d["d_b2"]),
                   np.asarray(d["d_c2"]), np.full((3 * n, 3 * n), np.nan), d.get("chi2", np.nan), d.get("ndf", 0))


def fit_data_resolution(mc_res: ResolutionModel, pieces: list[tuple[np.ndarray, np.ndarray, dict]],
                        ridge: float = 1e-3) -> DataResolution:
    """Fit d(a^2), d(b^2), d(c^2) per eta bin to the dvar of 4-D bin fits.

    ``pieces``: (dvar, dvar_err, moments) per sample (J/psi, Z).  A weak ridge (``ridge`` times the
    typical information) keeps eta bins or terms without lever arm at zero difference instead of
    making the system singular; such terms keep a large error.
    """
    X = np.concatenate([design_dvar(mc_res, m) for _, _, m in pieces])
    y = np.concatenate([np.asarray(v) for v, _, _ in pieces])
    e = np.concatenate([np.asarray(s) for _, s, _ in pieces])
    ok = np.isfinite(y) & np.isfinite(e) & (e > 0)
    X, y, w = X[ok], y[ok], 1.0 / e[ok] ** 2
    H = X.T @ (X * w[:, None])
    lam = ridge * np.median(np.diag(H)[np.diag(H) > 0]) if (np.diag(H) > 0).any() else 1.0
    H += lam * np.eye(H.shape[0])
    cov = np.linalg.inv(H)
    th = cov @ (X.T @ (w * y))
    chi2 = float(np.sum(w * (y - X @ th) ** 2))
    th = th.reshape(-1, 3)
    return DataResolution(mc_res, th[:, 0], th[:, 1], th[:, 2], cov, chi2, int(ok.sum() - th.size))
