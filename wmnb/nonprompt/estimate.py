"""The nonprompt estimate from region histograms: subtraction, smoothing, ABCD, variations.

Inputs are histograms over (region, eta, pT, charge) (:data:`wmnb.nonprompt.regions.REGION_BINNING`).
Slices are (eta group, charge) pT spectra: ``eta_rebin`` fine eta bins per group (1 on the
default profile: the paper's 48 × 2 slices; smoke merges eta bins so its few events fill them).
A smoothed slice prediction is shared among the group's fine eta bins in proportion to the
data in the isolation-failing high-m_T sideband (C).

:func:`estimate` does the nominal estimate; :meth:`SmoothedABCD.propagate` repeats the prompt
subtraction and the smoothing for a varied prompt prediction (every experimental and theory
variation of the prompt simulation), warm-started from the nominal fits and refitting only the
slices the variation touches.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .abcd import (LOG_COEFFICIENTS, REGIONS, SIDEBANDS, SIGNAL, NonpromptError, extended_abcd,
                   fake_rate_prompt_rate, simple_abcd)
from .smoothing import ExpPolyFit, choose_order, combine, design, fit_exp_poly, scaled_abscissa

#: (region, eta, pt, charge) axis positions of the region histograms
ETA_AXIS, PT_AXIS, CHARGE_AXIS = 1, 2, 3


def to_slices(h: np.ndarray, eta_rebin: int) -> np.ndarray:
    """(R, n_eta, n_pt, 2) → (R, n_groups × 2, n_pt): eta summed in groups of ``eta_rebin``,
    slices ordered (group, charge)."""
    h = np.asarray(h, np.float64)
    r, n_eta, n_pt, n_q = h.shape
    if n_eta % eta_rebin:
        raise NonpromptError(f"eta_rebin = {eta_rebin} does not divide the {n_eta} eta bins; "
                             f"use one of {[d for d in range(1, n_eta + 1) if n_eta % d == 0]}")
    g = h.reshape(r, n_eta // eta_rebin, eta_rebin, n_pt, n_q).sum(axis=2)
    return np.transpose(g, (0, 1, 3, 2)).reshape(r, -1, n_pt)


def slice_names(n_groups: int, eta_edges: np.ndarray, eta_rebin: int) -> list[str]:
    """Readable slice labels ("eta[-2.4,-2.3] q-")."""
    out = []
    for g in range(n_groups):
        lo, hi = eta_edges[g * eta_rebin], eta_edges[(g + 1) * eta_rebin]
        for q in ("-", "+"):
            out.append(f"eta[{lo:.1f},{hi:.1f}] q{q}")
    return out


@dataclass
class SmoothedABCD:
    """The smoothed extended-ABCD estimate of one set of region histograms.

    ``fits``: per sideband the exp-polynomial fits of the nonprompt slices; ``combined``: the
    log-space combination, i.e. the signal-region prediction per slice (before the non-closure
    correction); ``nonprompt``: the sidebands' nonprompt yields (data − prompt) per slice."""

    x: np.ndarray
    order: int
    nonprompt: np.ndarray          # (R, S, n_pt)
    offset_var: np.ndarray         # (R, S, n_pt)
    event_weight: np.ndarray       # (R, S, n_pt)
    fits: dict[str, ExpPolyFit]
    combined: ExpPolyFit
    order_scan: list = field(default_factory=list)
    #: slices a propagated variation left at nominal because it emptied one of their sidebands
    unfit_slices: int = 0

    @property
    def prediction(self) -> np.ndarray:
        """Signal-region prediction per slice and pT bin (S, n_pt)."""
        return self.combined.values()

    def total_and_error(self, rows: np.ndarray | None = None, bins: slice = slice(None)) -> tuple[float, float]:
        """The predicted yield (of slices ``rows``, pT bins ``bins``) and its smoothing-statistics error."""
        rows = np.arange(self.prediction.shape[0]) if rows is None else rows
        mu = self.prediction[rows][:, bins]
        grad = mu @ design(self.x, self.order)[bins]               # d Σ_n μ / d β per slice
        var = np.einsum("sk,skl,sl->", grad, self.combined.cov[rows], grad)
        return float(mu.sum()), float(np.sqrt(max(var, 0.0)))

    def propagate(self, delta_prompt: np.ndarray) -> np.ndarray:
        """The prediction (S, n_pt) with the prompt prediction changed by ``delta_prompt``
        (R, S, n_pt): subtraction and smoothing redone on the slices it touches."""
        side = [REGIONS.index(r) for r in SIDEBANDS]
        touched = np.flatnonzero(np.any(delta_prompt[side] != 0, axis=(0, 2)))
        out = self.prediction.copy()
        # a variation that empties a sideband slice (possible only with very few events) leaves
        # that slice at nominal; it is counted, and the chapter reports the count
        empty = np.any((self.nonprompt[side][:, touched] - delta_prompt[side][:, touched]).sum(axis=-1) <= 0, axis=0)
        self.unfit_slices += int(empty.sum())
        touched = touched[~empty]
        if touched.size == 0:
            return out
        fits = {}
        for r in SIDEBANDS:
            i = REGIONS.index(r)
            y = self.nonprompt[i, touched] - delta_prompt[i, touched]
            off = np.maximum(self.offset_var[i, touched] + delta_prompt[i, touched], 0.0)
            fits[r] = _fit_or_raise(y, self.x, self.order, off, self.event_weight[i, touched], r, touched,
                                    start=self.fits[r].coef[touched])
        out[touched] = combine(fits, LOG_COEFFICIENTS).values()
        return out


