"""Chapter 05 end to end: region histograms, the estimate, its validation and its publication.

Steps (each a function the notebook calls):

1. :func:`fill_regions`: the six ABCD regions of data and of every prompt simulation with all
   published corrections and variations (:mod:`wmnb.nonprompt.regions`), plus, at nominal, the
   multijet simulation and the secondary-vertex (SV) control region;
2. :func:`measure`: prompt subtraction, smoothing, the extended ABCD (and the simple ABCD and
   the fake-rate/prompt-rate cross-checks), the non-closure factor measured in the multijet
   simulation (applied) and in the SV control region of data (validation), the shape-nuisance
   sizes;
3. :func:`nonprompt_variations`: the template's nuisances, the prompt ones propagated through
   the subtraction;
4. :func:`signal_region_fit_set` / :func:`biased_pseudodata_test`: m_W fits in the signal region
   on Asimov and on pseudo-data biased by the ABCD-vs-direct difference of the simulation;
   :func:`sv_validation_fit`: the SV control region fitted with the nonprompt uncertainty model;
5. :func:`truth_comparison`: the estimate against the universe's true nonprompt background (the
   only step that reads the truth, through :func:`wmnb.truth.data_component_skim`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..templatefit.binning import W_BINNING, W_ETA_EDGES, W_PT_EDGES
from ..templatefit.templates import ProcessTemplate, Shape, TemplateSet, build_templates
from .abcd import REGIONS, SIGNAL, NonpromptError
from .estimate import (SmoothedABCD, coefficient_variation, eigen_variation, estimator_totals, eta_shares,
                       simulation_inputs, slice_names, smoothed_abcd, subtract, to_slices, to_template)
from .regions import MULTIJET_SAMPLE, PROMPT_SAMPLES, RegionRecipe, fill_nominal
from .smoothing import fit_exp_poly

CHAPTER = "05_nonprompt"
SIGNAL_INDEX = REGIONS.index(SIGNAL)
#: the paper's numbers (PHYSICS.md, "Nonprompt background")
PAPER = {"nonclosure_factor": 0.85, "norm_uncertainty": 0.05, "impact_nominal_mev": 3.2, "impact_global_mev": 1.7,
         "impact_norm_mev": 0.2, "impact_shape_mev": 2.5, "impact_stat_mev": 1.9, "n_stat_nuisances": 384,
         "order": 3}


@dataclass(frozen=True)
class NonpromptConfig:
    """The chapter's choices (all recorded in summary.json)."""

    order: int | None = None           # smoothing polynomial order; None: chosen by the F-test
    eta_rebin: int = 1                 # fine eta bins per smoothing slice (48 / eta_rebin groups)
    eta_rebin_sv: int = 8              # the same in the (smaller) SV control region
    norm_uncertainty: float = 0.05     # the non-closure correction's normalisation prior
    skim_chunk_rows: int = 500_000
    #: a propagated prompt variation changing no template bin by more than this (relative) is dropped
    min_relative_change: float = 1e-6

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> NonpromptConfig:
        """The configuration from the chapter's checked parameters (``wmnb.params.notebook_config``)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: parameters[k] for k in names if k in parameters})


# ------------------------------------------------------------------------------ inputs
@dataclass
class RegionInputs:
    """Region histograms (region, eta, pT, charge) of everything the estimate needs."""

    templates: TemplateSet                         # prompt simulation with all variations, and data
    multijet: tuple[np.ndarray, np.ndarray]        # (sumw, sumw2) of the multijet simulation
    sv_data: np.ndarray
    sv_prompt: tuple[np.ndarray, np.ndarray]
    sv_by_process: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def data(self) -> np.ndarray:
        return self.templates.data

    def prompt(self) -> tuple[np.ndarray, np.ndarray]:
        """Sum of the prompt templates and of their sumw2."""
        shape = self.templates.binning.shape
        procs = self.templates.processes.values()
        return (sum((p.nominal for p in procs), np.zeros(shape)), sum((p.sumw2 for p in procs), np.zeros(shape)))


def corrections_for(profile: str) -> list[Any]:
    """Every correction the chapter's inputs may carry (those of the chapters it depends on)."""
    from ..corrections import upstream

    return upstream(profile, CHAPTER)


