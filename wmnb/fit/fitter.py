"""Fits, impacts, scans and toys on top of :class:`Likelihood` and :func:`minimize`."""
from __future__ import annotations

import contextlib
import copy
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import tensorflow as tf

from . import linalg
from .likelihood import Likelihood
from .minimize import MinResult, covariance, covariance_rows, minimize, minimize_chord
from .model import NUIS, POI_NORM, Model, is_hist
from .result import FitResult

if TYPE_CHECKING:
    from .model import Template

#: POI name -> group (or parameter) -> impact, as stored in :class:`FitResult`
Impacts: TypeAlias = dict[str, dict[str, float]]


def likelihood_for(model: Model) -> Likelihood:
    """The (cached) TF likelihood of ``model``: graphs are traced once per model."""
    # rebuild if the model was edited after the first fit (bb_scale, priors, templates)
    key = (float(model.bb_scale), model.bb_mode, float(np.sum(model.nominal)), float(np.sum(model.sumw2)),
           float(np.sum(model.k_val)), model.k_val.size, tuple(np.nan_to_num(model.prior_sigma, nan=-1.0)))
    cached = model.__dict__.get("_likelihood")
    if cached is None or cached[0] != key:
        cached = (key, Likelihood(model))
        model.__dict__["_likelihood"] = cached
    return cached[1]


@contextlib.contextmanager
def traced(model: Model) -> Iterator[Likelihood]:
    """Within the block every call of ``model``'s likelihood runs its compiled graph, from the
    first (:meth:`Likelihood._run` otherwise runs the first calls eagerly, whose rounding differs
    from the graph's in the last bits).  A fit's numbers then do not depend on which fits ran
    before it in this process: what makes toy fits bit-identical on any worker of any executor."""
    lik = likelihood_for(model)
    own = lik.__dict__.pop("EAGER_CALLS", None)     # an instance's own setting, if any
    lik.__dict__["EAGER_CALLS"] = 0
    try:
        yield lik
    finally:
        if own is None:
            del lik.__dict__["EAGER_CALLS"]
        else:
            lik.__dict__["EAGER_CALLS"] = own


def blind_offset(model: Model, name: str, seed: int) -> float:
    """Hidden offset of a blinded POI: uniform in +-blind_width, from the seed and the name."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])
    width = model.blind_width.get(name, 5.0 if model.kinds[model.index(name)] != POI_NORM else 0.5)
    return float(rng.uniform(-width, width))


def random_start(model: Model, seed: int) -> np.ndarray:
    """A random starting point: nuisances and shape POIs ~ N(0, 1), normalisations ~ exp(N(0, 0.2))."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, model.nparams)
    return np.where(model.kinds == POI_NORM, np.exp(0.2 * x), x)


def _start(model: Model, start: Mapping[str, float] | np.ndarray | None, seed: int | None) -> np.ndarray:
    if start is None:
        return random_start(model, seed) if seed is not None else model.default_values()
    if isinstance(start, np.ndarray):
        if start.shape != (model.nparams,):
            raise ValueError(f"start vector has shape {start.shape}, the model has {model.nparams} parameters")
        return start.astype(np.float64)
    return model.values_from(start)


def _group_impact_nominal(H: np.ndarray, cov: np.ndarray, p: int, g: np.ndarray, free: np.ndarray) -> float:
    """sqrt(C_pp - var(p | group g fixed)), computed on whichever side is smaller.

    Small group: C_GG^-1 route, impact^2 = c_G^T C_GG^-1 c_G.
    Large group: var(p | G fixed) = [(H without G)^-1]_pp from the complement's factorisation.
    """
    g = g[free[g]]
    if g.size == 0:
        return 0.0
    rest = np.setdiff1d(np.flatnonzero(free), g)
    if g.size <= rest.size:
        cg = cov[g, p]
        sol = np.linalg.solve(cov[np.ix_(g, g)], cg)
        return float(np.sqrt(max(cg @ sol, 0.0)))
    Hr = H[np.ix_(rest, rest)]
    L = linalg.cholesky(Hr)
    if L is None:
        return float("nan")
    e = (rest == p).astype(np.float64)
    var_fixed = float(e @ linalg.cho_solve(L, e))
    return float(np.sqrt(max(cov[p, p] - var_fixed, 0.0)))


