"""Thousands of small binned dimuon-mass fits at once.

In each 4-D bin the data histogram of ``u = ln(m)`` (``n_data`` uniform bins over the mass
``window``) is fitted with

    mu_b = Ns * S_b(t, sig) / sum_b' S_b'  +  Nb * exp(-lam * x_b) / sum_b' exp(-lam * x_b')

``S_b`` is that bin's simulated template (gen-matched simulation histogrammed in ``u`` on a grid
``oversample`` times finer than the data bins), shifted by ``t = ln(1 + s)`` (a mass scale
``1 + s``) and convolved with a Gaussian of width ``sig = sqrt(h^2 + v)`` in ``u`` (i.e. a
relative mass smearing).  ``h`` (``MassFitConfig.smooth``) is a small fixed kernel that keeps the
template smooth in ``s``; ``v`` > -h^2 is the data-minus-simulation relative mass variance *plus*
``-h^2`` offset, so data exactly as wide as simulation give ``v = -h^2`` (reported as
``dvar = v + h^2``, up to the fine-bin width).  ``x_b`` maps the bin centres onto [-1, 1]; the
exponential's normalised bin fractions are exact for uniform bins, whatever the slope.

Because data and template grids share one spacing in ``u``, every (data edge, template bin)
distance is a multiple of the fine spacing: the Gaussian CDF is evaluated once per distinct
distance and bin (``~2 n_fine`` values) and gathered, which makes thousands of fits cheap.
All bins are fitted together by Levenberg-damped Fisher scoring on the Poisson likelihood with
analytic derivatives (numpy, chunked).  The covariance is the inverse expected information;
the error of ``s`` is inflated by ``sqrt(1 + Ns / N_mc_eff)`` for the finite simulated template.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import ndtr

_SQRT2PI = np.sqrt(2 * np.pi)
PAR_NAMES = ("s", "v", "Ns", "Nb", "lam")
MU_FLOOR = 1e-6  # expected events: floor of mu in the likelihood
LAM_PRIOR = 5.0  # weak Gaussian prior width on the (dimensionless) background slope


@dataclass
class MassFitConfig:
    """Histogramming and fit settings of the 4-D bin fits."""

    window: tuple[float, float] = (2.9, 3.3)
    n_data: int = 40
    oversample: int = 3          # template bins per data bin
    pad_bins: int = 6            # extra template bins (data-bin units) on each side of the window
    smooth: float = 0.004        # fixed relative Gaussian kernel of the template (h)
    v_floor: float = 0.75        # v >= -v_floor * h^2: keeps the kernel wider than ~2 template bins
    min_data: int = 50           # data events in the window below which a bin is skipped
    min_mc: float = 50.0         # effective simulated events below which a bin is skipped
    background: bool = True      # fit an exponential background (False for pure signal)
    max_iter: int = 80
    edm_max: float = 5e-3        # convergence: estimated distance to minimum (NLL units)
    chunk: int = 2000

    def to_dict(self) -> dict:
        return dict(self.__dict__, window=list(self.window))

    def grids(self) -> tuple[np.ndarray, np.ndarray]:
        """Data-bin edges and template-bin edges in u = ln(m)."""
        lo, hi = np.log(self.window[0]), np.log(self.window[1])
        du = (hi - lo) / self.n_data
        d_edges = lo + du * np.arange(self.n_data + 1)
        fd = du / self.oversample
        npad = self.pad_bins * self.oversample
        f_edges = lo - npad * fd + fd * np.arange(self.n_data * self.oversample + 2 * npad + 1)
        return d_edges, f_edges


@dataclass
class MassFitResult:
    """Per-bin results of :func:`fit_bins` (arrays over the *fitted* bins)."""

    bins: np.ndarray             # flat 4-D bin ids
    n_data: np.ndarray
    n_mc_eff: np.ndarray
    params: np.ndarray           # [n, 5] (s, v, Ns, Nb, lam)
    cov: np.ndarray              # [n, 5, 5]
    s_err: np.ndarray            # error of s including the template statistics
    nll: np.ndarray
    chi2: np.ndarray             # Pearson chi^2 of the fit
    ndf: np.ndarray
    converged: np.ndarray
    n_iter: int
    smooth: float
    at_floor: np.ndarray         # v held at its lower bound (data narrower than the template allows)
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> number of bins

    @property
    def s(self) -> np.ndarray:
        return self.params[:, 0]

    @property
    def dvar(self) -> np.ndarray:
        """Data-minus-simulation relative mass variance (v + h^2)."""
        return self.params[:, 1] + self.smooth ** 2

    @property
    def dvar_err(self) -> np.ndarray:
        return np.sqrt(self.cov[:, 1, 1])

    @property
    def ok(self) -> np.ndarray:
        return self.converged & np.isfinite(self.s_err) & (self.s_err > 0)

    @property
    def n_fits(self) -> int:
        return len(self.bins)

    @property
    def n_failed(self) -> int:
        return int((~self.ok).sum())


def _hist2d(idx: np.ndarray, x: np.ndarray, w: np.ndarray | None, n_idx: int,
            edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted counts and sum of squared weights in (idx, x bins); ignores out-of-range x."""
    nb = len(edges) - 1
    xb = np.searchsorted(edges, x, side="right") - 1
    ok = (xb >= 0) & (xb < nb) & (idx >= 0)
    flat = idx[ok] * nb + xb[ok]
    ww = np.ones(int(ok.sum())) if w is None else np.asarray(w, dtype=np.float64)[ok]
    h = np.bincount(flat, weights=ww, minlength=n_idx * nb).reshape(n_idx, nb)
    h2 = np.bincount(flat, weights=ww * ww, minlength=n_idx * nb).reshape(n_idx, nb)
    return h, h2