def make_recipe(config: NonpromptConfig, sv_only: bool = False) -> RegionRecipe:
    """The region recipe with the simulation's W line shape (its own card, not the data's)."""
    from .. import truth

    phys = truth.simulation("physics")
    return RegionRecipe(config, phys["mw_mev"] * 1e-3, phys["gw_mev"] * 1e-3, sv_only=sv_only)


def fill_regions(profile: str, config: NonpromptConfig, corrections: Sequence[Any]) -> RegionInputs:
    """Fill every region histogram of ``profile`` (W skims of chapter 01)."""
    from ..engine.skims import mc_lumi_scale, skim_chunks

    scale = mc_lumi_scale(profile, "w")
    rows = config.skim_chunk_rows

    def mc(sample: str) -> Any:
        return skim_chunks(profile, "w", sample, rows, weight_scale=scale)

    recipe = make_recipe(config)
    ts = build_templates(recipe, {s: mc(s) for s in PROMPT_SAMPLES}, skim_chunks(profile, "w", "data", rows),
                         corrections)
    multijet = fill_nominal(recipe, mc(MULTIJET_SAMPLE), MULTIJET_SAMPLE, corrections)
    sv = make_recipe(config, sv_only=True)
    sv_data = fill_nominal(sv, skim_chunks(profile, "w", "data", rows), "data", corrections, is_data=True)[0]
    by_process = {}
    sv_sumw = np.zeros(sv.binning.shape)
    sv_sumw2 = np.zeros(sv.binning.shape)
    for s in PROMPT_SAMPLES:
        a, b = fill_nominal(sv, mc(s), s, corrections)
        by_process[recipe.process_name(s)] = a
        sv_sumw += a
        sv_sumw2 += b
    by_process["nonprompt (simulation)"] = fill_nominal(sv, mc(MULTIJET_SAMPLE), MULTIJET_SAMPLE, corrections)[0]
    return RegionInputs(ts, multijet, sv_data, (sv_sumw, sv_sumw2), by_process)


# ------------------------------------------------------------------------------ the estimate
@dataclass(frozen=True)
class Nonclosure:
    """Direct count / extended-ABCD prediction of a nonprompt-only sample, overall and by bin."""

    factor: float
    error: float
    direct: float
    predicted: float
    stability: list[dict[str, Any]]       # rows: {"axis", "bin", "factor", "error"}
    #: smoothed coefficient difference (direct − prediction) averaged over slices: linear, quadratic
    shape_coefficients: tuple[float, float]
    shape_errors: tuple[float, float]
    #: per slice and pT bin: smoothed direct / prediction (the residual non-closure's shape)
    residual: np.ndarray


