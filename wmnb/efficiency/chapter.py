"""Chapter 03 end to end: tag-and-probe inputs, all fits, scale factors, closure, the artefact.

Inputs: chapter 01's ``tnp`` skims of data and of the simulated Z→μμ, through the correction
pipeline with chapters 01–02's corrections (pileup weights, momentum scale), and of the closure
universe (pseudo-data with the simulation's detector, where the truth scale factor is exactly 1)
with the uncorrected simulation (a pure-detector closure).  The truth is read only through
:func:`wmnb.truth.efficiency_scale_factors`, after the measurement, for the closure pulls and the
"measured vs truth" panels.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import tnpfit
from .binning import ISOLATION_STEPS, PT_EDGES, STEPS, TRUTH_STEPS, StepBinning, step_binnings
from .measure import MODELS, StepMeasurement, StepTemplates, fit_step, spectra, templates, with_upar
from .scalefactors import StepScaleFactors, scale_factors, slice_of
from .tables import SF_CLIP

CHAPTER = "03_efficiencies"
DEPENDS_ON = ("01_selection", "02_calibration")
DATA_SETS = ("data", "closure")
SIGNAL_SAMPLE = "z_mumu"
#: the simulated Z without any correction: the templates of the closure universe's fits (the
#: closure set has the simulation's detector and pileup, so the data's momentum correction and
#: the pileup weights do not apply to it: a pure-detector closure)
RAW_SIGNAL = "z_mumu (uncorrected)"
#: a bin enters the pull distributions when it expects at least this many failing probes (its
#: fitted signal yield times the simulation's inefficiency: no truth involved); below, a pull of
#: a few Poisson counts is discrete, not Gaussian (an isolation bin expecting 0.5 failing probes
#: observes 0 or 1), and a width of "1" means nothing there
MIN_EXPECTED_FAILS = 3.0


@dataclass(frozen=True)
class EfficiencyConfig:
    """Sizes and choices of the chapter (profile parameters of the notebook)."""

    n_eta: int = 48
    n_eta_isolation: int = 8
    upar_edges: tuple[float, ...] | None = (-30.0, 0.0, 15.0, 100.0)
    pt_edges: tuple[float, ...] = PT_EDGES
    min_template_events: float = 1000.0

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> EfficiencyConfig:
        kw: dict[str, Any] = {k: params[k] for k in ("n_eta", "n_eta_isolation", "min_template_events") if k in params}
        if "upar_edges" in params:
            kw["upar_edges"] = None if params["upar_edges"] is None else tuple(float(x) for x in params["upar_edges"])
        if "pt_edges" in params and params["pt_edges"] is not None:
            kw["pt_edges"] = tuple(float(x) for x in params["pt_edges"])
        return cls(**kw)

    def binnings(self) -> dict[str, StepBinning]:
        n = {s: (self.n_eta_isolation if s in ISOLATION_STEPS else self.n_eta) for s in STEPS}
        return step_binnings(n, self.upar_edges, self.pt_edges)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def load_probes(profile: str) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """Corrected tnp columns (with ``upar``) and weights of data and the simulated Z, and the
    uncorrected closure set and simulated Z (:data:`RAW_SIGNAL`) for the closure test."""
    from ..corrections import upstream
    from ..engine import read_skim
    from ..engine.pipeline import run_pipeline

    corr = upstream(profile, CHAPTER)
    out = {}
    for sample, key, corrections in (("data", "data", corr), (SIGNAL_SAMPLE, SIGNAL_SAMPLE, corr),
                                     ("closure", "closure", []), (SIGNAL_SAMPLE, RAW_SIGNAL, [])):
        cols = read_skim(profile, "tnp", sample)
        need = ["probe_eta", "probe_pt", "probe_charge", "probe_phi", "tag_pt", "tag_phi", "mass",
                "probe_pass_trk", "probe_pass_sta", "probe_pass_glb", "probe_pass_id", "probe_pass_trig", "probe_pass_iso"]
        if sample == SIGNAL_SAMPLE:
            need += ["probe_gen_pt", "probe_gen_eta", "probe_gen_upar"]
        missing = [c for c in need if c not in cols]
        if missing:
            raise KeyError(f"chapter 03: the tnp skim of {sample!r} lacks the columns {missing}; rerun chapter 01")
        res = run_pipeline("tnp", sample, cols, corrections=corrections, final_cuts=None)
        out[key] = (with_upar(res.columns), res.weight)
    return out


@dataclass
class EfficiencyMeasurement:
    """Everything the chapter measured, per step."""

    binnings: dict[str, StepBinning]
    templates: dict[str, StepTemplates]
    closure_templates: dict[str, StepTemplates]
    data: dict[str, StepMeasurement]
    closure: dict[str, StepMeasurement]
    scale_factors: dict[str, StepScaleFactors]
    fit_time_s: float
    n_fits: int
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_failed_fits(self) -> int:
        """Bins whose first fit failed the quality rule (refitted or counted), over all fits."""
        return int(sum(int(np.sum((r.status >= 2) & (r.status <= 3))) for m in (*self.data.values(), *self.closure.values())
                       for r in m.results.values()))

    def status_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for step, m in self.data.items():
            st = m.results["nominal"].status
            out[step] = {tnpfit.STATUS[k]: int(np.sum(st == k)) for k in tnpfit.STATUS}
        return out


def measure_all(probes: Mapping[str, tuple[dict[str, np.ndarray], np.ndarray]], cfg: EfficiencyConfig,
                progress: Any = None) -> EfficiencyMeasurement:
    """Every step: spectra, templates, the fits of all models on data and the nominal on the
    closure set (with the uncorrected simulation's templates), and the scale factors with their
    smoothing."""
    bins = cfg.binnings()
    mc_cols, mc_w = probes[SIGNAL_SAMPLE]
    raw_cols, raw_w = probes[RAW_SIGNAL]
    tm, tm_raw, dm, cm, sfs = {}, {}, {}, {}, {}
    n_fits = 0
    fit_time = 0.0
    for step, bn in bins.items():
        tm[step] = templates(bn, mc_cols, mc_w, cfg.min_template_events)
        tm_raw[step] = templates(bn, raw_cols, raw_w, cfg.min_template_events)
        sp_data = spectra(bn, probes["data"][0])
        sp_clos = spectra(bn, probes["closure"][0])
        t0 = time.perf_counter()
        dm[step] = fit_step(sp_data, tm[step], tuple(MODELS))
        cm[step] = fit_step(sp_clos, tm_raw[step], ("nominal",))
        fit_time += time.perf_counter() - t0
        n_fits += bn.n_bins * (len(MODELS) + 1)
        sfs[step] = scale_factors(dm[step], tm[step])
        if progress is not None:
            progress(step)
    return EfficiencyMeasurement(bins, tm, tm_raw, dm, cm, sfs, fit_time, n_fits)


@dataclass(frozen=True)
class StepClosure:
    """Pulls of the measured scale factors against the truth of one step and data set."""

    step: str
    universe: str
    sf_true: np.ndarray
    eff_true_data: np.ndarray
    eff_true_mc: np.ndarray
    pulls: np.ndarray
    lr_pulls: np.ndarray
    mc_pulls: np.ndarray

    @property
    def n_used(self) -> int:
        """Bins in the pull distribution."""
        return int(np.isfinite(self.pulls).sum())

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.pulls)) if np.isfinite(self.pulls).any() else float("nan")

    @property
    def width(self) -> float:
        return float(np.nanstd(self.pulls)) if np.isfinite(self.pulls).any() else float("nan")


def truth_for(step: str, tmpl: StepTemplates, universe: str, purpose: str) -> Any:
    """The truth efficiencies and scale factor of the step per bin, averaged over the simulated
    probes of each bin (read through the truth gate)."""
    from .. import truth

    bn = tmpl.binning
    pr = dict(tmpl.probes)
    if len(bn.charges) == 1:
        pr["bin_charge"] = np.ones_like(pr["charge"])
        charges: tuple[int, ...] = (1,)
    else:
        charges = (-1, 1)
    # the data's templates come from the simulation with pileup weights to the data; the closure
    # universe's from the unweighted simulation (its pileup is the simulation's)
    return truth.efficiency_scale_factors(step, bn.eta_edges, bn.pt_edges, purpose=purpose, universe=universe,  # type: ignore[arg-type]
                                          charges=charges, upar_edges=bn.upar_edges, probes=pr,
                                          simulation_pileup="data" if universe == "data" else None)


def closure(meas: EfficiencyMeasurement, step: str, universe: str) -> StepClosure:
    """SF pulls against the truth, (SF − SF_true) / σ_SF with the errors expected at the truth
    (:func:`wmnb.efficiency.tnpfit.pulls_at_truth` for the data's fit, the binomial error of the
    simulation's effective probe count at its truth efficiency, in quadrature): errors taken from
    the fit would lean the pulls positive in bins with a few failing probes.  Bins measured by
    counting or empty, and bins expecting fewer than :data:`MIN_EXPECTED_FAILS` failing probes,
    are left out.  The universe defines no truth for ``isolation_notrig``: its data pulls are
    NaN; on the closure universe its truth SF is exactly 1 and the pull uses the fit's error."""
    tmpl = (meas.templates if universe == "data" else meas.closure_templates)[step]
    m = (meas.data if universe == "data" else meas.closure)[step]
    res, inp = m.results["nominal"], m.inputs["nominal"]

    def usable(eff: np.ndarray) -> np.ndarray:
        return (res.status <= 2) & (res.values[:, 0] * (1.0 - np.nan_to_num(eff, nan=1.0)) >= MIN_EXPECTED_FAILS)

    nan = np.full(res.eff.shape, np.nan)
    if step not in TRUTH_STEPS:
        if universe == "data":
            return StepClosure(step, universe, nan, nan, nan, nan, nan, nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            sf = res.eff / tmpl.eff
            sig = np.sqrt((res.eff_err / tmpl.eff) ** 2 + (sf * tmpl.eff_err / tmpl.eff) ** 2)
            # without a truth the expected failing probes come from the simulation (truth SF 1)
            pulls = np.where(usable(tmpl.eff), (sf - 1.0) / sig, np.nan)
        return StepClosure(step, universe, np.ones_like(sf), nan, nan, pulls, nan, nan)
    tr = truth_for(step, tmpl, universe, f"chapter 03: {step} scale-factor closure ({universe})")
    e_true, e_true_mc = tr.eff_data.ravel(), tr.eff_mc.ravel()
    at = tnpfit.pulls_at_truth(inp, res, np.nan_to_num(e_true, nan=0.5))
    with np.errstate(divide="ignore", invalid="ignore"):
        err_mc = np.sqrt(e_true_mc * (1.0 - e_true_mc) / tmpl.n_eff)
        sf = res.eff / tmpl.eff
        sf_true = e_true / e_true_mc if universe == "data" else np.ones_like(e_true)
        sigma_sf = sf_true * np.sqrt((at.error_at_truth / e_true) ** 2 + (err_mc / e_true_mc) ** 2)
        pulls = (sf - sf_true) / sigma_sf
        mc_pulls = (tmpl.eff - e_true_mc) / err_mc
    # the bins are chosen by the failing probes the truth expects, not the measured efficiency:
    # a cut on a measured efficiency keeps the bins that fluctuated down (low-efficiency
    # simulation, SF up), a bias of +0.2 in the ID's pull mean with 3-10 failing probes per bin
    used = usable(e_true) & np.isfinite(pulls)
    return StepClosure(step, universe, sf_true, e_true, e_true_mc, np.where(used, pulls, np.nan),
                       np.where(used, at.likelihood_ratio, np.nan), mc_pulls)


def smoothing_closure(meas: EfficiencyMeasurement, closure_: StepClosure) -> np.ndarray:
    """(smoothed SF at the bin centre − truth SF of the bin) / smoothing band, at every bin with
    a measurement (status fit, bound or refit): the truth averaged over the bin's probes, which
    is what the smoothing was fitted to (a wide u_par bin's truth at its centre is not: the
    recoil leak is not linear in u_par); the band from the slice's eigen-variations.  A
    smoothing whose order is too low for the truth's pT dependence shows here, not in the
    per-bin pulls.  NaN for a step without a truth (``isolation_notrig``)."""
    step = closure_.step
    s = meas.scale_factors[step]
    bn = s.binning
    if step not in TRUTH_STEPS:
        return np.full(bn.n_bins, np.nan)
    fit = s.smooth["nominal"]
    c = bn.bin_centres()
    sl = slice_of(bn, c.eta, c.charge)
    nom = fit.evaluate(sl, c.pt, c.upar)
    band = fit.band(sl, c.pt, c.upar)
    measured = s.status["nominal"] <= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(measured, (nom - closure_.sf_true) / band, np.nan)


def headline(meas: EfficiencyMeasurement, closures: Mapping[tuple[str, str], StepClosure],
             counts: Mapping[str, int]) -> dict[str, Any]:
    """The summary keys the issue names, and a few more (data pulls for the steps with a truth);
    ``counts``: the nuisances the published correction declares
    (:meth:`wmnb.efficiency.correction.MuonEfficiencyCorrection.nuisance_counts`)."""
    return {
        "sf_pull_mean": {s: closures[(s, "data")].mean for s in TRUTH_STEPS},
        "sf_pull_width": {s: closures[(s, "data")].width for s in TRUTH_STEPS},
        "closure_sf_pull_mean": {s: closures[(s, "closure")].mean for s in STEPS},
        "closure_sf_pull_width": {s: closures[(s, "closure")].width for s in STEPS},
        "sf_pull_bins": {s: closures[(s, "data")].n_used for s in TRUTH_STEPS},
        "closure_sf_pull_bins": {s: closures[(s, "closure")].n_used for s in STEPS},
        "n_fits": meas.n_fits,
        "n_failed_fits": meas.n_failed_fits,
        "n_nuisances": int(sum(counts.values())),
        "nuisance_counts": dict(counts),
        "smoothing_orders": {s: [sf.order_pt.chosen, sf.order_upar.chosen if sf.order_upar else 0]
                             for s, sf in meas.scale_factors.items()},
        "fit_status": meas.status_counts(),
        # per step of the data's nominal fit: the failing background's turn-on (α, β) in GeV of
        # each pT bin that took one (fit_turn_on); a step without any is left out
        "fail_background_turn_on": {s: {f"{m.binning.pt_edges[k]:g}": [float(a), float(b)]
                                        for k, (a, b) in enumerate(zip(t.position, t.width)) if np.isfinite(a)}
                                    for s, m in meas.templates.items()
                                    if (t := meas.data[s].turn_on.get("nominal")) is not None and np.isfinite(t.position).any()},
        # the smoothed SF over the measured bins, and the bins (measured or not) where the
        # artefact's clip acts
        "sf_range": {s: [float(np.nanmin(sf.smoothed()[sf.status["nominal"] <= 2])),
                         float(np.nanmax(sf.smoothed()[sf.status["nominal"] <= 2]))] for s, sf in meas.scale_factors.items()},
        "n_bins_clipped": {s: int(np.sum((sf.smoothed() < SF_CLIP[0]) | (sf.smoothed() > SF_CLIP[1])))
                           for s, sf in meas.scale_factors.items()},
        "fit_time_s": meas.fit_time_s,
    }


__all__ = ["CHAPTER", "DATA_SETS", "DEPENDS_ON", "RAW_SIGNAL", "STEPS", "TRUTH_STEPS", "EfficiencyConfig",
           "EfficiencyMeasurement", "MIN_EXPECTED_FAILS", "StepClosure", "closure", "headline", "load_probes", "measure_all",
           "smoothing_closure", "truth_for"]
