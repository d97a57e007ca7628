"""From tag-and-probe pairs to efficiencies: histograms, signal templates, resolution, all fits.

For each step (:mod:`wmnb.efficiency.binning`) and data set (data, or the closure universe as
pseudo-data whose detector is the simulation's):

1. the pass and fail m_μμ spectra of every bin (1 GeV bins in the fit window);
2. the simulated signal templates of every bin from truth-matched Z→μμ probes (0.25 GeV bins over
   50–130 GeV; a category with fewer than ``min_template_events`` effective events takes its
   bin's all-probe shape times a smooth ratio from its pT bin over all eta,
   :func:`smooth_shape_ratio`), and the simulation's efficiency by counting them;
3. the data/simulation resolution difference per eta bin of the step — a Gaussian (shift, width)
   found on a grid of (shift, width) by the batched pass/fail fit of the eta bin's summed
   spectra, refined by a quadratic through the 3×3 neighbourhood of the best point;
4. the failing background's kinematic turn-on per pT bin, where the step needs one (the erf-
   times-exponential shape, :func:`fit_turn_on`);
5. every bin's fit (:func:`wmnb.efficiency.tnpfit.measure_efficiencies`) with the nominal model
   (template ⊗ Gaussian + exponential, times the turn-on for the failing probes) and the
   alternatives (Breit–Wigner ⊗ Gaussian signal; linear background without a turn-on).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2 as chi2_dist

from ..conventions import Z_MASS_PDG, Z_WIDTH_PDG, breit_wigner
from . import tnpfit
from .binning import TEMPLATE_EDGES, StepBinning, probe_upar, step_masks
from .smoothing import design, to_unit

#: the fit models: name -> (signal, background, whether the failing background may take a
#: kinematic turn-on: the erf-times-exponential shape, :func:`fit_turn_on`)
MODELS: dict[str, tuple[str, str, bool]] = {
    "nominal": ("template", "exponential", True),
    "alt_signal": ("breit_wigner", "exponential", True),
    "alt_background": ("template", "linear", False),
}
#: the grid of the failing background's turn-on Φ((m − α) / β) (GeV): positions α, widths β; α
#: stays 10 GeV below the Z peak, where a turn-on would be a second peak taking the signal
TURN_ON_GRID = (np.arange(40.0, 80.1, 2.5), np.array([3.0, 6.0, 10.0, 15.0]))
#: a step's failing background takes the turn-ons when together they improve 2 ΔNLL of its pT
#: bins' summed spectra by more than this quantile of χ² with 2 degrees of freedom per pT bin
TURN_ON_CL = 0.99
#: the (shift, width) grids of the resolution difference (GeV): the simulated template already
#: holds the resolution; the Breit–Wigner needs all of it
RESOLUTION_GRID = {
    "template": (np.arange(-0.6, 0.61, 0.2), np.array([0.05, 0.3, 0.55, 0.8, 1.05, 1.3, 1.55])),
    "breit_wigner": (np.arange(-0.9, 0.91, 0.3), np.arange(0.8, 3.21, 0.4)),
}


@dataclass
class StepSpectra:
    """One data set's spectra of a step: ``n_pass``, ``n_fail`` ``(B, M)`` and the eta bin of
    every bin (``group``)."""

    binning: StepBinning
    n_pass: np.ndarray
    n_fail: np.ndarray

    @property
    def group(self) -> np.ndarray:
        return np.unravel_index(np.arange(self.binning.n_bins), self.binning.shape)[0]


@dataclass
class StepTemplates:
    """The simulation's side of a step: fine signal templates per bin and category (``(B, K)``,
    a bin with too few simulated probes takes its pT bin's template over all eta), the
    truth-matched efficiency by counting with its error, the probe counts, and which bins
    (``fallback``: pass, fail) took the fallback template."""

    binning: StepBinning
    t_pass: np.ndarray
    t_fail: np.ndarray
    eff: np.ndarray
    eff_err: np.ndarray
    n_eff: np.ndarray
    fallback: np.ndarray
    probes: dict[str, np.ndarray] = field(default_factory=dict)


def _flat(binning: StepBinning, cols: Mapping[str, np.ndarray]) -> np.ndarray:
    up = cols["upar"] if binning.upar_edges is not None else None
    return binning.index(np.asarray(cols["probe_eta"]), np.asarray(cols["probe_pt"]),
                         np.asarray(cols["probe_charge"]), up)


def spectra(binning: StepBinning, cols: Mapping[str, np.ndarray]) -> StepSpectra:
    """Pass and fail spectra of the step's probes (data: unit weights)."""
    probe, passing = step_masks(cols, binning.step)
    b = _flat(binning, cols)
    m = np.searchsorted(binning.mass_edges, np.asarray(cols["mass"], np.float64), side="right") - 1
    nm = binning.mass_edges.size - 1
    ok = probe & (b >= 0) & (m >= 0) & (m < nm)
    out = []
    for sel in (passing & ok, probe & ~passing & ok):
        out.append(np.bincount(b[sel] * nm + m[sel], minlength=binning.n_bins * nm).reshape(binning.n_bins, nm).astype(float))
    return StepSpectra(binning, out[0], out[1])


