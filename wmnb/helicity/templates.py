"""Helicity templates: the W signal split by generator (q_T, |y|) bin and helicity component.

Each simulated W event is shared among the six components of its generator bin by its
*helicity fractions*, the terms of the angular density (PHYSICS.md, "Theory model")

    f_UL = (1 + cos²θ) / h,   f_i = A_i P_i(cosθ, φ) / h,   h = 1 + cos²θ + Σ_j A_j P_j,

with A_j the simulation's own coefficients at the event's (q_T, y) (the simulation's card,
which is public as a generator configuration is).  The fractions sum to one, so the
components' reconstructed templates sum to the nominal one exactly; those of σ_0..σ_4 are
signed (only the sum is a Poisson mean).

A helicity parameter θ scales its component by (1 + p θ) with p its prior width (a fraction):
σ_UL ±50 %, σ_4 ±100 %, σ_0..σ_3 the simulation's documented μR/μF dependence of the
coefficient, added in quadrature (:func:`theory_spread_priors`).  Each parameter is a *local*
variation of the pipeline (factors 1 ± p f_c on the rows of its bin only), so 864 of them cost
six passes over the signal events in all.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..angular import angular_density, harmonic_polynomials
from ..corrections import Variation
from ..templatefit.model import ModelSpec, SpecShape
from ..templatefit.templates import TemplateSet
from ..templatefit.wmass import WMassRecipe
from .binning import CHARGE_OF_SAMPLE, COMPONENTS, HelicityBinning

#: impact group of the helicity parameters
GROUP = "helicity"
#: the boson of each signal sample (the truth gate's names)
BOSON_OF_SAMPLE = {"wplus_munu": "wplus", "wminus_munu": "wminus"}
#: the paper's fixed priors (fractions of the component)
FIXED_PRIORS = {"UL": 0.5, "A4": 1.0}
#: theory nuisances of the signal that the helicity parameters make redundant (the paper drops the
#: resummation and matching uncertainties of σ_UL, and the angular-coefficient ones are what
#: σ_0..σ_4 measure): q_T-prediction TNPs, the matching transition, every angularCoeffs nuisance
REDUNDANT_PTV = re.compile(r"^(tnp_|matching)")
REDUNDANT_GROUPS = ("angularCoeffs",)


def theory_spread_priors() -> dict[str, float]:
    """Priors of every component: the paper's fixed σ_UL and σ_4 ones, and for σ_0..σ_3 the
    relative μR and μF dependence of the simulation's A_i (its card's ``physics.scales``) added
    in quadrature: A0 and A2 share ``da02``, A1 has ``da1_mur``/``da1_muf``, A3
    ``da3_mur``/``da3_muf``."""
    from wmnb import truth

    s = truth.simulation("physics.scales")
    spread = {"A0": math.hypot(s["da02_mur"], s.get("da02_muf", 0.0)),
              "A1": math.hypot(s["da1_mur"], s["da1_muf"]),
              "A2": math.hypot(s["da02_mur"], s.get("da02_muf", 0.0)),
              "A3": math.hypot(s["da3_mur"], s["da3_muf"])}
    return {c: FIXED_PRIORS.get(c, spread.get(c, 0.0)) for c in COMPONENTS}


def simulation_coefficients(cols: Mapping[str, np.ndarray], sample: str) -> np.ndarray:
    """A0..A4 (5, N) of the simulation at each event's generator (q_T, y)."""
    from wmnb import truth

    return np.asarray(truth.angular_coefficients(
        "simulation", BOSON_OF_SAMPLE[sample], cols["gen_qt"], cols["gen_y"],
        purpose="chapter 09: the simulation's A_i in the helicity weights (public generator configuration)"))