def _fit_or_raise(y: np.ndarray, x: np.ndarray, order: int, off: np.ndarray, w: np.ndarray, region: str,
                  rows: np.ndarray, start: np.ndarray | None = None, names: list[str] | None = None) -> ExpPolyFit:
    _check_region(y, region, [names[r] for r in rows] if names else [str(int(r)) for r in rows])
    return fit_exp_poly(y, x, order, offset_var=off, event_weight=w, start=start)


def smoothed_abcd(nonprompt: np.ndarray, offset_var: np.ndarray, event_weight: np.ndarray, pt_edges: np.ndarray,
                  order: int | None, names: list[str] | None = None, orders: tuple[int, ...] = (1, 2, 3, 4, 5)
                  ) -> SmoothedABCD:
    """Fit every sideband's slices (``order`` None: chosen by :func:`choose_order` on all five
    sidebands together) and combine them into the signal-region prediction."""
    x = scaled_abscissa(pt_edges)
    rows = np.arange(nonprompt.shape[1])
    for r in SIDEBANDS:                          # name an empty region before any fit
        i = REGIONS.index(r)
        _check_region(nonprompt[i], r, names)
    scan: list = []
    if order is None:
        problems = [dict(y=nonprompt[REGIONS.index(r)], offset_var=offset_var[REGIONS.index(r)],
                         event_weight=event_weight[REGIONS.index(r)]) for r in SIDEBANDS]
        order, scan = choose_order(problems, x, orders)
    fits = {r: _fit_or_raise(nonprompt[REGIONS.index(r)], x, order, offset_var[REGIONS.index(r)],
                             event_weight[REGIONS.index(r)], r, rows, names=names) for r in SIDEBANDS}
    return SmoothedABCD(x, order, nonprompt, offset_var, event_weight, fits, combine(fits, LOG_COEFFICIENTS), scan)