class _Model:
    """Expected counts and Jacobian for a set of bins (arrays batched over bins)."""

    def __init__(self, templ: np.ndarray, cfg: MassFitConfig):
        d_edges, f_edges = cfg.grids()
        self.fd = f_edges[1] - f_edges[0]
        r, npad = cfg.oversample, cfg.pad_bins * cfg.oversample
        F = len(f_edges) - 1
        e = np.arange(cfg.n_data + 1)[:, None]
        j = np.arange(F)[None, :]
        m = e * r + npad - j                      # (U_e - u_j) = (m - 0.5) * fd
        self.m_min = int(m.min())
        self.grid = (np.arange(self.m_min, int(m.max()) + 1) - 0.5) * self.fd   # [D]
        self.gather = (m - self.m_min)            # [E, F] (reference; _conv uses a strided view)
        assert self.m_min == npad - (F - 1)
        self.r, self.n_edges = r, cfg.n_data + 1
        tot = templ.sum(axis=1, keepdims=True)
        self.T = templ / np.where(tot > 0, tot, 1.0)   # [B, F]
        self.x = np.linspace(-1, 1, 2 * cfg.n_data + 1)[1::2]
        self.h2 = cfg.smooth ** 2
        self.background = cfg.background

    def subset(self, sel: np.ndarray) -> "_Model":
        new = _Model.__new__(_Model)
        new.__dict__.update(self.__dict__)
        new.T = self.T[sel]
        return new

    def _conv(self, K: np.ndarray) -> np.ndarray:
        """sum_j T[b, j] K[b, gather[e, j]] -> [B, E].

        gather[e, j] = e * r + (F - 1) - j, so row e is a reversed window of K starting at
        e * r: a strided view (no copy) contracted with the reversed template."""
        F = self.T.shape[1]
        W = sliding_window_view(K, F, axis=1)[:, 0::self.r][:, : self.n_edges]
        return np.einsum("bef,bf->be", W, self.T[:, ::-1])

    def __call__(self, p: np.ndarray, jac: bool = True):
        s, v, Ns, Nb, lam = (p[:, i] for i in range(5))
        sig = np.sqrt(self.h2 + v)
        t = np.log1p(s)
        z = (self.grid[None, :] - t[:, None]) / sig[:, None]     # [B, D]
        C = self._conv(ndtr(z))                                  # CDF at data edges [B, E]
        S = np.diff(C, axis=1)                                   # [B, Dd]
        G = np.maximum(S.sum(axis=1), 1e-300)
        fs = S / G[:, None]
        eb = np.exp(-np.clip(lam[:, None] * self.x[None, :], -700, 700))
        fb = eb / eb.sum(axis=1, keepdims=True)
        mu = Ns[:, None] * fs + (Nb[:, None] * fb if self.background else 0.0)
        if not jac:
            return mu, None
        phi = np.exp(-0.5 * z * z) / _SQRT2PI
        dS_t = np.diff(self._conv(-phi / sig[:, None]), axis=1)
        dS_sig = np.diff(self._conv(-phi * z / sig[:, None]), axis=1)
        J = np.zeros(mu.shape + (5,))
        for i, dS in ((0, dS_t / (1 + s)[:, None]), (1, dS_sig / (2 * sig)[:, None])):
            J[:, :, i] = Ns[:, None] * (dS - fs * dS.sum(axis=1, keepdims=True)) / G[:, None]
        J[:, :, 2] = fs
        if self.background:
            J[:, :, 3] = fb
            xm = (fb * self.x[None, :]).sum(axis=1, keepdims=True)
            J[:, :, 4] = -Nb[:, None] * fb * (self.x[None, :] - xm)
        return mu, J