def templates(binning: StepBinning, cols: Mapping[str, np.ndarray], weight: np.ndarray,
              min_template_events: float = 1000.0) -> StepTemplates:
    """Signal templates and counting efficiencies of truth-matched simulated probes."""
    probe, passing = step_masks(cols, binning.step)
    matched = np.isfinite(np.asarray(cols["probe_gen_pt"], np.float64))
    b = _flat(binning, cols)
    k = np.searchsorted(TEMPLATE_EDGES, np.asarray(cols["mass"], np.float64), side="right") - 1
    nk = TEMPLATE_EDGES.size - 1
    ok = probe & matched & (b >= 0) & (k >= 0) & (k < nk)
    w = np.asarray(weight, np.float64)
    nb = binning.n_bins
    t, sums, sums2 = [], [], []
    for sel in (passing & ok, probe & ~passing & ok):
        h = np.bincount(b[sel] * nk + k[sel], w[sel], minlength=nb * nk).reshape(nb, nk)
        h2 = np.bincount(b[sel], w[sel] ** 2, minlength=nb)
        t.append(h)
        sums.append(h.sum(1))
        sums2.append(h2)
    # a category with too few simulated probes (the failing probes, mostly) takes the shape of
    # all the bin's probes (its resolution, which depends on eta) times a smooth fail/all (pass/all)
    # shape ratio of its pT (u_par, charge) bin over all eta (what failing does to the mass shape,
    # which depends on pT): a template with the noise of a few dozen simulated events makes the
    # fit's smooth background take up signal (in toys of the isolation step's bins, +0.6 on the
    # pull mean), and a ratio binned in mass would carry the same noise
    others = np.ravel_multi_index(np.unravel_index(np.arange(nb), binning.shape)[1:], binning.shape[1:]) \
        if len(binning.shape) > 1 else np.zeros(nb, np.int64)
    n_other = int(np.prod(binning.shape[1:]))
    both = t[0] + t[1]
    o_both = np.zeros((n_other, nk))
    np.add.at(o_both, others, both)
    fallback = np.zeros((2, nb), bool)
    for c in range(2):
        with np.errstate(divide="ignore", invalid="ignore"):
            n_eff = np.where(sums2[c] > 0, sums[c] ** 2 / sums2[c], 0.0)
        low = n_eff < min_template_events
        if low.any():
            o_cat = np.zeros((n_other, nk))
            np.add.at(o_cat, others, t[c])
            ratio = smooth_shape_ratio(o_cat, o_both)
            t[c][low] = both[low] * ratio[others[low]]
        fallback[c] = low
    sp, sf = sums
    tot = sp + sf
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = np.where(tot > 0, sp / tot, np.nan)
        var = (sums2[0] * (1 - eff) ** 2 + sums2[1] * eff**2) / tot**2
    n_eff_all = np.where(sums2[0] + sums2[1] > 0, tot**2 / np.maximum(sums2[0] + sums2[1], 1e-300), 0.0)
    # a bin without failing simulated probes: the binomial error of one failing effective event
    var = np.where(np.isfinite(var) & (var > 0), var, 1.0 / np.maximum(n_eff_all, 1.0) ** 2)
    sel = probe & matched & (b >= 0)
    probes = {"eta": np.asarray(cols["probe_gen_eta"], np.float64)[sel],
              "pt": np.asarray(cols["probe_gen_pt"], np.float64)[sel],
              "charge": np.asarray(cols["probe_charge"], np.float64)[sel],
              "upar": np.asarray(cols["probe_gen_upar"], np.float64)[sel],
              "pt_reco": np.asarray(cols["probe_pt"], np.float64)[sel], "weight": w[sel],
              "bin_eta": np.asarray(cols["probe_eta"], np.float64)[sel],
              "bin_upar": binning.binned_upar(np.asarray(cols["upar"], np.float64)[sel])}
    return StepTemplates(binning, t[0], t[1], eff, np.sqrt(var), n_eff_all, fallback, probes)


