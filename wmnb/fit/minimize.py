"""Second-order minimiser: Newton steps from the exact Hessian inside a Levenberg-Marquardt trust region.

Each iteration evaluates NLL, gradient and Hessian once, factorises ``H + lambda D`` by Cholesky
(``D`` = |diag H|, so the damping respects the very different scales of POIs and nuisances) and
takes the step if the NLL decreases; ``lambda`` shrinks after good agreement between predicted
and actual decrease and grows after a rejected or poor step (or a failed factorisation, i.e.
a Hessian that is not positive definite far from the minimum). Near the minimum ``lambda = 0``:
pure Newton, quadratic convergence. Converged when the estimated distance to the minimum
``EDM = g^T H^-1 g / 2`` is below ``tol`` with a positive-definite undamped Hessian; the
Cholesky factor of that Hessian is returned for the covariance, so the final Hessian is never
computed twice. All linear algebra is TensorFlow (runs where the tensors live: CPU or GPU).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from . import linalg
from .likelihood import Likelihood


@dataclass
class MinResult:
    """Outcome of :func:`minimize` (arrays are numpy; ``chol`` is the factor of H[free, free])."""

    x: np.ndarray
    nll: float
    grad: np.ndarray
    hess: linalg.Matrix      # the Hessian at x (numpy on the CPU, a tensor on a GPU)
    chol: linalg.Matrix | None
    free: np.ndarray
    edm: float
    niter: int
    converged: bool
    message: str


def _host_hessian(H: tf.Tensor) -> linalg.Matrix:
    """The Hessian where its linear algebra runs: numpy on the CPU, the tensor on a GPU.

    ``Tensor.numpy()`` copies (n x n more at the peak, 195 MB at 5000 parameters);
    ``_numpy()`` is TensorFlow's zero-copy view, whose base keeps the tensor's buffer alive.
    It is private API, hence the fallback; nothing writes to the view."""
    if linalg.on_gpu():
        return H
    view = getattr(H, "_numpy", None)
    return view() if callable(view) else H.numpy()


#: Newton-chord steps tried after each good undamped Newton step of :func:`minimize`
CHORD_STEPS = 8


def _chord_descent(lik: Likelihood, x: np.ndarray, f: float, L: linalg.Matrix, fidx: np.ndarray, tol: float,
                   max_steps: int) -> np.ndarray:
    """Steps ``-H0⁻¹ g(x)`` on the factor ``L`` of the Hessian just used (free parameters
    ``fidx``), each kept only if it lowers the NLL by at least a tenth of its own predicted
    decrease; they stop when that decrease is below ``tol`` (the exact check of the next
    iteration decides convergence) or stops halving (the Hessian has changed: a new one pays)."""
    last = np.inf
    for _ in range(max_steps):
        _, g_t = lik.value_and_grad(tf.constant(x))
        gf = g_t.numpy()[fidx]
        step = -linalg.cho_solve(L, gf)
        dec = float(-0.5 * gf @ step)
        if not np.isfinite(dec) or dec < tol or dec > 0.5 * last:
            break
        xt = x.copy()
        xt[fidx] += step
        ft = float(lik.value(tf.constant(xt)))
        if not (np.isfinite(ft) and ft <= f - 0.1 * dec):
            break
        x, f, last = xt, ft, dec
    return x


def minimize(lik: Likelihood, x0: np.ndarray, fixed: np.ndarray | None = None, tol: float = 1e-8,
             max_iter: int = 100, chord_steps: int | None = None) -> MinResult:
    """Minimise ``lik`` from ``x0`` with parameters where ``fixed`` is True held at their start.

    After an undamped Newton step whose decrease matched the quadratic model, up to
    ``chord_steps`` (default :data:`CHORD_STEPS`) Newton-chord steps reuse that Hessian's factor
    (a gradient each instead of a new Hessian, the dominant cost at thousands of parameters);
    convergence is still decided by the exact Hessian's EDM, so the minimum is the same."""
    chord_steps = CHORD_STEPS if chord_steps is None else int(chord_steps)
    x = np.array(x0, np.float64)
    N = x.size
    free = np.ones(N, bool) if fixed is None else ~np.asarray(fixed, bool)
    fidx = np.flatnonzero(free)
    all_free = bool(free.all())
    lam = 0.0
    msg = "maximum number of iterations reached"
    edm = np.inf
    for it in range(1, max_iter + 1):
        H = H_all = L = None     # the last iteration's n x n matrices go before the new ones come
        f_t, g_t, H_t = lik.value_grad_hess(tf.constant(x))
        f, g = float(f_t), g_t.numpy()
        H_all = _host_hessian(H_t)
        del H_t
        if not np.isfinite(f):
            return MinResult(x, f, g, H_all, None, free, np.inf, it, False,
                             "NLL is not finite at the starting point: check the data and the start values")
        H = H_all
        gf = g if all_free else g[fidx]
        if not all_free:
            H = tf.gather(tf.gather(H, fidx), fidx, axis=1) if linalg.on_gpu() else H[np.ix_(fidx, fidx)]
        diagH = np.abs(np.diag(H) if not linalg.on_gpu() else tf.linalg.diag_part(H).numpy())
        dscale = np.maximum(diagH, 1e-12)
        accepted = False
        for _ in range(40):
            L = linalg.cholesky(H if lam == 0.0 else H + np.diag(lam * dscale))
            if L is None:
                lam = max(10.0 * lam, 1e-4)
                continue
            step = -linalg.cho_solve(L, gf)
            if lam == 0.0:
                edm = float(-0.5 * gf @ step)
                if edm < tol:
                    # free polish: the Newton step already solved for shrinks the remaining
                    # distance quadratically; H (and the covariance) changes negligibly over it
                    xt = x.copy()
                    xt[fidx] += step
                    ft = float(lik.value(tf.constant(xt)))
                    if np.isfinite(ft) and ft <= f:
                        x, f = xt, ft
                    return MinResult(x, f, g, H_all, L, free, edm, it, True, "converged")
            hs = (H @ step) if not linalg.on_gpu() else tf.linalg.matvec(H, tf.constant(step)).numpy()
            pred = float(gf @ step + 0.5 * step @ hs)
            xt = x.copy()
            xt[fidx] += step
            ft = float(lik.value(tf.constant(xt)))
            if np.isfinite(ft) and ft <= f + 1e-13 * abs(f):
                rho = (ft - f) / pred if pred < 0 else 0.0
                newton = lam == 0.0 and rho > 0.75
                if rho > 0.75:
                    lam = 0.0 if lam < 1e-3 else lam / 10.0
                elif rho < 0.25:
                    lam = max(4.0 * lam, 1e-4)
                x = xt
                if newton and chord_steps:
                    # where the quadratic model just proved good, reuse its factor for more steps
                    x = _chord_descent(lik, x, ft, L, fidx, tol, chord_steps)
                accepted = True
                break
            lam = max(10.0 * lam, 1e-4)
        if not accepted:
            msg = "no decreasing step found (trust region collapsed)"
            break
    return MinResult(x, f, g, H_all, None, free, edm, it, False, msg)


