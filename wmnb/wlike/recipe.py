"""The W-like m_Z fit as a recipe of the shared template-fit layer.

Z→μμ events of chapter 01's ``wlike`` skim: the template muon (positive in odd events, negative
in even ones; the reversed choice with :attr:`WLikeRecipe.reversed_parity`) is binned in
(eta, pT, charge) like the W's muon, with pT up to 60 GeV (48 × 34 × 2 = 3264 bins); the other
muon is invisible (added to the MET, which the recoil correction recomputes).  What is
particular to the W-like fit is said here; the events pass through the same correction pipeline,
template builder, model and fitter as the W's.

Nuisances of its own (before the corrections add theirs): the Z width (PDG ± 2.3 MeV), the
simulation's PDF Hessian pairs and q_T-binned μR/μF variations (both superseded by chapter 06's
theory correction), luminosity, the Z production cross section (3 %, on Z→μμ and Z→ττ) and the
top and diboson normalisations.  No W mass or width nuisance: the W backgrounds are negligible
(the paper's Supplementary Table 2), and no nonprompt process (purity > 99.5 %,
:func:`wmnb.wlike.chapter.purity_table`).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..conventions import LUMI_KAPPA, W_FIT_NORM_KAPPAS, W_FIT_PROCESSES, W_XSEC_KAPPA, Z_WIDTH_PDG_ERR
from ..corrections import Variation
from ..engine.selections import WLIKE_PT_RANGE
from ..templatefit.binning import W_CHARGE_EDGES, W_ETA_EDGES, Axis, Binning
from ..templatefit.lhe import pdf_variations, scale_variations, width_variation
from ..templatefit.recipes import BosonMassRecipe
from ..templatefit.templates import config_record

#: The observable: the template muon's eta (48 × 0.1), pT (34 × 1 GeV in 26–60) and charge.
WLIKE_PT_EDGES = np.linspace(WLIKE_PT_RANGE[0], WLIKE_PT_RANGE[1], int(WLIKE_PT_RANGE[1] - WLIKE_PT_RANGE[0]) + 1)
WLIKE_BINNING = Binning(Axis("eta", W_ETA_EDGES, "mu_eta", r"Template muon $\eta$"),
                        Axis("pt", WLIKE_PT_EDGES, "mu_pt", r"Template muon $p_T$ [GeV]"),
                        Axis("charge", W_CHARGE_EDGES, "mu_charge", "Template muon charge", allowed=(-1, 1)))

SIGNAL = ("z_mumu",)
#: Simulated samples of the fit and the fit process each becomes.
FIT_PROCESSES: dict[str, str] = {s: W_FIT_PROCESSES[s] for s in ("z_mumu", "z_tautau", "ttbar", "diboson")}
#: Samples that are shown in the purity table but not fitted (their share is below 0.5 %).
NEGLIGIBLE_SAMPLES = ("w_taunu", "wplus_munu", "wminus_munu", "qcd")
Z_PRODUCTION = ("z_mumu", "z_tautau")

BUILTIN_SOURCES: list[dict[str, Any]] = [
    {"source": "m_Z (POI)", "kind": "builtin", "group": "massZ", "detail": "BW reweighting, ±100 MeV, Γ∝M³"},
    {"source": "Z width", "kind": "builtin", "group": "width", "detail": "Γ_Z ± 2.3 MeV (PDG)"},
    {"source": "PDF", "kind": "builtin", "group": "pdf", "detail": "Hessian pairs of lhe_pdf"},
    {"source": "μR/μF scales", "kind": "builtin", "group": "scales", "detail": "per q_T bin (Z production)"},
    {"source": "luminosity", "kind": "builtin", "group": "lumi", "detail": "1.2 % log-normal"},
    {"source": "process normalisations", "kind": "builtin", "group": "normalisation",
     "detail": "Z production 3 %, top 6 %, diboson 16 %"},
    {"source": "MC statistics", "kind": "builtin", "group": "binByBinStat", "detail": "BB-lite × 1.25 (a W-type fit)"},
]


@dataclass(frozen=True)
class WLikeConfig:
    """Everything the W-like model depends on besides the inputs (recorded in summary.json)."""

    ref_mass_gev: float                 # m_Z the simulation was generated with
    ref_width_gev: float                # Γ_Z the simulation was generated with
    mass_step_mev: float = 100.0        # POI θ = 1 ⇔ +mass_step_mev
    width_unc_mev: float = Z_WIDTH_PDG_ERR * 1e3
    qt_edges: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 30.0, np.inf)
    lumi_kappa: float = LUMI_KAPPA
    z_xsec_kappa: float = W_XSEC_KAPPA  # the same 3 % as the W production cross section
    norm_kappas: Mapping[str, float] = field(
        default_factory=lambda: {p: W_FIT_NORM_KAPPAS[p] for p in ("top", "diboson")})
    #: the paper's Barlow–Beeston-lite scale of the W-type fits (1.26; 1.0 for dilepton fits):
    #: the template muon's (eta, pT) bins are as finely populated as the W's, so the W's 1.25
    bb_scale: float = 1.25
    mass_eta_merge: int = 4
    use_pdf: bool = True
    use_scales: bool = True

    def to_dict(self) -> dict:
        """JSON-friendly record of the configuration."""
        return config_record(self)


@dataclass(frozen=True)
class WLikeRecipe(BosonMassRecipe):
    """The W-like m_Z fit for :mod:`wmnb.templatefit` (a :class:`~wmnb.templatefit.templates.TemplateRecipe`)."""

    config: WLikeConfig
    reversed_parity: bool = False
    selection: str = "wlike"
    binning: Binning = WLIKE_BINNING
    signal: tuple[str, ...] = SIGNAL
    required: tuple[str, ...] = ("mu_pt", "mu_eta", "mu_phi", "mu_charge", "mu_iso", "mu_trig", "mu2_pt",
                                 "mu2_eta", "mu2_phi", "mu2_charge", "mu2_iso", "mass", "met_pt", "met_phi",
                                 "veto_pass", "event")

    def process_name(self, sample: str) -> str:
        return FIT_PROCESSES.get(sample, sample)

    def builtin_variations(self, cols: Mapping[str, np.ndarray], sample: str) -> Iterator[Variation]:
        cfg = self.config
        if sample in SIGNAL:
            yield width_variation(cols, sample, "widthZ", cfg.ref_mass_gev, cfg.ref_width_gev, cfg.width_unc_mev * 1e-3)
        if sample in Z_PRODUCTION:
            if cfg.use_pdf:
                yield from pdf_variations(cols, sample)
            if cfg.use_scales:
                yield from scale_variations(cols, sample, cfg.qt_edges)

    def builtin_sources(self) -> list[dict[str, Any]]:
        return [dict(row) for row in BUILTIN_SOURCES]

    def norms(self, process: str, source: str, float_norm: bool) -> list[tuple[str, float, str]]:
        cfg = self.config
        if source != "simulation":
            return []
        out = [("lumi", cfg.lumi_kappa, "lumi")]
        if process in cfg.norm_kappas:
            out.append((f"norm_{process}", cfg.norm_kappas[process], "normalisation"))
        if process in Z_PRODUCTION and cfg.z_xsec_kappa and not float_norm:
            out.append(("norm_zxsec", cfg.z_xsec_kappa, "normalisation"))
        return out
