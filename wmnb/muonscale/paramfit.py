"""chi^2 fit of the per-eta (A, e, M) parameters to the 4-D bin mass scales.

A 4-D bin's fitted data/simulation mass ratio ``1 + s`` relates to the curvature biases of its
two muons as ``(1 + s)^-2 = (1 + d+)(1 + d-)`` (m^2 ~ pT+ pT- at fixed angles), so

    y = (1 + s)^-2 - 1 ~ d+ + d-,   d+- = A_i - e_i <k> +- M_i <1/k>

with ``<k>``, ``<1/k>`` the averages over the bin's (simulated) muons.  This is linear in the
parameters: the fit is a weighted linear least-squares problem with exact covariance
``(X^T W X)^-1``.  Parameters with no information (eta bins without fitted 4-D bins) are
reported as NaN and listed, never silently set to zero.  With ``with_e=False`` the same code
fits the closure parameters (A', M') of the paper (e' = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .binning import Binning4D, bin_positions
from .massfit import MassFitResult
from .scale_model import ScaleParams


@dataclass
class BinMoments:
    """Per 4-D bin averages of k = 1/pT and 1/k = pT for each muon (from simulation)."""

    bins: np.ndarray
    k_p: np.ndarray
    pt_p: np.ndarray
    k_m: np.ndarray
    pt_m: np.ndarray


def bin_moments(idx: np.ndarray, cols: dict[str, np.ndarray], bins: np.ndarray,
                weight: np.ndarray | None = None) -> BinMoments:
    """Average k and pT of mu+ and mu- over the events of each of ``bins`` (flat ids)."""
    bins = np.asarray(bins)
    pos, ok = bin_positions(idx, bins)
    w = np.ones(len(idx)) if weight is None else np.asarray(weight, dtype=np.float64)
    sw = np.bincount(pos[ok], weights=w[ok], minlength=len(bins))
    out = []
    for p in ("mup", "mum"):
        pt = np.asarray(cols[f"{p}_pt"], dtype=np.float64)[ok]
        out.append(np.bincount(pos[ok], weights=w[ok] / pt, minlength=len(bins)) / np.maximum(sw, 1e-300))
        out.append(np.bincount(pos[ok], weights=w[ok] * pt, minlength=len(bins)) / np.maximum(sw, 1e-300))
    return BinMoments(bins, *out)


@dataclass
class ParamFit:
    """Result of :func:`fit_parameters`."""

    params: ScaleParams              # central values (NaN where undetermined)
    cov: np.ndarray                  # [3n, 3n] (or [2n, 2n] without e), NaN rows where undetermined
    names: tuple[str, ...]           # per-bin parameter names, ("A", "e", "M") or ("A", "M")
    determined: np.ndarray           # bool per parameter
    chi2: float
    ndf: int
    n_bins_used: int
    propagator: np.ndarray | None = None   # d(params)/d(extra parameters), see fit_parameters

    def errors(self) -> ScaleParams:
        err = np.sqrt(np.abs(np.diag(self.cov)))
        n = self.params.n_bins
        per = err.reshape(n, len(self.names))
        cols = {nm: per[:, i] for i, nm in enumerate(self.names)}
        return ScaleParams(self.params.edges, cols.get("A"), cols.get("e", np.zeros(n)), cols.get("M"))

    def vector(self) -> np.ndarray:
        v = self.params.vector().reshape(-1, 3)
        keep = [("A", "e", "M").index(nm) for nm in self.names]
        return v[:, keep].ravel()


def design_matrix(binning: Binning4D, mom: BinMoments, with_e: bool = True) -> np.ndarray:
    """Rows: fitted 4-D bins; columns: per-eta parameters (A, e, M) or (A, M)."""
    ie_p, _, ie_m, _ = binning.unravel(mom.bins)
    npar = 3 if with_e else 2
    X = np.zeros((len(mom.bins), binning.n_eta * npar))
    rows = np.arange(len(mom.bins))
    for ie, k, pt, q in ((ie_p, mom.k_p, mom.pt_p, 1.0), (ie_m, mom.k_m, mom.pt_m, -1.0)):
        base = ie * npar
        np.add.at(X, (rows, base), 1.0)
        if with_e:
            np.add.at(X, (rows, base + 1), -k)
        np.add.at(X, (rows, base + npar - 1), q * pt)
    return X


def event_design(edges: np.ndarray, idx: np.ndarray, cols: dict[str, np.ndarray], bins: np.ndarray) -> np.ndarray:
    """Design matrix of the 4-D bins ``bins`` in the fine (A, e, M) parameters on ``edges``,
    averaged over the (simulated) events of each bin: row = <d+ + d-> per unit parameter.

    Used to propagate a calibration on fine eta bins into the closure parameters of coarser
    4-D bins exactly (each muon contributes to its own fine eta bin)."""
    from .scale_model import eta_index

    bins = np.asarray(bins)
    n_eta = len(edges) - 1
    pos, ok = bin_positions(idx, bins)
    cnt = np.maximum(np.bincount(pos[ok], minlength=len(bins)), 1)
    X = np.zeros(len(bins) * 3 * n_eta)
    for p, q in (("mup", 1.0), ("mum", -1.0)):
        pt = np.asarray(cols[f"{p}_pt"], dtype=np.float64)[ok]
        ie = eta_index(np.asarray(cols[f"{p}_eta"], dtype=np.float64)[ok], edges)
        for c, val in ((0, np.ones_like(pt)), (1, -1.0 / pt), (2, q * pt)):
            X += np.bincount(pos[ok] * 3 * n_eta + 3 * ie + c, weights=val, minlength=X.size)
    return X.reshape(len(bins), 3 * n_eta) / cnt[:, None]


def fit_parameters(binning: Binning4D, fits: MassFitResult, mom: BinMoments, with_e: bool = True,
                   min_bins_per_eta: int = 3, extra_design: np.ndarray | None = None) -> ParamFit:
    """Weighted linear least squares of (A, e, M) (or (A', M')) to the good 4-D bin scales.

    ``extra_design`` (rows: the same bins as ``fits``): the fitted parameters' linear response
    ``L = d(params)/d(theta)`` to bin shifts ``extra_design @ theta`` is returned as
    ``propagator`` (e.g. to carry the J/psi calibration covariance into the closure)."""
    if not np.array_equal(mom.bins, fits.bins):
        raise ValueError("bin moments and mass fits refer to different 4-D bins")
    ok = fits.ok
    s, err = fits.s[ok], fits.s_err[ok]
    y = (1 + s) ** -2 - 1
    sy = 2 * err / (1 + s) ** 3
    sub = BinMoments(mom.bins[ok], mom.k_p[ok], mom.pt_p[ok], mom.k_m[ok], mom.pt_m[ok])
    X = design_matrix(binning, sub, with_e)
    names = ("A", "e", "M") if with_e else ("A", "M")
    npar = len(names)
    # eta bins with too few measurements are not determined: drop their columns
    ie_p, _, ie_m, _ = binning.unravel(sub.bins)
    per_eta = np.bincount(ie_p, minlength=binning.n_eta) + np.bincount(ie_m, minlength=binning.n_eta)
    determined = np.repeat(per_eta >= min_bins_per_eta, npar)
    determined &= np.abs(X).sum(axis=0) > 0
    use_rows = np.abs(X[:, ~determined]).sum(axis=1) == 0 if (~determined).any() else np.ones(len(y), bool)
    Xd = X[use_rows][:, determined]
    w = 1.0 / sy[use_rows] ** 2
    H = Xd.T @ (Xd * w[:, None])
    # rank-deficient combinations (e.g. too narrow pT range) are reported via NaN errors
    cov_d = np.linalg.pinv(H, rcond=1e-12, hermitian=True)
    theta_d = cov_d @ (Xd.T @ (w * y[use_rows]))
    resid = y[use_rows] - Xd @ theta_d
    chi2 = float(np.sum(w * resid ** 2))
    theta = np.full(X.shape[1], np.nan)
    theta[determined] = theta_d
    cov = np.full((X.shape[1], X.shape[1]), np.nan)
    cov[np.ix_(determined, determined)] = cov_d
    prop = None
    if extra_design is not None:
        Xe = np.asarray(extra_design)[ok][use_rows]
        prop = np.full((X.shape[1], Xe.shape[1]), np.nan)
        prop[determined] = cov_d @ (Xd.T @ (w[:, None] * Xe))
    per = theta.reshape(binning.n_eta, npar)
    cols = {nm: per[:, i] for i, nm in enumerate(names)}
    params = ScaleParams(binning.eta_edges, cols["A"], cols.get("e", np.zeros(binning.n_eta)), cols["M"])
    return ParamFit(params=params, cov=cov, names=names, determined=determined, chi2=chi2,
                    ndf=int(use_rows.sum() - determined.sum()), n_bins_used=int(use_rows.sum()),
                    propagator=prop)


def pulls(fit: ParamFit, truth: ScaleParams) -> np.ndarray:
    """(fitted - truth) / error for every determined parameter, ordered like ``fit.vector()``."""
    keep = [("A", "e", "M").index(nm) for nm in fit.names]
    t = truth.vector().reshape(-1, 3)[:, keep].ravel()
    v = fit.vector()
    err = np.sqrt(np.abs(np.diag(fit.cov)))
    d = fit.determined & np.isfinite(err) & (err > 0)
    return (v[d] - t[d]) / err[d]
