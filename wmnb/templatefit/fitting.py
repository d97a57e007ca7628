"""Running template fits: the nominal fit, the data-statistics-only fit, scans and random starts.

:func:`run_fit` hands a :class:`~wmnb.templatefit.model.ModelSpec` to the project's TensorFlow fitter
(``wmnb.fit``) when it is available, else to the independent reference fit (and says which
in :attr:`TemplateFit.backend`).  Everything is returned in MeV relative to the simulation's mass
hypothesis; the mass is *never* blinded here, blinding is applied where values are shown
(:mod:`wmnb.templatefit.blinding`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import reffit
from .model import ModelSpec, asimov, make_spec
from .templates import TemplateSet


@dataclass
class TemplateFit:
    """What the chapter uses from one fit (POIs in MeV for masses; normalisations as μ)."""

    backend: str
    values: dict[str, float]
    errors: dict[str, float]
    nuisances: dict[str, tuple[float, float]] = field(default_factory=dict)   # name -> (pull, constraint)
    impacts_nominal: dict[str, float] | None = None
    impacts_global: dict[str, float] | None = None
    gof_pvalue: float | None = None
    raw: Any = None

    def corr(self, a: str, b: str) -> float:
        """Correlation of two parameters (POIs or nuisances), from the underlying fit result."""
        return float(self.raw.correlation(a, b))


def fitter_available() -> bool:
    """Whether the TensorFlow fitter ``wmnb.fit.fit`` can be imported."""
    try:
        from wmnb.fit import fit  # noqa: F401
    except ImportError:
        return False
    return True


def _poi_scale(spec: ModelSpec, name: str) -> float:
    return spec.mass_step_mev if name in spec.pois else 1.0


def _from_reffit(spec: ModelSpec, res: reffit.RefResult) -> TemplateFit:
    pois = list(spec.pois) + list(spec.norm_pois)
    values = {p: res.value(p) * _poi_scale(spec, p) for p in pois}
    errors = {p: res.error(p) * _poi_scale(spec, p) for p in pois}
    nuis = {n: (res.value(n), res.error(n)) for n in res.names if n not in pois}
    out = TemplateFit("reference (numpy/scipy)", values, errors, nuis, raw=res)
    if "mass" in spec.pois and spec.nuisances:
        out.impacts_nominal = {g: v * spec.mass_step_mev
                               for g, v in reffit.nominal_impacts(res, spec.groups(), "mass").items()}
    return out


def _from_wmnb_fit(spec: ModelSpec, res: Any, impacts: bool, full_cov: bool) -> TemplateFit:
    """Adapter to ``wmnb.fit.FitResult`` (its POIs and impacts are in θ units: scaled here)."""
    if not res.converged:
        raise RuntimeError(f"the fit did not converge ({res.message}); inspect the model")
    pois = list(spec.pois) + list(spec.norm_pois)
    values = {p: res.value(p) * _poi_scale(spec, p) for p in pois}
    errors = {p: res.error(p) * _poi_scale(spec, p) for p in pois}
    out = TemplateFit("wmnb.fit (TensorFlow)", values, errors, dict(res.pulls) if full_cov else {}, raw=res)
    if impacts and "mass" in spec.pois:
        scale = spec.mass_step_mev
        out.impacts_nominal = {g: v * scale for g, v in res.impacts_nominal("mass").items()}
        out.impacts_global = {g: v * scale for g, v in res.impacts_global("mass").items()}
    out.gof_pvalue = res.gof()[2]
    return out


def _built(spec: ModelSpec) -> Any:
    """The ``wmnb.fit.Model`` of ``spec``, built once: refits with other data reuse it (and the
    fitter's compiled graph), which is what makes 20-point scans cheap."""
    if getattr(spec, "_fit_model", None) is None:
        from .model import to_builder

        spec._fit_model = to_builder(spec).build()
    return spec._fit_model


def run_fit(spec: ModelSpec, impacts: bool = False, backend: str = "auto", data: np.ndarray | None = None,
            start: np.ndarray | None = None, seed: int | None = None, full_cov: bool = True) -> TemplateFit:
    """Fit ``spec`` (to ``data``, flat over ``spec.mask``, instead of ``spec.data`` if given).

    ``backend``: ``"auto"`` (wmnb.fit if importable), ``"wmnb"`` or ``"reference"``.  ``start``
    (reference fitter: a parameter vector) or ``seed`` (wmnb.fit: a random start) choose the
    starting point; ``full_cov=False`` skips the nuisances' covariance (no pulls; faster).
    """
    if backend not in ("auto", "wmnb", "reference"):
        raise ValueError(f"backend must be 'auto', 'wmnb' or 'reference', got {backend!r}")
    if data is not None and np.shape(data) != spec.data.shape:
        raise ValueError(f"data must be flat over the model's {spec.data.size} bins, got shape {np.shape(data)}")
    use_tf = backend == "wmnb" or (backend == "auto" and fitter_available())
    if not use_tf:
        target = spec if data is None else dataclasses.replace(spec, data=np.asarray(data, dtype=np.float64))
        return _from_reffit(target, reffit.fit(target, start=start))
    from wmnb.fit import fit

    res = fit(_built(spec), data=data, impacts=impacts, global_impacts=impacts, seed=seed,
              full_cov=full_cov or impacts)
    return _from_wmnb_fit(spec, res, impacts, full_cov or impacts)


# ---------------------------------------------------------------- fits every chapter runs
def stat_only(ts: TemplateSet, data: np.ndarray | None = None, **kw: Any) -> TemplateFit:
    """Data-statistics-only fit: no nuisances, no MC statistical uncertainty."""
    return run_fit(make_spec(ts, data=data, systematics=False, mc_stat=False), **kw)


def injection_scan(ts: TemplateSet, **kw: Any) -> list[tuple[float, float, float]]:
    """Fit Asimov data with the signal BW-reweighted to each shift of ``ts.mass_scan``.

    Returns (injected, fitted, error) in MeV for every point.
    """
    spec = make_spec(ts)
    out = []
    for shift in sorted(ts.mass_scan):
        fit = run_fit(spec, data=asimov(ts, shift)[spec.mask], full_cov=False, **kw)
        out.append((shift, fit.values["mass"], fit.errors["mass"]))
    return out


def random_starts(ts: TemplateSet, n: int, seed: int) -> list[float]:
    """m_W (MeV) from ``n`` fits of the nominal model started at random points."""
    spec = make_spec(ts)
    if fitter_available():
        return [run_fit(spec, seed=seed + k, full_cov=False).values["mass"] for k in range(n)]
    model = reffit.RefModel(spec)
    rng = np.random.default_rng([seed, 8])
    free = ~model.constrained & ~model.is_norm
    out = []
    for _ in range(n):
        x0 = model.start() + rng.normal(0.0, 1.0, len(model.names)) * model.constrained
        x0[free] = rng.uniform(-3, 3, int(free.sum()))
        out.append(run_fit(spec, backend="reference", start=x0).values["mass"])
    return out


def difference(fit: TemplateFit, a: str, b: str) -> tuple[float, float]:
    """``a − b`` (MeV) and its uncertainty, using the fit's correlation of the two POIs."""
    rho = fit.corr(a, b)
    ea, eb = fit.errors[a], fit.errors[b]
    return fit.values[a] - fit.values[b], float(np.sqrt(ea**2 + eb**2 - 2 * rho * ea * eb))
