"""Muon momentum resolution: (sigma_pT/pT)^2 = a^2 + c^2 pT^2 + b^2 / (1 + d^2/pT^2) per eta bin.

* Simulation: measured directly from gen-matched muons (relative curvature residual
  ``k_reco/k_gen - 1``), binned in eta x pT, a robust width per bin and a fit of (a, b, c, d)
  per eta bin.
* Data: each 4-D bin fit measures the extra relative mass variance
  ``dvar = (sigma_m/m)^2_data - (sigma_m/m)^2_sim``; since m ~ sqrt(pT+ pT-),
  ``dvar = < r2_data(mu+) - r2_sim(mu+) + r2_data(mu-) - r2_sim(mu-) > / 4`` averaged over the
  bin's muons, with ``r2 = (sigma_pT/pT)^2``.  The data parameters (a, b, c, d) of every eta bin
  are fitted to all J/psi and Z 4-D bins together (J/psi pins the low-pT terms, Z the c term,
  both together the turn-on d) by non-linear least squares, with a weak prior that keeps
  parameters without lever arm near simulation (each within ``prior_width`` of its simulated
  value, 50 % by default).
* Simulation is smeared by ``sqrt(max(r2_data - r2_sim, 0))`` in quadrature (curvature smearing).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from .binning import bin_positions
from .scale_model import eta_edges, eta_index

N_ETA_RES = 24


def _rel2(pt: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(sigma_pT/pT)^2 = a^2 + c^2 pT^2 + b^2 / (1 + d^2/pT^2)."""
    return a * a + (c * pt) ** 2 + b * b / (1.0 + d * d / (pt * pt))


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
        return _rel2(np.asarray(pt, dtype=np.float64), self.a[i], self.b[i], self.c[i], self.d[i])

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


#: upper bounds of (a, b, c, d) in fits (dimensionless, dimensionless, 1/GeV, GeV)
UPPER = (0.5, 0.5, 0.05, 200.0)


