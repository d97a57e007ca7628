"""All tag-and-probe fits at once: pass and fail m_μμ spectra of every bin in one batched fit.

Per bin ``b`` the expected counts in mass bin ``m`` of the passing and the failing probes are

    ν_pass = N ε T_pass(m) + B_pass E(m; λ_pass),
    ν_fail = N (1 − ε) T_fail(m) + B_fail E(m; λ_fail),

with the efficiency ``ε`` a parameter shared by both categories, ``T`` the signal shapes
(normalised to 1 in the fit window: the simulated truth-matched spectrum of the bin convolved with
the data/simulation resolution difference, :func:`smear`, or the alternative Breit–Wigner) and
``E`` a normalised falling background (:data:`BACKGROUNDS`: an exponential, or the alternative
linear polynomial; the failing probes' times a fixed kinematic turn-on where the input carries one,
:func:`turn_on`: the erf-times-exponential shape).  Parameters ``(N, ε, B_pass, B_fail, λ_pass, λ_fail)`` with bounds
``N, B ≥ 0``, ``0 ≤ ε ≤ 1``.

The minimiser is a projected Fisher-scoring (Gauss–Newton for the Poisson likelihood) iteration
run on all bins together in numpy: expected counts and their Jacobian for every bin at once, a
6×6 solve per bin (``np.linalg.solve`` on the stack), parameters at a bound with the gradient
pointing outwards held (the active set), a backtracking line search per bin.  The covariance is
the inverse Fisher information at the minimum.  :func:`fit_reference` minimises the same
likelihood bin by bin with iminuit (MIGRAD + HESSE): the independent check and the benchmark's
baseline.

Quality rule (:func:`quality`): converged (EDM below tolerance), a positive-definite covariance
of the free parameters, ε not on a bound, and the saturated-likelihood χ² of both categories with
p > :data:`MIN_GOF_PVALUE`.  A bin failing it is refitted with the background slopes fixed to
their eta-group values; one failing that too is measured by counting in the window
(Jeffreys interval); the status of every bin is recorded (:data:`STATUS`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr
from scipy.stats import chi2 as chi2_dist

#: parameter order of the pass/fail model
PARAMS = ("n_sig", "eff", "b_pass", "b_fail", "slope_pass", "slope_fail")
N_PARAMS = len(PARAMS)
#: bounds of the background slopes (1/GeV for the exponential; per unit of x ∈ [-1, 1] for the line)
SLOPE_BOUNDS = {"exponential": (-0.3, 0.3), "linear": (-1.0, 1.0)}
BACKGROUNDS = tuple(SLOPE_BOUNDS)
#: fits with a saturated χ² p-value below this fail the quality rule
MIN_GOF_PVALUE = 1e-5
#: status codes of a bin's measurement
STATUS = {0: "fit", 1: "fit with ε on its bound, one-sided likelihood error", 2: "refit with fixed background slopes",
          3: "counting (Jeffreys)", 4: "empty"}
#: relative floor added to signal templates so that no bin of a template is exactly empty
TEMPLATE_FLOOR = 1e-6


def smear_kernel(source_edges: np.ndarray, target_edges: np.ndarray, shift: float, sigma: float) -> np.ndarray:
    """``(K, M)``: the fraction of source bin k (a point mass at its centre) that a Gaussian of
    mean ``shift`` and width ``sigma`` (GeV) moves into target bin m.  The source range should
    exceed the target's by a few σ: the convolution is done on the wider range (no FFT on the
    window, whose wrap-around would fold the tails back in)."""
    c = 0.5 * (np.asarray(source_edges, float)[1:] + np.asarray(source_edges, float)[:-1])
    z = (np.asarray(target_edges, float)[None, :] - c[:, None] - shift) / max(float(sigma), 1e-3)
    return np.diff(ndtr(z), axis=1)


def smear(source: np.ndarray, source_edges: np.ndarray, target_edges: np.ndarray, shift: float,
          sigma: float) -> np.ndarray:
    """Histograms ``source`` (``(..., K)`` on ``source_edges``) convolved with the Gaussian of
    :func:`smear_kernel` and integrated over the ``target_edges`` bins (not renormalised: what
    falls outside the target range is lost)."""
    return np.asarray(source, float) @ smear_kernel(source_edges, target_edges, shift, sigma)


def normalised(t: np.ndarray) -> np.ndarray:
    """Templates ``(B, M)`` normalised to 1 per row, with a small floor so no bin is empty."""
    t = np.maximum(np.asarray(t, float), 0.0)
    tot = t.sum(axis=-1, keepdims=True)
    t = t + TEMPLATE_FLOOR * np.where(tot > 0, tot, 1.0) / t.shape[-1]
    return t / t.sum(axis=-1, keepdims=True)


def turn_on(centres: np.ndarray, position: np.ndarray, width: np.ndarray) -> np.ndarray:
    """The background's kinematic turn-on Φ((m − α) / β) per row ``(B, M)`` (the Gaussian
    cumulative of the erf-times-exponential shape) for positions α and widths β in GeV; a
    non-finite α (no turn-on) gives 1."""
    a, b = np.asarray(position, float)[:, None], np.asarray(width, float)[:, None]
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(a), ndtr((centres[None, :] - a) / np.maximum(b, 1e-3)), 1.0)


def background_shape(kind: str, centres: np.ndarray, slope: np.ndarray, factor: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Normalised background shape per bin ``(B, M)`` and its derivative in the slope.

    ``exponential``: ∝ exp(−λ (m − m_lo)); ``linear``: ∝ 1 + a x with x ∈ [−1, 1] across the
    window; either times a fixed ``factor`` ``(B, M)`` (a :func:`turn_on`: the erf-times-
    exponential shape) if given."""
    slope = np.asarray(slope, float)[:, None]
    w = np.ones((slope.shape[0], centres.size)) if factor is None else np.asarray(factor, float)
    if kind == "exponential":
        d = centres[None, :] - centres[0]
        f = np.exp(-slope * d) * w
        s = f.sum(axis=1, keepdims=True)
        e = f / s
        de = e * (-d + (f * d).sum(axis=1, keepdims=True) / s)
        return e, de
    if kind == "linear":
        x = 2.0 * (centres - centres[0]) / max(centres[-1] - centres[0], 1e-9) - 1.0
        f = (1.0 + slope * x[None, :]) * w
        s = f.sum(axis=1, keepdims=True)
        e = f / s
        de = (x[None, :] * w - e * (x[None, :] * w).sum(axis=1, keepdims=True)) / s
        return e, de
    raise ValueError(f"unknown background model {kind!r}; choose one of {BACKGROUNDS}")