def _impacts(model: Model, lik: Likelihood, mr: MinResult, cov: np.ndarray, pois: Sequence[int],
             nominal: bool, global_: bool) -> tuple[Impacts, Impacts, Impacts, Impacts]:
    """Nominal and global impacts per group and per parameter for each POI index."""
    m = model
    x = tf.constant(mr.x)
    free = mr.free
    groups: dict[str, list[int]] = {}
    for i, (kind, grp) in enumerate(zip(m.kinds, m.groups)):
        if kind == NUIS:
            groups.setdefault(grp, []).append(i)
    nom: Impacts = {}
    glob: Impacts = {}
    nom_p: Impacts = {}
    glob_p: Impacts = {}
    bb = lik.bb_on and bool(np.any(lik.bbmask.numpy()))
    poi_idx = np.array([i for i in range(m.nparams) if m.kinds[i] != NUIS and free[i]])
    # per-bin terms and the sparse Jacobian dn/dx at the minimum (numpy/scipy from here on)
    import scipy.sparse as sp

    bt = {k: v.numpy() for k, v in lik.bin_terms(x).items()}
    Ju = sp.csr_matrix((bt["jval"], (lik.J_idx[:, 0], lik.J_idx[:, 1])), shape=(lik.C, lik.B))
    sel = sp.csr_matrix((bt["d1"], (m.rows_param, np.arange(lik.C))), shape=(m.nparams, lik.C))
    Jx = (sel @ Ju).tocsr()  # [N, B]: dn_b / dx_i
    if nominal:
        H = mr.hess.numpy() if isinstance(mr.hess, tf.Tensor) else np.asarray(mr.hess)  # a tensor on a GPU
        # stat-only fits (every nuisance fixed): with beta profiled (H's POI block) and with beta
        # held at its fitted value (that block minus the profiling term J diag(f2 - f2_fixed) J^T).
        # data stat = the latter; binByBinStat = the quadrature difference (rabbit's convention).
        Jp = Jx[poi_idx].toarray()
        hp = H[np.ix_(poi_idx, poi_idx)]
        hfix = hp + (Jp * (bt["f2_fixed"] - bt["f2"])) @ Jp.T
        stat_cov = np.linalg.inv(hfix)
        statbb_cov = np.linalg.inv(hp)
        sd = np.sqrt(np.maximum(np.diag(cov), 1e-300))
        for p in pois:
            name = m.params[p]
            d: dict[str, float] = {grp: _group_impact_nominal(H, cov, p, np.array(idx), free)
                                   for grp, idx in groups.items()}
            k = int(np.flatnonzero(poi_idx == p)[0])
            d["stat"] = float(np.sqrt(stat_cov[k, k]))
            d["binByBinStat"] = float(np.sqrt(max(statbb_cov[k, k] - stat_cov[k, k], 0.0))) if bb else 0.0
            d["total"] = float(np.sqrt(cov[p, p]))
            nom[name] = d
            nom_p[name] = {m.params[i]: float(cov[p, i] / sd[i]) for i in range(m.nparams) if m.kinds[i] == NUIS}
    if global_:
        # dPOI/d(global observable) = -C d2NLL/dx d(obs): theta0 -> C (unit widths); data and
        # beta0 -> (J^T C_p) times the mixed per-bin derivatives from autodiff
        r = cov[:, pois]  # [N, npoi]
        jr = np.asarray(Jx.T @ r)  # [B, npoi]
        dstat = jr * bt["f1d"][:, None]
        dbeta = jr * bt["f1b0"][:, None]
        data = lik.data.numpy()
        kstat = lik.kstat.numpy()
        bbm = lik.bbmask.numpy()
        prior = np.isfinite(m.prior_sigma)
        for j, p in enumerate(pois):
            name = m.params[p]
            row = cov[p]
            d = {grp: float(np.sqrt(np.sum(row[idx] ** 2))) for grp, idx in groups.items()}
            d["stat"] = float(np.sqrt(np.sum(dstat[:, j] ** 2 * data)))
            d["binByBinStat"] = float(np.sqrt(np.sum(np.where(bbm, dbeta[:, j] ** 2 / kstat, 0.0))))
            if prior.any():
                d["prior"] = float(np.sqrt(np.sum((row[prior] / m.prior_sigma[prior]) ** 2)))
            d["total"] = float(np.sqrt(cov[p, p]))
            glob[name] = d
            glob_p[name] = {m.params[i]: float(row[i]) for i in range(m.nparams) if m.kinds[i] == NUIS}
    return nom, glob, nom_p, glob_p


