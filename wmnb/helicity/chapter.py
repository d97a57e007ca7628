"""Chapter 09 end to end: one template build, the nominal and the helicity fit, the unfolded
helicity cross sections, the prior scans and the injection test.

Inputs are chapter 08's: the W skims of chapter 01 and the corrections of chapters 02–06.  The
templates are built once with every variation, the helicity parameters included; the nominal
m_W fit leaves the helicity parameters out, the helicity fit leaves out the signal's theory
nuisances they make redundant (:func:`wmnb.helicity.templates.helicity_set`).  The helicity
parameters are *nuisances of interest*: constrained by their priors, reported with m_W.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..templatefit.fitting import releasing
from ..templatefit.wmass import PROCESSES, MwConfig, simulation_config
from .binning import CHARGE_OF_SAMPLE, COMPONENTS, HelicityBinning
from .templates import (BOSON_OF_SAMPLE, GROUP, AlternativeProduction, HelicityDecomposition, HelicityRecipe, decompose,
                        scale_priors, symmetric_helicity)

CHAPTER = "09_helicity"
SELECTION = "w"
#: the paper (PHYSICS.md): helicity-fit m_W and its error against the nominal fit's
PAPER = {"mw": 80360.8, "mw_err": 15.2, "mw_err_nominal_fit": 9.9, "n_helicity_params": 864}
#: the prior scans of the paper: label -> component -> factor ("others": every component but A3)
PRIOR_SCANS: dict[str, dict[str, float]] = {
    "σ3 prior ×0.5": {"A3": 0.5}, "σ3 prior ×2": {"A3": 2.0},
    "others ×2": {c: 2.0 for c in COMPONENTS if c != "A3"}, "others ×5": {c: 5.0 for c in COMPONENTS if c != "A3"},
}

#: the injection test's alternative productions (the paper validates the helicity fit on
#: pseudo-data "generated with different PDF sets and/or y_W spectra"): spectra tilted by ±5 %
#: across |y| and q_T (a tenth of the σ_UL prior, varying inside the bins), and A0..A3 moved
#: by 0.7 of their priors with A4 by −0.3 of its prior
INJECTIONS: tuple[AlternativeProduction, ...] = (
    AlternativeProduction("y_W and q_T spectra", y_tilt=0.05, qt_tilt=0.05),
    AlternativeProduction("A_i within the priors", coeff_shifts={"A0": 0.7, "A1": 0.7, "A2": 0.7, "A3": 0.7, "A4": -0.3}),
)


def make_recipe(helicity: HelicityBinning, config: MwConfig | None = None,
                priors: Mapping[str, float] | None = None) -> HelicityRecipe:
    """The helicity-fit recipe (priors: :func:`~wmnb.helicity.templates.theory_spread_priors`)."""
    from .templates import theory_spread_priors

    return HelicityRecipe(config or simulation_config(), helicity=helicity,
                          priors=dict(priors) if priors is not None else theory_spread_priors())


def load_skims(profile: str, chunk_rows: int = 500_000) -> tuple[dict[str, Any], dict[str, Any]]:
    """W skims of every simulated sample (weights at the data luminosity) and of ``data``,
    read ``chunk_rows`` rows at a time as the templates fill."""
    from wmnb.engine import skim_chunks
    from wmnb.engine.skims import mc_lumi_scale

    scale = mc_lumi_scale(profile, SELECTION)
    sim = {s: skim_chunks(profile, SELECTION, s, chunk_rows, weight_scale=scale) for s in PROCESSES}
    return sim, {"data": skim_chunks(profile, SELECTION, "data", chunk_rows)}


def corrections_for(profile: str) -> list[Any]:
    """The corrections of the chapters 09 depends on (those of chapter 08)."""
    from wmnb.corrections import upstream

    return upstream(profile, CHAPTER)


def build(recipe: HelicityRecipe, skims: tuple[dict, dict], corrections: Sequence[Any]) -> Any:
    """All templates (:class:`~wmnb.templatefit.TemplateSet`), the helicity variations included."""
    from wmnb.templatefit import build_templates

    sim, data = skims
    return build_templates(recipe, sim, data["data"], corrections)


def decompositions(recipe: HelicityRecipe, skims: tuple[dict, dict], corrections: Sequence[Any],
                   truth_universe: Literal["data", "closure"] | None = None,
                   alternatives: Sequence[AlternativeProduction] = ()) -> dict[str, HelicityDecomposition]:
    """:func:`~wmnb.helicity.templates.decompose` of both signal samples."""
    return {s: decompose(recipe, skims[0][s], s, corrections, truth_universe, alternatives) for s in CHARGE_OF_SAMPLE}


def helicity_spec(ts_hel: Any, mode: str = "constrained", regularisation_scale: float = 10.0) -> Any:
    """The helicity fit's model: the paper's constrained parameters, or (``regularised``) the
    thesis's free ones, here with a weak ridge regularisation: every prior widened by
    ``regularisation_scale`` (a penalty (θ'/scale)² in units of the paper's priors)."""
    from ..templatefit.model import make_spec

    if mode not in ("constrained", "regularised"):
        raise ValueError(f"mode must be 'constrained' or 'regularised', got {mode!r}")
    spec = symmetric_helicity(make_spec(ts_hel, nois=(GROUP,)))
    if mode == "regularised":
        spec = scale_priors(spec, {c: regularisation_scale for c in COMPONENTS})
    return spec


@dataclass
class TimedFit:
    """A fit with its wall time and the process's peak memory after it."""

    fit: Any
    seconds: float
    peak_memory_gb: float


def peak_memory_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed_fit(spec: Any, **kw: Any) -> TimedFit:
    """:func:`~wmnb.templatefit.fitting.run_fit` with its wall time and the peak memory."""
    from ..templatefit.fitting import run_fit

    t = time.perf_counter()
    fit = run_fit(spec, **kw)
    return TimedFit(fit, time.perf_counter() - t, peak_memory_gb())


def noi_covariance(fit: Any, names: Sequence[str]) -> np.ndarray:
    """Covariance (θ units) of the named parameters from a fit that kept its result."""
    raw = fit.raw
    if raw is None or getattr(raw, "cov", None) is None:
        raise ValueError("the covariance of the helicity parameters needs a fit with full_cov=True and keep_raw=True")
    idx = [raw.model.index(n) for n in names]
    return np.asarray(raw.cov)[np.ix_(idx, idx)]


def unfolded(fit: Any, recipe: HelicityRecipe, decs: Mapping[str, HelicityDecomposition],
             min_sumw: float = 0.0) -> list[dict[str, Any]]:
    """Per charge and generator bin: σ_UL post-fit / pre-fit and every A_i post-fit, with
    errors from the fit's covariance (linear propagation), next to the simulation's A_i (the
    prior) and, when the decompositions carry it, the universe's true A_i.

    σ_c post = σ_c pre × (1 + p_c θ_c); A_i post = A_i pre × (1 + p_i θ_i) / (1 + p_UL θ_UL).
    Bins with fewer than ``min_sumw`` selected weighted events are skipped."""
    hb = recipe.helicity
    rows = []
    for sample, charge in CHARGE_OF_SAMPLE.items():
        dec = decs[sample]
        for k in range(hb.n_bins):
            names = [hb.parameter(charge, c, k) for c in COMPONENTS]
            if dec.sumw[k] <= min_sumw or any(n not in fit.values for n in names):
                continue
            th = np.array([fit.values[n] for n in names])
            cov = noi_covariance(fit, names)
            p = np.array([recipe.prior(c) for c in COMPONENTS])
            ul = 1.0 + p[0] * th[0]
            row: dict[str, Any] = {"charge": charge, "bin": k, "label": hb.label(k), "qt": hb.qt_range(k),
                                   "absy": hb.absy_range(k), "overflow": hb.is_overflow(k), "sumw": float(dec.sumw[k]),
                                   "sigma_ul_ratio": float(ul), "sigma_ul_ratio_err": float(p[0] * np.sqrt(cov[0, 0]))}
            for i in range(5):
                a_pre = float(dec.coeff_sim[k, i])
                num = 1.0 + p[i + 1] * th[i + 1]
                ratio = num / ul
                # gradient of the ratio in (θ_UL, θ_i)
                g = np.zeros(len(COMPONENTS))
                g[0] = -num * p[0] / ul**2
                g[i + 1] = p[i + 1] / ul
                err = abs(a_pre) * float(np.sqrt(max(g @ cov @ g, 0.0)))
                row[f"A{i}"], row[f"A{i}_err"], row[f"A{i}_prior"] = a_pre * ratio, err, a_pre
                row[f"A{i}_prior_err"] = abs(a_pre) * p[i + 1]
                if "coeff_truth" in dec.extra:
                    row[f"A{i}_truth"] = float(dec.extra["coeff_truth"][k, i])
            rows.append(row)
    return rows


def sigma_ul_against_truth(rows: list[dict[str, Any]], recipe: HelicityRecipe,
                           decs: Mapping[str, HelicityDecomposition], universe: Literal["data", "closure"] = "data"
                           ) -> dict[str, Any]:
    """The post-fit σ_UL q_T shape against the universe's truth, per charge and |y| row.

    The truth gate gives the true q_T fractions of each |y| row (:func:`wmnb.truth.qt_shape`),
    not the normalisation, so the comparison is of shapes.  The pre-fit prediction is the
    simulation with its corrections (chapter 06's q_T reweighting among them), so the true
    post/pre ratio of a bin is (data/simulation fractions) / (the corrections' factor on the
    bin, :func:`~wmnb.helicity.templates.decompose`).  In each row (bins inside the edges) the
    measured ratios are scaled so that their σ-weighted mean equals the true ratios', and each
    bin's pull is (scaled − true) / error.
    Adds ``sigma_ul_truth_ratio`` to the rows it compares; returns the pulls' RMS and count."""
    from wmnb import truth

    hb = recipe.helicity
    why = "chapter 09: the unfolded sigma_UL q_T shape against the universe's truth (after the fit)"
    pulls = []
    for sample, charge in CHARGE_OF_SAMPLE.items():
        boson = BOSON_OF_SAMPLE[sample]
        corr = decs[sample].extra["correction_factor"]
        ratio = (truth.qt_shape(universe, boson, hb.qt_edges, hb.absy_edges, purpose=why)
                 / truth.qt_shape("simulation", boson, hb.qt_edges, hb.absy_edges, purpose=why))   # (|y|, q_T)
        for iy in range(len(hb.absy_edges) - 1):
            row = [r for r in rows if r["charge"] == charge and not r["overflow"] and r["bin"] % hb.n_absy == iy]
            if len(row) < 2:
                continue
            w = np.array([r["sumw"] for r in row])
            meas = np.array([r["sigma_ul_ratio"] for r in row])
            err = np.array([r["sigma_ul_ratio_err"] for r in row])
            true = np.array([ratio[iy, r["bin"] // hb.n_absy] / corr[r["bin"]] for r in row])
            scale = float(np.sum(w * true) / np.sum(w * meas))
            for r, t, m, e in zip(row, true, meas, err):
                r["sigma_ul_truth_ratio"] = float(t)
                if e > 0:
                    pulls.append((scale * m - t) / (scale * e))
    p = np.asarray(pulls)
    return {"n": int(p.size), "pull_rms": float(np.sqrt(np.mean(p**2))) if p.size else None,
            "pull_mean": float(np.mean(p)) if p.size else None}


def ai_pulls(rows: Sequence[Mapping[str, Any]], constraint: float = 0.5) -> dict[str, Any]:
    """Pulls (post-fit − truth) / error of the A_i in every bin: per coefficient the mean, the
    RMS, the count and how many bins the data constrain (post-fit error below ``constraint``
    × the prior width), and the pooled width.  With loose priors and little data a coefficient
    stays at its prior with about its prior error: pulls well inside 1 then say only that the
    truth lies within the prior."""
    out: dict[str, Any] = {}
    pooled = []
    for i in range(5):
        ok = [r for r in rows if f"A{i}_truth" in r and r[f"A{i}_err"] > 0]
        pulls = [(r[f"A{i}"] - r[f"A{i}_truth"]) / r[f"A{i}_err"] for r in ok]
        pooled += pulls
        out[f"A{i}"] = {"n": len(pulls), "mean": float(np.mean(pulls)) if pulls else None,
                        "rms": float(np.sqrt(np.mean(np.square(pulls)))) if pulls else None,
                        "constrained": sum(r[f"A{i}_err"] < constraint * r[f"A{i}_prior_err"] for r in ok)}
    out["pooled_width"] = float(np.std(pooled)) if len(pooled) > 1 else None
    out["n"] = len(pooled)
    return out


@releasing
def prior_scans(spec: Any, reference: Any, which: Mapping[str, Mapping[str, float]] = PRIOR_SCANS
                ) -> list[dict[str, Any]]:
    """Refits with the priors scaled (:data:`PRIOR_SCANS`): m_W shift from the ``reference``
    helicity fit and the error, in MeV (differences only: nothing here reveals a blinded m_W)."""
    from ..templatefit.fitting import run_fit, warm_start

    rows = []
    for label, factors in which.items():
        scaled = scale_priors(spec, factors)
        f = run_fit(scaled, start=warm_start(scaled, reference), full_cov=False, keep_raw=False)
        rows.append({"scan": label, "shift_mev": f.values["mass"] - reference.values["mass"],
                     "mw_err": f.errors["mass"]})
    return rows


@releasing
def injection_test(spec: Any, theta_scale: float = 0.7, seed: int = 0) -> dict[str, Any]:
    """Asimov pseudo-data with every helicity parameter moved by a random θ in
    [−theta_scale, theta_scale] of its prior (the fitter's own interpolation, m_W at the
    simulation's), fitted with the priors where they were.

    The priors pull the fit back by a computable amount: near the minimum the fitted vector is
    θ̂ = θ_inj − C θ_inj (C the post-fit covariance in θ units), so a parameter the data do not
    constrain returns towards 0 and m_W moves by −(C θ_inj)_m.  Returned: the largest
    |fitted − injected| / error (below 1 when each is recovered within its post-fit error), the
    largest departure of the fitted values from that prediction (θ units: what a wrong template
    or interpolation breaks), and the m_W shift (MeV and over its error) with its prediction."""
    from ..templatefit.fitting import _built, run_fit

    model = _built(spec)
    rng = np.random.default_rng([int(seed), 0x0909])
    injected = {n: float(rng.uniform(-theta_scale, theta_scale)) for n in spec.nois}
    fit = run_fit(spec, data=model.expected(injected), full_cov=True, keep_raw=True)
    raw = fit.raw
    vec = np.zeros(len(raw.model.params))
    for n, v in injected.items():
        vec[raw.model.index(n)] = v
    predicted = vec - np.asarray(raw.cov) @ vec
    im = raw.model.index("mass")
    resid = {n: (fit.values[n] - v) / fit.errors[n] for n, v in injected.items()}
    departure = max((abs(fit.values[n] - predicted[raw.model.index(n)]) for n in injected), default=0.0)
    step = spec.mass_step_mev
    return {"injected": injected, "fitted": {n: fit.values[n] for n in injected},
            "errors": {n: fit.errors[n] for n in injected},
            "max_abs_pull": float(max((abs(r) for r in resid.values()), default=0.0)),
            "max_departure_from_prediction": float(departure),
            "mw_shift_mev": float(fit.values["mass"]), "mw_shift_predicted_mev": float(predicted[im] * step),
            "mw_shift_over_err": float(fit.values["mass"] / fit.errors["mass"])}


def alternative_data(spec: Any, decs: Mapping[str, HelicityDecomposition], name: str) -> np.ndarray:
    """Asimov pseudo-data of ``spec`` (flat over its bins) with each signal sample replaced by
    its reweighted template of the alternative production ``name``."""
    data = spec.nominal.sum(0).astype(np.float64)
    for dec in decs.values():
        if name not in dec.alternatives:
            raise KeyError(f"alternative production {name!r} was not filled; decompose with alternatives=... "
                           f"(filled: {sorted(dec.alternatives)})")
        data = data + (dec.alternatives[name] - dec.nominal)[spec.mask]
    return data


@releasing
def injection_scenarios(helicity: Any, nominal: Any, decs: Mapping[str, HelicityDecomposition],
                        recipe: HelicityRecipe, names: Sequence[str] | None = None,
                        prior_factor: float = 1.0) -> list[dict[str, Any]]:
    """The paper's validation: fit pseudo-data of alternative productions (:data:`INJECTIONS`,
    filled in ``decs``) with the helicity model ``helicity`` and the nominal model ``nominal``.

    Per production: the m_W shift of each fit (MeV and over its error; the pseudo-data are
    Asimov, so the nominal production gives 0), and for the helicity fit the recovery of the
    injected θ (bin averages, :attr:`HelicityDecomposition.injected_theta`): the largest and the
    RMS of (θ̂ − θ_inj) / error, and the fraction within one error.  ``prior_factor``: the
    factor the helicity priors of ``helicity`` were scaled by (the regularised mode's), whose θ
    unit is that many of the paper's priors."""
    from ..templatefit.fitting import run_fit

    hb = recipe.helicity
    names = list(names) if names is not None else sorted(next(iter(decs.values())).alternatives)
    rows = []
    for name in names:
        data = alternative_data(helicity, decs, name)
        hel = run_fit(helicity, data=data, full_cov=True, keep_raw=False)
        nom = run_fit(nominal, data=alternative_data(nominal, decs, name), full_cov=False, keep_raw=False)
        pulls = []
        for sample, charge in CHARGE_OF_SAMPLE.items():
            theta = decs[sample].injected_theta[name] / prior_factor
            for k in range(hb.n_bins):
                for ic, comp in enumerate(COMPONENTS):
                    par = hb.parameter(charge, comp, k)
                    if par in hel.values and hel.errors[par] > 0:
                        pulls.append((hel.values[par] - theta[k, ic]) / hel.errors[par])
        p = np.abs(np.asarray(pulls))
        rows.append({"production": name, "mw_shift_mev": float(hel.values["mass"]), "mw_err": float(hel.errors["mass"]),
                     "mw_shift_over_err": float(hel.values["mass"] / hel.errors["mass"]),
                     "nominal_fit_mw_shift_mev": float(nom.values["mass"]),
                     "nominal_fit_mw_shift_over_err": float(nom.values["mass"] / nom.errors["mass"]),
                     "theta_max_abs_pull": float(p.max()) if p.size else None,
                     "theta_pull_rms": float(np.sqrt(np.mean(p**2))) if p.size else None,
                     "theta_within_error": float(np.mean(p < 1.0)) if p.size else None, "n_theta": int(p.size)})
    return rows


def impact_table(nominal: Mapping[str, float] | None, global_: Mapping[str, float] | None) -> str:
    """Markdown table of group impacts on the helicity fit's m_W (MeV); the paper publishes only
    the total for this fit."""
    from ..templatefit.tables import impact_table as table

    return table(nominal, global_, {"total": (PAPER["mw_err"], None)})
