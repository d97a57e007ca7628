"""Scale factors per bin, their smoothing per eta-charge slice, and the variations.

SF = ε_data / ε_MC per bin, with σ_SF² = (σ_data/ε_MC)² + (SF σ_MC/ε_MC)²; smoothed in pT (and
u_∥ for trigger and isolation) per slice by :mod:`wmnb.efficiency.smoothing` (weights from the
data errors rescaled to the simulation's efficiency, :func:`smoothing_errors`), with the orders
chosen by its F-test up to the step's maximum (the paper's 3rd order, 2nd for tracking).  The
alternative fit models are smoothed with the same orders; their difference to the nominal is
the systematic.  Failing-probe scale factors (1 − SF ε_MC)/(1 − ε_MC) with ε capped at
:data:`EFF_CAP`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .binning import UPAR_RANGE, StepBinning
from .measure import StepMeasurement, StepTemplates
from .smoothing import OrderTest, SmoothFit, choose_order, fit_slices

#: maximum pT order of the smoothing per step (the paper's), and of u_par
MAX_ORDER_PT = {"reco": 3, "tracking": 2, "id": 3, "trigger": 3, "isolation": 3, "isolation_notrig": 3, "veto": 3}
MAX_ORDER_UPAR = 1     # linear in u_par: 3 u_par bins on the default profile
#: the lowest pT the smoothing of a step uses: the trigger's threshold turn-on at 24 GeV (in the
#: 24-26 GeV bin) is a step no cubic follows, and the W and W-like selections start at 26 GeV;
#: below, the smoothed trigger SF is the one at 26 GeV (the bin stays measured and shown)
SMOOTHING_PT_MIN = {"trigger": 26.0}
#: efficiencies are capped below 1 in the failing-probe scale factor
EFF_CAP = 0.9995


def failing_scale_factor(sf: np.ndarray, eff_mc: np.ndarray, cap: float = EFF_CAP) -> np.ndarray:
    """(1 − SF ε_MC)/(1 − ε_MC) with ε_MC and SF ε_MC capped at ``cap`` (finite as ε → 1)."""
    e = np.minimum(np.asarray(eff_mc, float), cap)
    return (1.0 - np.minimum(np.asarray(sf, float) * e, cap)) / (1.0 - e)


def to_slices(binning: StepBinning, values: np.ndarray) -> np.ndarray:
    """Flat per-bin values → ``(n_eta × n_charge, n_pt[, n_u])`` (slice = eta-major, then charge)."""
    a = np.asarray(values).reshape(binning.shape)
    a = np.swapaxes(a, 1, 2)                     # (eta, q, pt[, u])
    return a.reshape((binning.n_slices,) + a.shape[2:])


def slice_of(binning: StepBinning, eta: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Slice index of points (eta clamped into the range); -1 never occurs."""
    ie = np.clip(np.searchsorted(binning.eta_edges, eta, side="right") - 1, 0, binning.eta_edges.size - 2)
    if len(binning.charges) == 1:
        return ie
    return ie * 2 + np.where(np.asarray(charge) > 0, binning.charges.index(1), binning.charges.index(-1))


@dataclass
class StepScaleFactors:
    """One step's measured and smoothed scale factors (``model`` → arrays over the flat bins)."""

    binning: StepBinning
    eff_data: dict[str, np.ndarray]
    eff_data_err: dict[str, np.ndarray]
    status: dict[str, np.ndarray]
    eff_mc: np.ndarray
    eff_mc_err: np.ndarray
    sf: dict[str, np.ndarray]
    sf_err: dict[str, np.ndarray]
    smooth: dict[str, SmoothFit]
    order_pt: OrderTest
    order_upar: OrderTest | None

    def smoothed(self, model: str = "nominal") -> np.ndarray:
        """The smoothed SF at every bin centre (flat, like :attr:`sf`)."""
        c = self.binning.bin_centres()
        return self.smooth[model].evaluate(slice_of(self.binning, c.eta, c.charge), c.pt, c.upar)