def _nll(mu: np.ndarray, n: np.ndarray, lam: np.ndarray) -> np.ndarray:
    mu = np.maximum(mu, MU_FLOOR)
    return (mu - n * np.log(mu)).sum(axis=1) + 0.5 * (lam / LAM_PRIOR) ** 2


def _clamp(p: np.ndarray, h2: float, background: bool, v_floor: float) -> np.ndarray:
    p = p.copy()
    p[:, 0] = np.clip(p[:, 0], -0.05, 0.05)
    p[:, 1] = np.clip(p[:, 1], -v_floor * h2, 0.05)
    p[:, 2] = np.maximum(p[:, 2], 1e-3)
    p[:, 3] = np.maximum(p[:, 3], NB_FLOOR) if background else 0.0
    p[:, 4] = np.clip(p[:, 4], -50, 50) if background else 0.0
    return p


def _info(J: np.ndarray, mu: np.ndarray, n: np.ndarray, lam: np.ndarray, background: bool,
          observed: bool = False):
    """Gradient and information matrix of the NLL.  ``observed``: use n/mu^2 instead of 1/mu,
    the exact Hessian for the linear yields, which makes the iteration converge quadratically
    where plain Fisher scoring crawls (yields trading against each other)."""
    # a floor on the expectation: without background, template tails give mu ~ 0 in empty bins,
    # where 1/mu would swamp the information matrix
    inv_mu = 1.0 / np.maximum(mu, MU_FLOOR)
    g = np.matmul(((1 - n * inv_mu)[:, None, :]), J)[:, 0, :]
    w = n * inv_mu * inv_mu if observed else inv_mu
    I = np.matmul(np.swapaxes(J, 1, 2) * w[:, None, :], J)
    if background:
        g[:, -1] += lam / LAM_PRIOR ** 2
        I[:, -1, -1] += 1 / LAM_PRIOR ** 2
    return g, I


NB_FLOOR = 1e-6


def _held(p: np.ndarray, g: np.ndarray, h2: float, cfg: MassFitConfig) -> dict[int, np.ndarray]:
    """Free-parameter columns held at a bound whose gradient points outwards: the resolution
    parameter at its floor and (with a background) the background yield at zero."""
    out = {1: (p[:, 1] <= -cfg.v_floor * h2 * (1 - 1e-9)) & (g[:, 1] > 0)}
    if cfg.background:
        out[3] = (p[:, 3] <= NB_FLOOR * (1 + 1e-9)) & (g[:, 3] > 0)
    return out


