"""The m_T cross-check of m_W (chapter 04; beyond the paper, which deferred m_T).

Three questions, each answered by a fit with the shared template-fit layer (:mod:`wmnb.templatefit`:
templates from a recipe here, the shared fitter, data and simulation statistics only):

1. what the recoil calibration does to the paper's m_W: the muon (eta, pT, charge) fit of the data
   with and without the recoil correction (``mw_shift_uncalibrated_mev``, with minus without);
2. m_W from the transverse mass (40-120 GeV) with the calibrated PF recoil and with the DNN's recoil
   estimate (:class:`DNNRecoil`), as differences from the muon-pT fit of the same data (m_W stays
   blind: every number here is a difference);
3. the seed's figure of merit: the m_W bias per unit of mis-modelled W q_T.  The simulated W q_T
   spectrum is tilted by :data:`TILT` (+10 % per 10 GeV about :data:`TILT_PIVOT_GEV`, normalised),
   the tilted simulation is fitted as pseudo-data with the nominal templates (signal normalisation
   free), and the bias is quoted per 1 % per 10 GeV.  The muon pT moves with the W's transverse boost
   (first order in q_T); the m_T Jacobian peak is invariant under transverse boosts to first order
   and trades that sensitivity for one to the recoil calibration.

One pipeline pass fills all observables: the binning has the muon's (eta, pT, charge) and m_T as
axes (m_T's last bin collecting everything above 120 GeV), and each fit sums over the axes it
does not use.  The upstream corrections act with their nominal effect only (:class:`NominalOnly`:
their variations are chapter 08's business).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..corrections import ColumnVariation, Correction, SampleInfo, Variation
from ..templatefit.binning import Axis, Binning
from ..templatefit.breitwigner import mass_weights
from ..templatefit.fitting import run_fit
from ..templatefit.model import make_spec
from ..templatefit.templates import ProcessTemplate, Shape, TemplateSet, build_templates

SIGNAL = ("wplus_munu", "wminus_munu")
#: the m_T axis: 2 GeV bins from 40 to 120 GeV, then one bin for the rest (kept for the pT fits)
MT_EDGES = np.concatenate([np.arange(40.0, 121.0, 2.0), [1.0e4]])
MT_FIT_MAX = 120.0
#: the q_T tilt of the figure of merit: weight 1 + TILT (q_T − pivot) / 10 GeV, normalised
TILT = 0.10
TILT_PIVOT_GEV = 10.0
TILT_NUISANCE = "qtTilt"


def cross_check_binning(n_eta: int = 24, pt_range: tuple[float, float] = (26.0, 56.0), n_pt: int = 30) -> Binning:
    """(eta, pT, charge, m_T) for the cross-check fits: coarser than the paper's in eta (a
    statistics-only fit needs no fine eta bins), the same pT window."""
    return Binning(Axis("eta", np.linspace(-2.4, 2.4, n_eta + 1), "mu_eta", r"$\eta^\mu$"),
                   Axis("pt", np.linspace(*pt_range, n_pt + 1), "mu_pt", r"$p_T^\mu$ [GeV]"),
                   Axis("charge", np.array([-2.0, 0.0, 2.0]), "mu_charge", "charge", allowed=(-1.0, 1.0)),
                   Axis("mt", MT_EDGES, "mt", r"$m_T$ [GeV]"))


class NominalOnly(Correction):
    """A published correction with its nominal effect and none of its variations."""

    def __init__(self, inner: Correction) -> None:
        self.inner = inner
        self.name, self.kinds, self.supersedes = inner.name, inner.kinds, inner.supersedes

    def applies_to(self, sample: SampleInfo) -> bool:
        return self.inner.applies_to(sample)

    def correct(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> None:
        self.inner.correct(columns, sample)

    def nominal_factor(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> np.ndarray | None:
        return self.inner.nominal_factor(columns, sample)

    def iter_variations(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> Iterator[Variation]:
        return iter(())

    def column_variations(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> Iterator[ColumnVariation]:
        return iter(())

    def templates(self, **context: Any) -> dict[str, Any]:
        return self.inner.templates(**context)


class DNNRecoil(Correction):
    """The recoil replaced by the DNN's estimate of the true recoil (:func:`wmnb.recoil.dnn.corrected_recoil`),
    in data and every simulated sample alike: the m_T of the DNN cross-check."""

    name = "recoil_dnn"
    kinds = ("muon",)

    def __init__(self, model: Any, chunk: int = 500_000) -> None:
        self.model = model
        self.chunk = chunk

    def applies_to(self, sample: SampleInfo) -> bool:
        return sample.selection == "w"

    def correct(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> None:
        from . import dnn

        n = len(columns["ut_x"])
        ux, uy = np.empty(n), np.empty(n)
        for s in range(0, n, self.chunk):
            part = {k: np.asarray(columns[k])[s:s + self.chunk] for k in dnn.FEATURES}
            ux[s:s + self.chunk], uy[s:s + self.chunk] = dnn.corrected_recoil(part, self.model.predict(dnn.features(part)))
        columns["ut_x"], columns["ut_y"] = ux, uy


def tilt_factors(qt: np.ndarray, tilt: float = TILT, pivot: float = TILT_PIVOT_GEV) -> np.ndarray:
    """1 + tilt (q_T − pivot) / 10 GeV, floored at 0.05 (a weight, not normalised)."""
    return np.maximum(1.0 + tilt * (np.asarray(qt, np.float64) - pivot) / 10.0, 0.05)


@dataclass(frozen=True)
class CrossCheckRecipe:
    """The cross-check fits for :mod:`wmnb.templatefit` (a :class:`~wmnb.templatefit.templates.TemplateRecipe`):
    the W selection, W+ and W− as the signal, BW mass weights, and the q_T tilt as the one
    variation of the signal (normalised over each sample's selected events)."""

    ref_mass_gev: float
    ref_width_gev: float
    binning: Binning = field(default_factory=cross_check_binning)
    config: Any = None
    selection: str = "w"
    signal: tuple[str, ...] = SIGNAL
    required: tuple[str, ...] = ("mu_pt", "mu_eta", "mu_phi", "mu_charge", "mu_iso", "met_pt", "met_phi", "veto_pass")
    mass_step_mev: float = 100.0
    bb_scale: float = 1.0

    @property
    def mass_merge(self) -> tuple[str, int]:
        return ("eta", 1)

    @property
    def poi_layouts(self) -> Mapping[str, Sequence[tuple[str, str]]]:
        return {"mass": [("mass", "all")]}

    def process_name(self, sample: str) -> str:
        return sample

    def builtin_variations(self, cols: Mapping[str, np.ndarray], sample: str) -> Iterator[Variation]:
        if sample in self.signal:
            # the boson q_T as the generator has it (the tilt models the production, not the detector)
            f = tilt_factors(cols["gen_qt"])
            yield Variation(TILT_NUISANCE, "qtTilt", f / np.mean(f))

    def mass_factors(self, cols: Mapping[str, np.ndarray], shift_mev: float, sample: str) -> np.ndarray:
        return mass_weights(np.asarray(cols["gen_mass"]), self.ref_mass_gev, self.ref_width_gev,
                            self.ref_mass_gev + shift_mev * 1e-3)

    def builtin_sources(self) -> list[dict[str, Any]]:
        return [{"source": "q_T tilt", "kind": "builtin", "group": "qtTilt",
                 "detail": f"{TILT:+.0%} per 10 GeV (figure of merit only)"}]

    def region_mask(self, region: str) -> np.ndarray:
        return np.ones(self.binning.shape, bool)

    def norms(self, process: str, source: str, float_norm: bool) -> list[tuple[str, float, str]]:
        return []


#: the observables: name -> (axes summed away, whether m_T is restricted to the fit range)
OBSERVABLES = {"muon_pt": (("mt",), False), "mt": (("eta", "pt", "charge"), True)}


def project(ts: TemplateSet, observable: str) -> TemplateSet:
    """The templates of one observable of :data:`OBSERVABLES`: the other axes summed, m_T cut
    to the fit range where it is the observable."""
    summed, cut = OBSERVABLES[observable]
    b = ts.binning
    keep_axes = [a for a in b.axes if a.name not in summed]
    pos = tuple(i for i, a in enumerate(b.axes) if a.name in summed)
    take: Any = slice(None)
    if cut:
        n_fit = int(np.searchsorted(MT_EDGES, MT_FIT_MAX))
        keep_axes = [dataclasses.replace(a, edges=a.edges[:n_fit + 1]) if a.name == "mt" else a for a in keep_axes]
        take = (..., slice(0, n_fit))

    def p(a: np.ndarray) -> np.ndarray:
        out = np.asarray(a).sum(axis=pos)
        return out[take] if cut else out

    processes = {}
    for name, t in ts.processes.items():
        shapes = {}
        for nuis, sh in t.shapes.items():
            up, down = sh.dense(t.nominal)
            shapes[nuis] = Shape(sh.group, p(up), None if down is None else p(down))
        processes[name] = ProcessTemplate(name, p(t.nominal), p(t.sumw2), shapes, t.source)
    recipe = dataclasses.replace(ts.recipe, binning=Binning(*keep_axes))   # type: ignore[type-var]
    data = p(ts.data)
    return TemplateSet(data, processes, {k: p(v) for k, v in ts.mass_up.items()},
                       {k: p(v) for k, v in ts.mass_down.items()}, recipe, float(data.sum()))


def fit_shift(ts: TemplateSet, data: np.ndarray | None = None) -> tuple[float, float]:
    """(m_W − the simulation's m_W, its error), MeV: data (or ``data``) and simulation
    statistics, the signal normalisation free.  Only differences of these leave the chapter."""
    fit = run_fit(make_spec(ts, data=data, systematics=False, mc_stat=True, float_norm=True), keep_raw=False)
    return float(fit.values["mass"]), float(fit.errors["mass"])


def tilt_bias(ts: TemplateSet) -> float:
    """m_W bias (MeV) per 1 % per 10 GeV of q_T tilt: the nominal templates fitted to the tilted
    simulation, minus fitted to the nominal one.  Both are the same simulated events, so the
    difference carries no statistical fluctuation of the data."""
    tilted = sum((t.varied(TILT_NUISANCE)[0] if TILT_NUISANCE in t.shapes else t.nominal
                  for t in ts.processes.values()), start=np.zeros(ts.binning.shape))
    shift, _ = fit_shift(ts, tilted)
    ref, _ = fit_shift(ts, ts.prediction())
    return (shift - ref) / (100.0 * TILT)


def build(profile: str, corrections: Sequence[Correction], recipe: CrossCheckRecipe, chunk_rows: int = 500_000
          ) -> TemplateSet:
    """The cross-check templates of a profile's W skims (every sample of chapter 01's W selection
    but the closure data) through the pipeline with ``corrections`` (nominal effect only), the
    simulation scaled to the data's luminosity."""
    from ..engine.skims import list_skim_samples, mc_lumi_scale, skim_chunks

    scale = mc_lumi_scale(profile, "w")
    skip = ("lhe_pdf", "lhe_scale")
    samples = {s: skim_chunks(profile, "w", s, chunk_rows, exclude=skip, weight_scale=scale)
               for s in list_skim_samples(profile, "w") if s not in ("data", "closure")}
    return build_templates(recipe, samples, skim_chunks(profile, "w", "data", chunk_rows, exclude=skip),
                           corrections=[NominalOnly(c) for c in corrections])


__all__ = ["MT_EDGES", "MT_FIT_MAX", "OBSERVABLES", "SIGNAL", "TILT", "TILT_NUISANCE", "TILT_PIVOT_GEV",
           "CrossCheckRecipe", "DNNRecoil", "NominalOnly", "build", "cross_check_binning", "fit_shift",
           "project", "tilt_bias", "tilt_factors"]
