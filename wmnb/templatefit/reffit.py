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
the covariance is the inverse of the Hessian obtained by central differences of that gradient.
It is meant for models of up to a few hundred parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

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
    """Dense arrays of a spec: parameter names, kinds and log-normal coefficients."""

    def __init__(self, spec: ModelSpec):
        pois = list(spec.pois) + list(spec.norm_pois)
        nuis = spec.nuisances
        self.names = pois + nuis
        n = len(self.names)
        self.constrained = np.array([False] * len(pois) + [True] * len(nuis))
        self.is_norm = np.array([name in spec.norm_pois for name in self.names])
        P, B = spec.nominal.shape
        self.logk = np.zeros((n, P, B))
        self.even = np.zeros((n, P, B))
        for poi, per_proc in spec.pois.items():
            i = self.names.index(poi)
            for proc, (up, down) in per_proc.items():
                ip = spec.processes.index(proc)
                self.logk[i, ip] = _sym_logk(spec.nominal[ip], up, down)
                self.even[i, ip] = _even_logk(spec.nominal[ip], up, down)
        for poi, procs in spec.norm_pois.items():
            for proc in procs:
                self.logk[self.names.index(poi), spec.processes.index(proc)] = 1.0
        for name, proc, shape_up, shape_down, _ in spec.shapes:
            ip = spec.processes.index(proc)
            self.logk[self.names.index(name), ip] += _sym_logk(spec.nominal[ip], shape_up, shape_down)
        for name, proc, kappa, _ in spec.norms:
            self.logk[self.names.index(name), spec.processes.index(proc)] += np.log(kappa)
        self.nominal = spec.nominal
        self.data = spec.data
        sumw2 = spec.sumw2.sum(0)
        total = spec.nominal.sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = total**2 / (spec.bb_scale**2 * sumw2)
        self.kbb = np.where((spec.bb_scale > 0) & (sumw2 > 0) & np.isfinite(k), k, np.inf)

    def start(self) -> np.ndarray:
        """Nominal parameter values: 0, and 1 for normalisation POIs."""
        return self.is_norm.astype(np.float64)

    def _terms(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        phi = np.where(self.is_norm, np.log(np.where(self.is_norm, x, 1.0)), x)
        expo = np.einsum("k,kpb->pb", phi, self.logk) + np.einsum("k,kpb->pb", x**2, self.even)
        per_proc = self.nominal * np.exp(expo)
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

    def grad(self, x: np.ndarray) -> np.ndarray:
        """Analytic gradient of :meth:`nll` (β profiled: envelope theorem)."""
        per_proc, nu, beta, _, _ = self._terms(x)
        dphi = np.where(self.is_norm, 1.0 / np.where(self.is_norm, x, 1.0), 1.0)
        dexpo = self.logk * dphi[:, None, None] + 2 * x[:, None, None] * self.even
        g = np.einsum("pb,kpb->kb", per_proc, dexpo) @ (beta - self.data / nu)
        g[self.constrained] += x[self.constrained]
        return g


def fit(spec: ModelSpec, start: np.ndarray | None = None, hessian_step: float = 1e-4) -> RefResult:
    """Minimise the reference likelihood of ``spec`` (optionally from ``start``)."""
    m = RefModel(spec)
    x0 = m.start() if start is None else np.asarray(start, dtype=np.float64)
    bounds = [(1e-6, None) if norm else (None, None) for norm in m.is_norm]
    res = optimize.minimize(m.nll, x0, jac=m.grad, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-9, "maxcor": 30})
    x = res.x
    n = len(x)
    h = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = hessian_step
        h[i] = (m.grad(x + e) - m.grad(x - e)) / (2 * hessian_step)
    h = 0.5 * (h + h.T)
    cov = np.linalg.inv(h)
    return RefResult(m.names, x, cov, float(res.fun), bool(res.success))


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