def _edm(g: np.ndarray, I: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return 0.5 * np.einsum("bi,bi->b", g, np.linalg.solve(I, g[..., None])[..., 0])


def _polish(model: "_Model", p, mu, J, f, n, g, I, free, cfg: MassFitConfig, n_iter: int = 15):
    """Newton iterations with a finite-difference Hessian for bins whose EDM is still large."""
    h2 = model.h2
    for _ in range(n_iter):
        edm = _edm(g, I)
        ia = np.flatnonzero(~(np.isfinite(edm) & (edm < 0.1 * cfg.edm_max)))
        if ia.size == 0:
            break
        fi = np.flatnonzero(free)
        with np.errstate(all="ignore"):
            err = np.sqrt(np.abs(np.diagonal(np.linalg.inv(I[ia]), axis1=1, axis2=2)))
        err = np.where(np.isfinite(err) & (err > 0), err, 1e-6)
        H = np.zeros((ia.size, fi.size, fi.size))
        sub = model.subset(ia)
        for j, par in enumerate(fi):
            eps = 1e-2 * err[:, j]
            grads = []
            for sign in (+1, -1):
                q = p[ia].copy()
                q[:, par] += sign * eps
                m_, J_ = sub(q)
                gq, _ = _info(J_[:, :, free], m_, n[ia], q[:, 4], cfg.background)
                grads.append(gq)
            H[:, :, j] = (grads[0] - grads[1]) / (2 * eps[:, None])
        H = 0.5 * (H + np.swapaxes(H, 1, 2))
        # fall back to the information matrix where the Hessian is not positive definite
        pd = np.all(np.linalg.eigvalsh(H) > 0, axis=1)
        H = np.where(pd[:, None, None], H, I[ia])
        step = -np.linalg.solve(H, g[ia][..., None])[..., 0]
        accepted = np.zeros(ia.size, bool)
        for frac in (1.0, 0.5, 0.25):
            q = p[ia].copy()
            q[:, free] += frac * step
            q = _clamp(q, h2, cfg.background, cfg.v_floor)
            m_, J_ = sub(q)
            fq = _nll(m_, n[ia], q[:, 4])
            ok = ~accepted & np.isfinite(fq) & (fq <= f[ia] + 1e-9)
            upd = ia[ok]
            p[upd], mu[upd], J[upd], f[upd] = q[ok], m_[ok], J_[ok], fq[ok]
            accepted |= ok
        g[ia], I[ia] = _info(J[ia][:, :, free], mu[ia], n[ia], p[ia, 4], cfg.background)
        if not accepted.any():
            break
    return p, mu, J, f


def _fit_chunk(n: np.ndarray, templ: np.ndarray, cfg: MassFitConfig):
    model = _Model(templ, cfg)
    B = n.shape[0]
    tot = n.sum(axis=1)
    if cfg.background:
        k = max(1, cfg.n_data // 8)
        side = 0.5 * (n[:, :k].mean(axis=1) + n[:, -k:].mean(axis=1)) * cfg.n_data
        nb0 = np.clip(side, 0.02 * tot, 0.8 * tot)
    else:
        nb0 = np.zeros(B)
    h2 = model.h2
    p = np.stack([np.zeros(B), np.full(B, -0.5 * h2), np.maximum(tot - nb0, 1.0), nb0, np.zeros(B)], axis=1)
    free = np.array([True, True, True, cfg.background, cfg.background])
    nf = int(free.sum())
    eye = np.eye(nf)
    mu, J = model(p)
    f = _nll(mu, n, p[:, 4])
    damp = np.full(B, 1e-3)
    done = np.zeros(B, dtype=bool)
    prev = np.zeros((B, nf))
    it = 0
    for it in range(1, cfg.max_iter + 1):  # noqa: B007 (returned: the iterations used)
        ia = np.flatnonzero(~done)
        if ia.size == 0:
            break
        g, I = _info(J[ia][:, :, free], mu[ia], n[ia], p[ia, 4], cfg.background, observed=True)
        # active set: a resolution parameter at its floor, pushed outwards, is held fixed
        # (otherwise the clamped step spoils the Newton step of the correlated yields)
        # (the same for a background yield at zero)
        for col, held in _held(p[ia], g, h2, cfg).items():
            g[held, col] = 0.0
            I[held, col, :] = 0.0
            I[held, :, col] = 0.0
            I[held, col, col] = 1.0
        diag = np.einsum("bii->bi", I)
        A = I + damp[ia, None, None] * diag[:, :, None] * eye + 1e-12 * diag.max(axis=1)[:, None, None] * eye
        step = -np.linalg.solve(A, g[..., None])[..., 0]
        pa = p[ia].copy()
        pa[:, free] += step
        pa = _clamp(pa, h2, cfg.background, cfg.v_floor)
        actual = (pa - p[ia])[:, free]
        mu_new, J_new = model.subset(ia)(pa)
        f_new = _nll(mu_new, n[ia], pa[:, 4])
        better = np.isfinite(f_new) & (f_new <= f[ia] + 1e-9)
        upd = ia[better]
        dfv = f[ia] - f_new
        p[upd], mu[upd], J[upd], f[upd] = pa[better], mu_new[better], J_new[better], f_new[better]
        # a step that reverses the previous one means the model's curvature exceeds the Fisher
        # information (zig-zag in a narrow valley): damp harder instead of relaxing
        scale = np.sqrt(np.maximum(diag, 1e-300))
        reverse = np.einsum("bi,bi->b", actual * scale, prev[ia] * scale) < 0
        damp[upd] = np.where(reverse[better], damp[upd] * 3, np.maximum(damp[upd] * 0.2, 1e-7))
        damp[ia[~better]] *= 10
        prev[upd] = actual[better]
        # converged: the (clamped) step moves every parameter by < 1 % of its error and the
        # NLL by < 1e-4 (Minuit-like tolerance)
        rel = np.max(np.abs(actual) * scale, axis=1)
        conv = np.where(better, (np.abs(dfv) < 1e-4) & (rel < 1e-2), rel < 1e-3)
        done[ia[conv]] = True
        done |= damp > 1e10
    # polish the slow ones with Newton steps on a Hessian from differences of the analytic
    # gradient (captures the template curvature that Fisher scoring leaves out)
    g, I = _info(J[:, :, free], mu, n, p[:, 4], cfg.background)
    p, mu, J, f = _polish(model, p, mu, J, f, n, g, I, free, cfg)
    g, I = _info(J[:, :, free], mu, n, p[:, 4], cfg.background)
    # final convergence test: estimated distance to the minimum (EDM) over the parameters not
    # held at a bound by a gradient that points out of the allowed region
    held = _held(p, g, h2, cfg)
    at_floor = held[1]
    gp, Ip = g.copy(), I.copy()
    for col, hm in held.items():
        gp[hm, col] = 0.0
        Ip[hm, col, :] = 0.0
        Ip[hm, :, col] = 0.0
        Ip[hm, col, col] = 1.0
    edm = _edm(gp, Ip)
    inv = np.full((B, nf, nf), np.nan)
    fin = np.isfinite(I).all(axis=(1, 2)) & (np.linalg.det(I) > 0)
    if fin.any():
        inv[fin] = np.linalg.inv(I[fin])
    cov = np.full((B, 5, 5), np.nan)
    fi = np.flatnonzero(free)
    cov[:, fi[:, None], fi[None, :]] = inv
    converged = np.isfinite(f) & np.isfinite(edm) & (edm < cfg.edm_max)
    mu = np.maximum(mu, MU_FLOOR)
    chi2 = ((n - mu) ** 2 / mu).sum(axis=1)
    return p, cov, f, chi2, converged, it, at_floor


def fit_bins(data_idx: np.ndarray, data_mass: np.ndarray, mc_idx: np.ndarray, mc_mass: np.ndarray,
             cfg: MassFitConfig, mc_weight: np.ndarray | None = None,
             data_weight: np.ndarray | None = None) -> MassFitResult:
    """Fit the data mass spectrum of every occupied 4-D bin against its simulated template.

    ``*_idx``: flat bin id per event (-1: not in any bin).  Bins with fewer than
    ``cfg.min_data`` data events in the window or ``cfg.min_mc`` effective simulated events are
    skipped and counted in ``result.skipped`` (never fitted silently with too few events).
    """
    lo, hi = cfg.window
    if not hi > lo > 0:
        raise ValueError(f"mass window {cfg.window} must satisfy 0 < lo < hi")
    d_edges, f_edges = cfg.grids()
    data_idx = np.asarray(data_idx)
    mc_idx = np.asarray(mc_idx)
    with np.errstate(divide="ignore"):
        ud = np.log(np.asarray(data_mass, dtype=np.float64))
        um = np.log(np.asarray(mc_mass, dtype=np.float64))
    occupied = np.union1d(np.unique(data_idx[data_idx >= 0]), np.unique(mc_idx[mc_idx >= 0]))
    dmap = np.where(data_idx >= 0, np.searchsorted(occupied, data_idx), -1)
    mmap = np.where(mc_idx >= 0, np.searchsorted(occupied, mc_idx), -1)
    nd, _ = _hist2d(dmap, ud, data_weight, len(occupied), d_edges)
    tm, tm2 = _hist2d(mmap, um, mc_weight, len(occupied), f_edges)
    n_mc_eff = tm.sum(axis=1) ** 2 / np.maximum(tm2.sum(axis=1), 1e-300)
    n_data = nd.sum(axis=1)
    few_data = n_data < cfg.min_data
    few_mc = (~few_data) & (n_mc_eff < cfg.min_mc)
    sel = ~(few_data | few_mc)
    skipped = {"few_data": int(few_data.sum()), "few_mc": int(few_mc.sum())}
    nd, tm = nd[sel], tm[sel]
    B = len(nd)
    params = np.zeros((B, 5))
    cov = np.full((B, 5, 5), np.nan)
    nll, chi2 = np.zeros(B), np.zeros(B)
    conv = np.zeros(B, dtype=bool)
    at_floor = np.zeros(B, dtype=bool)
    n_iter = 0
    for start in range(0, B, cfg.chunk):
        sl = slice(start, start + cfg.chunk)
        p, c, f, x2, ok, it, fl = _fit_chunk(nd[sl], tm[sl], cfg)
        params[sl], cov[sl], nll[sl], chi2[sl], conv[sl], at_floor[sl] = p, c, f, x2, ok, fl
        n_iter = max(n_iter, it)
    s_err = np.sqrt(cov[:, 0, 0] * (1 + params[:, 2] / np.maximum(n_mc_eff[sel], 1e-9)))
    n_free = 3 + 2 * int(cfg.background)
    return MassFitResult(bins=occupied[sel], n_data=n_data[sel], n_mc_eff=n_mc_eff[sel], params=params,
                         cov=cov, s_err=s_err, nll=nll, chi2=chi2,
                         ndf=np.full(B, cfg.n_data - n_free), converged=conv, n_iter=n_iter,
                         smooth=cfg.smooth, at_floor=at_floor, skipped=skipped)
