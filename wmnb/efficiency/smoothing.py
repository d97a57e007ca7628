"""Smoothing of the scale factors in pT (and u_∥) per eta-charge slice, with eigen-variations.

Per slice the binned scale factors are fitted by weighted least squares with Legendre polynomials
of x = 2 (pT − pT_lo)/(pT_hi − pT_lo) − 1 (and of the same map y of u_∥ for the 2-D trigger and
isolation): SF(pT[, u]) = Σ_i c_i P_i(x) + Σ_{j≥1} d_j P_j(y) (see :func:`design`).  No smoothing across eta.  The statistical
uncertainty of each slice becomes its eigenvector variations: c ± √λ_k v_k for the eigenpairs of
the coefficients' covariance, one nuisance each.

The polynomial order of a step is chosen by a statistical test (:func:`choose_order`): the summed
χ² over all slices for orders 0, 1, …, and an F-test of each order against the next; the chosen
order is the lowest after which one more order does not improve the fit at the 5 % level.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import legendre
from scipy.stats import f as f_dist

#: significance of the F-test that decides whether one more polynomial order is needed
F_TEST_ALPHA = 0.05


def to_unit(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The map of [lo, hi] onto [−1, 1], clamped (scale factors are constant beyond the range)."""
    return np.clip(2.0 * (np.asarray(x, float) - lo) / (hi - lo) - 1.0, -1.0, 1.0)


def design(x: np.ndarray, order: int, y: np.ndarray | None = None, order_y: int = 0) -> np.ndarray:
    """Columns P_i(x) for i ≤ order, then P_j(y) for 1 ≤ j ≤ order_y: shape (len(x), order + 1 +
    order_y).  Additive in pT and u_∥, without cross terms: the Z probes leave the corners of
    the (pT, u_∥) plane nearly empty (high pT with u_∥ < 0, low pT with large u_∥), where cross
    terms run away (measured: a cubic × linear tensor gave SF < 0 in 54 trigger bins)."""
    px = legendre.legvander(np.asarray(x, float), order)
    if y is None or order_y == 0:
        return px
    py = legendre.legvander(np.asarray(y, float), order_y)
    return np.concatenate([px, py[:, 1:]], axis=1)


@dataclass(frozen=True)
class SmoothFit:
    """Coefficients ``(S, P)`` and covariances ``(S, P, P)`` of every slice; ``chi2``, ``ndf``
    per slice; the pT (and u_∥) ranges of the unit map and the orders."""

    coeffs: np.ndarray
    cov: np.ndarray
    chi2: np.ndarray
    ndf: np.ndarray
    pt_range: tuple[float, float]
    order_pt: int
    upar_range: tuple[float, float] | None = None
    order_upar: int = 0

    @property
    def n_params(self) -> int:
        return int(self.coeffs.shape[1])

    def basis(self, pt: np.ndarray, upar: np.ndarray | None = None) -> np.ndarray:
        x = to_unit(pt, *self.pt_range)
        y = None if self.upar_range is None or upar is None else to_unit(upar, *self.upar_range)
        if self.upar_range is not None and upar is None:
            y = np.zeros_like(x)
        return design(x, self.order_pt, y, self.order_upar if y is not None else 0)

    def evaluate(self, slices: np.ndarray, pt: np.ndarray, upar: np.ndarray | None = None,
                 coeffs: np.ndarray | None = None) -> np.ndarray:
        """SF of points in ``slices`` (index per point) at ``pt`` (and ``upar``)."""
        c = self.coeffs if coeffs is None else coeffs
        return np.einsum("np,np->n", self.basis(pt, upar), c[np.asarray(slices)])

    def band(self, slices: np.ndarray, pt: np.ndarray, upar: np.ndarray | None = None) -> np.ndarray:
        """The 1σ smoothing band at points of ``slices``: the eigen-variations in quadrature."""
        nom = self.evaluate(slices, pt, upar)
        shifts = self.eigen_shifts()
        return np.sqrt(sum((self.evaluate(slices, pt, upar, self.coeffs + shifts[:, k]) - nom) ** 2
                           for k in range(self.n_params)))

    def eigen_shifts(self) -> np.ndarray:
        """``(S, P, P)``: shift k of slice s is ``shifts[s, k]`` (√λ_k v_k; zero for λ ≤ 0)."""
        w, v = np.linalg.eigh(self.cov)
        return np.transpose(v * np.sqrt(np.maximum(w, 0.0))[:, None, :], (0, 2, 1))