def helicity_fractions(cos_theta: np.ndarray, phi: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """(6, N) fractions f_UL, f_0..f_4 of each event (they sum to 1)."""
    c = np.asarray(cos_theta, float)
    h = angular_density(c, phi, coeffs)
    polys = harmonic_polynomials(c, phi)[:5]
    return np.vstack([(1.0 + c * c) / h, np.asarray(coeffs)[:5] * polys / h])


def event_fractions(cols: Mapping[str, np.ndarray], sample: str) -> np.ndarray:
    """:func:`helicity_fractions` of a signal sample's events (skim columns)."""
    missing = [k for k in ("gen_qt", "gen_y", "gen_cos_cs", "gen_phi_cs") if k not in cols]
    if missing:
        raise KeyError(f"sample {sample!r}: the helicity templates need the generator column(s) {missing} "
                       "(the W skim of chapter 01 has them)")
    return helicity_fractions(cols["gen_cos_cs"], cols["gen_phi_cs"], simulation_coefficients(cols, sample))


def _bin_rows(bins: np.ndarray, n_bins: int) -> list[np.ndarray]:
    order = np.argsort(bins, kind="stable")
    starts = np.searchsorted(bins[order], np.arange(n_bins + 1))
    return [order[starts[k]:starts[k + 1]] for k in range(n_bins)]


#: suffix of a signal sample's out-of-acceptance process (its events beyond the last edges of a
#: binning without overflow bins)
OUT_OF_ACCEPTANCE = "_ooa"


def out_of_acceptance(process: str) -> str:
    """Name of the out-of-acceptance process of the signal process ``process``."""
    return f"{process}{OUT_OF_ACCEPTANCE}"


def is_out_of_acceptance(process: str) -> bool:
    """Whether ``process`` is a signal sample's out-of-acceptance part."""
    return process.endswith(OUT_OF_ACCEPTANCE)


@dataclass(frozen=True)
class HelicityRecipe(WMassRecipe):
    """The W-mass recipe with the helicity parameters as local variations of the signal.

    Without overflow bins each signal sample is split (:meth:`process_parts`) into the process
    of the events inside the generator bins, which the helicity parameters describe, and its
    out-of-acceptance process (``wplus_munu_ooa``), which no helicity parameter touches: it
    carries the m_W POI and every theory nuisance of the nominal fit."""

    helicity: HelicityBinning = field(default_factory=HelicityBinning)
    priors: Mapping[str, float] = field(default_factory=dict)   # component -> fraction (default: theory_spread_priors)

    def __post_init__(self) -> None:
        # the out-of-acceptance processes follow m_W like their samples (recomputed on replace())
        base = tuple(p for p in self.signal if not is_out_of_acceptance(p))
        extra = () if self.helicity.overflow else tuple(
            out_of_acceptance(self.process_name(s)) for s in CHARGE_OF_SAMPLE)
        object.__setattr__(self, "signal", base + extra)

    def prior(self, component: str) -> float:
        return float(self.priors[component]) if component in self.priors else theory_spread_priors()[component]

    def process_parts(self, sample: str) -> tuple[str, ...]:
        """The fit processes of ``sample``: two for a signal sample without overflow bins."""
        name = self.process_name(sample)
        if self.helicity.overflow or sample not in CHARGE_OF_SAMPLE:
            return (name,)
        return (name, out_of_acceptance(name))

    def part_mask(self, cols: Mapping[str, np.ndarray], sample: str, part: str) -> np.ndarray:
        """Events of ``sample`` (selected columns) that belong to the process ``part``."""
        inside = self.helicity.bin_index(cols["gen_qt"], cols["gen_y"]) >= 0
        return ~inside if is_out_of_acceptance(part) else inside

    def norms(self, process: str, source: str, float_norm: bool) -> list[tuple[str, float, str]]:
        # the out-of-acceptance part shares its sample's normalisation nuisances
        if is_out_of_acceptance(process):
            process = process[: -len(OUT_OF_ACCEPTANCE)]
        return super().norms(process, source, float_norm)

    def builtin_variations(self, cols: Mapping[str, np.ndarray], sample: str) -> Iterator[Variation]:
        yield from super().builtin_variations(cols, sample)
        if sample not in CHARGE_OF_SAMPLE:
            return
        charge = CHARGE_OF_SAMPLE[sample]
        fr = event_fractions(cols, sample)
        bins = self.helicity.bin_index(cols["gen_qt"], cols["gen_y"])
        priors = {c: self.prior(c) for c in COMPONENTS}
        # every bin's variation is yielded for every chunk (empty where the chunk has none of
        # its events), so the chunks of a sample agree on the variations they produce
        for k, rows in enumerate(_bin_rows(bins, self.helicity.n_bins)):
            for ic, comp in enumerate(COMPONENTS):
                d = priors[comp] * fr[ic, rows]
                yield Variation(self.helicity.parameter(charge, comp, k), GROUP, 1.0 + d, 1.0 - d, rows=rows)


# ---------------------------------------------------------------- the two models from one build

def _filtered(ts: TemplateSet, keep: Any) -> TemplateSet:
    processes = {p: dataclasses.replace(t, shapes={n: s for n, s in t.shapes.items() if keep(p, n, s)})
                 for p, t in ts.processes.items()}
    return dataclasses.replace(ts, processes=processes)


def nominal_set(ts: TemplateSet) -> TemplateSet:
    """The templates of the nominal m_W fit: without the helicity parameters."""
    return _filtered(ts, lambda p, n, s: s.group != GROUP)


def helicity_set(ts: TemplateSet) -> TemplateSet:
    """The templates of the helicity fit: on the signal processes, the theory nuisances the
    helicity parameters make redundant (:data:`REDUNDANT_PTV`, :data:`REDUNDANT_GROUPS`) are
    left out; the out-of-acceptance processes keep them (and have no helicity parameter)."""
    signal = set(CHARGE_OF_SAMPLE)

    def keep(p: str, n: str, s: Any) -> bool:
        if is_out_of_acceptance(p):
            # no helicity parameter acts on these events (their variations are empty), and
            # nothing measures their production: they keep every theory nuisance
            return s.group != GROUP
        if p not in signal:
            return True
        return not (s.group in REDUNDANT_GROUPS or (s.group == "pTV" and REDUNDANT_PTV.match(n)))

    return _filtered(ts, keep)


def dropped_nuisances(ts: TemplateSet) -> list[str]:
    """Names of the signal nuisances :func:`helicity_set` leaves out."""
    full = {n for p in CHARGE_OF_SAMPLE if p in ts.processes for n in ts.processes[p].shapes}
    kept = {n for p, t in helicity_set(ts).processes.items() if p in CHARGE_OF_SAMPLE for n in t.shapes}
    return sorted(full - kept)


def parameter_table(recipe: HelicityRecipe) -> list[dict[str, Any]]:
    """Every helicity parameter: name, charge, component, bin, q_T and |y| range, prior."""
    rows = []
    b = recipe.helicity
    for charge in CHARGE_OF_SAMPLE.values():
        for k in range(b.n_bins):
            for comp in COMPONENTS:
                rows.append({"name": b.parameter(charge, comp, k), "charge": charge, "component": comp, "bin": k,
                             "qt": b.qt_range(k), "absy": b.absy_range(k), "overflow": b.is_overflow(k),
                             "prior": recipe.prior(comp)})
    return rows


def scale_priors(spec: ModelSpec, factors: Mapping[str, float]) -> ModelSpec:
    """The model with the priors of the helicity parameters scaled: component -> factor, e.g.
    ``{"A3": 2.0}``; components not named keep theirs.  The fitters interpolate a shape
    exponentially (n = n₀ exp(θ κ)), so a prior ×f is κ ×f: the up/down templates become
    n₀ (up/n₀)^f, which stays positive where a linear ×f of the change (σ_UL ±50 % ×5) would not."""
    pattern = re.compile(r"^hel_(plus|minus)_(?P<comp>UL|A[0-4])_")
    shapes: list[SpecShape] = []
    for s in spec.shapes:
        m = pattern.match(s.name)
        f = factors.get(m["comp"]) if m else None
        if f is None or f == 1.0:
            shapes.append(s)
            continue
        nom = spec.nominal[spec.processes.index(s.process)]
        base = nom if s.bins is None else nom[s.bins]
        shapes.append(dataclasses.replace(s, up=_powered(base, s.up, f),
                                          down=None if s.down is None else _powered(base, s.down, f)))
    out = dataclasses.replace(spec, shapes=shapes)
    out._fit_model = None
    return out


def _powered(base: np.ndarray, varied: np.ndarray, f: float) -> np.ndarray:
    """base (varied / base)^f where both are positive, else ``varied``."""
    ok = (base > 0) & (varied > 0)
    return np.where(ok, base * (np.where(ok, varied, 1.0) / np.where(ok, base, 1.0)) ** f, varied)


def symmetric_helicity(spec: ModelSpec) -> ModelSpec:
    """``spec`` without the even parts (``<name>SymDiff``) that the asymmetry split of
    :func:`~wmnb.templatefit.model.make_spec` gives the helicity parameters: their up and down
    changes are equal and opposite by construction (1 ± p f), so the even part is only the
    curvature of the exponential interpolation, not a second source of uncertainty."""
    from ..templatefit.model import EVEN_SUFFIX

    shapes = [s for s in spec.shapes if not (s.group == GROUP and s.name.endswith(EVEN_SUFFIX))]
    out = dataclasses.replace(spec, shapes=shapes)
    kept = set(out.nuisances)
    out.nois = [n for n in spec.nois if n in kept]
    out._fit_model = None
    return out


# ---------------------------------------------------------------- alternative productions (the injection test)

@dataclass(frozen=True)
class AlternativeProduction:
    """Another W production for the injection test (the paper's pseudo-data "generated with
    different PDF sets and/or y_W spectra"): the simulated signal reweighted event by event by

        r = g(q_T, |y|) · h(A') / h(A),   g = (1 + t_y (|y| − 1.5)/1.5) (1 + t_qT (min(q_T, 40) − 10)/30),

    h the angular density (:func:`wmnb.angular.angular_density`), A the simulation's
    coefficients and A'_i = A_i (1 + s_i p_i), with s_i the shift of ``coeff_shifts`` in units of
    the component's prior p_i.  The weight is computed from the density itself, not from the
    helicity fractions, so a wrong decomposition does not reproduce it; g varies inside the
    generator bins, which the bin-wise parameters can follow only on average."""

    name: str
    y_tilt: float = 0.0
    qt_tilt: float = 0.0
    coeff_shifts: Mapping[str, float] = field(default_factory=dict)   # "A0".."A4" -> shift in prior units

    def spectrum_factor(self, qt: np.ndarray, absy: np.ndarray) -> np.ndarray:
        """g(q_T, |y|) of every event."""
        return ((1.0 + self.y_tilt * (np.abs(absy) - 1.5) / 1.5)
                * (1.0 + self.qt_tilt * (np.minimum(qt, 40.0) - 10.0) / 30.0))

    def relative_shifts(self, recipe: HelicityRecipe) -> np.ndarray:
        """(5,) relative change s_i p_i of A0..A4."""
        unknown = sorted(set(self.coeff_shifts) - set(COMPONENTS[1:]))
        if unknown:
            raise ValueError(f"alternative production {self.name!r}: unknown coefficient(s) {unknown}; "
                             f"use {list(COMPONENTS[1:])}")
        return np.array([self.coeff_shifts.get(c, 0.0) * recipe.prior(c) for c in COMPONENTS[1:]])

    def event_weights(self, cols: Mapping[str, np.ndarray], sample: str, recipe: HelicityRecipe) -> np.ndarray:
        """r of every event of a signal sample."""
        a = simulation_coefficients(cols, sample)
        shifted = a.copy()
        shifted[:5] = a[:5] * (1.0 + self.relative_shifts(recipe))[:, None]
        c, phi = cols["gen_cos_cs"], cols["gen_phi_cs"]
        return (self.spectrum_factor(cols["gen_qt"], cols["gen_y"])
                * angular_density(c, phi, shifted) / angular_density(c, phi, a))


# ---------------------------------------------------------------- decomposition (the check and the plots)

@dataclass
class HelicityDecomposition:
    """The reconstructed template of every (bin, component) of one signal sample, the
    out-of-acceptance part, and per bin the weighted event sums for the unfolded result."""

    sample: str
    templates: np.ndarray                 # (n_bins, 6, *binning.shape)
    out_of_acceptance: np.ndarray         # binning.shape
    nominal: np.ndarray                   # binning.shape: the sample's nominal template
    sumw: np.ndarray                      # (n_bins,) selected weighted events per generator bin
    coeff_sim: np.ndarray                 # (n_bins, 5) Σw A_i(simulation) / Σw
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    #: per alternative production (:class:`AlternativeProduction`): the reweighted reconstructed
    #: template (binning.shape) and the injected θ of every (bin, component), (n_bins, 6): the
    #: bin average of g times 1 + s_i p_i, in prior units
    alternatives: dict[str, np.ndarray] = field(default_factory=dict)
    injected_theta: dict[str, np.ndarray] = field(default_factory=dict)

    def total(self) -> np.ndarray:
        """Sum of every component of every bin and the out-of-acceptance part."""
        return self.templates.sum(axis=(0, 1)) + self.out_of_acceptance


def decompose(recipe: HelicityRecipe, chunks: Any, sample: str, corrections: Sequence[Any] = (),
              truth_universe: Literal["data", "closure"] | None = None,
              alternatives: Sequence[AlternativeProduction] = ()) -> HelicityDecomposition:
    """:class:`HelicityDecomposition` of one signal sample (its skim columns or chunks), with
    the corrections' nominal weights.  ``truth_universe`` (``"data"``): also the bin averages
    of that universe's true A_i through the truth gate (``extra["coeff_truth"]``), for the
    measured-vs-truth comparison after the fit.  ``alternatives``: the same pass also fills the
    reweighted template of each :class:`AlternativeProduction` and its injected θ."""
    from wmnb import truth

    from ..templatefit.templates import _chunks, select_events

    binning, hb = recipe.binning, recipe.helicity
    templ = np.zeros((hb.n_bins, len(COMPONENTS), binning.nbins))
    ooa = np.zeros(binning.nbins)
    nominal = np.zeros(binning.nbins)
    sumw = np.zeros(hb.n_bins)
    asim = np.zeros((hb.n_bins, 5))
    atru = np.zeros((hb.n_bins, 5))
    alt = {a.name: np.zeros(binning.nbins) for a in alternatives}
    g_sum = {a.name: np.zeros(hb.n_bins) for a in alternatives}
    ul_sum = np.zeros(hb.n_bins)
    sumw_raw = np.zeros(hb.n_bins)
    for chunk in _chunks(chunks):
        sel, w, _ = select_events(recipe, chunk, sample, is_data=False, corrections=corrections)
        idx = binning.bin_index(sel)
        ok = idx >= 0
        fr = event_fractions(sel, sample)
        gb = hb.bin_index(sel["gen_qt"], sel["gen_y"])
        nominal += np.bincount(idx[ok], w[ok], binning.nbins)
        out = ok & (gb < 0)
        ooa += np.bincount(idx[out], w[out], binning.nbins)
        inside = gb >= 0
        flat = gb[ok & inside] * binning.nbins + idx[ok & inside]
        for ic in range(len(COMPONENTS)):
            templ[:, ic] += np.bincount(flat, (w * fr[ic])[ok & inside], hb.n_bins * binning.nbins
                                        ).reshape(hb.n_bins, binning.nbins)
        sumw += np.bincount(gb[inside], w[inside], hb.n_bins)
        sumw_raw += np.bincount(gb[inside], np.asarray(sel["weight"], float)[inside], hb.n_bins)
        reco_in = ok & inside
        ul_sum += np.bincount(gb[reco_in], (w * fr[0])[reco_in], hb.n_bins)
        for prod in alternatives:
            r = prod.event_weights(sel, sample, recipe)
            alt[prod.name] += np.bincount(idx[ok], (w * r)[ok], binning.nbins)
            g = prod.spectrum_factor(sel["gen_qt"], sel["gen_y"])
            g_sum[prod.name] += np.bincount(gb[reco_in], (w * fr[0] * g)[reco_in], hb.n_bins)
        a = simulation_coefficients(sel, sample)
        for i in range(5):
            asim[:, i] += np.bincount(gb[inside], (w * a[i])[inside], hb.n_bins)
        if truth_universe is not None:
            at = np.asarray(truth.angular_coefficients(
                truth_universe, BOSON_OF_SAMPLE[sample], sel["gen_qt"], sel["gen_y"],
                purpose="chapter 09: the unfolded A_i against the universe's truth (after the fit)"))
            for i in range(5):
                atru[:, i] += np.bincount(gb[inside], (w * at[i])[inside], hb.n_bins)
    safe = np.where(sumw > 0, sumw, 1.0)[:, None]
    dec = HelicityDecomposition(sample, templ.reshape(hb.n_bins, len(COMPONENTS), *binning.shape),
                                ooa.reshape(binning.shape), nominal.reshape(binning.shape), sumw, asim / safe)
    # what the corrections (chapter 06's q_T reweighting among them) did to each bin's yield
    dec.extra["correction_factor"] = np.where(sumw_raw > 0, sumw / np.where(sumw_raw > 0, sumw_raw, 1.0), 1.0)
    if truth_universe is not None:
        dec.extra["coeff_truth"] = atru / safe
    priors = np.array([recipe.prior(c) for c in COMPONENTS])
    for prod in alternatives:
        dec.alternatives[prod.name] = alt[prod.name].reshape(binning.shape)
        # the spectrum factor averaged over a bin's selected events with their unpolarised weight
        g_bar = np.where(ul_sum > 0, g_sum[prod.name] / np.where(ul_sum > 0, ul_sum, 1.0), 1.0)
        factor = g_bar[:, None] * np.concatenate([[1.0], 1.0 + prod.relative_shifts(recipe)])[None, :]
        dec.injected_theta[prod.name] = (factor - 1.0) / priors[None, :]
    return dec