def _rel2_and_grad(pt: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray,
                   d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sigma_pT/pT)^2 and its gradient in (a, b, c, d) per muon ([n], [n, 4])."""
    pt2 = pt * pt
    g = 1.0 / (1.0 + d * d / pt2)
    r2 = _rel2(pt, a, b, c, d)
    grad = np.stack([2 * a, 2 * b * g, 2 * c * pt2, -b * b * g * g * 2 * d / pt2], axis=1)
    return r2, grad


@dataclass
class BinMuons:
    """The simulated muons of the fitted 4-D bins: bin position, pT and resolution eta index
    of mu+ and mu- (arrays over events), and the number of events per bin."""

    pos: np.ndarray
    pt_p: np.ndarray
    pt_m: np.ndarray
    ieta_p: np.ndarray
    ieta_m: np.ndarray
    count: np.ndarray

    def subset(self, keep: np.ndarray) -> "BinMuons":
        """Only the bins where ``keep`` (bool over bins) is true, renumbered."""
        new_pos = np.cumsum(keep) - 1
        ev = keep[self.pos]
        return BinMuons(new_pos[self.pos[ev]], self.pt_p[ev], self.pt_m[ev], self.ieta_p[ev],
                        self.ieta_m[ev], self.count[keep])


def bin_muons(idx: np.ndarray, cols: dict[str, np.ndarray], bins: np.ndarray,
              mc_res: ResolutionModel) -> BinMuons:
    """The simulated muons of each of the 4-D bins ``bins`` (flat ids), with their eta index on
    the resolution binning of ``mc_res``."""
    pos, ok = bin_positions(idx, bins)
    pt = {p: np.asarray(cols[f"{p}_pt"], dtype=np.float64)[ok] for p in ("mup", "mum")}
    ie = {p: eta_index(np.asarray(cols[f"{p}_eta"], dtype=np.float64)[ok], mc_res.edges) for p in ("mup", "mum")}
    return BinMuons(pos[ok], pt["mup"], pt["mum"], ie["mup"], ie["mum"],
                    np.bincount(pos[ok], minlength=len(bins)).astype(np.float64))


def _bin_average(muons: BinMuons, model_params: np.ndarray, n_eta: int) -> tuple[np.ndarray, np.ndarray]:
    """Per bin <r2(mu+) + r2(mu-)>/4 and its Jacobian in the flat (a, b, c, d) x eta parameters."""
    nb = len(muons.count)
    val = np.zeros(nb)
    jac = np.zeros(nb * 4 * n_eta)
    norm = 0.25 / np.maximum(muons.count, 1.0)
    for pt, ie in ((muons.pt_p, muons.ieta_p), (muons.pt_m, muons.ieta_m)):
        a, b, c, d = (model_params[ie, j] for j in range(4))
        r2, grad = _rel2_and_grad(pt, a, b, c, d)
        val += np.bincount(muons.pos, weights=r2, minlength=nb)
        for j in range(4):
            jac += np.bincount(muons.pos * 4 * n_eta + 4 * ie + j, weights=grad[:, j], minlength=jac.size)
    return val * norm, jac.reshape(nb, 4 * n_eta) * norm[:, None]


@dataclass
class DataResolution:
    """Resolution of simulation (measured) and data (fitted), with the data parameters'
    covariance (flat order a_0, b_0, c_0, d_0, a_1, ...)."""

    mc: ResolutionModel
    data: ResolutionModel
    cov: np.ndarray
    chi2: float
    ndf: int
    prior_width: float = 0.5

    def extra_rel2(self, pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Data minus simulation (sigma_pT/pT)^2 at (pt, eta) (may be negative)."""
        return self.data.rel2(pt, eta) - self.mc.rel2(pt, eta)

    def data_rel_sigma(self, pt: float, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Data sigma_pT/pT at ``pt`` for each ``eta`` and its error from the fit covariance."""
        eta = np.asarray(eta, dtype=np.float64)
        i = eta_index(eta, self.data.edges)
        ptv = np.full(eta.shape, float(pt))
        r2, grad = _rel2_and_grad(ptv, self.data.a[i], self.data.b[i], self.data.c[i], self.data.d[i])
        sig = np.sqrt(r2)
        err = np.full(eta.shape, np.nan)
        if np.isfinite(self.cov).all():
            for k, ii in enumerate(i):
                blk = self.cov[4 * ii:4 * ii + 4, 4 * ii:4 * ii + 4]
                err[k] = np.sqrt(max(grad[k] @ blk @ grad[k], 0.0)) / (2 * sig[k])
        return sig, err

    def to_dict(self) -> dict:
        return {"mc": self.mc.to_dict(), "data": self.data.to_dict(), "cov": np.asarray(self.cov).tolist(),
                "chi2": self.chi2, "ndf": self.ndf, "prior_width": self.prior_width}

    @classmethod
    def from_dict(cls, d: dict) -> "DataResolution":
        return cls(ResolutionModel.from_dict(d["mc"]), ResolutionModel.from_dict(d["data"]),
                   np.asarray(d["cov"], dtype=np.float64), d.get("chi2", np.nan), d.get("ndf", 0),
                   d.get("prior_width", 0.5))


def fit_data_resolution(mc_res: ResolutionModel, pieces: list[tuple[np.ndarray, np.ndarray, BinMuons]],
                        prior_width: float = 0.5) -> DataResolution:
    """Fit the data (a, b, c, d) of every eta bin to the extra mass variance of 4-D bin fits.

    ``pieces``: (dvar, dvar_err, muons) per sample (J/psi, Z), arrays over the same fitted bins.
    Each data parameter has a Gaussian prior centred on its simulated value with a width of
    ``prior_width`` times that value: it only matters where the bins give no lever arm (an eta
    bin without Z muons keeps c near simulation, say), and such parameters keep a large error.
    """
    n = len(mc_res.edges) - 1
    sim = np.stack([mc_res.a, mc_res.b, mc_res.c, mc_res.d], axis=1)
    ys, es, mus, mc_parts = [], [], [], []
    for dvar, err, muons in pieces:
        dvar, err = np.asarray(dvar, dtype=np.float64), np.asarray(err, dtype=np.float64)
        ok = np.isfinite(dvar) & np.isfinite(err) & (err > 0) & (muons.count > 0)
        if not ok.any():
            continue
        m = muons.subset(ok)
        ys.append(dvar[ok]), es.append(err[ok]), mus.append(m)
        mc_parts.append(_bin_average(m, sim, n)[0])
    if not ys:
        raise ValueError("data resolution: no 4-D bin fit with a finite extra mass variance; "
                         "check the J/psi and Z mass fits of this chapter")
    y, e = np.concatenate(ys), np.concatenate(es)
    target = y + np.concatenate(mc_parts)          # <r2_data>/4-sums the fit must reproduce
    prior_sig = prior_width * np.maximum(sim.ravel(), 1e-6)

    def model(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [_bin_average(m, x.reshape(n, 4), n) for m in mus]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def resid(x):
        v, _ = model(x)
        return np.concatenate([(v - target) / e, (x - sim.ravel()) / prior_sig])

    def jac(x):
        _, J = model(x)
        return np.vstack([J / e[:, None], np.diag(1.0 / prior_sig)])

    upper = np.tile(UPPER, n)
    x0 = np.clip(sim.ravel(), 1e-7, upper * 0.999)
    fit = least_squares(resid, x0, jac=jac, bounds=(np.zeros_like(upper), upper), method="trf",
                        x_scale="jac", xtol=1e-10, ftol=1e-10, max_nfev=200)
    J = jac(fit.x)
    # columns differ by many orders of magnitude (a ~ 1e-2, d ~ 30 GeV): invert the scaled matrix
    scale = 1.0 / np.maximum(np.linalg.norm(J, axis=0), 1e-300)
    Js = J * scale
    cov = np.linalg.pinv(Js.T @ Js, rcond=1e-12, hermitian=True) * np.outer(scale, scale)
    v, _ = model(fit.x)
    chi2 = float(np.sum(((v - target) / e) ** 2))
    data = ResolutionModel(mc_res.edges.copy(), *fit.x.reshape(n, 4).T)
    return DataResolution(mc_res, data, cov, chi2, int(len(y) - 4 * n), prior_width)
