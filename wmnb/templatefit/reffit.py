"""An independent reference fit of a :class:`~wmnb.templatefit.model.ModelSpec` (numpy + scipy).

It exists to cross-check the TensorFlow fitter (the paper's "independent likelihood
implementation and minimiser" check) and to let the chapter's tests run without it.  Model:

    ν_b(θ) = Σ_p n_pb · exp(Σ_k φ_k(θ_k) L_kpb + Σ_POI θ_k² E_kpb)
    NLL = Σ_b [ν_b β_b − d_b ln(ν_b β_b)] + Σ_b k_b (β_b − ln β_b) + Σ_constrained θ²/2

Shape nuisances are symmetrised, ``L = ½(ln(up/nom) − ln(down/nom))``; normalisation
nuisances have ``L = ln κ``; the mass POIs carry the odd part ``L`` and the even part
``E = ½(ln(up/nom) + ln(down/nom))`` so θ = ±1 reproduce the ±100 MeV templates exactly; a free
normalisation POI μ enters through ``φ = ln μ`` with ``L = 1``.  ``φ`` is the identity otherwise.
Barlow–Beeston-lite: ``k_b = ν_b² / (s² Σ_p σ²_pb)`` (s = 1.25), β solved analytically,
``β = (d + k)/(ν + k)``; by the envelope theorem the profiled gradient is
``Σ_b (β_b − d_b/ν_b) ∂ν_b/∂θ``.  The minimum is found with L-BFGS-B on the analytic gradient;
the covariance is the inverse of the analytic Hessian of the profiled likelihood: the Hessian
in (θ, β) with the per-bin β eliminated by its (diagonal) Schur complement,

    H = Σ_b (β_b − d_b/ν_b) ∂²ν_b + Σ_b (d_b/ν_b²) ∂ν_b ∂ν_bᵀ − Σ_b β_b²/(d_b + k_b) ∂ν_b ∂ν_bᵀ + C,

with ``C`` the unit constraints.  The coefficients are sparse matrices over (process, bin), so
the cost follows what the variations touch: thousands of local nuisances fit in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, sparse

from .model import ModelSpec, _even_logk, _sym_logk


@dataclass
class RefResult:
    """Best-fit values, covariance and the minimum of the negative log-likelihood."""

    names: list[str]
    x: np.ndarray
    cov: np.ndarray
    nll: float
    converged: bool

    def value(self, name: str) -> float:
        """Best-fit value of a parameter."""
        return float(self.x[self.names.index(name)])

    def error(self, name: str) -> float:
        """Hessian uncertainty of a parameter."""
        i = self.names.index(name)
        return float(np.sqrt(self.cov[i, i]))

    def correlation(self, a: str, b: str) -> float:
        """Correlation coefficient of two parameters."""
        i, j = self.names.index(a), self.names.index(b)
        return float(self.cov[i, j] / np.sqrt(self.cov[i, i] * self.cov[j, j]))


class RefModel:
    """Sparse log-normal coefficients of a spec: parameter names, kinds, odd (``L``) and even
    (``E``, POIs only) coefficient matrices [parameters, processes × bins]."""

    def __init__(self, spec: ModelSpec):
        pois = list(spec.pois) + list(spec.norm_pois)
        nuis = spec.nuisances
        self.names = pois + nuis
        index = {name: i for i, name in enumerate(self.names)}
        n = len(self.names)
        self.constrained = np.array([False] * len(pois) + [True] * len(nuis))
        self.is_norm = np.array([name in spec.norm_pois for name in self.names])
        P, B = spec.nominal.shape
        self.shape = (P, B)
        Triplets = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]
        odd: Triplets = ([], [], [])
        even: Triplets = ([], [], [])

        def add(i: int, ip: int, bins: np.ndarray, values: np.ndarray, into: Triplets = odd) -> None:
            into[0].append(np.full(bins.size, i))
            into[1].append(ip * B + bins)
            into[2].append(values)

        every = np.arange(B)
        for poi, per_proc in spec.pois.items():
            for proc, (up, down) in per_proc.items():
                ip = spec.processes.index(proc)
                add(index[poi], ip, every, _sym_logk(spec.nominal[ip], up, down))
                add(index[poi], ip, every, _even_logk(spec.nominal[ip], up, down), even)
        for poi, procs in spec.norm_pois.items():
            for proc in procs:
                add(index[poi], spec.processes.index(proc), every, np.ones(B))
        for shape in spec.shapes:
            ip = spec.processes.index(shape.process)
            bins, logk = shape.logk(spec.nominal[ip])
            add(index[shape.name], ip, bins, logk)
        for name, proc, kappa, _ in spec.norms:
            add(index[name], spec.processes.index(proc), every, np.full(B, np.log(kappa)))

        def matrix(triplets: Triplets) -> sparse.csr_matrix:
            r, c, v = triplets
            if not r:
                return sparse.csr_matrix((n, P * B))
            # duplicates (one nuisance given twice on a process) are summed by the conversion
            return sparse.coo_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))),
                                     shape=(n, P * B)).tocsr()

        self.L = matrix(odd)
        self.E = matrix(even)
        self.nominal = spec.nominal
        self.data = spec.data
        sumw2 = spec.sumw2.sum(0)
        total = spec.nominal.sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = total**2 / (spec.bb_scale**2 * sumw2)
        self.kbb = np.where((spec.bb_scale > 0) & (sumw2 > 0) & np.isfinite(k), k, np.inf)
        # processes x bins -> bins
        self._sum_over_processes = sparse.csr_matrix(
            (np.ones(P * B), (np.arange(P * B), np.tile(np.arange(B), P))), shape=(P * B, B))

    def start(self) -> np.ndarray:
        """Nominal parameter values: 0, and 1 for normalisation POIs."""
        return self.is_norm.astype(np.float64)

    def _phi(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """φ(x) and its first two derivatives (ln μ for normalisation POIs, else the identity)."""
        safe = np.where(self.is_norm, x, 1.0)
        return (np.where(self.is_norm, np.log(safe), x), np.where(self.is_norm, 1.0 / safe, 1.0),
                np.where(self.is_norm, -1.0 / safe**2, 0.0))

    def yields(self, x: np.ndarray) -> np.ndarray:
        """Expected yields [P, B] at parameter vector ``x`` (Barlow–Beeston factors not applied)."""
        phi = self._phi(x)[0]
        expo = self.L.T @ phi + self.E.T @ (x**2)
        return self.nominal * np.exp(expo.reshape(self.shape))

    def _terms(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        per_proc = self.yields(x)
        nu = np.maximum(per_proc.sum(0), 1e-300)
        finite = np.isfinite(self.kbb)
        kk = np.where(finite, self.kbb, 0.0)
        beta = np.where(finite, (self.data + kk) / (nu + kk), 1.0)
        return per_proc, nu, beta, finite, kk

    def nll(self, x: np.ndarray) -> float:
        """Profiled negative log-likelihood (constants dropped)."""
        _, nu, beta, finite, kk = self._terms(x)
        mu = nu * beta
        val = np.sum(mu - self.data * np.log(mu))
        val += np.sum(np.where(finite, kk * (beta - np.log(beta)), 0.0))
        return float(val + 0.5 * np.sum(x[self.constrained] ** 2))

    def _derivatives(self, x: np.ndarray, per_proc: np.ndarray) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        """D = ∂expo/∂x [N, P·B] and J = ∂ν/∂x [N, B] (sparse)."""
        _, dphi, _ = self._phi(x)
        D = (sparse.diags(dphi) @ self.L + sparse.diags(2.0 * x) @ self.E).tocsr()
        J = D.multiply(per_proc.ravel()[None, :]).tocsr() @ self._sum_over_processes
        return D, J.tocsr()

    def grad(self, x: np.ndarray) -> np.ndarray:
        """Analytic gradient of :meth:`nll` (β profiled: envelope theorem)."""
        per_proc, nu, beta, _, _ = self._terms(x)
        _, J = self._derivatives(x, per_proc)
        g = np.asarray(J @ (beta - self.data / nu)).ravel()
        g[self.constrained] += x[self.constrained]
        return g

    def hessian(self, x: np.ndarray) -> np.ndarray:
        """Analytic Hessian of :meth:`nll` (dense [N, N]; see the module docstring)."""
        per_proc, nu, beta, finite, kk = self._terms(x)
        D, J = self._derivatives(x, per_proc)
        w = beta - self.data / nu
        a = (per_proc * w[None, :]).ravel()                 # weight of each (process, bin)
        _, _, d2phi = self._phi(x)
        h = (D.multiply(a[None, :]).tocsr() @ D.T).toarray()
        h[np.diag_indices_from(h)] += (sparse.diags(d2phi) @ self.L + 2.0 * self.E) @ a
        outer = self.data / nu**2 - np.where(finite, beta**2 / np.maximum(self.data + kk, 1e-300), 0.0)
        h += (J.multiply(outer[None, :]).tocsr() @ J.T).toarray()
        h[np.diag_indices_from(h)] += self.constrained
        return 0.5 * (h + h.T)


def fit(spec: ModelSpec, start: np.ndarray | None = None) -> RefResult:
    """Minimise the reference likelihood of ``spec`` (optionally from ``start``)."""
    m = RefModel(spec)
    x0 = m.start() if start is None else np.asarray(start, dtype=np.float64)
    bounds = [(1e-6, None) if norm else (None, None) for norm in m.is_norm]
    res = optimize.minimize(m.nll, x0, jac=m.grad, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-9, "maxcor": 30})
    cov = np.linalg.inv(m.hessian(res.x))
    return RefResult(m.names, res.x, cov, float(res.fun), bool(res.success))


def nominal_impacts(res: RefResult, groups: dict[str, str], poi: str) -> dict[str, float]:
    """Nominal group impacts on ``poi`` in the quadratic approximation (θ units).

    A group's impact is ``sqrt(σ² − σ²|group fixed)``, the conditional variance coming from the
    Hessian with that group's rows and columns removed; ``"stat"`` is the uncertainty with every
    nuisance fixed (here it includes the MC statistical part, which is profiled analytically).
    """
    hess = np.linalg.inv(res.cov)
    i = res.names.index(poi)
    total = res.cov[i, i]

    def fixed(names: set[str]) -> float:
        keep = [k for k, n in enumerate(res.names) if n not in names]
        sub = np.linalg.inv(hess[np.ix_(keep, keep)])
        return float(sub[keep.index(i), keep.index(i)])

    out = {}
    for group in sorted(set(groups.values())):
        members = {n for n, g in groups.items() if g == group}
        out[group] = float(np.sqrt(max(total - fixed(members), 0.0)))
    out["stat"] = float(np.sqrt(fixed(set(groups))))
    out["total"] = float(np.sqrt(total))
    return out