#: Legendre order in m_μμ of the log of a category's shape ratio (:func:`smooth_shape_ratio`),
#: the mass bins it is fitted on (GeV) and its iterations
RATIO_ORDER = 4
RATIO_BIN = 2.0
RATIO_ITERATIONS = 60


def smooth_shape_ratio(num: np.ndarray, den: np.ndarray, order: int = RATIO_ORDER) -> np.ndarray:
    """Per row, a smooth ratio R(m) = exp(Σ_j a_j P_j(x)) (Legendre polynomials in x ∈ [-1, 1]
    over the template range) with ``num`` ≈ R ``den``, by a Poisson likelihood fit of ``num`` to
    ``den`` R on :data:`RATIO_BIN` GeV bins (Newton's method on all rows at once); evaluated on
    the fine template bins.  The ratio of two Gaussian peaks of different widths is the
    exponential of a quadratic, so a few orders carry what failing a step does to the shape (a
    failing tracking probe's standalone momentum widens it) without the bins' noise.  A row with
    no ``num`` or ``den`` gets R = 1."""
    fine_c = 0.5 * (TEMPLATE_EDGES[1:] + TEMPLATE_EDGES[:-1])
    group = int(round(RATIO_BIN / (TEMPLATE_EDGES[1] - TEMPLATE_EDGES[0])))
    d = den.reshape(den.shape[0], -1, group).sum(-1)
    # a mass bin without ``den`` says nothing about the ratio (``den`` holds ``num`` in use)
    y = np.where(d > 0, num.reshape(num.shape[0], -1, group).sum(-1), 0.0)
    lo, hi = float(TEMPLATE_EDGES[0]), float(TEMPLATE_EDGES[-1])
    basis = design(to_unit(fine_c.reshape(-1, group).mean(-1), lo, hi), order)          # (K, P)
    fine_basis = design(to_unit(fine_c, lo, hi), order)
    ok = (y.sum(1) > 0) & (d.sum(1) > 0)
    a = np.zeros((num.shape[0], order + 1))
    a[ok, 0] = np.log(y[ok].sum(1) / d[ok].sum(1))
    # a weak Gaussian prior on the shape coefficients keeps a row whose probes leave some mass
    # bins empty finite (its log-ratio would run to -inf there); Newton steps with a backtracking
    # line search on the penalised likelihood, so that no iteration overshoots
    prior = np.eye(order + 1)
    prior[0, 0] = 0.0
    ridge = 1e-6 * np.maximum(y.sum(1), 1.0)[:, None, None] * prior[None] + 1e-9 * np.eye(order + 1)[None]

    def log_ratio(coef: np.ndarray) -> np.ndarray:
        return np.clip(coef @ basis.T, -50.0, 50.0)

    def objective(rows: np.ndarray, coef: np.ndarray) -> np.ndarray:
        eta = log_ratio(coef)
        return (d[rows] * np.exp(eta) - y[rows] * eta).sum(1) + 0.5 * np.einsum("bp,bpq,bq->b", coef, ridge[rows], coef)

    rows = np.flatnonzero(ok)
    for _ in range(RATIO_ITERATIONS):
        if rows.size == 0:
            break
        ar = a[rows]
        mu = d[rows] * np.exp(log_ratio(ar))
        grad = (mu - y[rows]) @ basis + np.einsum("bpq,bq->bp", ridge[rows], ar)
        hess = np.einsum("bk,kp,kq->bpq", mu, basis, basis) + ridge[rows]
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        f0 = objective(rows, ar)
        scale = np.ones(rows.size)
        for _ in range(20):
            worse = ~(objective(rows, ar - scale[:, None] * step) <= f0 + 1e-12 * np.abs(f0))
            if not worse.any():
                break
            scale = np.where(worse, 0.5 * scale, scale)
        a[rows] = ar - scale[:, None] * step
        rows = rows[np.max(np.abs(scale[:, None] * step), axis=1) > 1e-8]
    return np.where(ok[:, None], np.exp(np.clip(a @ fine_basis.T, -50.0, 50.0)), 1.0)