def minimize_chord(lik: Likelihood, x0: np.ndarray, chol: linalg.Matrix, tol: float = 1e-8,
                   max_chord: int = 30) -> MinResult:
    """Minimise from ``x0`` with Newton-chord steps ``-H0⁻¹ g(x)``: ``chol`` is the Cholesky
    factor of the Hessian of a nearby converged fit of the same model (all parameters free),
    e.g. the previous point of an injection scan.  A chord step costs one gradient and two
    triangular solves instead of a new Hessian and its factorisation; the convergence is linear
    at the rate at which the Hessian changes between the two points, a few steps for nearby
    data.  The end point is checked with the exact Hessian (its EDM must be below ``tol``) and
    its factor returned for the covariance; if the chord steps stall the full minimiser takes
    over from where they got, so the result is always the same minimum :func:`minimize` finds.
    """
    x = np.array(x0, np.float64)
    f_t, g_t = lik.value_and_grad(tf.constant(x))
    f, g = float(f_t), g_t.numpy()
    steps = 0
    for _ in range(max_chord):
        step = -linalg.cho_solve(chol, g)
        if -0.5 * float(g @ step) < 0.1 * tol:
            break
        for _halving in range(8):           # backtracking: H0 may overshoot where H differs
            xt = x + step
            ft_t, gt_t = lik.value_and_grad(tf.constant(xt))
            ft = float(ft_t)
            if np.isfinite(ft) and ft <= f + 1e-13 * abs(f):
                x, f, g = xt, ft, gt_t.numpy()
                steps += 1
                break
            step = 0.5 * step
        else:
            break
    f_t, g_t, H_t = lik.value_grad_hess(tf.constant(x))
    f, g = float(f_t), g_t.numpy()
    H_all = _host_hessian(H_t)
    del H_t
    L = linalg.cholesky(H_all)
    if L is not None:
        step = -linalg.cho_solve(L, g)
        edm = float(-0.5 * g @ step)
        if edm < tol:
            # the same free polish as minimize(): the exact Newton step is already solved for
            ft = float(lik.value(tf.constant(x + step)))
            if np.isfinite(ft) and ft <= f:
                x, f = x + step, ft
            return MinResult(x, f, g, H_all, L, np.ones(x.size, bool), edm, steps + 1, True,
                             f"converged ({steps} Newton-chord steps)")
    return minimize(lik, x, tol=tol)


def covariance(res: MinResult, consume: bool = False) -> np.ndarray:
    """Full covariance H^-1 (zeros for fixed parameters) from the converged Cholesky factor.
    ``consume=True``: the inverse is computed in the factor's memory and ``res.chol`` becomes
    None (for callers that need the factor no more: an n x n matrix less)."""
    if res.chol is None:
        raise RuntimeError(f"no positive-definite Hessian at the end of the fit ({res.message})")
    own = consume and isinstance(res.chol, np.ndarray)
    cf = linalg.cho_inverse(res.chol, overwrite=own)
    if own:
        res.chol = None
    if res.free.all():
        return cf
    N = res.free.size
    cov = np.zeros((N, N))
    idx = np.flatnonzero(res.free)
    cov[np.ix_(idx, idx)] = cf
    return cov


def covariance_rows(res: MinResult, rows: Sequence[int]) -> np.ndarray:
    """Rows ``rows`` of the covariance [len(rows), N] without inverting the whole Hessian."""
    if res.chol is None:
        raise RuntimeError(f"no positive-definite Hessian at the end of the fit ({res.message})")
    idx = np.flatnonzero(res.free)
    pos = {int(j): i for i, j in enumerate(idx)}
    e = np.zeros((idx.size, len(rows)))
    for k, r in enumerate(rows):
        if r not in pos:
            raise ValueError(f"parameter {r} is fixed; it has no covariance")
        e[pos[r], k] = 1.0
    sol = linalg.cho_solve(res.chol, e)
    out = np.zeros((len(rows), res.free.size))
    out[:, idx] = sol.T
    return out