def fit(model: Model, data: Template | None = None, asimov: bool = False,
        blind: Mapping[str, int] | None = None, impacts: bool = True, global_impacts: bool = True,
        start: Mapping[str, float] | np.ndarray | None = None, seed: int | None = None,
        fixed: Sequence[str] | None = None, full_cov: bool = True, tol: float = 1e-8,
        max_iter: int = 100, nois: Sequence[str] = (), hessian_factor: linalg.Matrix | None = None) -> FitResult:
    """Maximum-likelihood fit of ``model``.

    data: observed counts (array or hist; default the model's own); ``asimov=True`` fits the
    expectation at the nominal parameters instead. blind: POI -> integer seed of a hidden offset.
    start: dict or full vector of start values; with ``seed`` and no ``start`` a random start.
    fixed: parameters held at their start values. full_cov=False keeps only the POI rows of the
    covariance (faster; pulls and post-fit uncertainties then unavailable; impacts need it).
    nois: nuisances *of interest* (constrained, but reported like POIs): with ``full_cov=False``
    their covariance rows are kept too, so their values, errors and correlations are available.
    hessian_factor: Cholesky factor of the Hessian near the start (of a nearby fit, e.g. the one
    pseudo-data are drawn around; no parameter fixed): the descent begins with Newton-chord steps
    on it (:func:`~wmnb.fit.minimize.minimize_chord`), the same minimum in fewer Hessians.
    """
    t0 = time.perf_counter()
    lik = likelihood_for(model)
    if asimov:
        obs = model.expected()
    elif data is None:
        obs = model.data
    else:
        obs = np.asarray(data.values() if is_hist(data) else data, np.float64).ravel()
    lik.set_data(obs)
    lik.set_global_obs()
    x0 = _start(model, start, seed)
    fixed_mask = np.zeros(model.nparams, bool)
    for n in fixed or ():
        fixed_mask[model.index(n)] = True
    for b in blind or {}:
        if model.kinds[model.index(b)] == NUIS:
            raise ValueError(f"blind: {b!r} is a nuisance parameter; only POIs can be blinded")
    t1 = time.perf_counter()
    if hessian_factor is not None and not fixed_mask.any():
        mr = minimize_chord(lik, x0, hessian_factor, tol=tol)
    else:
        mr = minimize(lik, x0, fixed=fixed_mask, tol=tol, max_iter=max_iter)
    t2 = time.perf_counter()
    pois = [i for i in range(model.nparams) if model.kinds[i] != NUIS and not fixed_mask[i]]
    cov = None
    rows: dict[int, np.ndarray] = {}
    nom: Impacts = {}
    glob: Impacts = {}
    nom_p: Impacts = {}
    glob_p: Impacts = {}
    if mr.converged:
        if full_cov or impacts or global_impacts:
            cov = covariance(mr, consume=True)  # mr (and its factor) ends with this function
        elif pois or nois:
            wanted = pois + [i for i in (model.index(n) for n in nois) if i not in pois]
            rows = dict(zip(wanted, covariance_rows(mr, wanted)))
    t3 = time.perf_counter()
    # cov is set exactly when the fit converged and impacts are asked for (or full_cov)
    if cov is not None and (impacts or global_impacts):
        nom, glob, nom_p, glob_p = _impacts(model, lik, mr, cov, pois, impacts, global_impacts)
    t4 = time.perf_counter()
    res = FitResult(
        model=model, x=mr.x, cov=cov, nll=mr.nll, edm=mr.edm, converged=mr.converged, niter=mr.niter,
        message=mr.message, data=obs, nominal=nom, global_=glob, nominal_params=nom_p,
        global_params=glob_p, _lik=lik, _cov_rows=rows,
        _offsets={b: blind_offset(model, b, s) for b, s in (blind or {}).items()},
        timing={"setup_s": t1 - t0, "minimize_s": t2 - t1, "covariance_s": t3 - t2, "impacts_s": t4 - t3,
                "total_s": t4 - t0},
    )
    return res