def with_upar(cols: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The columns plus ``upar`` (:func:`wmnb.efficiency.binning.probe_upar`)."""
    out = dict(cols)
    out["upar"] = probe_upar(cols)
    return out


def _source(signal: str, fine: np.ndarray) -> np.ndarray:
    if signal == "template":
        return fine
    centres = 0.5 * (TEMPLATE_EDGES[1:] + TEMPLATE_EDGES[:-1])
    bw = breit_wigner(centres, Z_MASS_PDG, Z_WIDTH_PDG)
    return np.broadcast_to(bw / bw.sum(), fine.shape)


def _smeared(src: np.ndarray, groups: np.ndarray, shift: np.ndarray, sigma: np.ndarray,
             target: np.ndarray) -> np.ndarray:
    """Rows of ``src`` smeared with the (shift, sigma) of their group, normalised in the window."""
    out = np.empty((src.shape[0], target.size - 1))
    for g in np.unique(groups):
        rows = groups == g
        kern = tnpfit.smear_kernel(TEMPLATE_EDGES, target, shift[g], sigma[g])
        out[rows] = src[rows] @ kern
    return tnpfit.normalised(out)


@dataclass(frozen=True)
class Resolution:
    """Per eta bin of a step: the fitted Gaussian shift and width (GeV) of one signal model."""

    shift: np.ndarray
    sigma: np.ndarray


def fit_resolution(spec: StepSpectra, tmpl: StepTemplates, signal: str, background: str) -> Resolution:
    """Step 3 of the module docstring for every eta bin of the step at once."""
    bn = spec.binning
    ng = bn.eta_edges.size - 1
    group = spec.group
    sums = []
    for arr in (spec.n_pass, spec.n_fail, tmpl.t_pass, tmpl.t_fail):
        summed = np.zeros((ng, arr.shape[1]))
        np.add.at(summed, group, arr)
        sums.append(summed)
    gp, gf, sp, sf = sums
    sp, sf = _source(signal, sp), _source(signal, sf)
    shifts, sigmas = RESOLUTION_GRID[signal]
    grid = [(a, s) for a in shifts for s in sigmas]
    rows_p, rows_f = [], []
    for mu, sg in grid:
        kern = tnpfit.smear_kernel(TEMPLATE_EDGES, bn.mass_edges, mu, sg)
        rows_p.append(tnpfit.normalised(sp @ kern))
        rows_f.append(tnpfit.normalised(sf @ kern))
    n = len(grid)
    data = tnpfit.PassFailInput(bn.mass_edges, np.tile(gp, (n, 1)), np.tile(gf, (n, 1)),
                                np.concatenate(rows_p), np.concatenate(rows_f))
    nll = tnpfit.fit_pass_fail(data, background).nll.reshape(len(shifts), len(sigmas), ng)
    shift_out, sigma_out = np.empty(ng), np.empty(ng)
    for g in range(ng):
        z = nll[:, :, g]
        i, j = np.unravel_index(np.argmin(z), z.shape)
        ci, cj = int(np.clip(i, 1, len(shifts) - 2)), int(np.clip(j, 1, len(sigmas) - 2))
        best = (shifts[i], sigmas[j])
        # quadratic through the 3x3 neighbourhood: its minimum if it is one and lies inside
        xs, ys = np.meshgrid(shifts[ci - 1:ci + 2], sigmas[cj - 1:cj + 2], indexing="ij")
        a = np.stack([np.ones(9), xs.ravel(), ys.ravel(), xs.ravel() ** 2, xs.ravel() * ys.ravel(), ys.ravel() ** 2], 1)
        c = np.linalg.lstsq(a, z[ci - 1:ci + 2, cj - 1:cj + 2].ravel(), rcond=None)[0]
        h = np.array([[2 * c[3], c[4]], [c[4], 2 * c[5]]])
        if np.all(np.linalg.eigvalsh(h) > 0):
            x = np.linalg.solve(h, -c[1:3])
            if xs.min() <= x[0] <= xs.max() and ys.min() <= x[1] <= ys.max():
                best = (float(x[0]), float(x[1]))
        shift_out[g], sigma_out[g] = best
    return Resolution(shift_out, sigma_out)


@dataclass(frozen=True)
class TurnOn:
    """Per pT bin of a step: the failing background's turn-on position α and width β (GeV; α
    NaN where none is needed) and the 2 ΔNLL it gained on the pT bin's summed spectra."""

    position: np.ndarray
    width: np.ndarray
    delta_chi2: np.ndarray


