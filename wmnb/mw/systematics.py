"""The systematic uncertainties of the W-mass fit that this chapter owns, and the hook for others.

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

import numpy as np

from ..conventions import (LHE_PDF_CENTRAL, LHE_SCALE_NOMINAL, LHE_SCALE_PAIRS, LUMI_KAPPA, N_LHE_SCALE,
                           W_FIT_NORM_KAPPAS, W_FIT_PROCESSES, W_WIDTH_PDG_ERR, W_XSEC_KAPPA, lhe_pdf_index,
                           lhe_pdf_pairs)
from ..corrections import Variation
from ..templatefit.breitwigner import mass_weights

#: Simulated samples of the W selection and the fit process each becomes.
PROCESSES: dict[str, str] = W_FIT_PROCESSES
SIGNAL = ("wplus_munu", "wminus_munu")
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
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["qt_edges"] = [float(x) if np.isfinite(x) else "inf" for x in self.qt_edges]
        d["norm_kappas"] = dict(self.norm_kappas)
        return d


def _require(cols: Mapping[str, np.ndarray], name: str, sample: str, why: str) -> np.ndarray:
    if name not in cols:
        raise KeyError(f"sample {sample!r}: skim column {name!r} is missing; {why}")
    return np.asarray(cols[name])


def mass_factors(cols: Mapping[str, np.ndarray], config: MwConfig, shift_mev: float,
                 sample: str = "?") -> np.ndarray:
    """Weight factors moving the W mass by ``shift_mev`` (width following by Γ ∝ M³)."""
    m = _require(cols, "gen_mass", sample, "signal templates need the generator W mass (GeV)")
    return mass_weights(m, config.ref_mass_gev, config.ref_width_gev,
                        config.ref_mass_gev + shift_mev * 1e-3)


def builtin_variations(cols: Mapping[str, np.ndarray], sample: str,
                       config: MwConfig) -> Iterator[Variation]:
    """The chapter's own theory variations for one simulated sample (lazily, one at a time)."""
    if sample in SIGNAL:
        m = _require(cols, "gen_mass", sample, "signal templates need the generator W mass (GeV)")
        m0, g0 = config.ref_mass_gev, config.ref_width_gev
        dg = config.width_unc_mev * 1e-3
        yield Variation("widthW", "width",
                        mass_weights(m, m0, g0, m0, g0 + dg), mass_weights(m, m0, g0, m0, g0 - dg))
    if config.use_pdf and (sample in W_PRODUCTION or sample in Z_PRODUCTION) and "lhe_pdf" in cols:
        pdf = np.asarray(cols["lhe_pdf"])          # kept in its stored precision (it is large)
        if pdf.ndim != 2 or pdf.shape[1] < 3 or pdf.shape[1] % 2 == 0:
            raise ValueError(f"sample {sample!r}: lhe_pdf must be [n, 1 + 2k] (central + Hessian pairs), "
                             f"got shape {pdf.shape}")
        c0 = pdf[:, LHE_PDF_CENTRAL].astype(np.float64)
        central = np.where(c0 != 0, c0, 1.0)
        for k in range(lhe_pdf_pairs(pdf.shape[1])):
            yield Variation(f"pdf{k + 1}", "pdf", pdf[:, lhe_pdf_index(k, True)] / central,
                            pdf[:, lhe_pdf_index(k, False)] / central)
    if config.use_scales and sample in W_PRODUCTION and "lhe_scale" in cols:
        sc = np.asarray(cols["lhe_scale"], dtype=np.float64)
        if sc.ndim != 2 or sc.shape[1] != N_LHE_SCALE:
            raise ValueError(f"sample {sample!r}: lhe_scale must be [n, {N_LHE_SCALE}] (NanoAOD order), got {sc.shape}")
        qt = _require(cols, "gen_qt", sample, "scale variations are decorrelated in generator q_T bins")
        nominal = np.where(sc[:, LHE_SCALE_NOMINAL] != 0, sc[:, LHE_SCALE_NOMINAL], 1.0)
        ibin = np.digitize(qt, config.qt_edges[1:-1])
        for j in range(len(config.qt_edges) - 1):
            inbin = ibin == j
            for kind, (iu, idn) in LHE_SCALE_PAIRS.items():
                up = np.where(inbin, sc[:, iu] / nominal, 1.0)
                dn = np.where(inbin, sc[:, idn] / nominal, 1.0)
                yield Variation(f"scale{kind}_qT{j}", "scales", up, dn)
