"""Running template fits: the nominal fit, the data-statistics-only fit, scans and random starts.

:func:`run_fit` hands a :class:`~wmnb.templatefit.model.ModelSpec` to the project's TensorFlow fitter
(``wmnb.fit``) when it is available, else to the independent reference fit (and says which
in :attr:`TemplateFit.backend`).  Everything is returned in MeV relative to the simulation's mass
hypothesis; the mass is *never* blinded here, blinding is applied where values are shown
(:mod:`wmnb.templatefit.blinding`).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import reffit
from .model import ModelSpec, asimov, make_spec
from .templates import TemplateSet


@dataclass
class TemplateFit:
    """What the chapter uses from one fit (POIs in MeV for masses; normalisations as μ;
    nuisances of interest in units of their prior σ, in ``values``/``errors`` as well)."""

    backend: str
    values: dict[str, float]
    errors: dict[str, float]
    nuisances: dict[str, tuple[float, float]] = field(default_factory=dict)   # name -> (pull, constraint)
    impacts_nominal: dict[str, float] | None = None
    impacts_global: dict[str, float] | None = None
    gof_pvalue: float | None = None
    raw: Any = None
    #: correlation matrix of the reported parameters (POIs and nuisances of interest, in this
    #: order): what :meth:`corr` uses when ``raw`` was not kept
    reported_corr: np.ndarray | None = field(default=None, repr=False)

    def corr(self, a: str, b: str) -> float:
        """Correlation of two parameters: any two with the fitter's result kept (``raw``),
        else two reported ones (POIs, nuisances of interest)."""
        if self.raw is not None:
            return float(self.raw.correlation(a, b))
        names = list(self.values)
        if self.reported_corr is None or a not in names or b not in names:
            raise KeyError(f"the correlation of {a!r} and {b!r} needs the fit result: this fit kept only the "
                           f"reported parameters {names} (run_fit(..., keep_raw=True))")
        return float(self.reported_corr[names.index(a), names.index(b)])

    def released(self) -> TemplateFit:
        """This fit without the fitter's result (its model, likelihood and covariance: about
        1 GB at 5000 nuisances), keeping values, errors, impacts and the reported correlations."""
        names = list(self.values)
        corr = np.array([[1.0 if a == b else self.corr(a, b) for b in names] for a in names])
        return dataclasses.replace(self, raw=None, reported_corr=corr)


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
    pois = list(spec.pois) + list(spec.norm_pois) + spec.nois
    values = {p: res.value(p) * _poi_scale(spec, p) for p in pois}
    errors = {p: res.error(p) * _poi_scale(spec, p) for p in pois}
    nuis = {n: (res.value(n), res.error(n)) for n in res.names if n not in pois or n in spec.nois}
    out = TemplateFit("reference (numpy/scipy)", values, errors, nuis, raw=res)
    if "mass" in spec.pois and spec.nuisances:
        out.impacts_nominal = {g: v * spec.mass_step_mev
                               for g, v in reffit.nominal_impacts(res, spec.groups(), "mass").items()}
    return out


def _from_wmnb_fit(spec: ModelSpec, res: Any, impacts: bool, full_cov: bool) -> TemplateFit:
    """Adapter to ``wmnb.fit.FitResult`` (its POIs and impacts are in θ units: scaled here)."""
    if not res.converged:
        raise RuntimeError(f"the fit did not converge ({res.message}); inspect the model")
    pois = list(spec.pois) + list(spec.norm_pois) + spec.nois
    values = {p: res.value(p) * _poi_scale(spec, p) for p in pois}
    errors = {p: res.error(p) * _poi_scale(spec, p) for p in pois}
    out = TemplateFit("wmnb.fit (TensorFlow)", values, errors, dict(res.pulls) if full_cov else {}, raw=res)
    if impacts and "mass" in spec.pois:
        scale = spec.mass_step_mev
        out.impacts_nominal = {g: v * scale for g, v in res.impacts_nominal("mass").items()}
        out.impacts_global = {g: v * scale for g, v in res.impacts_global("mass").items()}
    out.gof_pvalue = res.gof()[2]
    return out


def release_memory() -> None:
    """Collect the reference cycles of dropped fitter models and hand freed heap back to the
    system.  A built model and its traced TensorFlow graphs form cycles that Python's collector
    reaches rarely (few, large objects), so a chapter fitting one model after another
    (cross-checks, prior scans) kept each until the end: measured on chapter 08's default
    model, 8 cross-check fits held 5 GB more than one."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):      # not glibc: the collection alone
        pass