def fit_slices(values: np.ndarray, errors: np.ndarray, pt: np.ndarray, pt_range: tuple[float, float], order_pt: int,
               upar: np.ndarray | None = None, upar_range: tuple[float, float] | None = None,
               order_upar: int = 0) -> SmoothFit:
    """Weighted least squares of every slice at once.  ``values``, ``errors``: ``(S, n_pt)`` or
    ``(S, n_pt, n_u)`` (NaN or non-positive errors: the bin is left out); ``pt`` (and ``upar``) the
    bin centres.  A slice with fewer usable bins than coefficients gets the minimum-norm solution
    and the pseudo-inverse as covariance (its extra directions unconstrained: flagged by ndf < 0)."""
    v = np.asarray(values, float)
    e = np.asarray(errors, float)
    s = v.shape[0]
    two_d = v.ndim == 3
    if two_d:
        if upar is None or upar_range is None:
            raise ValueError("values with a u_par axis need upar centres and upar_range")
        xx, uu = np.meshgrid(np.asarray(pt, float), np.asarray(upar, float), indexing="ij")
        a = design(to_unit(xx.ravel(), *pt_range), order_pt, to_unit(uu.ravel(), *upar_range), order_upar)
    else:
        a = design(to_unit(pt, *pt_range), order_pt)
    v = v.reshape(s, -1)
    e = e.reshape(s, -1)
    ok = np.isfinite(v) & np.isfinite(e) & (e > 0)
    w = np.where(ok, 1.0 / np.where(ok, e, 1.0) ** 2, 0.0)
    vv = np.where(ok, v, 0.0)
    ata = np.einsum("np,sn,nq->spq", a, w, a)
    atb = np.einsum("np,sn->sp", a, w * vv)
    cov = np.linalg.pinv(ata, hermitian=True)
    coeffs = np.einsum("spq,sq->sp", cov, atb)
    resid = vv - coeffs @ a.T
    chi2 = np.sum(w * resid**2, axis=1)
    ndf = ok.sum(axis=1) - a.shape[1]
    return SmoothFit(coeffs, cov, chi2, ndf, (float(pt_range[0]), float(pt_range[1])), int(order_pt),
                     (float(upar_range[0]), float(upar_range[1])) if two_d and upar_range is not None else None,
                     int(order_upar) if two_d else 0)


@dataclass(frozen=True)
class OrderTest:
    """The summed χ², ndf and the F-test p-value of order k against k+1, per tried order."""

    orders: tuple[int, ...]
    chi2: tuple[float, ...]
    ndf: tuple[int, ...]
    p_next: tuple[float, ...]
    chosen: int


def choose_order(values: np.ndarray, errors: np.ndarray, pt: np.ndarray, pt_range: tuple[float, float],
                 max_order: int, upar: np.ndarray | None = None, upar_range: tuple[float, float] | None = None,
                 order_pt: int | None = None, alpha: float = F_TEST_ALPHA) -> OrderTest:
    """The pT order (``order_pt`` None) or, given ``order_pt``, the u_∥ order: the lowest order k
    for which order k+1 is not significantly better (F-test on the χ² summed over slices)."""
    orders = tuple(range(max_order + 1))
    fits = []
    for k in orders:
        if order_pt is None:
            fits.append(fit_slices(values, errors, pt, pt_range, k, upar, upar_range, 0))
        else:
            fits.append(fit_slices(values, errors, pt, pt_range, order_pt, upar, upar_range, k))
    chi2 = tuple(float(f.chi2.sum()) for f in fits)
    ndf = tuple(int(np.maximum(f.ndf, 0).sum()) for f in fits)
    p_next = []
    for i in range(len(orders) - 1):
        dn = ndf[i] - ndf[i + 1]
        if dn <= 0 or ndf[i + 1] <= 0 or chi2[i + 1] <= 0:
            p_next.append(1.0)
            continue
        fstat = ((chi2[i] - chi2[i + 1]) / dn) / (chi2[i + 1] / ndf[i + 1])
        p_next.append(float(f_dist.sf(fstat, dn, ndf[i + 1])))
    chosen = orders[-1]
    for i, p in enumerate(p_next):
        if p > alpha:
            chosen = orders[i]
            break
    return OrderTest(orders, chi2, ndf, tuple(p_next), chosen)


__all__ = ["F_TEST_ALPHA", "OrderTest", "SmoothFit", "choose_order", "design", "fit_slices", "to_unit"]