@dataclass(frozen=True)
class PassFailInput:
    """The spectra of ``B`` bins: observed ``n_pass``, ``n_fail`` ``(B, M)`` on ``mass_edges``,
    signal shapes ``t_pass``, ``t_fail`` (normalised per row) and, optionally, a fixed turn-on
    ``fail_turn_on`` ``(B, M)`` multiplying the failing probes' background (:func:`turn_on`)."""

    mass_edges: np.ndarray
    n_pass: np.ndarray
    n_fail: np.ndarray
    t_pass: np.ndarray
    t_fail: np.ndarray
    fail_turn_on: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = self.mass_edges.size - 1
        names = ("n_pass", "n_fail", "t_pass", "t_fail") + (() if self.fail_turn_on is None else ("fail_turn_on",))
        for name in names:
            a = getattr(self, name)
            if a.ndim != 2 or a.shape[1] != m or a.shape[0] != self.n_pass.shape[0]:
                raise ValueError(f"{name} must have shape (bins, {m}) like n_pass {self.n_pass.shape}, got {a.shape}")
            if not np.all(np.isfinite(a)) or (a < 0).any():
                raise ValueError(f"{name} holds negative or non-finite values")

    @property
    def n_bins(self) -> int:
        return int(self.n_pass.shape[0])

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.mass_edges[1:] + self.mass_edges[:-1])

    def subset(self, rows: np.ndarray) -> PassFailInput:
        return PassFailInput(self.mass_edges, self.n_pass[rows], self.n_fail[rows], self.t_pass[rows], self.t_fail[rows],
                             None if self.fail_turn_on is None else self.fail_turn_on[rows])