def eigen_variation(fit: ExpPolyFit, s: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """The slice predictions (S, n_pt) with slice ``s``'s coefficients moved by ± its
    eigenvector ``j`` (:meth:`ExpPolyFit.eigen_shifts`): one smoothing-statistics nuisance."""
    shift = fit.eigen_shifts()[s, j]
    X = design(fit.x, fit.order)
    up, down = fit.values(), fit.values()
    up[s] = np.exp(X @ (fit.coef[s] + shift))
    down[s] = np.exp(X @ (fit.coef[s] - shift))
    return up, down


def coefficient_variation(fit: ExpPolyFit, j: int, size: float) -> tuple[np.ndarray, np.ndarray]:
    """The slice predictions with coefficient ``j`` of every slice moved by ± ``size`` (a shape
    nuisance correlated across eta and charge)."""
    delta = np.zeros_like(fit.coef)
    delta[:, j] = size
    return fit.values(fit.coef + delta), fit.values(fit.coef - delta)


def _check_region(y: np.ndarray, region: str, names: list[str] | None) -> None:
    """A :class:`NonpromptError` naming the region and slices whose nonprompt yield is not positive."""
    totals = y.sum(axis=-1)
    bad = np.flatnonzero(~(totals > 0))
    if bad.size:
        which = [names[b] if names else int(b) for b in bad[:5]]
        raise NonpromptError(f"region {region!r}: no nonprompt events left after the prompt subtraction in "
                             f"slice(s) {which} (nonprompt yield {np.round(totals[bad[:5]], 2).tolist()}); "
                             "the sideband is empty at this granularity: merge eta bins (eta_rebin) or use "
                             "more data")


def subtract(data: np.ndarray, prompt: np.ndarray, prompt_sumw2: np.ndarray, eta_rebin: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sliced (nonprompt = data − prompt, Pearson variance offset = prompt + its MC variance,
    weight per event = 1)."""
    d, p, s = (to_slices(a, eta_rebin) for a in (data, prompt, prompt_sumw2))
    return d - p, p + s, np.ones_like(d)


def simulation_inputs(sumw: np.ndarray, sumw2: np.ndarray, eta_rebin: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sliced inputs for a weighted simulation (no subtraction): the variance per bin is
    w μ with w = sumw2 / sumw, the weight per event (the sample's mean where a bin is empty)."""
    a, b = to_slices(sumw, eta_rebin), to_slices(sumw2, eta_rebin)
    mean_w = b.sum() / a.sum() if a.sum() > 0 else 1.0
    w = np.where(a > 0, b / np.where(a > 0, a, 1.0), mean_w)
    return a, np.zeros_like(a), w


def eta_shares(data: np.ndarray, eta_rebin: int) -> np.ndarray:
    """(n_eta, 2): the share of each fine eta bin in its group, from the data in the
    isolation-failing high-m_T sideband (C) summed over pT (+1 per bin, so none is empty)."""
    c = np.asarray(data, np.float64)[REGIONS.index("fail_high")].sum(axis=1) + 1.0     # (n_eta, 2)
    n_eta = c.shape[0]
    g = c.reshape(n_eta // eta_rebin, eta_rebin, 2)
    return (g / g.sum(axis=1, keepdims=True)).reshape(n_eta, 2)


def to_template(slices: np.ndarray, shares: np.ndarray, eta_rebin: int) -> np.ndarray:
    """Slice predictions (S, n_pt) → (n_eta, n_pt, 2), each group's spectrum shared among its
    fine eta bins."""
    n_eta = shares.shape[0]
    g = slices.reshape(n_eta // eta_rebin, 2, -1)                                  # (G, q, pt)
    fine = np.repeat(g, eta_rebin, axis=0)                                         # (n_eta, q, pt)
    return np.transpose(fine, (0, 2, 1)) * shares[:, None, :]


@dataclass(frozen=True)
class BinnedEstimates:
    """The unsmoothed estimators per slice and pT bin (S, n_pt): simple and extended ABCD,
    the thesis's fake-rate/prompt-rate method, with the extended ABCD's variance."""

    simple: np.ndarray
    extended: np.ndarray
    extended_var: np.ndarray
    frpr: np.ndarray
    fake_rate: np.ndarray
    prompt_rate: np.ndarray


def binned_estimates(data_s: np.ndarray, prompt_s: np.ndarray, prompt_sumw2_s: np.ndarray) -> BinnedEstimates:
    """Every estimator bin by bin on sliced histograms (R, S, n_pt)."""
    n = data_s - prompt_s
    var = data_s + prompt_sumw2_s
    ext, ext_var = extended_abcd(n, var)
    low = np.stack([n[REGIONS.index("fail_low")] + n[REGIONS.index("fail_mid")],
                    n[REGIONS.index("pass_low")] + n[REGIONS.index("pass_mid")]])
    high = [REGIONS.index("fail_high"), REGIONS.index(SIGNAL)]
    frpr, f, p = fake_rate_prompt_rate(low, data_s[high], prompt_s[high])
    assert ext_var is not None
    return BinnedEstimates(simple_abcd(n), ext, ext_var, frpr, f, p)


def estimator_totals(data_s: np.ndarray, prompt_s: np.ndarray, prompt_sumw2_s: np.ndarray,
                     smoothed: SmoothedABCD, factor: float) -> dict[str, float]:
    """Signal-region yields of each estimator over all slices: the binned ones on the slices'
    pT-integrated yields (a per-bin ratio of small numbers would be dominated by noise), the
    smoothed extended ABCD before and after the non-closure ``factor``."""
    integ = lambda a: a.sum(axis=-1, keepdims=True)     # noqa: E731
    b = binned_estimates(integ(data_s), integ(prompt_s), integ(prompt_sumw2_s))
    total, _ = smoothed.total_and_error()
    return {"simple ABCD": float(np.nansum(b.simple)), "extended ABCD (binned)": float(np.nansum(b.extended)),
            "fake rate / prompt rate": float(np.nansum(b.frpr)), "extended ABCD (smoothed)": total,
            "extended ABCD (smoothed, corrected)": factor * total}


__all__ = ["BinnedEstimates", "SmoothedABCD", "binned_estimates", "coefficient_variation", "eigen_variation",
           "estimator_totals", "eta_shares",
           "simulation_inputs", "slice_names", "smoothed_abcd", "subtract", "to_slices", "to_template"]
