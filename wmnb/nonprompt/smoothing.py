"""Smoothing of the nonprompt pT spectra: the exponential of a polynomial, fitted per slice.

Each sideband's nonprompt yield (data minus prompt simulation) in one (eta, charge) slice is a
pT spectrum that can fluctuate low, even below zero, where the prompt subtraction is large.
The model μ(x) = exp(Σ_k β_k x^k), x the pT bin centre mapped onto [-1, 1], stays positive
whatever the data do; it is fitted by maximum quasi-likelihood with the variance
V = w μ + V_prompt (w the weight per event, 1 for data; V_prompt the variance the subtracted
prompt prediction adds): for data this is the Poisson likelihood of the observed count with mean
μ + prompt, so a negative bin pulls the fit down without ever making it negative, and low
counts do not bias it the way a χ² fit would.  The fits of the five sidebands combine linearly in log space,
log D = Σ_r c_r log N_r (:data:`wmnb.nonprompt.abcd.LOG_COEFFICIENTS`): the coefficients add,
β_D = Σ c_r β_r, and so do their covariances, cov_D = Σ c_r² cov_r (the regions are
independent samples).  The eigenvectors of cov_D are the smoothing's statistical nuisances.

All functions work on a stack of slices at once (leading axis ``S``), so the 96 slices × 5
regions of the W binning are one vectorised fit.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

def scaled_abscissa(edges: np.ndarray) -> np.ndarray:
    """Bin centres mapped linearly onto [-1, 1] (a well-conditioned polynomial basis)."""
    edges = np.asarray(edges, np.float64)
    c = 0.5 * (edges[1:] + edges[:-1])
    return 2.0 * (c - edges[0]) / (edges[-1] - edges[0]) - 1.0


def design(x: np.ndarray, order: int) -> np.ndarray:
    """(n, order + 1) matrix of the powers x^0 .. x^order."""
    if order < 0:
        raise ValueError(f"polynomial order must be >= 0, got {order}")
    return np.vander(np.asarray(x, np.float64), order + 1, increasing=True)


@dataclass
class ExpPolyFit:
    """Fits μ = exp(X β) of a stack of slices: coefficients (S, k+1), their covariance
    (S, k+1, k+1), the deviance per slice (S,: χ²-distributed for a good fit) and the degrees
    of freedom per slice."""

    x: np.ndarray
    coef: np.ndarray
    cov: np.ndarray
    chi2: np.ndarray
    ndf: int

    @property
    def order(self) -> int:
        return self.coef.shape[-1] - 1

    def values(self, coef: np.ndarray | None = None) -> np.ndarray:
        """μ per slice and bin (S, n) for ``coef`` (default: the fitted ones)."""
        c = self.coef if coef is None else coef
        return np.exp(np.einsum("nk,...k->...n", design(self.x, self.order), c))

    def eigen_shifts(self) -> np.ndarray:
        """(S, k+1, k+1): per slice the shifts ±sqrt(λ_j) u_j of the coefficients along the
        eigenvectors of their covariance (row j is eigenvector j)."""
        lam, vec = np.linalg.eigh(self.cov)
        return np.swapaxes(vec * np.sqrt(np.clip(lam, 0.0, None))[..., None, :], -1, -2)


def _start(y: np.ndarray, x: np.ndarray, order: int) -> np.ndarray:
    """Weighted linear least squares of log(max(y, floor)): a start close to the minimum."""
    floor = np.maximum(0.05 * np.max(y, axis=-1, keepdims=True), 0.5)
    yy = np.maximum(y, floor)
    X = design(x, order)
    w = yy                              # var(log y) ≈ 1 / y
    a = np.einsum("nk,sn,nl->skl", X, w, X)
    b = np.einsum("nk,sn->sk", X, w * np.log(yy))
    return np.linalg.solve(a + 1e-9 * np.eye(order + 1), b[..., None])[..., 0]


def _deviance(y: np.ndarray, mu: np.ndarray, w: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """−2 × the quasi-log-likelihood of variance V(μ) = w μ + offset, per slice (0 at μ = y).

    Q(μ; y) = ∫_y^μ (y − t) / V(t) dt = −(μ − y)/w + (w y + offset)/w² · ln(V(μ) / V(y)): for
    data minus a prompt prediction P (w = 1, offset = P) this is the Poisson likelihood of the
    data count n = y + P with mean μ + P; for a weighted simulation (offset 0) a scaled Poisson."""
    vy = w * y + offset
    vmu = np.maximum(w * mu + offset, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(vy > 0, vy / (w * w) * np.log(vmu / np.where(vy > 0, vy, 1.0)), 0.0)
    q = -(mu - y) / w + log_term
    return -2.0 * np.sum(q, axis=-1)


def fit_exp_poly(y: np.ndarray, x: np.ndarray, order: int, *, offset_var: np.ndarray | float = 0.0,
                 event_weight: np.ndarray | float = 1.0, start: np.ndarray | None = None,
                 max_iter: int = 200, tol: float = 1e-10) -> ExpPolyFit:
    """Fit exp(polynomial of ``order``) to each row of ``y`` (S, n) at abscissae ``x`` (n,).

    Maximum quasi-likelihood with the variance V = ``event_weight`` × μ + ``offset_var`` per bin
    (:func:`_deviance`; the Poisson likelihood of the data count for data minus a prompt
    prediction), by Fisher scoring with Levenberg–Marquardt damping; the reported ``chi2`` is
    the deviance.  ``start`` (S, order + 1) warm-starts the fit (a variation of the inputs
    refits from the nominal).  A slice whose total ``y`` is not positive raises ValueError
    naming it: no positive spectrum describes it."""
    y = np.atleast_2d(np.asarray(y, np.float64))
    S, n = y.shape
    if n <= order + 1:
        raise ValueError(f"{n} bins cannot constrain a polynomial of order {order}")
    bad = np.flatnonzero(~(y.sum(axis=-1) > 0))
    if bad.size:
        raise ValueError(f"slices {bad.tolist()[:10]} have no positive yield to smooth (total {y.sum(axis=-1)[bad][:10]})")
    X = design(x, order)
    w = np.broadcast_to(np.asarray(event_weight, np.float64), y.shape)
    off = np.broadcast_to(np.asarray(offset_var, np.float64), y.shape)
    beta = _start(y, x, order) if start is None else np.array(start, np.float64)
    lam = np.full(S, 1e-3)
    mu = np.exp(np.clip(beta @ X.T, -50, 50))
    dev = _deviance(y, mu, w, off)
    eye = np.eye(order + 1)
    active = np.ones(S, bool)
    for _ in range(max_iter):
        if not active.any():
            break
        v = np.maximum(w * mu + off, 1e-12)
        jw = (mu / v)[..., None] * X                       # V⁻¹ J  (S, n, k)
        a = np.einsum("snk,sn,nl->skl", jw, mu, X)         # Jᵀ V⁻¹ J
        g = np.einsum("snk,sn->sk", jw, y - mu)            # the quasi-score
        # the ridge keeps a slice whose fit runs to zero (data compatible with no nonprompt) solvable
        damp = a + (lam[:, None, None] * np.diagonal(a, axis1=1, axis2=2)[:, :, None] + 1e-9) * eye
        step = np.linalg.solve(damp, g[..., None])[..., 0]
        step[~active] = 0.0
        trial = beta + step
        mu_t = np.exp(np.clip(trial @ X.T, -50, 50))
        dev_t = _deviance(y, mu_t, w, off)
        better = (dev_t <= dev) & active
        beta[better], mu[better], dev[better] = trial[better], mu_t[better], dev_t[better]
        lam = np.where(better, lam / 10.0, lam * 10.0)
        small = np.max(np.abs(step), axis=-1) < tol
        active &= ~(small | (lam > 1e12))
    v = np.maximum(w * mu + off, 1e-12)
    a = np.einsum("snk,sn,nl->skl", (mu * mu / v)[..., None] * X, np.ones_like(mu), X)
    cov = np.linalg.pinv(a, hermitian=True)
    return ExpPolyFit(np.asarray(x, np.float64), beta, cov, _deviance(y, mu, w, off), n - (order + 1))


def combine(fits: Mapping[str, ExpPolyFit], coefficients: Mapping[str, float]) -> ExpPolyFit:
    """The log-space combination Σ c_r log μ_r of independent fits (same slices, order, x):
    coefficients add with weights c_r, covariances with c_r²."""
    names = list(coefficients)
    first = fits[names[0]]
    coef = sum(coefficients[r] * fits[r].coef for r in names)
    cov = sum(coefficients[r] ** 2 * fits[r].cov for r in names)
    chi2 = sum(fits[r].chi2 for r in names)
    return ExpPolyFit(first.x, np.asarray(coef), np.asarray(cov), np.asarray(chi2), first.ndf * len(names))


@dataclass(frozen=True)
class OrderTest:
    """One row of the order scan: total χ² and ndf over every slice and region at ``order``,
    and the F-test p-value of adding one more order (None for the highest)."""

    order: int
    chi2: float
    ndf: int
    p_next: float | None


def choose_order(problems: Sequence[dict], x: np.ndarray, orders: Sequence[int] = (1, 2, 3, 4, 5),
                 alpha: float = 0.05) -> tuple[int, list[OrderTest]]:
    """The lowest order beyond which one more order does not improve the fits significantly
    (F-test at ``alpha`` on χ² summed over ``problems``: keyword sets of :func:`fit_exp_poly`
    without ``order``), and the scan."""
    totals = []
    for k in orders:
        chi2 = ndf = 0.0
        for prob in problems:
            f = fit_exp_poly(x=x, order=k, **prob)
            chi2 += float(f.chi2.sum())
            ndf += f.ndf * f.coef.shape[0]
        totals.append((k, chi2, int(ndf)))
    rows, chosen = [], None
    for i, (k, chi2, ndf) in enumerate(totals):
        p = None
        if i + 1 < len(totals):
            _, chi2_n, ndf_n = totals[i + 1]
            dndf = ndf - ndf_n
            fstat = max(chi2 - chi2_n, 0.0) / dndf / max(chi2_n / ndf_n, 1e-12)
            p = float(stats.f.sf(fstat, dndf, ndf_n))
            if chosen is None and p > alpha:
                chosen = k
        rows.append(OrderTest(k, chi2, ndf, p))
    return (chosen if chosen is not None else totals[-1][0]), rows


__all__ = ["ExpPolyFit", "OrderTest", "choose_order", "combine", "design", "fit_exp_poly", "scaled_abscissa"]