def fit_turn_on(data: tnpfit.PassFailInput, pt_bin: np.ndarray, weights: tuple[np.ndarray, np.ndarray],
                background: str) -> TurnOn:
    """The failing background's turn-on of every pT bin, from the spectra summed over the pT
    bin's eta (charge, u_∥) bins: the pass/fail fit of the sums on the grid :data:`TURN_ON_GRID`
    of Φ((m − α) / β) and without a turn-on, the best point per pT bin (which may be none).
    The step needs a turn-on when the gains of all its pT bins pass the χ² test at
    :data:`TURN_ON_CL` with two parameters per pT bin; otherwise no pT bin takes one.

    Why: a probe of pT p_T paired with a tag above the trigger threshold rarely makes a small
    mass, so the background of the higher pT bins rises from the window's lower edge before it
    falls — an exponential alone overshoots it at 60 GeV and falls short at 75-85 GeV (the
    second-muon veto's failing probes, −3 and +3 σ summed over bins).  Per bin the few failing
    probes cannot fit a turn-on; their pT bin's sum can, and the turn-on is kinematics, the same
    in eta.  ``weights`` (pass, fail) ``(B,)``: each bin's expected signal, for the summed signal
    shapes."""
    k = int(pt_bin.max()) + 1
    sums = []
    for arr, w in ((data.n_pass, None), (data.n_fail, None), (data.t_pass, weights[0]), (data.t_fail, weights[1])):
        out = np.zeros((k, arr.shape[1]))
        np.add.at(out, pt_bin, arr if w is None else arr * w[:, None])
        sums.append(out)
    gp, gf, sp, sf = sums
    sp, sf = tnpfit.normalised(sp), tnpfit.normalised(sf)
    pos, wid = (a.ravel() for a in np.meshgrid(*TURN_ON_GRID, indexing="ij"))
    pos, wid = np.concatenate([[np.nan], pos]), np.concatenate([[1.0], wid])
    n = pos.size
    factor = np.concatenate([tnpfit.turn_on(data.centres, np.full(k, a), np.full(k, b)) for a, b in zip(pos, wid)])
    summed = tnpfit.PassFailInput(data.mass_edges, np.tile(gp, (n, 1)), np.tile(gf, (n, 1)), np.tile(sp, (n, 1)),
                                  np.tile(sf, (n, 1)), factor)
    nll = tnpfit.fit_pass_fail(summed, background).nll.reshape(n, k)
    best = np.argmin(nll[1:], axis=0) + 1
    gain = np.maximum(2.0 * (nll[0] - nll[best, np.arange(k)]), 0.0)
    present = np.bincount(pt_bin, data.n_fail.sum(1), minlength=k) > 0
    needed = bool(np.nansum(gain[present]) > chi2_dist.ppf(TURN_ON_CL, 2 * max(int(present.sum()), 1)))
    use = needed & present & np.isfinite(gain) & (gain > 0)
    return TurnOn(np.where(use, pos[best], np.nan), np.where(use, wid[best], np.nan), gain)


@dataclass
class StepMeasurement:
    """All fits of one step on one data set: per model the resolution, the failing background's
    turn-on (None where the model has none) and the fit results."""

    step: str
    resolution: dict[str, Resolution]
    results: dict[str, tnpfit.PassFailResult]
    inputs: dict[str, tnpfit.PassFailInput]
    turn_on: dict[str, TurnOn | None] = field(default_factory=dict)


def fit_step(spec: StepSpectra, tmpl: StepTemplates, models: tuple[str, ...] = tuple(MODELS)) -> StepMeasurement:
    """Steps 3-5 of the module docstring for the given models."""
    res, fits, inputs = {}, {}, {}
    turn: dict[str, TurnOn | None] = {}
    group = spec.group
    pt_bin = np.unravel_index(np.arange(spec.binning.n_bins), spec.binning.shape)[1]
    for name in models:
        signal, background, with_turn_on = MODELS[name]
        reso = fit_resolution(spec, tmpl, signal, background)
        tp = _smeared(_source(signal, tmpl.t_pass), group, reso.shift, reso.sigma, spec.binning.mass_edges)
        tf = _smeared(_source(signal, tmpl.t_fail), group, reso.shift, reso.sigma, spec.binning.mass_edges)
        data = tnpfit.PassFailInput(spec.binning.mass_edges, spec.n_pass, spec.n_fail, tp, tf)
        turn[name] = None
        if with_turn_on:
            t = fit_turn_on(data, pt_bin, (tmpl.t_pass.sum(1), tmpl.t_fail.sum(1)), background)
            data = tnpfit.PassFailInput(data.mass_edges, data.n_pass, data.n_fail, tp, tf,
                                        tnpfit.turn_on(data.centres, t.position[pt_bin], t.width[pt_bin]))
            turn[name] = t
        res[name] = reso
        fits[name] = tnpfit.measure_efficiencies(data, background)
        inputs[name] = data
    return StepMeasurement(spec.binning.step, res, fits, inputs, turn)


__all__ = ["MODELS", "RESOLUTION_GRID", "TURN_ON_CL", "TURN_ON_GRID", "Resolution", "StepMeasurement", "StepSpectra",
           "StepTemplates", "TurnOn", "fit_resolution", "fit_step", "fit_turn_on", "smooth_shape_ratio", "spectra",
           "templates", "with_upar"]