def _sf(eff: np.ndarray, err: np.ndarray, eff_mc: np.ndarray, err_mc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        sf = eff / eff_mc
        sf_err = np.sqrt((err / eff_mc) ** 2 + (sf * err_mc / eff_mc) ** 2)
    bad = ~np.isfinite(sf) | ~np.isfinite(sf_err) | (sf_err <= 0)
    return np.where(bad, np.nan, sf), np.where(bad, np.nan, sf_err)


def smoothing_errors(res: Any, tmpl: StepTemplates) -> np.ndarray:
    """The data efficiency errors the smoothing weights use: the fit's error rescaled from the
    binomial error at the fitted ε to the one at a reference ε independent of the data, σ ·
    √(ε_ref(1−ε_ref)) / √(ε(1−ε)).  Inverse-variance weights with the fit's own errors favour
    bins that fluctuated towards ε = 1 (fewer failing probes, smaller error) and bias the
    smoothed scale factor up; the rescaled error keeps the background dilution of each fit and
    drops that correlation.  ε_ref is the simulation's efficiency of the bin's (pT, charge,
    u_par) bin over all eta (a corner bin's own simulated ε, from a handful of probes, can be 1
    and would give a vanishing error); the rescaled error is never below half the fit's.  Bins
    on a bound or counted take the step's median dilution."""
    bn = tmpl.binning
    eff, err, n = res.eff, res.eff_err, np.maximum(res.values[:, 0], 1.0)
    shape = bn.shape
    w = np.nan_to_num(tmpl.n_eff).reshape(shape)
    e_mc = np.nan_to_num(np.asarray(tmpl.eff, float)).reshape(shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.broadcast_to((w * e_mc).sum(axis=0, keepdims=True) / w.sum(axis=0, keepdims=True), shape).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        binom_fit = np.sqrt(eff * (1.0 - eff) / n)
        dilution = np.where((res.status == 0) & (binom_fit > 0), err / binom_fit, np.nan)
    typical = np.nanmedian(dilution) if np.isfinite(dilution).any() else 1.0
    dilution = np.where(np.isfinite(dilution), dilution, typical)
    e = np.clip(np.where(np.isfinite(ref), ref, 0.9), 1e-3, 1.0 - 1e-3)
    out = np.maximum(dilution * np.sqrt(e * (1.0 - e) / n), 0.5 * err)
    return np.where(np.isfinite(err) & (res.status < 4), out, np.nan)


def scale_factors(meas: StepMeasurement, tmpl: StepTemplates, max_order_pt: int | None = None,
                  max_order_upar: int = MAX_ORDER_UPAR) -> StepScaleFactors:
    """Scale factors of every model and their smoothing (module docstring)."""
    bn = tmpl.binning
    max_pt = MAX_ORDER_PT[bn.step] if max_order_pt is None else max_order_pt
    eff, err, status, sf, sf_err, w_err = {}, {}, {}, {}, {}, {}
    for model, res in meas.results.items():
        eff[model], err[model], status[model] = res.eff.copy(), res.eff_err.copy(), res.status.copy()
        sf[model], sf_err[model] = _sf(res.eff, res.eff_err, tmpl.eff, tmpl.eff_err)
        w_err[model] = _sf(res.eff, smoothing_errors(res, tmpl), tmpl.eff, tmpl.eff_err)[1]
    c = bn.centres()
    pt_lo = max(float(bn.pt_edges[0]), SMOOTHING_PT_MIN.get(bn.step, -np.inf))
    pt_range = (pt_lo, float(bn.pt_edges[-1]))
    below = bn.bin_centres().pt < pt_lo
    for d in w_err.values():
        d[below] = np.nan                       # left out of the fits (NaN errors)
    v, e = to_slices(bn, sf["nominal"]), to_slices(bn, w_err["nominal"])
    up, up_range = (c["upar"], UPAR_RANGE) if bn.upar_edges is not None else (None, None)
    if up is not None:
        # the pT order on the u_par-integrated picture (weighted mean over u_par), then u_par's
        w = np.where(np.isfinite(e) & (e > 0), 1.0 / np.where(np.isfinite(e) & (e > 0), e, 1.0) ** 2, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            v1 = np.where(w.sum(-1) > 0, (w * np.nan_to_num(v)).sum(-1) / w.sum(-1), np.nan)
            e1 = np.where(w.sum(-1) > 0, 1.0 / np.sqrt(w.sum(-1)), np.nan)
        order_pt = choose_order(v1, e1, c["pt"], pt_range, max_pt)
        max_u = min(max_order_upar, bn.upar_edges.size - 2)  # type: ignore[union-attr]
        order_u: OrderTest | None = choose_order(v, e, c["pt"], pt_range, max_u, up, up_range, order_pt=order_pt.chosen)
    else:
        order_pt = choose_order(v, e, c["pt"], pt_range, max_pt)
        order_u = None
    ou = order_u.chosen if order_u is not None else 0
    smooth = {model: fit_slices(to_slices(bn, sf[model]), to_slices(bn, w_err[model]), c["pt"], pt_range,
                                order_pt.chosen, up, up_range, ou) for model in sf}
    return StepScaleFactors(bn, eff, err, status, tmpl.eff, tmpl.eff_err, sf, sf_err, smooth, order_pt, order_u)


__all__ = ["EFF_CAP", "MAX_ORDER_PT", "MAX_ORDER_UPAR", "SMOOTHING_PT_MIN", "StepScaleFactors", "failing_scale_factor", "scale_factors",
           "slice_of", "smoothing_errors", "to_slices"]
