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

from ..templatefit.wmass import PROCESSES, MwConfig, simulation_config
from .binning import CHARGE_OF_SAMPLE, COMPONENTS, HelicityBinning
from .templates import GROUP, HelicityDecomposition, HelicityRecipe, decompose, scale_priors, symmetric_helicity

CHAPTER = "09_helicity"
SELECTION = "w"
#: the paper (PHYSICS.md): helicity-fit m_W and its error against the nominal fit's
PAPER = {"mw": 80360.8, "mw_err": 15.2, "mw_err_nominal_fit": 9.9, "n_helicity_params": 864}
#: the prior scans of the paper: label -> component -> factor ("others": every component but A3)
PRIOR_SCANS: dict[str, dict[str, float]] = {
    "σ3 prior ×0.5": {"A3": 0.5}, "σ3 prior ×2": {"A3": 2.0},
    "others ×2": {c: 2.0 for c in COMPONENTS if c != "A3"}, "others ×5": {c: 5.0 for c in COMPONENTS if c != "A3"},
}




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
                   truth_universe: Literal["data", "closure"] | None = None) -> dict[str, HelicityDecomposition]:
    """:func:`~wmnb.helicity.templates.decompose` of both signal samples."""
    return {s: decompose(recipe, skims[0][s], s, corrections, truth_universe) for s in CHARGE_OF_SAMPLE}


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


def impact_table(nominal: Mapping[str, float] | None, global_: Mapping[str, float] | None) -> str:
    """Markdown table of group impacts on the helicity fit's m_W (MeV); the paper publishes only
    the total for this fit."""
    from ..templatefit.tables import impact_table as table

    return table(nominal, global_, {"total": (PAPER["mw_err"], None)})