def fit_datasets(model: Model, datasets: Sequence[np.ndarray], nois: Sequence[str] = (), tol: float = 1e-8
                 ) -> list[FitResult]:
    """Fit ``model`` to each of ``datasets`` in turn (an injection scan, pseudo-data with fixed
    global observables), without impacts and with the POI (and ``nois``) rows of the covariance.

    The first dataset is fitted by the full minimiser (as :func:`fit`); each next one starts at the previous minimum and
    takes Newton-chord steps on the previous Hessian factor (:func:`~wmnb.fit.minimize.minimize_chord`),
    which at thousands of parameters costs a fraction of a fresh Newton descent.  Every result is
    checked with its own exact Hessian and is the minimum :func:`fit` would find (to ``tol``).
    """
    lik = likelihood_for(model)
    lik.set_global_obs()
    pois = [i for i in range(model.nparams) if model.kinds[i] != NUIS]
    wanted = pois + [i for i in (model.index(n) for n in nois) if i not in pois]
    out: list[FitResult] = []
    prev: MinResult | None = None
    for data in datasets:
        obs = np.asarray(data.values() if is_hist(data) else data, np.float64).ravel()
        lik.set_data(obs)
        t0 = time.perf_counter()
        if prev is None or prev.chol is None or not prev.free.all():
            mr = minimize(lik, model.default_values() if prev is None else prev.x, tol=tol)
        else:
            mr = minimize_chord(lik, prev.x, prev.chol, tol=tol)
        rows = dict(zip(wanted, covariance_rows(mr, wanted))) if mr.converged and wanted else {}
        out.append(FitResult(model=model, x=mr.x, cov=None, nll=mr.nll, edm=mr.edm, converged=mr.converged,
                             niter=mr.niter, message=mr.message, data=obs, _lik=lik, _cov_rows=rows,
                             timing={"total_s": time.perf_counter() - t0}))
        prev = mr if mr.converged else None
    return out


def scan(model: Model, poi: str, values: Sequence[float], data: np.ndarray | None = None,
         asimov: bool = False) -> dict[str, np.ndarray]:
    """Profile-likelihood scan: 2 (NLL(poi = v, others profiled) - NLL_min) at each value.

    Returns ``{"values", "dnll2", "best"}`` (unblinded; ``best`` is the global minimum).
    """
    best = fit(model, data=data, asimov=asimov, impacts=False, global_impacts=False, full_cov=False)
    if not best.converged:
        raise RuntimeError(f"scan: the global fit did not converge ({best.message})")
    lik = likelihood_for(model)  # data already set by the global fit
    ip = model.index(poi)
    fixed = np.zeros(model.nparams, bool)
    fixed[ip] = True
    vals = np.asarray(values, np.float64)
    order = np.argsort(np.abs(vals - best.x[ip]))  # warm starts walk outwards from the minimum
    out = np.full(vals.size, np.nan)
    x = best.x.copy()
    for k in order:
        xs = x.copy()
        xs[ip] = vals[k]
        mr = minimize(lik, xs, fixed=fixed)
        if mr.converged:
            out[k] = 2.0 * (mr.nll - best.nll)
    return {"values": vals, "dnll2": out, "best": np.array([best.x[ip]])}


