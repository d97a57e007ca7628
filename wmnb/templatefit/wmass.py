"""The W-mass fit as a recipe of the template-fit layer: what chapters 08 (m_W) and 09 (helicity
fit) share — the ``w`` selection, the (eta, pT, charge) binning, the processes, the recipe's own
nuisances, the normalisations, and the hook through which every correction enters.

Built in (available now, from the simulation itself):

=================  ============================================================  ===============
group              what                                                          nuisances
=================  ============================================================  ===============
``massW``          POI: ±100 MeV Breit–Wigner reweighting (θ = 1 ⇔ +100 MeV)     1 (free)
``width``          Γ_W ± :attr:`MwConfig.width_unc_mev` (line-shape reweighting)  1
``pdf``            Hessian eigenvector pairs of ``lhe_pdf`` (W and Z processes)    (N − 1) / 2
``scales``         μR, μF, μRμF from ``lhe_scale``, one set per q_T bin (W)       3 × n(q_T bins)
``lumi``           luminosity, log-normal 1.2 % on every simulated process          1
``normalisation``  process cross sections (:attr:`MwConfig.norm_kappas`); the W   one per process
                   production cross section (W⁺, W⁻, W→τν together) carries
                   :attr:`MwConfig.w_xsec_kappa` (chapter 06's q_T correction is a
                   shape and leaves the rate; the paper's fit has no free W norm)
``binByBinStat``   MC statistics, Barlow–Beeston-lite scaled by 1.25 (in the fitter) one per bin
=================  ============================================================  ===============

Scale variations are decorrelated across q_T bins by applying the LHE weight only to events of
one generator q_T bin.  When chapter 06 has run, its published theory correction *supersedes*
the built-in ``pdf`` and ``scales`` groups (its manifest says so and the template builder drops
them): the fit then carries its ``pTV`` (q_T prediction), ``angularCoeffs`` (μR/μF per A_i in
q_T bins, A1/A3 handles), ``pdf`` and ``EW`` nuisances instead, through the hook below.

**The hook.**  Every other chapter contributes through :mod:`wmnb.corrections`:
``weight`` corrections multiply the event weight, and each of their ``WeightSet.variations``
(paired by :func:`wmnb.corrections.pair_variations`) becomes a shape nuisance of the group the
correction declares (else the correction's name), through the one pipeline,
:func:`wmnb.engine.pipeline.run_pipeline`; ``muon`` corrections change the muon kinematics before
binning; ``template`` corrections replace a process template (e.g. the data-driven nonprompt
background of chapter 05 replaces ``qcd``).  :func:`active_sources` lists what is in force.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..conventions import LUMI_KAPPA, W_FIT_NORM_KAPPAS, W_FIT_PROCESSES, W_WIDTH_PDG_ERR, W_XSEC_KAPPA
from ..corrections import Variation
from .binning import W_BINNING, Binning
from .breitwigner import mass_weights
from .lhe import pdf_variations, require, scale_variations, width_variation
from .recipes import BosonMassRecipe
from .templates import config_record

#: Simulated samples of the W selection and the fit process each becomes.
PROCESSES: dict[str, str] = W_FIT_PROCESSES
SIGNAL = ("wplus_munu", "wminus_munu")
#: Processes whose templates follow m_W (the mass POI and the width): the signal and W→τν,
#: which has the same W line shape (the audit found the mass variation missing on it)
MASS_PROCESSES = SIGNAL + ("w_taunu",)
#: Processes made by W production: they share the W theory nuisances (PDF, scales).
W_PRODUCTION = ("wplus_munu", "wminus_munu", "w_taunu")
#: Processes made by Z production: they share the PDF nuisances with W.
Z_PRODUCTION = ("z_mumu", "z_tautau")



@dataclass(frozen=True)
class MwConfig:
    """Everything the chapter's model depends on besides the inputs (all recorded in summary.json)."""

    ref_mass_gev: float                 # m_W the simulation was generated with
    ref_width_gev: float                # Γ_W the simulation was generated with
    mass_step_mev: float = 100.0        # POI θ = 1 ⇔ +mass_step_mev
    width_unc_mev: float = W_WIDTH_PDG_ERR * 1e3   # PDG uncertainty of Γ_W
    qt_edges: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 30.0, np.inf)
    lumi_kappa: float = LUMI_KAPPA
    w_xsec_kappa: float = W_XSEC_KAPPA
    norm_kappas: Mapping[str, float] = field(default_factory=lambda: dict(W_FIT_NORM_KAPPAS))
    bb_scale: float = 1.25
    mass_eta_merge: int = 4             # eta bins over which the relative mass variation is averaged
    use_pdf: bool = True
    use_scales: bool = True

    def to_dict(self) -> dict:
        """JSON-friendly record of the configuration."""
        return config_record(self)


def simulation_config(**overrides: Any) -> MwConfig:
    """:class:`MwConfig` with the W mass and width the simulation was generated with (its card
    is public, as a generator configuration is)."""
    from wmnb import truth

    phys = truth.simulation("physics")
    return MwConfig(ref_mass_gev=phys["mw_mev"] * 1e-3, ref_width_gev=phys["gw_mev"] * 1e-3, **overrides)


def mass_factors(cols: Mapping[str, np.ndarray], config: MwConfig, shift_mev: float,
                 sample: str = "?") -> np.ndarray:
    """Weight factors moving the W mass by ``shift_mev`` (width following by Γ ∝ M³)."""
    m = require(cols, "gen_mass", sample, "signal templates need the generator W mass (GeV)")
    return mass_weights(m, config.ref_mass_gev, config.ref_width_gev,
                        config.ref_mass_gev + shift_mev * 1e-3)


def builtin_variations(cols: Mapping[str, np.ndarray], sample: str,
                       config: MwConfig) -> Iterator[Variation]:
    """The chapter's own theory variations for one simulated sample (lazily, one at a time)."""
    if sample in MASS_PROCESSES:
        yield width_variation(cols, sample, "widthW", config.ref_mass_gev, config.ref_width_gev,
                              config.width_unc_mev * 1e-3)
    if config.use_pdf and (sample in W_PRODUCTION or sample in Z_PRODUCTION):
        yield from pdf_variations(cols, sample)
    if config.use_scales and sample in W_PRODUCTION:
        yield from scale_variations(cols, sample, config.qt_edges)


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
    binning: Binning = W_BINNING
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
