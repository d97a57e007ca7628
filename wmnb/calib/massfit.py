"""Thousands of small binned dimuon-mass fits at once.

In each 4-D bin ``j`` the data mass histogram (``n_data`` bins in ``window``) is fitted with

    mu_b = Ns * S_b(s, v) / sum_b' S_b'(s, v)  +  Nb * exp(-lam * x_b) / sum_b' exp(-lam * x_b')

where ``S_b`` is the bin-``j`` simulated mass template (a fine histogram of gen-matched
simulation, bin centres ``c_f``) shifted by ``(1 + s)`` and smeared by a Gaussian of relative
width ``sqrt(h^2 + v)`` (``h``: the fine-bin width over sqrt(12), so ``v = 0`` means "same
resolution as simulation"; ``v`` is the data-minus-simulation relative mass variance), and
``x_b`` is the bin centre mapped onto [-1, 1].  The exponential's normalised bin fractions are
exact for uniform bins, whatever the slope.

All bins are fitted together by Levenberg-damped Fisher scoring on the Poisson likelihood with
analytic derivatives (numpy, chunked), so the cost is a few dozen passes over an array of
``n_bins x n_fine x n_data`` numbers.  The covariance is the inverse expected information; the
error of ``s`` is inflated by ``sqrt(1 + Ns / N_mc_eff)`` for the finite simulated template.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

_SQRT2PI = np.sqrt(2 * np.pi)
PAR_NAMES = ("s", "v", "Ns", "Nb", "lam")
LAM_PRIOR = 5.0  # weak Gaussian prior width on the (dimensionless) background slope


@dataclass
class MassFitConfig:
    """Histogramming and fit settings of the 4-D bin fits."""

    window: tuple[float, float] = (2.9, 3.3)
    n_data: int = 40
    n_fine: int = 120
    pad: float = 0.05            # extra template range on each side (GeV)
    min_data: int = 50           # data events in the window below which a bin is skipped
    min_mc: float = 50.0         # effective simulated events below which a bin is skipped
    background: bool = True      # fit an exponential background (False for pure signal toys)
    max_iter: int = 60
    chunk: int = 1500

    def to_dict(self) -> dict:
        return dict(self.__dict__, window=list(self.window))


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
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> number of bins

    @property
    def s(self) -> np.ndarray:
        return self.params[:, 0]

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
    """Expected counts and their Jacobian for a chunk of bins (all arrays batched over bins)."""

    def __init__(self, templ: np.ndarray, cfg: MassFitConfig):
        lo, hi = cfg.window
        self.edges = np.linspace(lo, hi, cfg.n_data + 1)
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        self.x = (centres - 0.5 * (lo + hi)) / (0.5 * (hi - lo))
        fe = np.linspace(lo - cfg.pad, hi + cfg.pad, cfg.n_fine + 1)
        self.c = 0.5 * (fe[1:] + fe[:-1])                      # [F]
        self.h2 = (np.diff(fe)[0] / np.sqrt(12) / (0.5 * (lo + hi))) ** 2
        tot = templ.sum(axis=1, keepdims=True)
        self.T = templ / np.where(tot > 0, tot, 1.0)           # [B, F]
        self.background = cfg.background

    def __call__(self, p: np.ndarray, jac: bool = True):
        s, v, Ns, Nb, lam = (p[:, i] for i in range(5))
        sig = np.sqrt(self.h2 + v)                              # relative width [B]
        mean = self.c[None, :] * (1 + s[:, None])               # [B, F]
        width = self.c[None, :] * sig[:, None]
        z = (self.edges[None, None, :] - mean[:, :, None]) / width[:, :, None]   # [B, F, E]
        Phi = ndtr(z)
        P = np.diff(Phi, axis=2)                                # [B, F, D]
        S = np.einsum("bf,bfd->bd", self.T, P)                  # [B, D]
        G = S.sum(axis=1)                                       # [B]
        Gs = np.maximum(G, 1e-300)
        fs = S / Gs[:, None]
        eb = np.exp(-np.clip(lam[:, None] * self.x[None, :], -700, 700))
        fb = eb / eb.sum(axis=1, keepdims=True)
        mu = Ns[:, None] * fs + (Nb[:, None] * fb if self.background else 0.0)
        if not jac:
            return mu, None
        phi = np.exp(-0.5 * z * z) / _SQRT2PI
        # d Phi(z_e) / d s = -phi * c / width = -phi / sig ; d Phi / d sig = -phi * z / sig
        dPs = -np.diff(phi, axis=2) / sig[:, None, None]
        dPsig = -np.diff(phi * z, axis=2) / sig[:, None, None]
        dS_s = np.einsum("bf,bfd->bd", self.T, dPs)
        dS_v = np.einsum("bf,bfd->bd", self.T, dPsig) / (2 * sig[:, None])
        J = np.zeros(mu.shape + (5,))
        for i, dS in ((0, dS_s), (1, dS_v)):
            J[:, :, i] = Ns[:, None] * (dS - fs * dS.sum(axis=1, keepdims=True)) / Gs[:, None]
        J[:, :, 2] = fs
        if self.background:
            J[:, :, 3] = fb
            xm = (fb * self.x[None, :]).sum(axis=1, keepdims=True)
            J[:, :, 4] = -Nb[:, None] * fb * (self.x[None, :] - xm)
        return mu, J


def _nll(mu: np.ndarray, n: np.ndarray, lam: np.ndarray) -> np.ndarray:
    mu = np.maximum(mu, 1e-300)
    return (mu - n * np.log(mu)).sum(axis=1) + 0.5 * (lam / LAM_PRIOR) ** 2


def _clamp(p: np.ndarray, h2: float, background: bool) -> np.ndarray:
    p = p.copy()
    p[:, 0] = np.clip(p[:, 0], -0.05, 0.05)
    p[:, 1] = np.clip(p[:, 1], -0.95 * h2, 0.05)
    p[:, 2] = np.maximum(p[:, 2], 1e-3)
    p[:, 3] = np.maximum(p[:, 3], 1e-6) if background else 0.0
    p[:, 4] = np.clip(p[:, 4], -50, 50) if background else 0.0
    return p


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
    p = np.stack([np.zeros(B), np.zeros(B), np.maximum(tot - nb0, 1.0), nb0, np.zeros(B)], axis=1)
    free = np.array([True, True, True, cfg.background, cfg.background])
    nf = int(free.sum())
    mu, J = model(p)
    f = _nll(mu, n, p[:, 4])
    damp = np.full(B, 1e-3)
    done = np.zeros(B, dtype=bool)
    it = 0
    for it in range(1, cfg.max_iter + 1):
        act = ~done
        if not act.any():
            break
        Ja = J[act][:, :, free]
        mua = np.maximum(mu[act], 1e-300)
        g = np.einsum("bd,bdi->bi", 1 - n[act] / mua, Ja)
        I = np.einsum("bdi,bd,bdj->bij", Ja, 1 / mua, Ja)
        if cfg.background:
            g[:, -1] += p[act, 4] / LAM_PRIOR ** 2
            I[:, -1, -1] += 1 / LAM_PRIOR ** 2
        diag = np.einsum("bii->bi", I)
        A = I + damp[act, None, None] * np.einsum("bi,ij->bij", diag, np.eye(nf))
        A += 1e-12 * np.eye(nf) * (diag.max(axis=1)[:, None, None] + 1e-300)
        try:
            step = -np.linalg.solve(A, g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -np.stack([np.linalg.lstsq(a, gg, rcond=None)[0] for a, gg in zip(A, g)])
        edm = 0.5 * np.einsum("bi,bi->b", -g, np.linalg.lstsq(I[0], g[0], rcond=None)[0][None, :].repeat(len(g), 0)) if False else None
        pa = p[act].copy()
        pa[:, free] += step
        pa = _clamp(pa, model.h2, cfg.background)
        sub = _Model.__new__(_Model)
        sub.__dict__.update(model.__dict__)
        sub.T = model.T[act]
        mu_new, J_new = sub(pa)
        f_new = _nll(mu_new, n[act], pa[:, 4])
        better = np.isfinite(f_new) & (f_new <= f[act] + 1e-10)
        ia = np.flatnonzero(act)
        upd = ia[better]
        dfv = f[act][better] - f_new[better]
        p[upd], mu[upd], J[upd], f[upd] = pa[better], mu_new[better], J_new[better], f_new[better]
        damp[upd] = np.maximum(damp[upd] * 0.3, 1e-7)
        damp[ia[~better]] *= 10
        # converged: accepted step that changed the NLL by < 1e-7, or damping exploded at a minimum
        predicted = np.abs(np.einsum("bi,bi->b", g, step))
        conv_now = np.zeros(B, dtype=bool)
        conv_now[upd] = (dfv < 1e-6) & (predicted[better] < 1e-5)
        conv_now[ia[~better]] = predicted[~better] < 1e-7
        done |= conv_now
        done |= damp > 1e8
    # final covariance from the expected information at the minimum
    mu = np.maximum(mu, 1e-300)
    Jf = J[:, :, free]
    I = np.einsum("bdi,bd,bdj->bij", Jf, 1 / mu, Jf)
    if cfg.background:
        I[:, -1, -1] += 1 / LAM_PRIOR ** 2
    cov = np.full((B, 5, 5), np.nan)
    good = np.isfinite(I).all(axis=(1, 2))
    inv = np.full((B, nf, nf), np.nan)
    if good.any():
        try:
            inv[good] = np.linalg.inv(I[good])
        except np.linalg.LinAlgError:
            for i in np.flatnonzero(good):
                try:
                    inv[i] = np.linalg.inv(I[i])
                except np.linalg.LinAlgError:
                    pass
    fi = np.flatnonzero(free)
    cov[:, fi[:, None], fi[None, :]] = inv
    converged = done & (damp <= 1e8) & np.isfinite(f)
    chi2 = ((n - mu) ** 2 / mu).sum(axis=1)
    return p, cov, f, chi2, converged, it


def fit_bins(data_idx: np.ndarray, data_mass: np.ndarray, mc_idx: np.ndarray, mc_mass: np.ndarray,
             n_bins: int, cfg: MassFitConfig, mc_weight: np.ndarray | None = None,
             data_weight: np.ndarray | None = None) -> MassFitResult:
    """Fit the data mass spectrum of every occupied 4-D bin against its simulated template.

    ``*_idx``: flat bin id per event (-1: not in any bin); ``n_bins``: number of possible ids.
    Bins with fewer than ``cfg.min_data`` data events in the window or ``cfg.min_mc`` effective
    simulated events are skipped and counted in ``result.skipped``.
    """
    lo, hi = cfg.window
    if not hi > lo:
        raise ValueError(f"mass window {cfg.window} is empty")
    d_edges = np.linspace(lo, hi, cfg.n_data + 1)
    f_edges = np.linspace(lo - cfg.pad, hi + cfg.pad, cfg.n_fine + 1)
    data_idx = np.asarray(data_idx)
    mc_idx = np.asarray(mc_idx)
    # compress to occupied ids (most of the 4-D space is empty)
    occupied = np.union1d(np.unique(data_idx[data_idx >= 0]), np.unique(mc_idx[mc_idx >= 0]))
    dmap = np.searchsorted(occupied, data_idx)
    dmap = np.where((data_idx >= 0), dmap, -1)
    mmap = np.where((mc_idx >= 0), np.searchsorted(occupied, mc_idx), -1)
    nd, _ = _hist2d(dmap, np.asarray(data_mass, float), data_weight, len(occupied), d_edges)
    tm, tm2 = _hist2d(mmap, np.asarray(mc_mass, float), mc_weight, len(occupied), f_edges)
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
    nll = np.zeros(B)
    chi2 = np.zeros(B)
    conv = np.zeros(B, dtype=bool)
    n_iter = 0
    for start in range(0, B, cfg.chunk):
        sl = slice(start, start + cfg.chunk)
        p, c, f, x2, ok, it = _fit_chunk(nd[sl], tm[sl], cfg)
        params[sl], cov[sl], nll[sl], chi2[sl], conv[sl] = p, c, f, x2, ok
        n_iter = max(n_iter, it)
    s_err = np.sqrt(cov[:, 0, 0] * (1 + params[:, 2] / np.maximum(n_mc_eff[sel], 1e-9)))
    n_free = 3 + 2 * int(cfg.background)
    return MassFitResult(bins=occupied[sel], n_data=n_data[sel], n_mc_eff=n_mc_eff[sel], params=params,
                         cov=cov, s_err=s_err, nll=nll, chi2=chi2,
                         ndf=np.full(B, cfg.n_data - n_free), converged=conv, n_iter=n_iter, skipped=skipped)
