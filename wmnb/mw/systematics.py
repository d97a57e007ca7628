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
                   :attr:`MwConfig.w_xsec_kappa` until chapter 06 provides the theory
                   model of the W rate (the paper's nominal fit has no free W norm)
``binByBinStat``   MC statistics, Barlow–Beeston-lite scaled by 1.25 (in the fitter) one per bin
=================  ============================================================  ===============

Scale variations are decorrelated across q_T bins by applying the LHE weight only to events of
one generator q_T bin.  They are *not* yet decorrelated across helicity components: that needs
the angular-coefficient tables of chapter 06, which will publish its ``angularCoeffs``
variations through the correction hook below (no edit of this chapter needed).

**The hook.**  Every other chapter contributes through :mod:`wmnb.corrections`:
``weight`` corrections multiply the event weight, and each of their ``WeightSet.variations``
(``<name>Up``/``<name>Down`` pairs, or a single one-sided ``<name>``) becomes a shape nuisance of
the group the correction declares; ``muon`` corrections change the muon kinematics before
binning; ``template`` corrections replace a process template (e.g. the data-driven nonprompt
background of chapter 05 replaces ``qcd``).  :func:`active_sources` lists what is in force.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from .breitwigner import mass_weights

#: Simulated samples of the W selection and the fit process each becomes.
PROCESSES: dict[str, str] = {
    "wplus_munu": "wplus_munu", "wminus_munu": "wminus_munu",
    "z_mumu": "z_mumu", "z_tautau": "z_tautau", "w_taunu": "w_taunu",
    "ttbar": "top", "diboson": "diboson", "qcd": "nonprompt",
}
SIGNAL = ("wplus_munu", "wminus_munu")
#: Processes made by W production: they share the W theory nuisances (PDF, scales).
W_PRODUCTION = ("wplus_munu", "wminus_munu", "w_taunu")
#: Processes made by Z production: they share the PDF nuisances with W.
Z_PRODUCTION = ("z_mumu", "z_tautau")

# NanoAOD LHEScaleWeight order: index 3*iMuR + iMuF with 0 = x0.5, 1 = x1, 2 = x2; 4 nominal.
SCALE_PAIRS: dict[str, tuple[int, int]] = {"MuR": (7, 1), "MuF": (5, 3), "MuRMuF": (8, 0)}
SCALE_NOMINAL = 4


@dataclass(frozen=True)
class MwConfig:
    """Everything the chapter's model depends on besides the inputs (all recorded in summary.json)."""

    ref_mass_gev: float                 # m_W the simulation was generated with
    ref_width_gev: float                # Γ_W the simulation was generated with
    mass_step_mev: float = 100.0        # POI θ = 1 ⇔ +mass_step_mev
    width_unc_mev: float = 42.0         # PDG uncertainty of Γ_W
    qt_edges: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 30.0, np.inf)
    lumi_kappa: float = 1.012
    w_xsec_kappa: float = 1.03
    norm_kappas: Mapping[str, float] = field(default_factory=lambda: {
        "z_mumu": 1.03, "z_tautau": 1.03, "top": 1.06, "diboson": 1.16, "nonprompt": 1.30})
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


@dataclass(frozen=True)
class Variation:
    """One shape nuisance on one process: weight *factors* (relative to nominal) up and down."""

    nuisance: str
    group: str
    up: np.ndarray
    down: np.ndarray | None


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
        c0 = pdf[:, 0].astype(np.float64)
        central = np.where(c0 != 0, c0, 1.0)
        for k in range((pdf.shape[1] - 1) // 2):
            yield Variation(f"pdf{k + 1}", "pdf", pdf[:, 1 + 2 * k] / central, pdf[:, 2 + 2 * k] / central)
    if config.use_scales and sample in W_PRODUCTION and "lhe_scale" in cols:
        sc = np.asarray(cols["lhe_scale"], dtype=np.float64)
        if sc.ndim != 2 or sc.shape[1] != 9:
            raise ValueError(f"sample {sample!r}: lhe_scale must be [n, 9] (NanoAOD order), got {sc.shape}")
        qt = _require(cols, "gen_qt", sample, "scale variations are decorrelated in generator q_T bins")
        nominal = np.where(sc[:, SCALE_NOMINAL] != 0, sc[:, SCALE_NOMINAL], 1.0)
        ibin = np.digitize(qt, config.qt_edges[1:-1])
        for j in range(len(config.qt_edges) - 1):
            inbin = ibin == j
            for kind, (iu, idn) in SCALE_PAIRS.items():
                up = np.where(inbin, sc[:, iu] / nominal, 1.0)
                dn = np.where(inbin, sc[:, idn] / nominal, 1.0)
                yield Variation(f"scale{kind}_qT{j}", "scales", up, dn)


def correction_variations(wset, correction_name: str) -> Iterator[Variation]:
    """Shape nuisances from a published weight correction's :class:`~wmnb.corrections.WeightSet`.

    The set's ``variations`` hold the *full* varied factor replacing ``nominal``; here they become
    factors relative to the nominal factor.  ``<x>Up``/``<x>Down`` pair up into nuisance ``x``;
    a lone ``<x>Up``/``<x>Down`` or any other name is one-sided (the fitter symmetrises it).  The nuisance's group is
    ``wset.groups[<x>]`` (falling back to the correction's name).
    """
    nominal = np.ones(1) if wset.nominal is None else np.asarray(wset.nominal, dtype=np.float64)
    safe_nom = np.where(nominal != 0, nominal, 1.0)
    for name in wset.variations:
        base, down_name = name, None
        if name.endswith("Up"):
            base = name[:-2]
            down_name = base + "Down" if base + "Down" in wset.variations else None
        elif name.endswith("Down"):
            if name[:-4] + "Up" in wset.variations:
                continue                  # handled with its Up partner
            base = name[:-4]              # a lone Down: one-sided (sign is irrelevant once symmetrised)
        up = np.asarray(wset.variations[name], dtype=np.float64) / safe_nom
        down = None if down_name is None else np.asarray(wset.variations[down_name], dtype=np.float64) / safe_nom
        yield Variation(base, wset.groups.get(base, correction_name), up, down)

