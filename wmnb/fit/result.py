"""The outcome of a fit: values, covariance, impacts, yields, goodness of fit, blinding."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .model import NUIS, Model

if TYPE_CHECKING:
    from .likelihood import Likelihood


@dataclass
class Yields:
    """Expected yields per bin: total with its uncertainty, and per process (no uncertainty)."""

    total: np.ndarray
    total_err: np.ndarray
    per_process: dict[str, np.ndarray]


@dataclass
class FitResult:
    """Result of :func:`wmnb.fit.fit`. POIs named in ``blind`` carry a hidden offset in
    :meth:`value` and :meth:`to_dict` until :meth:`unblind` is called; the offset itself is
    never shown (not in ``repr``, not in any output)."""

    model: Model = field(repr=False)
    x: np.ndarray = field(repr=False)
    cov: np.ndarray | None = field(repr=False)
    nll: float
    edm: float
    converged: bool
    niter: int
    message: str
    data: np.ndarray = field(repr=False)
    timing: dict[str, float] = field(default_factory=dict, repr=False)
    nominal: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    global_: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    nominal_params: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    global_params: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    _offsets: dict[str, float] = field(default_factory=dict, repr=False)
    _lik: Likelihood | None = field(default=None, repr=False)
    _cov_rows: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- parameters
    @property
    def blinded(self) -> list[str]:
        """Names of the POIs still blinded."""
        return sorted(self._offsets)

    def unblind(self) -> FitResult:
        """Remove the blinding offsets (in place; returns self). Prints nothing."""
        self._offsets.clear()
        return self

    def _row(self, i: int) -> np.ndarray:
        if self.cov is not None:
            return self.cov[i]
        if i not in self._cov_rows:
            raise RuntimeError("this fit kept only the POI rows of the covariance; rerun with full_cov=True")
        return self._cov_rows[i]

    def value(self, name: str) -> float:
        """Fitted value (blinded POIs include their hidden offset)."""
        return float(self.x[self.model.index(name)] + self._offsets.get(name, 0.0))

    def error(self, name: str) -> float:
        """Symmetric uncertainty sqrt(C_ii) from the Hessian at the minimum."""
        i = self.model.index(name)
        return float(np.sqrt(self._row(i)[i]))

    def correlation(self, a: str, b: str) -> float:
        """Correlation coefficient of two parameters."""
        i, j = self.model.index(a), self.model.index(b)
        ri = self._row(i)
        cjj = self._row(j)[j]
        return float(ri[j] / np.sqrt(ri[i] * cjj))

    @property
    def pulls(self) -> dict[str, tuple[float, float]]:
        """Nuisance name -> (theta_hat - theta0, sqrt(C_ii)) (the constraint)."""
        if self.cov is None:
            raise RuntimeError("pulls need the full covariance; rerun with full_cov=True")
        m = self.model
        d = np.sqrt(np.diag(self.cov))
        theta0 = self._lik.theta0.numpy() if self._lik is not None else np.zeros(m.nparams)
        return {n: (float(self.x[i] - theta0[i]), float(d[i]))
                for i, n in enumerate(m.params) if m.kinds[i] == NUIS}

    # ---------------------------------------------------------------- impacts
    def impacts_nominal(self, poi: str) -> dict[str, float]:
        """Group -> nominal impact on ``poi`` (plus ``stat``, ``binByBinStat``, ``total``)."""
        if poi not in self.nominal:
            raise KeyError(f"no nominal impacts for {poi!r}: fit with impacts=True (POIs: {list(self.nominal)})")
        return dict(self.nominal[poi])

    def impacts_global(self, poi: str) -> dict[str, float]:
        """Group -> global impact on ``poi`` (plus ``stat``, ``binByBinStat``, ``total``)."""
        if poi not in self.global_:
            raise KeyError(f"no global impacts for {poi!r}: fit with global_impacts=True (POIs: {list(self.global_)})")
        return dict(self.global_[poi])

    def impacts_nominal_params(self, poi: str) -> dict[str, float]:
        """Nuisance -> nominal impact C_pi / sqrt(C_ii) on ``poi`` (signed)."""
        return dict(self.nominal_params[poi])

    def impacts_global_params(self, poi: str) -> dict[str, float]:
        """Nuisance -> global impact dpoi/dtheta0_i (signed; unit-width global observables)."""
        return dict(self.global_params[poi])

    # ---------------------------------------------------------------- goodness of fit
    def gof(self) -> tuple[float, int, float]:
        """Saturated-model test: (-2 ln lambda, ndf = bins - unconstrained POIs, p-value).

        The NLL is in saturated form (0 for a model that fits every bin, every nuisance at its
        global observable and beta = beta0), so -2 ln lambda = 2 NLL at the minimum.  Bins
        without expected yield (and, validated, without data) add nothing to -2 ln lambda and are
        not counted in ``ndf``, which would otherwise push the p-value up.
        """
        m = self.model
        npoi = int(np.sum((m.kinds != NUIS) & ~np.isfinite(m.prior_sigma)))
        ndf = int(np.sum(~m.empty_bins)) - npoi
        q = 2.0 * self.nll
        import scipy.stats  # here, not at import: scipy.stats alone costs ~0.5 s of every fit's start

        return float(q), int(ndf), float(scipy.stats.chi2.sf(q, ndf))

    # ---------------------------------------------------------------- yields
    def _yields(self, x: np.ndarray, cov_fn: Callable[[np.ndarray], np.ndarray]) -> Yields:
        import tensorflow as tf

        if self._lik is None:
            raise RuntimeError("yields need the likelihood of the fit; use a FitResult returned by wmnb.fit.fit")
        npb, beta = self._lik.yields(tf.constant(x))
        npb, beta = npb.numpy(), beta.numpy()
        J = self._lik.jacobian_yields(tf.constant(x)).numpy()  # [N, B]
        var = cov_fn(J)
        tot = npb.sum(0)
        return Yields(total=tot * beta, total_err=np.sqrt(np.maximum(var, 0.0)) * beta,
                      per_process={p: npb[i] * beta for i, p in enumerate(self.model.processes)})

    @property
    def prefit_yields(self) -> Yields:
        """Yields at the nominal parameters; uncertainty from the unit constraints (and POI priors)."""
        m = self.model
        pv = np.where(m.kinds == NUIS, 1.0, np.where(np.isfinite(m.prior_sigma), m.prior_sigma**2, 0.0))
        return self._yields(m.default_values(), lambda J: np.einsum("nb,n,nb->b", J, pv, J))

    @property
    def postfit_yields(self) -> Yields:
        """Yields at the minimum (times the fitted BB-lite factors), uncertainty J^T C J per bin."""
        if self.cov is None:
            raise RuntimeError("post-fit uncertainties need the full covariance; rerun with full_cov=True")
        return self._yields(self.x, lambda J: np.einsum("nb,nb->b", J, self.cov @ J))

    # ---------------------------------------------------------------- export
    def to_dict(self, params: bool = True) -> dict[str, Any]:
        """JSON-safe summary (blinded POIs shifted by their hidden offsets)."""
        m = self.model
        out: dict[str, Any] = {
            "converged": bool(self.converged), "edm": float(self.edm), "nll": float(self.nll),
            "niter": int(self.niter), "message": self.message, "nparams": m.nparams,
            "nbins": m.nbins, "blinded": self.blinded, "timing": dict(self.timing),
        }
        out["pois"] = {p: {"value": self.value(p), "error": self.error(p),
                           "scale": m.poi_scale.get(p, 1.0)} for p in m.pois}
        if params and self.cov is not None:
            out["pulls"] = {k: list(v) for k, v in self.pulls.items()}
        out["impacts_nominal"] = {k: dict(v) for k, v in self.nominal.items()}
        out["impacts_global"] = {k: dict(v) for k, v in self.global_.items()}
        q, ndf, p = self.gof()
        out["gof"] = {"chi2": q, "ndf": ndf, "p": p}
        return out

    def summary(self) -> str:
        """Human-readable summary of the POIs and the largest impact groups."""
        m = self.model
        lines = [(f"fit: converged={self.converged} edm={self.edm:.2e} nll={self.nll:.4f} "
                  f"iterations={self.niter} parameters={m.nparams} bins={m.nbins}")]
        for p in m.pois:
            s = m.poi_scale.get(p, 1.0)
            tag = " (blinded)" if p in self._offsets else ""
            lines.append(f"  {p} = {self.value(p) * s:.6g} +- {self.error(p) * s:.4g}{tag}")
            for kind, d in (("nominal", self.nominal.get(p)), ("global", self.global_.get(p))):
                if d:
                    top = sorted(((k, v) for k, v in d.items() if k != "total"), key=lambda kv: -abs(kv[1]))[:6]
                    lines.append(f"    {kind} impacts: " + ", ".join(f"{k} {v * s:.3g}" for k, v in top)
                                 + f"; total {d['total'] * s:.4g}")
        q, ndf, pv = self.gof()
        lines.append(f"  saturated GOF: -2lnL = {q:.2f} for {ndf} dof, p = {pv:.3f}")
        return "\n".join(lines)