def _nonclosure(smoothed: SmoothedABCD, direct: np.ndarray, direct_var: np.ndarray, event_weight: np.ndarray,
                n_groups: int, eta_rebin: int) -> Nonclosure:
    """Compare the smoothed prediction with the direct signal-region yield (sliced (S, n_pt))."""
    pred = smoothed.prediction
    total_pred, err_pred = smoothed.total_and_error()
    total_dir = float(direct.sum())
    k = total_dir / total_pred
    err = k * np.sqrt(float(direct_var.sum()) / total_dir ** 2 + (err_pred / total_pred) ** 2)
    rows: list[dict[str, Any]] = []
    eta_lo = W_ETA_EDGES[::eta_rebin][:-1]
    eta_hi = W_ETA_EDGES[eta_rebin::eta_rebin]
    group = np.repeat(np.arange(n_groups), 2)
    charge = np.tile([-1, 1], n_groups)
    # |eta| bands of about 0.4-0.8 (whole groups), charge, and thirds of the pT range
    centres = np.abs(0.5 * (eta_lo + eta_hi))
    bands = np.digitize(centres, [0.8, 1.6])
    for b, label in enumerate(("|eta|<0.8", "0.8<|eta|<1.6", "|eta|>1.6")):
        sel = np.flatnonzero(bands[group] == b)
        if sel.size:
            rows.append(_ratio_row("|eta|", label, direct[sel], direct_var[sel], smoothed, sel, slice(None)))
    for q, label in ((-1, "mu-"), (1, "mu+")):
        sel = np.flatnonzero(charge == q)
        rows.append(_ratio_row("charge", label, direct[sel], direct_var[sel], smoothed, sel, slice(None)))
    n_pt = pred.shape[1]
    every = np.arange(pred.shape[0])
    for lo, hi in ((0, n_pt // 3), (n_pt // 3, 2 * n_pt // 3), (2 * n_pt // 3, n_pt)):
        label = f"{W_PT_EDGES[lo]:.0f}-{W_PT_EDGES[hi]:.0f} GeV"
        rows.append(_ratio_row("pT", label, direct[:, lo:hi], direct_var[:, lo:hi], smoothed, every, slice(lo, hi)))
    # the residual shape: smooth the direct yield with the same polynomial and compare
    ok = direct.sum(axis=1) > 0
    fit = fit_exp_poly(direct[ok], smoothed.x, smoothed.order, event_weight=event_weight[ok])
    dcoef = fit.coef - smoothed.combined.coef[ok]
    dvar = np.diagonal(fit.cov, axis1=1, axis2=2) + np.diagonal(smoothed.combined.cov[ok], axis1=1, axis2=2)
    w = 1.0 / dvar
    mean = (dcoef * w).sum(axis=0) / w.sum(axis=0)
    mean_err = 1.0 / np.sqrt(w.sum(axis=0))
    residual = np.ones_like(pred)
    residual[ok] = fit.values() / pred[ok] / k
    order = smoothed.order
    lin = float(mean[1]) if order >= 1 else 0.0
    quad = float(mean[2]) if order >= 2 else 0.0
    errs = (float(mean_err[1]) if order >= 1 else 0.0, float(mean_err[2]) if order >= 2 else 0.0)
    return Nonclosure(k, float(err), total_dir, total_pred, rows, (lin, quad), errs, residual)


def _ratio_row(axis: str, label: str, direct: np.ndarray, var: np.ndarray, smoothed: SmoothedABCD,
               rows: np.ndarray, bins: slice) -> dict[str, Any]:
    """direct / prediction in a subset (the error: direct counts and smoothing statistics)."""
    d = float(direct.sum())
    p, p_err = smoothed.total_and_error(rows, bins)
    if p <= 0 or d <= 0:
        return {"axis": axis, "bin": label, "factor": float("nan"), "error": float("nan")}
    k = d / p
    return {"axis": axis, "bin": label, "factor": k, "error": k * float(np.sqrt(var.sum() / d ** 2 + (p_err / p) ** 2))}


@dataclass
class NonpromptMeasurement:
    """Everything :func:`measure` finds (the notebook shows it, :func:`summary_numbers` reports it)."""

    config: NonpromptConfig
    names: list[str]                   # slice labels of the data estimate
    smoothed: SmoothedABCD             # data: prompt-subtracted sidebands
    simulation: SmoothedABCD           # the multijet simulation's own sidebands
    nonclosure_mc: Nonclosure          # measured in the multijet simulation (applied)
    sv_smoothed: SmoothedABCD
    nonclosure_sv: Nonclosure          # measured in the SV control region of data (validation)
    sv_prompt_fraction: float
    shares: np.ndarray                 # fine-eta shares of the data slices
    sv_shares: np.ndarray
    shape_sizes: tuple[float, float]   # size of the linear and quadratic shape nuisances
    estimator_totals: dict[str, float]
    sliced: dict[str, np.ndarray]      # data, prompt, prompt_sumw2 (R, S, n_pt)

    @property
    def factor(self) -> float:
        return self.nonclosure_mc.factor

    def template(self, slices: np.ndarray | None = None) -> np.ndarray:
        """The corrected nonprompt template in the W binning for slice predictions ``slices``
        (default: the nominal)."""
        s = self.smoothed.prediction if slices is None else slices
        return self.factor * to_template(s, self.shares, self.config.eta_rebin)

    def uncertainty(self) -> dict[str, float]:
        """Relative uncertainties of the total corrected yield: smoothing statistics, the
        non-closure factor's statistics, the normalisation prior, and their sum in quadrature."""
        total, stat = self.smoothed.total_and_error()
        rel = {"smoothing_stat": stat / total, "factor_stat": self.nonclosure_mc.error / self.factor,
               "normalisation": self.config.norm_uncertainty}
        rel["total"] = float(np.sqrt(sum(v * v for v in rel.values())))
        return rel


def measure(inputs: RegionInputs, config: NonpromptConfig) -> NonpromptMeasurement:
    """The nominal estimate, its non-closure factors and the shape-nuisance sizes."""
    n_eta = W_BINNING.shape[0]
    data = inputs.data
    prompt, prompt_w2 = inputs.prompt()
    groups = n_eta // config.eta_rebin
    names = slice_names(groups, W_ETA_EDGES, config.eta_rebin)
    y, off, w = subtract(data, prompt, prompt_w2, config.eta_rebin)
    smoothed = smoothed_abcd(y, off, w, W_PT_EDGES, config.order, names)
    order = smoothed.order
    # the multijet simulation: the method against the direct count (no prompt to subtract)
    mj_y, mj_off, mj_w = simulation_inputs(*inputs.multijet, config.eta_rebin)
    simulation = smoothed_abcd(mj_y, mj_off, mj_w, W_PT_EDGES, order, names)
    mj_var = to_slices(inputs.multijet[1], config.eta_rebin)[SIGNAL_INDEX]
    nc_mc = _nonclosure(simulation, mj_y[SIGNAL_INDEX], mj_var, mj_w[SIGNAL_INDEX], groups, config.eta_rebin)
    # the SV control region of data, prompt-subtracted like the signal region
    sv_groups = n_eta // config.eta_rebin_sv
    sv_names = slice_names(sv_groups, W_ETA_EDGES, config.eta_rebin_sv)
    sv_y, sv_off, sv_w = subtract(inputs.sv_data, *inputs.sv_prompt, config.eta_rebin_sv)
    sv_smoothed = smoothed_abcd(sv_y, sv_off, sv_w, W_PT_EDGES, order, sv_names)
    sv_direct_var = to_slices(inputs.sv_data + inputs.sv_prompt[1], config.eta_rebin_sv)[SIGNAL_INDEX]
    nc_sv = _nonclosure(sv_smoothed, sv_y[SIGNAL_INDEX], sv_direct_var, sv_w[SIGNAL_INDEX], sv_groups,
                        config.eta_rebin_sv)
    sv_obs = float(inputs.sv_data[SIGNAL_INDEX].sum())
    sv_prompt_fraction = float(inputs.sv_prompt[0][SIGNAL_INDEX].sum()) / sv_obs if sv_obs > 0 else float("nan")
    # the shape nuisances cover the largest residual coefficient seen in either validation
    sizes = tuple(float(max(np.hypot(nc.shape_coefficients[j], nc.shape_errors[j]) for nc in (nc_mc, nc_sv)))
                  for j in range(2))
    d_s, p_s, w2_s = (to_slices(a, config.eta_rebin) for a in (data, prompt, prompt_w2))
    totals = estimator_totals(d_s, p_s, w2_s, smoothed, nc_mc.factor)
    return NonpromptMeasurement(config, names, smoothed, simulation, nc_mc, sv_smoothed, nc_sv, sv_prompt_fraction,
                                eta_shares(data, config.eta_rebin), eta_shares(inputs.sv_data, config.eta_rebin_sv),
                                (sizes[0], sizes[1]), totals, {"data": d_s, "prompt": p_s, "prompt_sumw2": w2_s})


# ------------------------------------------------------------------------------ nuisances
@dataclass
class NonpromptVariations:
    """The template's nuisances: name -> (up, down or None) in the W binning, and groups."""

    templates: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)      # propagated ones without effect

    def count(self, group: str | None = None) -> int:
        return sum(1 for g in self.groups.values() if group is None or g == group)


def _slice_tag(name: str, index: int, eta_rebin: int) -> str:
    g, q = divmod(index, 2)
    return f"eta{g}" + ("" if eta_rebin == 1 else f"x{eta_rebin}") + f"_q{'m' if q == 0 else 'p'}"


def own_variations(m: NonpromptMeasurement, group: str = "nonprompt") -> NonpromptVariations:
    """Smoothing statistics (one eigenvector set per slice), normalisation and the two shape
    nuisances, in the W binning."""
    out = NonpromptVariations()
    comb = m.smoothed.combined
    for s in range(comb.coef.shape[0]):
        tag = _slice_tag(m.names[s], s, m.config.eta_rebin)
        for j in range(comb.order + 1):
            up, down = eigen_variation(comb, s, j)
            name = f"nonpromptStat_{tag}_{j}"
            out.templates[name] = (m.template(up), m.template(down))
            out.groups[name] = group
    nominal = m.template()
    out.templates["nonpromptNorm"] = (nominal * (1 + m.config.norm_uncertainty), nominal * (1 - m.config.norm_uncertainty))
    out.groups["nonpromptNorm"] = group
    for j, label in ((1, "Lin"), (2, "Quad")):
        if j <= comb.order:
            up, down = coefficient_variation(comb, j, m.shape_sizes[j - 1])
            out.templates[f"nonpromptShape{label}"] = (m.template(up), m.template(down))
            out.groups[f"nonpromptShape{label}"] = group
    return out


def _prompt_deltas(ts: TemplateSet) -> Iterator[tuple[str, str, np.ndarray, np.ndarray | None]]:
    """Per nuisance of the prompt templates: (name, group, Δup, Δdown) summed over processes,
    the shape variations first, then the normalisation priors (:meth:`RegionRecipe.norms`)."""
    names: dict[str, str] = {}
    for p in ts.processes.values():
        for n, s in (*p.shapes.items(), *p.rejected.items()):
            names.setdefault(n, s.group)
    for n, group in names.items():
        up = np.zeros(ts.binning.shape)
        down: np.ndarray | None = np.zeros(ts.binning.shape)
        for p in ts.processes.values():
            # a variation the fit rejects for emptying single-event bins of a sparse sideband
            # still moves the prompt yields there: it is subtracted all the same
            shape = p.shapes.get(n, p.rejected.get(n))
            if shape is None:
                continue
            u, d = shape.dense(p.nominal)
            up += u - p.nominal
            if d is None or down is None:
                down = None
            else:
                down += d - p.nominal
        yield n, group, up, down
    # the normalisation priors of the prompt processes move the subtraction as well: the
    # nonprompt template gets them under the same names (the fit then correlates a W cross
    # section pulled up with a smaller nonprompt background)
    norms: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for p in ts.processes.values():
        for name, kappa, group in ts.recipe.norms(p.name, p.source, False):
            _, up, down = norms.setdefault(name, (group, np.zeros(ts.binning.shape), np.zeros(ts.binning.shape)))
            up += (kappa - 1.0) * p.nominal
            down += (1.0 / kappa - 1.0) * p.nominal
    for name, (group, up, down) in norms.items():
        yield name, group, up, down


def propagate_prompt_variations(m: NonpromptMeasurement, ts: TemplateSet, out: NonpromptVariations,
                                progress: bool = False) -> NonpromptVariations:
    """Every prompt variation through the subtraction and the smoothing: the nonprompt template
    under the same nuisance (name, group), so the fit correlates prompt and nonprompt."""
    nominal = m.template()
    safe = np.where(nominal > 0, nominal, 1.0)
    items: Any = _prompt_deltas(ts)
    if progress:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        n_total = len({n for p in ts.processes.values() for n in (*p.shapes, *p.rejected)}) + len(
            {n for p in ts.processes.values() for n, _, _ in ts.recipe.norms(p.name, p.source, False)})
        items = tqdm(items, total=n_total, desc="prompt variations through the subtraction")
    for name, group, up, down in items:
        t_up = m.template(m.smoothed.propagate(to_slices(up, m.config.eta_rebin)))
        t_down = None if down is None else m.template(m.smoothed.propagate(to_slices(down, m.config.eta_rebin)))
        change = np.max(np.abs(t_up - nominal) / safe)
        if t_down is not None:
            change = max(change, float(np.max(np.abs(t_down - nominal) / safe)))
        if change <= m.config.min_relative_change:
            out.dropped.append(name)
            continue
        if name in out.templates:
            raise NonpromptError(f"prompt variation {name!r} has the name of one of the estimate's own nuisances")
        out.templates[name] = (t_up, t_down)
        out.groups[name] = group
    return out


# ------------------------------------------------------------------------------ fits
def _in_region(binning_shape: tuple[int, ...], template: np.ndarray) -> np.ndarray:
    out = np.zeros(binning_shape)
    out[SIGNAL_INDEX] = template
    return out


def signal_region_fit_set(ts: TemplateSet, m: NonpromptMeasurement, variations: NonpromptVariations) -> TemplateSet:
    """The region templates with the estimated nonprompt process added (in the signal region,
    zero sumw2: no Barlow–Beeston for a data-driven template)."""
    shape = ts.binning.shape
    nominal = _in_region(shape, m.template())
    proc = ProcessTemplate("nonprompt", nominal, np.zeros(shape), source=CHAPTER)
    for name, (up, down) in variations.templates.items():
        proc.shapes[name] = Shape(variations.groups[name], _in_region(shape, up),
                                  None if down is None else _in_region(shape, down))
    return dataclasses.replace(ts, processes={**ts.processes, "nonprompt": proc})


def biased_pseudodata_test(fit_set: TemplateSet, m: NonpromptMeasurement, impacts: bool = True
                           ) -> dict[str, Any]:
    """m_W from an Asimov fit and from pseudo-data whose nonprompt part carries the residual
    non-closure of the multijet simulation (smoothed direct / corrected prediction, per bin):
    the shift (a difference, m_W stays blind) against the nonprompt uncertainty of the fit."""
    from ..templatefit.fitting import run_fit
    from ..templatefit.model import make_spec

    spec = make_spec(fit_set, data=fit_set.prediction(), region="signal")
    nominal = run_fit(spec, impacts=impacts, keep_raw=False)
    residual = _fine(m.nonclosure_mc.residual, m.config.eta_rebin)
    np_nom = fit_set.processes["nonprompt"].nominal
    biased = fit_set.prediction() + _in_region(fit_set.binning.shape, np_nom[SIGNAL_INDEX] * (residual - 1.0))
    shifted = run_fit(spec, data=biased[spec.mask], impacts=False, keep_raw=False)
    imp_n = nominal.impacts_nominal or {}
    imp_g = nominal.impacts_global or {}
    return {"shift_mev": shifted.values["mass"] - nominal.values["mass"], "mass_err_mev": nominal.errors["mass"],
            "impact_nominal_mev": float(imp_n.get("nonprompt", float("nan"))),
            "impact_global_mev": float(imp_g.get("nonprompt", float("nan"))),
            "impacts_nominal": imp_n, "impacts_global": imp_g, "n_nuisances": len(spec.nuisances)}


def _fine(slices: np.ndarray, eta_rebin: int) -> np.ndarray:
    """Per-slice values (S, n_pt) spread to every fine eta bin of the slice (n_eta, n_pt, 2)."""
    n_groups = slices.shape[0] // 2
    g = slices.reshape(n_groups, 2, -1)
    return np.transpose(np.repeat(g, eta_rebin, axis=0), (0, 2, 1))


def sv_validation_fit(inputs: RegionInputs, m: NonpromptMeasurement) -> dict[str, Any]:
    """Fit the SV control region's signal-region (eta, pT, charge) distribution with the prompt
    simulation and the corrected SV estimate carrying the nonprompt nuisances (normalisation,
    the two shape coefficients, the SV smoothing statistics): pre- and post-fit yields, pulls
    and the saturated goodness of fit."""
    from ..fit import ModelBuilder, fit

    eta_rebin = m.config.eta_rebin_sv
    sv = m.sv_smoothed
    factor = m.factor

    def template(slices: np.ndarray) -> np.ndarray:
        return factor * to_template(slices, m.sv_shares, eta_rebin)

    prompt, prompt_w2 = (a[SIGNAL_INDEX] for a in inputs.sv_prompt)
    nonprompt = template(sv.prediction)
    data = inputs.sv_data[SIGNAL_INDEX]
    keep = (prompt + nonprompt) > 0
    b = ModelBuilder(data[keep])
    b.add_process("prompt", prompt[keep], sumw2=prompt_w2[keep])
    b.add_process("nonprompt", nonprompt[keep], sumw2=np.zeros(int(keep.sum())))
    b.add_norm_systematic("nonpromptNorm", "nonprompt", 1.0 + m.config.norm_uncertainty, group="nonprompt")
    b.add_norm_systematic("lumi", "prompt", 1.012, group="lumi")
    comb = sv.combined
    for j, label in ((1, "Lin"), (2, "Quad")):
        if j <= comb.order:
            up, down = coefficient_variation(comb, j, m.shape_sizes[j - 1])
            b.add_shape_systematic(f"nonpromptShape{label}", "nonprompt", template(up)[keep], template(down)[keep],
                                   group="nonprompt")
    for s in range(comb.coef.shape[0]):
        for j in range(comb.order + 1):
            up, down = eigen_variation(comb, s, j)
            b.add_shape_systematic(f"svStat_{s}_{j}", "nonprompt", template(up)[keep], template(down)[keep],
                                   group="nonprompt")
    b.bb_scale = 1.0
    model = b.build()
    res = fit(model, impacts=False, global_impacts=False)
    post = np.zeros(data.shape)
    post[keep] = model.expected(res.x)
    pre = prompt + nonprompt
    chi2, ndf, p = res.gof()
    pulls = dict(res.pulls)
    return {"data": data, "prefit": pre, "postfit": post, "prompt": prompt, "nonprompt": nonprompt,
            "pulls": {k: v for k, v in pulls.items() if not k.startswith("svStat")},
            "stat_pull_rms": float(np.sqrt(np.mean([v[0] ** 2 for k, v in pulls.items() if k.startswith("svStat")]))),
            "gof_chi2": chi2, "gof_ndf": ndf, "gof_pvalue": p,
            "prefit_over_data": float(pre.sum() / data.sum()), "postfit_over_data": float(post.sum() / data.sum())}


# ------------------------------------------------------------------------------ truth
def truth_histograms(profile: str, config: NonpromptConfig, corrections: Sequence[Any]) -> np.ndarray:
    """The data universe's true nonprompt background in the six regions (the truth gate
    regenerates the data's multijet events; the data's own corrections are applied)."""
    from .. import truth

    cols = truth.data_component_skim(profile, MULTIJET_SAMPLE, "w",
                                     purpose="chapter 05: estimated vs true nonprompt background")
    return fill_nominal(make_recipe(config), cols, "data", corrections, is_data=True)[0]


def truth_comparison(m: NonpromptMeasurement, true_regions: np.ndarray) -> dict[str, Any]:
    """Estimated against true nonprompt yields: the total (corrected, uncorrected, and each
    estimator), with the pull in the stated uncertainty, and the pT and eta shapes."""
    true_sr = true_regions[SIGNAL_INDEX]
    true_total = float(true_sr.sum())
    est = m.template()
    rel = m.uncertainty()
    ratio = float(est.sum()) / true_total
    out = {"true_yield": true_total, "estimated_yield": float(est.sum()), "yield_over_truth": ratio,
           "yield_over_truth_err": ratio * rel["total"], "pull": (ratio - 1.0) / (ratio * rel["total"]),
           "uncorrected_over_truth": ratio / m.factor,
           "estimators_over_truth": {k: v / true_total for k, v in m.estimator_totals.items()},
           "pt_estimated": est.sum(axis=(0, 2)), "pt_true": true_sr.sum(axis=(0, 2)),
           "eta_estimated": est.sum(axis=(1, 2)), "eta_true": true_sr.sum(axis=(1, 2)),
           "sidebands_true": to_slices(true_regions, m.config.eta_rebin).sum(axis=1),
           "sidebands_estimated": m.smoothed.nonprompt.sum(axis=1)}
    # shape agreement: χ² of the pT spectra normalised to the same total (truth statistics)
    e, t = out["pt_estimated"] * true_total / est.sum(), out["pt_true"]
    out["pt_shape_chi2"] = float(np.sum((e - t) ** 2 / np.maximum(t, 1.0)))
    out["pt_shape_ndf"] = int(t.size - 1)
    return out


# ------------------------------------------------------------------------------ summary
def summary_numbers(m: NonpromptMeasurement, variations: NonpromptVariations, closure: Mapping[str, Any] | None,
                    biased: Mapping[str, Any] | None, sv_fit: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headline numbers of summary.json (the issue's keys and a few more)."""
    out: dict[str, Any] = {
        "nonclosure_factor": m.factor, "nonclosure_factor_err": m.nonclosure_mc.error,
        "nonclosure_factor_sv": m.nonclosure_sv.factor, "nonclosure_factor_sv_err": m.nonclosure_sv.error,
        "smoothing_order": m.smoothed.order, "n_slices": len(m.names),
        "n_nuisances": variations.count("nonprompt"),
        "n_stat_nuisances": sum(1 for n in variations.groups if n.startswith("nonpromptStat_")),
        "n_propagated_nuisances": variations.count() - variations.count("nonprompt"),
        "sv_prompt_fraction": m.sv_prompt_fraction,
        "propagation_unfit_slices": m.smoothed.unfit_slices,
        "shape_nuisance_sizes": list(m.shape_sizes),
        "shape_residual_mc": [list(m.nonclosure_mc.shape_coefficients), list(m.nonclosure_mc.shape_errors)],
        "shape_residual_sv": [list(m.nonclosure_sv.shape_coefficients), list(m.nonclosure_sv.shape_errors)],
        "relative_uncertainty": m.uncertainty(),
    }
    if closure is not None:
        out.update({k: closure[k] for k in ("yield_over_truth", "yield_over_truth_err", "pull",
                                            "uncorrected_over_truth")})
        out["estimators_over_truth"] = closure["estimators_over_truth"]
    if biased is not None:
        out.update({"biased_pseudodata_shift_mev": biased["shift_mev"],
                    "nonprompt_impact_nominal_mev": biased["impact_nominal_mev"],
                    "nonprompt_impact_global_mev": biased["impact_global_mev"]})
    if sv_fit is not None:
        out.update({"sv_gof_pvalue": sv_fit["gof_pvalue"], "sv_prefit_over_data": sv_fit["prefit_over_data"],
                    "sv_postfit_over_data": sv_fit["postfit_over_data"]})
    return out


def publish(chapter_dir: Any, m: NonpromptMeasurement, variations: NonpromptVariations,
            attrs: Mapping[str, Any] | None = None) -> Any:
    """Write the template artefact and publish the correction."""
    from pathlib import Path

    from .correction import ARTEFACT, publish_correction, write_template

    write_template(Path(chapter_dir) / ARTEFACT, m.template(), variations.templates, variations.groups,
                   {"nonclosure_factor": m.factor, "config": m.config.to_dict(), **(attrs or {})})
    return publish_correction(chapter_dir)


__all__ = ["CHAPTER", "PAPER", "NonpromptConfig", "NonpromptMeasurement", "NonpromptVariations", "RegionInputs",
           "biased_pseudodata_test", "corrections_for", "fill_regions", "make_recipe", "measure", "own_variations",
           "propagate_prompt_variations", "publish", "signal_region_fit_set", "summary_numbers", "sv_validation_fit",
           "truth_comparison", "truth_histograms"]
