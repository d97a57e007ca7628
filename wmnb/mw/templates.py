"""Chapter 08's templates: the W-mass fit as a recipe of the shared template-fit layer.

Everything generic (filling, the correction pipeline, mass variations, template corrections,
smoothing) lives in :mod:`wmnb.templatefit.templates`; this module says what is particular to
the W-mass fit: the ``w`` selection, the (eta, pT, charge) binning, the two signal processes,
the chapter's own nuisances (:mod:`wmnb.mw.systematics`), the cross-check regions, the POI
layouts and the normalisation uncertainties.  :func:`build_templates` keeps the chapter's
call signature.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..corrections import Variation
from ..templatefit import templates as _tf
from ..templatefit.binning import MASS_POI_LAYOUTS, Binning
from ..templatefit.recipes import BosonMassRecipe
from ..templatefit.templates import MAX_VARIATION, ProcessTemplate, TemplateSet
from . import binning
from .systematics import MASS_PROCESSES, PROCESSES, SIGNAL, W_PRODUCTION, MwConfig, builtin_variations

#: POI layouts: name -> list of (POI name, region of the bins where the POI moves the signal).
POI_LAYOUTS: dict[str, list[tuple[str, str]]] = MASS_POI_LAYOUTS

#: The sources the chapter's own recipe puts into every fit (shown in the chapter).
BUILTIN_SOURCES: list[dict[str, Any]] = [
    {"source": "mass (POI)", "kind": "builtin", "group": "massW", "detail": "BW reweighting, ±100 MeV, Γ∝M³"},
    {"source": "W width", "kind": "builtin", "group": "width", "detail": "Γ_W ± width_unc_mev"},
    {"source": "PDF", "kind": "builtin", "group": "pdf", "detail": "Hessian pairs of lhe_pdf"},
    {"source": "μR/μF scales", "kind": "builtin", "group": "scales", "detail": "per q_T bin (W production)"},
    {"source": "luminosity", "kind": "builtin", "group": "lumi", "detail": "1.2 % log-normal"},
    {"source": "process normalisations", "kind": "builtin", "group": "normalisation",
     "detail": "Z, top, diboson; the simulated nonprompt's 30 % until chapter 05's template (with its own) replaces it"},
    {"source": "MC statistics", "kind": "builtin", "group": "binByBinStat", "detail": "BB-lite × 1.25"},
]


@dataclass(frozen=True)
class WMassRecipe(BosonMassRecipe):
    """The W-mass fit for :mod:`wmnb.templatefit` (a :class:`~wmnb.templatefit.templates.TemplateRecipe`)."""

    config: MwConfig
    selection: str = "w"
    binning: Binning = binning.W_BINNING
    signal: tuple[str, ...] = MASS_PROCESSES    # the fit processes carrying the mass POI
    required: tuple[str, ...] = ("mu_pt", "mu_eta", "mu_phi", "mu_charge", "mu_iso", "met_pt", "met_phi",
                                 "veto_pass")

    def process_name(self, sample: str) -> str:
        return PROCESSES.get(sample, sample)

    def builtin_variations(self, cols: Mapping[str, np.ndarray], sample: str) -> Iterator[Variation]:
        return builtin_variations(cols, sample, self.config)

    def builtin_sources(self) -> list[dict[str, Any]]:
        return [dict(row) for row in BUILTIN_SOURCES]

    def norms(self, process: str, source: str, float_norm: bool) -> list[tuple[str, float, str]]:
        cfg = self.config
        out: list[tuple[str, float, str]] = []
        if source == "simulation":
            out.append(("lumi", cfg.lumi_kappa, "lumi"))
        # a template published by a correction (the data-driven nonprompt) brings its own
        # normalisation nuisance: the simulation's stand-in prior would count it twice
        if process in cfg.norm_kappas and source == "simulation":
            out.append((f"norm_{process}", cfg.norm_kappas[process], "normalisation"))
        if process in W_PRODUCTION and cfg.w_xsec_kappa and not float_norm:
            out.append(("norm_wxsec", cfg.w_xsec_kappa, "normalisation"))
        return out


def build_templates(samples: Mapping[str, _tf.SampleInput], data: _tf.SampleInput | np.ndarray,
                    config: MwConfig, corrections: Sequence[Any] = (),
                    mass_shifts_mev: Iterable[float] = ()) -> TemplateSet:
    """All templates of the W-mass fit from per-sample columns or chunks of them (``samples``:
    name -> columns or :class:`wmnb.engine.SkimChunks`); ``data`` is a data sample's columns
    (or chunks) or an already filled histogram of shape ``SHAPE``."""
    missing = [s for s in SIGNAL if s not in samples]
    if missing:
        raise KeyError(f"signal samples {missing} are missing: the W-mass fit needs both charges")
    # W→τν follows m_W when it is there (toy universes of the tests may lack it)
    recipe = WMassRecipe(config, signal=tuple(p for p in MASS_PROCESSES if p in samples))
    return _tf.build_templates(recipe, samples, data, corrections, mass_shifts_mev)


def smoothed_mass_variation(ts: TemplateSet, eta_merge: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """±100 MeV signal templates with the relative variation averaged over ``eta_merge`` eta bins
    (see :func:`wmnb.templatefit.templates.smoothed_mass_variation`)."""
    return _tf.smoothed_mass_variation(ts, eta_merge)


__all__ = ["BUILTIN_SOURCES", "MAX_VARIATION", "POI_LAYOUTS", "ProcessTemplate", "TemplateSet", "WMassRecipe",
           "build_templates", "smoothed_mass_variation"]