@dataclass
class PassFailResult:
    """Per-bin results: ``values`` and ``errors`` ``(B, 6)`` (:data:`PARAMS`), the efficiency and
    its error, the minimum ``nll`` (Poisson, constants dropped), the saturated ``chi2`` and
    ``ndf``, ``converged``, ``posdef``, ``status`` (:data:`STATUS`), ``n_iter``."""

    values: np.ndarray
    errors: np.ndarray
    cov: np.ndarray
    nll: np.ndarray
    chi2: np.ndarray
    ndf: np.ndarray
    converged: np.ndarray
    posdef: np.ndarray
    n_iter: int
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def eff(self) -> np.ndarray:
        return self.values[:, 1]

    @property
    def eff_err(self) -> np.ndarray:
        return self.errors[:, 1]

    @property
    def gof_pvalue(self) -> np.ndarray:
        return chi2_dist.sf(self.chi2, np.maximum(self.ndf, 1))


#: the parameters each category's expectation depends on (its Jacobian's columns)
PASS_IDX = np.array([0, 1, 2, 4])
FAIL_IDX = np.array([0, 1, 3, 5])


def components(data: PassFailInput, p: np.ndarray, background: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Expected signal and background ``(B, M)`` of the passing and the failing probes at
    parameters ``p`` ``(B, 6)``: (signal pass, background pass, signal fail, background fail)."""
    n, eps, bp, bf = (p[:, i][:, None] for i in range(4))
    ep, _ = background_shape(background, data.centres, p[:, 4])
    ef, _ = background_shape(background, data.centres, p[:, 5], data.fail_turn_on)
    return n * eps * data.t_pass, bp * ep, n * (1.0 - eps) * data.t_fail, bf * ef


def _means(data: PassFailInput, p: np.ndarray, background: str) -> tuple[np.ndarray, np.ndarray]:
    """ν_pass, ν_fail ``(B, M)``."""
    sp, bp, sf, bf = components(data, p, background)
    return sp + bp, sf + bf


def _expected(data: PassFailInput, p: np.ndarray, background: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ν_pass, ν_fail ``(B, M)`` and their Jacobians ``(B, M, 4)`` in the parameters
    :data:`PASS_IDX` and :data:`FAIL_IDX` (the others do not enter)."""
    n, eps, bp, bf = (p[:, i][:, None] for i in range(4))
    ep, dep = background_shape(background, data.centres, p[:, 4])
    ef, def_ = background_shape(background, data.centres, p[:, 5], data.fail_turn_on)
    nu_p = n * eps * data.t_pass + bp * ep
    nu_f = n * (1.0 - eps) * data.t_fail + bf * ef
    jp = np.stack([eps * data.t_pass, n * data.t_pass, ep, bp * dep], axis=-1)
    jf = np.stack([(1.0 - eps) * data.t_fail, -n * data.t_fail, ef, bf * def_], axis=-1)
    return nu_p, nu_f, jp, jf


def _fisher(nu_p: np.ndarray, nu_f: np.ndarray, jp: np.ndarray, jf: np.ndarray) -> np.ndarray:
    """The expected (Fisher) information ``(B, 6, 6)`` of the Poisson likelihood from the means
    and their Jacobians (:func:`_expected`)."""
    sp, sf = np.maximum(nu_p, 1e-300), np.maximum(nu_f, 1e-300)
    fisher = np.zeros((nu_p.shape[0], N_PARAMS, N_PARAMS))
    fisher[:, PASS_IDX[:, None], PASS_IDX[None, :]] += np.matmul(np.swapaxes(jp, 1, 2) / sp[:, None, :], jp)
    fisher[:, FAIL_IDX[:, None], FAIL_IDX[None, :]] += np.matmul(np.swapaxes(jf, 1, 2) / sf[:, None, :], jf)
    return fisher


def _uninformative(fisher: np.ndarray) -> np.ndarray:
    """Parameters without information ``(B, 6)`` (the slope of a vanished background)."""
    diag = np.einsum("bpp->bp", fisher)
    return diag <= 1e-14 * np.maximum(diag.max(axis=1, keepdims=True), 1e-300)


def _free_block(fisher: np.ndarray, free: np.ndarray) -> np.ndarray:
    """The Fisher matrix of the ``free`` parameters, unit rows and columns for the held ones."""
    return np.where(free[:, :, None] & free[:, None, :], fisher, 0.0) + np.eye(N_PARAMS)[None] * ~free[:, :, None]


def _inverse(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of each Fisher matrix from the eigen-decomposition of its unit-diagonal form, and
    whether it is positive definite (every eigenvalue above 1e-12 of the largest)."""
    dd = np.sqrt(np.maximum(np.einsum("bpp->bp", f), 1e-300))
    w, v = np.linalg.eigh(f / dd[:, :, None] / dd[:, None, :])
    posdef = np.isfinite(w).all(axis=1) & (w.min(axis=1) > 1e-12 * np.abs(w).max(axis=1))
    inv = np.einsum("bpk,bk,bqk->bpq", v, 1.0 / np.where(w > 0, w, np.inf), v) / dd[:, :, None] / dd[:, None, :]
    return inv, posdef


def _poisson_nll(nu: np.ndarray, k: np.ndarray) -> np.ndarray:
    nu = np.maximum(nu, 1e-300)
    return (nu - k * np.log(nu)).sum(axis=-1)


def _saturated(k: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(k > 0, k - k * np.log(np.where(k > 0, k, 1.0)), 0.0).sum(axis=-1)


def bounds(background: str, n_bins: int, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds ``(B, 6)``; yields up to 3× the bin's total count."""
    lo_s, hi_s = SLOPE_BOUNDS[background]
    top = 3.0 * np.maximum(total, 1.0)
    lo = np.tile([0.0, 0.0, 0.0, 0.0, lo_s, lo_s], (n_bins, 1))
    hi = np.stack([top, np.ones(n_bins), top, top, np.full(n_bins, hi_s), np.full(n_bins, hi_s)], axis=1)
    return lo, hi


def starting_values(data: PassFailInput, background: str) -> np.ndarray:
    """Counting-based starting point: the background from the window's outer fifths."""
    k = data.mass_edges.size - 1
    edge = max(k // 5, 1)
    side = lambda n: n[:, :edge].sum(1) + n[:, -edge:].sum(1)  # noqa: E731
    tp, tf = data.t_pass, data.t_fail
    sp = tp[:, :edge].sum(1) + tp[:, -edge:].sum(1)
    sf = tf[:, :edge].sum(1) + tf[:, -edge:].sum(1)
    frac = 2 * edge / k
    npass, nfail = data.n_pass.sum(1), data.n_fail.sum(1)
    bp = np.clip((side(data.n_pass) - sp * npass) / max(frac, 1e-9), 0.0, 0.9 * npass)
    bf = np.clip((side(data.n_fail) - sf * nfail) / max(frac, 1e-9), 0.0, 0.9 * nfail)
    sig_p, sig_f = npass - bp, nfail - bf
    n = np.maximum(sig_p + sig_f, 1.0)
    eps = np.clip(sig_p / n, 0.02, 0.98)
    slope0 = 0.03 if background == "exponential" else -0.3
    return np.stack([n, eps, bp + 0.5, bf + 0.5, np.full_like(n, slope0), np.full_like(n, slope0)], axis=1)


def fit_pass_fail(data: PassFailInput, background: str = "exponential", *, start: np.ndarray | None = None,
                  fixed: np.ndarray | None = None, max_iter: int = 60, tol: float = 1e-7) -> PassFailResult:
    """Fit every bin of ``data`` at once (module docstring).  ``fixed``: ``(B, 6)`` mask of
    parameters held at their ``start`` value (e.g. ε at a hypothesis for likelihood-ratio pulls,
    or the background slopes)."""
    nb = data.n_bins
    total = data.n_pass.sum(1) + data.n_fail.sum(1)
    lo, hi = bounds(background, nb, total)
    p = np.clip(starting_values(data, background) if start is None else np.array(start, float), lo, hi)
    fix = np.zeros((nb, N_PARAMS), bool) if fixed is None else np.asarray(fixed, bool)
    def evaluate(d: PassFailInput, q: np.ndarray) -> tuple[np.ndarray, ...]:
        nu_p, nu_f, jp, jf = _expected(d, q, background)
        nll = _poisson_nll(nu_p, d.n_pass) + _poisson_nll(nu_f, d.n_fail)
        return nll, nu_p, nu_f, jp, jf

    def nll_only(d: PassFailInput, q: np.ndarray) -> np.ndarray:
        nu_p, nu_f = _means(d, q, background)
        return _poisson_nll(nu_p, d.n_pass) + _poisson_nll(nu_f, d.n_fail)

    def newton(d: PassFailInput, q: np.ndarray, fx: np.ndarray, l: np.ndarray, h: np.ndarray,
               nu_p: np.ndarray, nu_f: np.ndarray, jp: np.ndarray, jf: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        sp, sf = np.maximum(nu_p, 1e-300), np.maximum(nu_f, 1e-300)
        grad = np.zeros((q.shape[0], N_PARAMS))
        grad[:, PASS_IDX] += np.einsum("bm,bmp->bp", 1.0 - d.n_pass / sp, jp)
        grad[:, FAIL_IDX] += np.einsum("bm,bmp->bp", 1.0 - d.n_fail / sf, jf)
        fisher = _fisher(nu_p, nu_f, jp, jf)
        active = fx | ((q <= l) & (grad > 0)) | ((q >= h) & (grad < 0))
        # a parameter without information (the slope of a vanished background) is held too
        active |= _uninformative(fisher)
        free = ~active
        f = _free_block(fisher, free)
        g = np.where(free, grad, 0.0)
        # scale to unit diagonal: yields of 1e4 and slopes of 1e-2 in one matrix
        dd = np.sqrt(np.maximum(np.einsum("bpp->bp", f), 1e-300))
        fs = f / dd[:, :, None] / dd[:, None, :]
        try:
            step = -np.linalg.solve(fs, (g / dd)[..., None])[..., 0] / dd
        except np.linalg.LinAlgError:
            step = -np.einsum("bpq,bq->bp", np.linalg.pinv(fs), g / dd) / dd
        return step, g, f, free

    todo = np.arange(nb)
    it = 0
    while it < max_iter:
        it += 1
        d = data.subset(todo)
        q, l, h, fx = p[todo], lo[todo], hi[todo], fix[todo]
        nll, nu_p, nu_f, jp, jf = evaluate(d, q)
        step, g, _, _ = newton(d, q, fx, l, h, nu_p, nu_f, jp, jf)
        gs = np.einsum("bp,bp->b", g, step)
        done = -0.5 * gs < tol
        alpha = np.ones(todo.size)
        accepted = done.copy()
        new_q = q.copy()
        for _ in range(12):
            trial = np.clip(q + alpha[:, None] * step, l, h)
            tnll = nll_only(d, trial)
            ok = ~accepted & (tnll <= nll + 1e-4 * alpha * gs + 1e-12)
            new_q[ok] = trial[ok]
            accepted |= ok
            if accepted.all():
                break
            alpha = np.where(accepted, alpha, 0.5 * alpha)
        p[todo] = new_q
        # no descent along the Newton direction any more: at the minimum (to rounding)
        todo = todo[~(done | ~accepted)]
        if todo.size == 0:
            break
    nll, nu_p, nu_f, jp, jf = evaluate(data, p)
    step, g, f, free = newton(data, p, fix, lo, hi, nu_p, nu_f, jp, jf)
    edm = -0.5 * np.einsum("bp,bp->b", g, step)
    converged = edm < max(tol, 1e-5)
    inv, posdef = _inverse(f)
    cov = np.where(posdef[:, None, None] & free[:, :, None] & free[:, None, :], inv, 0.0)
    errors = np.sqrt(np.maximum(np.einsum("bpp->bp", cov), 0.0))
    chi2 = 2.0 * (nll - _saturated(data.n_pass) - _saturated(data.n_fail))
    nfree = free.sum(axis=1)
    ndf = 2 * data.n_pass.shape[1] - nfree
    return PassFailResult(p, errors, cov, nll, chi2, ndf, converged, posdef, it,
                          np.zeros(nb, np.int64))


def quality(res: PassFailResult, min_pvalue: float = MIN_GOF_PVALUE, allow_bound: bool = False) -> np.ndarray:
    """The fit-quality rule (module docstring): True where the fit is accepted; ``allow_bound``
    accepts ε on a bound (whose error then comes from the likelihood, :func:`bound_errors`)."""
    eps, err = res.eff, res.eff_err
    inside = (eps > 0.0) & (eps < 1.0) & (err > 0)
    if allow_bound:
        inside = inside | (eps <= 0.0) | (eps >= 1.0)
    return res.converged & res.posdef & inside & (res.gof_pvalue > min_pvalue) & np.isfinite(res.nll)


def bound_errors(data: PassFailInput, res: PassFailResult, rows: np.ndarray, background: str = "exponential",
                 fixed_slopes: bool = False, steps: int = 12) -> np.ndarray:
    """For fits with ε on a bound: the distance to where the profiled NLL has risen by 1/2 (the
    one-sided 68 % interval), by bisection with batched fits at fixed ε."""
    sub = data.subset(rows)
    base = res.values[rows].copy()
    at_top = base[:, 1] >= 0.5
    # the crossing lies about 0.5 / N from the bound (no failing signal: ΔNLL = N (1 − ε)):
    # bracket it within 8 / N
    width = np.minimum(0.5, 8.0 / np.maximum(base[:, 0], 1.0))
    lo_e = np.where(at_top, base[:, 1] - width, base[:, 1])
    hi_e = np.where(at_top, base[:, 1], base[:, 1] + width)
    fixed = np.zeros_like(base, bool)
    fixed[:, 1] = True
    fixed[:, 4:6] = fixed_slopes
    for _ in range(steps):
        mid = 0.5 * (lo_e + hi_e)
        start = base.copy()
        start[:, 1] = mid
        dn = fit_pass_fail(sub, background, start=start, fixed=fixed).nll - res.nll[rows]
        inside = dn < 0.5
        # at the top bound the crossing lies below: inside moves the upper end down
        hi_e = np.where(at_top & inside, mid, hi_e)
        lo_e = np.where(at_top & ~inside, mid, lo_e)
        lo_e = np.where(~at_top & inside, mid, lo_e)
        hi_e = np.where(~at_top & ~inside, mid, hi_e)
    cross = 0.5 * (lo_e + hi_e)
    return np.abs(base[:, 1] - cross)


def jeffreys(k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Efficiency and a symmetric error from the Jeffreys interval of ``k`` of ``n``."""
    from scipy.stats import beta

    k, n = np.asarray(k, float), np.asarray(n, float)
    a, b = k + 0.5, n - k + 0.5
    lo, hi = beta.ppf(0.158655, a, b), beta.ppf(0.841345, a, b)
    eff = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    return eff, np.where(n > 0, 0.5 * (hi - lo), np.nan)


def measure_efficiencies(data: PassFailInput, background: str = "exponential",
                         group_slopes: np.ndarray | None = None) -> PassFailResult:
    """The batched fit with the quality rule and its fallbacks (module docstring, :data:`STATUS`):
    an accepted fit with ε on a bound gets its one-sided likelihood error; a bin failing the rule
    is refitted with the slopes fixed (at ``group_slopes`` ``(B, 2)`` if given, else at its own
    fitted ones); failing again, counted in the window (Jeffreys).  Empty bins get status 4."""
    res = fit_pass_fail(data, background)
    res.status = np.zeros(data.n_bins, np.int64)
    total = data.n_pass.sum(1) + data.n_fail.sum(1)
    good = quality(res, allow_bound=True) & (total > 0)
    on_bound = good & ((res.eff <= 0.0) | (res.eff >= 1.0))
    if on_bound.any():
        rows = np.flatnonzero(on_bound)
        res.errors[rows, 1] = bound_errors(data, res, rows, background)
        res.status[rows] = 1
    bad = ~good & (total > 0)
    if bad.any():
        rows = np.flatnonzero(bad)
        start = res.values[rows].copy()
        if group_slopes is not None:
            start[:, 4:6] = group_slopes[rows]
        sub = data.subset(rows)
        start[:, 0] = np.maximum(total[rows], 1.0)
        start[:, 1] = np.clip(sub.n_pass.sum(1) / np.maximum(total[rows], 1.0), 0.02, 0.98)
        fixed = np.zeros((rows.size, N_PARAMS), bool)
        fixed[:, 4:6] = True
        re = fit_pass_fail(sub, background, start=start, fixed=fixed)
        ok = quality(re, allow_bound=True)
        for name in ("values", "errors", "cov", "nll", "chi2", "ndf", "converged", "posdef"):
            getattr(res, name)[rows[ok]] = getattr(re, name)[ok]
        res.status[rows[ok]] = 2
        edge = rows[ok][(res.eff[rows[ok]] <= 0.0) | (res.eff[rows[ok]] >= 1.0)]
        if edge.size:
            res.errors[edge, 1] = bound_errors(data, res, edge, background, fixed_slopes=True)
        left = rows[~ok]
        if left.size:
            e, err = jeffreys(data.n_pass[left].sum(1), total[left])
            res.values[left, 1], res.errors[left, 1] = e, err
            res.status[left] = 3
    empty = total <= 0
    res.values[empty, 1], res.errors[empty, 1] = np.nan, np.nan
    res.status[empty] = 4
    return res


@dataclass(frozen=True)
class TruthPulls:
    """A fit's distance from a hypothesis ε per bin (:func:`pulls_at_truth`): ``likelihood_ratio``
    the signed √(2 ΔNLL) against the best fit, ``error_at_truth`` the error of ε expected at the
    hypothesis (the profiled Fisher information there), ``pull`` = (ε̂ − ε_true) / error_at_truth.
    NaN where the bin was not fitted."""

    likelihood_ratio: np.ndarray
    error_at_truth: np.ndarray
    pull: np.ndarray


def pulls_at_truth(data: PassFailInput, res: PassFailResult, eff_true: np.ndarray,
                   background: str = "exponential") -> TruthPulls:
    """The closure pulls of a measurement against a known ``eff_true`` per bin: the fit redone
    with ε held at the truth (the other parameters profiled; a bin refitted with fixed slopes
    keeps them fixed), its NLL against the best fit's, and the error of ε expected there.

    Why the error at the truth: a bin with a handful of failing probes measures its error from
    the fluctuation itself: fewer failing probes than expected give a higher ε̂ *and* a smaller
    error (almost none where ε̂ reaches 1), so (ε̂ − ε_true) / σ̂ leans positive (its mean is
    several units in toys with 6 failing probes per bin) and so, much less, does the
    likelihood-ratio pull (the Poisson deviance's skew, about +1/(6 √ν_fail)).  The error at the
    truth does not depend on the fluctuation, so (ε̂ − ε_true) / σ(ε_true) has the estimator's
    own bias for its mean (the bounds ε ≤ 1 and B ≥ 0 give up to +0.08 with 3-10 failing probes
    per bin) and unit width."""
    start = res.values.copy()
    start[:, 1] = np.clip(eff_true, 1e-9, 1.0 - 1e-9)
    fixed = np.zeros_like(start, bool)
    fixed[:, 1] = True
    fixed[res.status == 2, 4:6] = True
    hyp = fit_pass_fail(data, background, start=start, fixed=fixed)
    dnll = np.maximum(hyp.nll - res.nll, 0.0)
    lr = np.sign(res.eff - eff_true) * np.sqrt(2.0 * dnll)
    # the information of every parameter that is free and informative at the hypothesis
    nu_p, nu_f, jp, jf = _expected(data, hyp.values, background)
    with np.errstate(over="ignore", invalid="ignore"):
        fisher = _fisher(nu_p, nu_f, jp, jf)
    # an expectation of zero somewhere (ε at 1 and no background) leaves no finite information
    finite = np.isfinite(fisher).all(axis=(1, 2))
    fisher[~finite] = np.eye(N_PARAMS)
    free = (~fixed | (np.arange(N_PARAMS) == 1)[None, :]) & ~_uninformative(fisher)
    inv, _ = _inverse(_free_block(fisher, free))
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(free[:, 1] & finite, np.sqrt(np.maximum(inv[:, 1, 1], 0.0)), np.nan)
        pull = (res.eff - eff_true) / err
    fitted = res.status <= 2
    return TruthPulls(*(np.where(fitted, a, np.nan) for a in (lr, err, pull)))


def fit_reference(data: PassFailInput, background: str = "exponential", rows: np.ndarray | None = None,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same likelihood minimised bin by bin with iminuit (MIGRAD, then HESSE), the
    straightforward loop the batched fit replaces: (ε, error, nll) of each row in ``rows``."""
    from iminuit import Minuit

    rows = np.arange(data.n_bins) if rows is None else np.asarray(rows)
    total = data.n_pass.sum(1) + data.n_fail.sum(1)
    lo, hi = bounds(background, data.n_bins, total)
    start = starting_values(data, background)
    out = np.full((rows.size, 3), np.nan)
    for i, b in enumerate(rows):
        one = data.subset(np.array([b]))

        def nll(*q: float, one: PassFailInput = one) -> float:
            nu_p, nu_f = _means(one, np.asarray(q, float)[None, :], background)
            return float(_poisson_nll(nu_p, one.n_pass)[0] + _poisson_nll(nu_f, one.n_fail)[0])

        m = Minuit(nll, *np.clip(start[b], lo[b], hi[b]), name=PARAMS)
        m.errordef = Minuit.LIKELIHOOD
        m.limits = list(zip(lo[b], hi[b]))
        m.migrad()
        m.hesse()
        out[i] = (m.values["eff"], m.errors["eff"], m.fval)
        if progress is not None:
            progress(i)
    return out[:, 0], out[:, 1], out[:, 2]


__all__ = ["BACKGROUNDS", "MIN_GOF_PVALUE", "N_PARAMS", "PARAMS", "STATUS", "PassFailInput", "PassFailResult",
           "TruthPulls", "background_shape", "bound_errors", "components", "fit_pass_fail", "fit_reference", "jeffreys",
           "measure_efficiencies", "normalised", "pulls_at_truth", "quality", "smear", "smear_kernel", "turn_on"]