def releasing(func: Any) -> Any:
    """Decorator: :func:`release_memory` once ``func`` has returned (and its frame, with the
    models it built, is gone)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            release_memory()

    return wrapper


def _built(spec: ModelSpec) -> Any:
    """The ``wmnb.fit.Model`` of ``spec``, built once: refits with other data reuse it (and the
    fitter's compiled graph), which is what makes 20-point scans cheap."""
    if getattr(spec, "_fit_model", None) is None:
        from .model import to_builder

        spec._fit_model = to_builder(spec).build()
    return spec._fit_model


def run_fit(spec: ModelSpec, impacts: bool = False, backend: str = "auto", data: np.ndarray | None = None,
            start: np.ndarray | Mapping[str, float] | None = None, seed: int | None = None,
            full_cov: bool = True, keep_raw: bool = True, hessian_factor: Any = None) -> TemplateFit:
    """Fit ``spec`` (to ``data``, flat over ``spec.mask``, instead of ``spec.data`` if given).

    ``backend``: ``"auto"`` (wmnb.fit if importable), ``"wmnb"`` or ``"reference"``.  ``start``
    (a parameter vector of the backend, or name -> value in TemplateFit units, e.g. from
    :func:`warm_start`) or ``seed`` (wmnb.fit: a random start) choose the starting point; ``full_cov=False`` skips the nuisances' covariance (no pulls; faster);
    ``keep_raw=False`` returns the fit :meth:`~TemplateFit.released` (cross-checks and scans:
    what they report stays, the memory of the fitter's result does not); ``hessian_factor``
    (wmnb.fit): see :func:`wmnb.fit.fit`.
    """
    fit = _run_fit(spec, impacts, backend, data, start, seed, full_cov, hessian_factor)
    return fit if keep_raw else fit.released()


def warm_start(spec: ModelSpec, fit: TemplateFit) -> dict[str, float]:
    """Start values for a fit of ``spec`` from an earlier fit of a related model (TemplateFit
    units): its nuisances where they exist, each split mass POI at the earlier mass, a free
    normalisation at 1.  Cross-checks started there need a few Newton steps instead of a
    descent from nominal: at thousands of nuisances that is most of their cost."""
    if fit.raw is None:
        raise ValueError("warm_start needs a fit with its result kept (run_fit(..., keep_raw=True))")
    out = {n: v for n, (v, _) in fit.nuisances.items()}
    mass = fit.values.get("mass")
    for poi in spec.pois:
        out[poi] = fit.values.get(poi, mass if mass is not None else 0.0)
    for poi in spec.norm_pois:
        out[poi] = fit.values.get(poi, 1.0)
    return out


def _start_vector(names: list[str], default: np.ndarray, start: Mapping[str, float], spec: ModelSpec) -> np.ndarray:
    """``start`` (TemplateFit units, unknown names ignored) as a parameter vector in θ units."""
    x = default.astype(np.float64).copy()
    for i, name in enumerate(names):
        if name in start:
            x[i] = start[name] / _poi_scale(spec, name)
    return x


def _run_fit(spec: ModelSpec, impacts: bool, backend: str, data: np.ndarray | None,
             start: np.ndarray | Mapping[str, float] | None, seed: int | None, full_cov: bool,
             hessian_factor: Any = None) -> TemplateFit:
    if backend not in ("auto", "wmnb", "reference"):
        raise ValueError(f"backend must be 'auto', 'wmnb' or 'reference', got {backend!r}")
    if data is not None and np.shape(data) != spec.data.shape:
        raise ValueError(f"data must be flat over the model's {spec.data.size} bins, got shape {np.shape(data)}")
    use_tf = backend == "wmnb" or (backend == "auto" and fitter_available())
    if not use_tf:
        target = spec if data is None else dataclasses.replace(spec, data=np.asarray(data, dtype=np.float64))
        if isinstance(start, Mapping):
            ref = reffit.RefModel(target)
            start = _start_vector(ref.names, ref.start(), start, target)
        return _from_reffit(target, reffit.fit(target, start=start))
    from wmnb.fit import fit

    model = _built(spec)
    if isinstance(start, Mapping):
        start = _start_vector(model.params, model.default_values(), start, spec)
    res = fit(model, data=data, impacts=impacts, global_impacts=impacts, seed=seed, start=start,
              full_cov=full_cov or impacts, nois=spec.nois, hessian_factor=hessian_factor)
    return _from_wmnb_fit(spec, res, impacts, full_cov or impacts)


# ---------------------------------------------------------------- fits every chapter runs
def stat_only(ts: TemplateSet, data: np.ndarray | None = None, **kw: Any) -> TemplateFit:
    """Data-statistics-only fit: no nuisances, no MC statistical uncertainty."""
    return run_fit(make_spec(ts, data=data, systematics=False, mc_stat=False), **kw)


@releasing
def injection_scan(ts: TemplateSet, backend: str = "auto") -> list[tuple[float, float, float]]:
    """Fit Asimov data with the signal BW-reweighted to each shift of ``ts.mass_scan``.

    Returns (injected, fitted, error) in MeV for every point.  With wmnb.fit the points are
    fitted in order, each from the previous minimum by Newton-chord steps
    (:func:`wmnb.fit.fit_datasets`): exact minima and errors at a fraction of the cost of a
    fresh fit per point, which is what keeps the 20-point scan affordable at 5000 nuisances.
    """
    spec = make_spec(ts)
    shifts = sorted(ts.mass_scan)
    datasets = [asimov(ts, shift)[spec.mask] for shift in shifts]
    if backend == "reference" or (backend == "auto" and not fitter_available()):
        fits = [run_fit(spec, data=d, backend="reference", keep_raw=False) for d in datasets]
        return [(s, f.values["mass"], f.errors["mass"]) for s, f in zip(shifts, fits)]
    from wmnb.fit import fit_datasets

    out = []
    for shift, res in zip(shifts, fit_datasets(_built(spec), datasets, nois=spec.nois)):
        if not res.converged:
            raise RuntimeError(f"injection scan: the fit at {shift:+g} MeV did not converge ({res.message})")
        out.append((shift, res.value("mass") * spec.mass_step_mev, res.error("mass") * spec.mass_step_mev))
    return out


def random_starts(ts: TemplateSet, n: int, seed: int, reference_mev: float, *, executor: str | None = None,
                  scheduler: str | None = None, client: Any = None) -> list[float]:
    """Mass shifts (MeV) of ``n`` fits of the nominal model started at random points, *relative
    to* ``reference_mev`` (the nominal fit's mass): only differences are returned, so a list of
    them written to an artefact cannot reveal a blinded mass.  Each fit is a task of
    :func:`fit_toys` (``executor`` None: the process's choice); its start comes from its own
    seed (wmnb.fit: ``seed + k``) or is drawn here in order (reference fit), so any executor
    returns the same shifts."""
    spec = make_spec(ts)
    opts = {"executor": executor, "scheduler": scheduler, "client": client}
    if fitter_available():
        fits = fit_toys(spec, [ToyInput(seed=seed + k) for k in range(n)], **opts)
        return [f.values["mass"] - reference_mev for f in fits]
    model = reffit.RefModel(spec)
    rng = np.random.default_rng([seed, 8])
    free = ~model.constrained & ~model.is_norm
    starts = []
    for _ in range(n):
        x0 = model.start() + rng.normal(0.0, 1.0, len(model.names)) * model.constrained
        x0[free] = rng.uniform(-3, 3, int(free.sum()))
        starts.append(ToyInput(start=x0))
    fits = fit_toys(spec, starts, backend="reference", full_cov=True, **opts)
    return [f.values["mass"] - reference_mev for f in fits]


@dataclass(frozen=True)
class ToyInput:
    """One fit of :func:`fit_toys`: its data (flat over the model's bins; None: the model's
    own), its start (a parameter vector of the backend or name -> value; None: the common start
    of :func:`fit_toys`) and its random-start ``seed`` (wmnb.fit)."""

    data: np.ndarray | None = None
    start: np.ndarray | Mapping[str, float] | None = None
    seed: int | None = None


@dataclass(frozen=True)
class ToyFit:
    """What :func:`fit_toys` keeps of one fit: POIs (MeV for masses) and their errors, and the
    saturated statistic ``q`` (-2 ln λ of wmnb.fit; None for the reference fit)."""

    values: dict[str, float]
    errors: dict[str, float]
    q: float | None


class _FitContext:
    """What every fit of :func:`fit_toys` shares: the model spec and the fit options.  Pickled
    (sent to a worker once) without the spec's built fitter model, which each worker builds
    once from the spec and reuses for all its fits."""

    def __init__(self, spec: ModelSpec, start: np.ndarray | Mapping[str, float] | None, full_cov: bool,
                 backend: str, chord_from_start: bool = False) -> None:
        self.spec, self.start, self.full_cov, self.backend = spec, start, full_cov, backend
        self.chord_from_start = chord_from_start

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_factor"}
        return {**state, "spec": dataclasses.replace(self.spec)}   # replace: no _fit_model

    def start_factor(self) -> Any:
        """Cholesky factor of the Hessian at the common start with the model's own data,
        computed once per process (None if it is not positive definite)."""
        if "_factor" not in self.__dict__:
            from wmnb.fit.fitter import hessian_factor_at

            if self.start is None:
                raise ValueError("the start factor needs a common start (fit_toys(start=...))")
            model = _built(self.spec)
            x0 = (self.start if not isinstance(self.start, Mapping)
                  else _start_vector(model.params, model.default_values(), self.start, self.spec))
            self.__dict__["_factor"] = hessian_factor_at(model, x0, model.data)
        return self.__dict__["_factor"]


def _fit_task(toy: ToyInput, ctx: _FitContext) -> ToyFit:
    """One fit of :func:`fit_toys` (a task of :func:`wmnb.engine.executors.run_tasks`)."""
    start = toy.start if toy.start is not None else ctx.start
    with contextlib.ExitStack() as stack:
        if ctx.backend == "wmnb" or (ctx.backend == "auto" and fitter_available()):
            from wmnb.fit.fitter import traced

            # compiled from the first call: the fit does not depend on the fits before it here
            stack.enter_context(traced(_built(ctx.spec)))
            factor = ctx.start_factor() if ctx.chord_from_start and toy.start is None and ctx.start is not None else None
        else:
            factor = None
        fit = run_fit(ctx.spec, backend=ctx.backend, data=toy.data, start=start, seed=toy.seed,
                      full_cov=ctx.full_cov, keep_raw=True, hessian_factor=factor)
    q = float(fit.raw.gof()[0]) if hasattr(fit.raw, "gof") else None
    return ToyFit(dict(fit.values), dict(fit.errors), q)


def fit_toys(spec: ModelSpec, toys: Sequence[ToyInput], *, start: np.ndarray | Mapping[str, float] | None = None,
             full_cov: bool = False, backend: str = "auto", executor: str | None = None,
             scheduler: str | None = None, client: Any = None, chord_from_start: bool = False) -> list[ToyFit]:
    """Fit ``spec`` once per :class:`ToyInput` (pseudo-data, random starts ...), in order.

    Every fit is one task of :func:`wmnb.engine.executors.run_tasks` (``executor`` None: the
    process's choice, :func:`wmnb.execution.active`); the spec goes to each worker once, whose
    fitter model is built there once.  The toys' data and starts are made by the caller, each
    from its own seed or drawn in order beforehand, so the fits are the same on any executor.
    A fit that does not converge raises, as :func:`run_fit` does.  ``chord_from_start``
    (wmnb.fit, with a common ``start`` near every toy's minimum: pseudo-data around a fit):
    each fit begins with Newton-chord steps on the Hessian factor at ``start``, computed once per
    process (:func:`wmnb.fit.fit`'s ``hessian_factor``); the minima are the same.
    """
    from ..engine.executors import run_tasks

    for k, toy in enumerate(toys):
        if not isinstance(toy, ToyInput):
            raise TypeError(f"fit_toys: toys[{k}] must be a ToyInput, got {type(toy).__name__}")
    return list(run_tasks(_fit_task, list(toys), executor=executor, scheduler=scheduler, client=client,
                          progress=False, desc="fits",
                          shared=_FitContext(spec, start, full_cov, backend, chord_from_start)))


def cross_check_fits(ts: TemplateSet, checks: Mapping[str, Mapping[str, Any]], which: list[str] | None = None,
                     nominal: TemplateFit | None = None, **kw: Any) -> dict[str, TemplateFit]:
    """A chapter's cross-check fits on the observed data: ``checks`` maps a name to the
    :func:`~wmnb.templatefit.model.make_spec` arguments of its model (POI layout, region,
    floating normalisation).  POIs, their errors and correlations only (no nuisance covariance is
    kept), each started from the ``nominal`` fit if given (:func:`warm_start`): their cost stays
    a few Newton steps each at thousands of nuisances."""
    kw = {"full_cov": False, "keep_raw": False, **kw}
    out = {}
    for name in (list(checks) if which is None else which):
        spec = make_spec(ts, **checks[name])
        out[name] = run_fit(spec, start=warm_start(spec, nominal) if nominal is not None else None, **kw)
        del spec
        release_memory()
    return out


def difference(fit: TemplateFit, a: str, b: str) -> tuple[float, float]:
    """``a − b`` (MeV) and its uncertainty, using the fit's correlation of the two POIs."""
    rho = fit.corr(a, b)
    ea, eb = fit.errors[a], fit.errors[b]
    return fit.values[a] - fit.values[b], float(np.sqrt(ea**2 + eb**2 - 2 * rho * ea * eb))


@releasing
def alternative_sets(ts: TemplateSet, group: str = "pdf", n_sets: int = 8, seed: int = 0,
                     size: float = 1.0) -> list[dict[str, float]]:
    """The alternative-set test of a nuisance group (the paper's alternative PDF sets).

    Each "set" is the nominal prediction with all nuisances of ``group`` moved together by
    ``size`` standard deviations along a random direction (seeded), used as pseudo-data and
    fitted twice: with the group free, as in the nominal fit (the shift of the mass that its
    uncertainty fails to absorb), and with the group fixed at zero (the mass shift an
    alternative set would cause without that uncertainty).  Returns per set
    ``{"free": MeV, "fixed": MeV, "free_err": MeV}``; their spread is the test's result.
    Needs the project's fitter (wmnb.fit).

    The sets are fitted in turn by :func:`wmnb.fit.fit_datasets` (each from the previous
    minimum); "fixed" is the model without the group's shapes, which is the model with them
    held at zero.
    """
    from wmnb.fit import fit_datasets

    spec = make_spec(ts)
    model = _built(spec)
    names = [n for n, g in zip(model.params, model.groups) if g == group]
    if not names:
        raise ValueError(f"alternative sets: the model has no nuisances of group {group!r}; "
                         f"groups are {sorted(set(model.groups))}")
    rng = np.random.default_rng([seed, 2025])
    datasets = []
    for _ in range(n_sets):
        d = rng.normal(size=len(names))
        datasets.append(np.asarray(model.expected(dict(zip(names, size * d / np.linalg.norm(d))))))
    without = dataclasses.replace(spec, shapes=[sh for sh in spec.shapes if sh.group != group],
                                  norms=[n for n in spec.norms if n[3] != group])
    without._fit_model = None
    step = spec.mass_step_mev
    free = fit_datasets(model, datasets)
    fixed = fit_datasets(_built(without), datasets)
    for k, res in enumerate(free + fixed):
        if not res.converged:
            raise RuntimeError(f"alternative sets of {group!r}: fit {k} did not converge ({res.message})")
    return [{"free": a.value("mass") * step, "free_err": a.error("mass") * step, "fixed": b.value("mass") * step}
            for a, b in zip(free, fixed)]


def gof_toys(spec: ModelSpec, fit: TemplateFit, n_toys: int, seed: int, *, executor: str | None = None,
             scheduler: str | None = None, client: Any = None) -> dict[str, Any]:
    """The saturated goodness of fit calibrated with toys instead of the asymptotic χ².

    With Barlow–Beeston-lite the per-bin MC-statistics parameters absorb part of the data's
    fluctuations, and with few events per bin the saturated statistic is not χ² distributed:
    the asymptotic p-value comes out near 1 whatever the agreement.  Each toy is Poisson data
    around the post-fit prediction of ``fit``, whose expectation is first moved by one draw of
    the simulation's own statistical noise (√sumw2 per bin, unscaled), so that the toy's
    data-to-template mismatch is what the observed one is made of; the toy is refitted with the
    same model and its statistic ``q`` compared with the observed one.  Returns ``q_obs``,
    ``p_toys`` ((1 + #q_toy ≥ q_obs)/(1 + n)), ``p_asymptotic``, ``ndf``, ``n_toys`` and the
    toys' ``q`` (sorted).  Needs the TensorFlow fitter (the statistic is its saturated NLL).
    The toys are drawn here in order from ``seed``; their fits are the tasks of :func:`fit_toys`
    (``executor`` None: the process's choice), the same numbers on any executor.
    """
    from .plots import parameter_vector

    if n_toys < 1:
        raise ValueError(f"gof_toys needs at least one toy, got {n_toys}")
    if not fitter_available():
        raise RuntimeError("gof_toys needs the wmnb.fit fitter (the saturated statistic is its NLL)")
    if fit.raw is None or not hasattr(fit.raw, "gof"):
        raise ValueError("gof_toys needs the nominal fit of wmnb.fit with its result kept (keep_raw=True)")
    q_obs, ndf, p_asym = fit.raw.gof()
    model = reffit.RefModel(spec)
    prediction = model.yields(parameter_vector(model, spec, fit)).sum(0)
    total = spec.nominal.sum(0)
    rel_mc = np.sqrt(spec.sumw2.sum(0)) / np.where(total > 0, total, 1.0)
    rng = np.random.default_rng([int(seed), 0x60F])
    toys = []
    for _ in range(n_toys):
        mean = prediction * np.clip(1.0 + rel_mc * rng.standard_normal(prediction.size), 0.0, None)
        toys.append(ToyInput(data=rng.poisson(mean).astype(np.float64)))
    fits = fit_toys(spec, toys, start=warm_start(spec, fit), backend="wmnb", executor=executor,
                    scheduler=scheduler, client=client, chord_from_start=True)
    qs = np.sort(np.asarray([f.q for f in fits], dtype=np.float64))
    return {"q_obs": float(q_obs), "ndf": int(ndf), "p_asymptotic": float(p_asym), "n_toys": int(n_toys),
            "p_toys": float((1 + np.count_nonzero(qs >= q_obs)) / (1 + n_toys)), "q_toys": qs.tolist()}