def toys(model: Model, n: int, seed: int, poi: str | None = None,
         truth: Mapping[str, float] | None = None, randomize_global: bool = True, *,
         executor: str | None = None, scheduler: str | None = None, client: object = None
         ) -> dict[str, np.ndarray]:
    """Frequentist pseudo-experiments: Poisson data around the expectation at ``truth`` and
    (``randomize_global``) global observables theta0 ~ N(truth, 1), k beta0 ~ Poisson(k).

    Each toy is fitted from the truth (warm start); returns values, errors and pulls
    (value - truth) / error of ``poi`` (default: the first POI) and a converged mask.  The toys
    are drawn here, in order, from one generator seeded with ``seed``; their fits are the tasks
    of :func:`wmnb.engine.executors.run_tasks` (``executor`` None: the process's choice), the
    model sent once to each worker, so any executor gives the same numbers.
    """
    from wmnb.engine.executors import run_tasks

    lik = likelihood_for(model)
    ip = model.index(poi) if poi is not None else int(np.flatnonzero(model.kinds != NUIS)[0])
    xt = model.values_from(truth)
    rng = np.random.default_rng(seed)
    npb, _ = lik.yields(tf.constant(xt))
    mu = npb.numpy().sum(0)
    kstat, bbm = lik.kstat.numpy(), lik.bbmask.numpy()
    cons = model.kinds == NUIS
    inputs: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    for _ in range(n):     # the draws do not depend on the fits: drawn first, in the order of old
        data = rng.poisson(mu).astype(np.float64)
        if randomize_global:
            theta0 = np.where(cons, xt + rng.normal(size=model.nparams), 0.0)
            beta0 = np.where(bbm, rng.poisson(np.where(bbm, kstat, 1.0)) / kstat, 1.0)
            inputs.append((data, theta0, beta0))
        else:
            inputs.append((data, np.where(cons, xt, 0.0), None))
    vals, errs, conv = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool)
    try:
        results = run_tasks(_toy_task, inputs, executor=executor, scheduler=scheduler, client=client,
                            progress=False, desc="toys", shared=ToyContext(model, xt, ip))
        for t, (value, error, converged) in enumerate(results):
            if converged:
                vals[t], errs[t], conv[t] = value, error, True
    finally:
        lik.set_global_obs()
        lik.set_data(model.data)
    return {"values": vals, "errors": errs, "pulls": (vals - xt[ip]) / errs, "converged": conv,
            "truth": np.array([xt[ip]])}


class ToyContext:
    """What every toy fit of :func:`toys` needs: the model, the truth and the POI index.  Sent
    to a worker without the model's cached TF likelihood, which each worker builds once."""

    def __init__(self, model: Model, truth: np.ndarray, poi_index: int) -> None:
        self.model, self.truth, self.poi_index = model, truth, poi_index

    def __getstate__(self) -> dict[str, object]:
        model = copy.copy(self.model)
        model.__dict__.pop("_likelihood", None)
        return {"model": model, "truth": self.truth, "poi_index": self.poi_index}


def _truth_factor(ctx: ToyContext, lik: Likelihood) -> linalg.Matrix | None:
    """Cholesky factor of the Hessian at the truth with Asimov data there, computed once per
    process (a worker's first toy).  Every toy starts at the truth, and its Hessian differs
    from this one only by its data's fluctuations (the priors' curvature does not depend on the
    drawn global observables), so Newton-chord steps on it (:func:`minimize_chord`) replace
    most of the exact Hessians of a fresh descent; the end point is still checked with the
    toy's own exact Hessian, so the minimum and the error are those :func:`minimize` finds."""
    if "_chol" not in ctx.__dict__:
        npb, _ = lik.yields(tf.constant(ctx.truth))
        ctx.__dict__["_chol"] = hessian_factor_at(ctx.model, ctx.truth, npb.numpy().sum(0))
    return ctx.__dict__["_chol"]


def hessian_factor_at(model: Model, x: np.ndarray, data: np.ndarray) -> linalg.Matrix | None:
    """Cholesky factor of the Hessian of ``model`` at ``x`` with ``data`` and the nominal global
    observables (None if not positive definite): the ``hessian_factor`` of :func:`fit` for fits
    that start near ``x``."""
    lik = likelihood_for(model)
    lik.set_data(np.asarray(data, np.float64))
    lik.set_global_obs()
    _, _, H = lik.value_grad_hess(tf.constant(np.asarray(x, np.float64)))
    return linalg.cholesky(H if linalg.on_gpu() else H.numpy())


def _toy_task(toy: tuple[np.ndarray, np.ndarray, np.ndarray | None], ctx: ToyContext
              ) -> tuple[float, float, bool]:
    """Fit one toy of :func:`toys` from the truth: value and error of the POI, and whether the
    fit converged (NaNs if not)."""
    data, theta0, beta0 = toy
    with traced(ctx.model) as lik:
        chol = _truth_factor(ctx, lik)
        lik.set_data(data)
        lik.set_global_obs(theta0, beta0)
        mr = minimize_chord(lik, ctx.truth, chol) if chol is not None else minimize(lik, ctx.truth)
    if not mr.converged:
        return float("nan"), float("nan"), False
    ip = ctx.poi_index
    return float(mr.x[ip]), float(np.sqrt(covariance_rows(mr, [ip])[0, ip])), True
