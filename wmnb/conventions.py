"""One home for the conventions several chapters share: particle constants, Breit–Wigner line
shapes, the LHE weight index conventions, the tag-and-probe steps, and the process table
(names, labels, colours).

Everything here is a *convention*: when two pieces of code must agree on it (the generator and
the analysis, two chapters, a chapter and its plots), they import it from this module instead of
writing it again.  ``tests/test_conventions.py`` fails if a convention is defined elsewhere.

Particle constants
------------------
Masses and widths in GeV.  Where the code has always used a rounded value that feeds results of
the book, the value is kept as it was (changing it would change generated events or chapter
results) and the PDG value is quoted in the comment; the lead decides on any change.

Breit–Wigner line shapes
------------------------
With ``s = m²``:

* :func:`breit_wigner` — running width, ``BW(m; M, Γ) = 1 / ((s − M²)² + s² Γ² / M²)``.  This
  is the line shape as a density **in s** (unnormalised); as a density in ``m`` it must be
  multiplied by the Jacobian ``ds/dm = 2m``.  Ratios ``BW(m; M', Γ') / BW(m; M, Γ)`` (event
  weights) do not care, but *integrals* do: ``∫ BW dm`` is not the generated total.
* :func:`breit_wigner_mass_density` — ``2m · BW(m; M, Γ)``: the running-width line shape as a
  density **in m** (unnormalised).  This is what the universe samples W and Z masses from
  (:func:`wmnb.universe.physics.lineshape`, on ``MASS_RANGE`` = [50, 150] GeV).
* :func:`breit_wigner_fixed_width` — ``1 / ((s − M²)² + M² Γ²)``, the fixed-width form (in s,
  unnormalised).  Note it is *not* the shape the universe generates: the running-width BW
  equals ``(1 + γ²)⁻¹`` times the fixed-width BW at ``M̄ = M / √(1 + γ²)``,
  ``Γ̄ = Γ / √(1 + γ²)`` (``γ = Γ/M``; ``M − M̄ ≈ 34 MeV`` for the Z).
* :func:`width_for_mass` — the SM scaling of the total width with the mass at fixed couplings,
  ``Γ ∝ M³``.
* :func:`dlog_breit_wigner_dmass` — ``∂ ln BW / ∂M`` of the running-width form at fixed Γ.

Narrow resonances (J/psi, Upsilon) are sampled from a truncated Cauchy (non-relativistic BW) by
:func:`wmnb.universe.physics.sample_resonance`; no analysis code reweights them.

LHE weights (NanoAOD order)
---------------------------
``LHEScaleWeight`` has :data:`N_LHE_SCALE` = 9 entries at index ``3 * iMuR + iMuF`` with
``i = 0, 1, 2`` for the factors ``0.5, 1, 2`` (:data:`LHE_SCALE_FACTORS`); entry
:data:`LHE_SCALE_NOMINAL` = 4 (μR = μF = 1) is the nominal, equal to 1.  ``LHEPdfWeight`` has
``1 + 2 n`` entries: :data:`LHE_PDF_CENTRAL` = 0 is the central member (= 1), then the Hessian
eigenvector ``k = 0 .. n-1`` has its *up* member at ``1 + 2k`` and its *down* member at
``2 + 2k`` (:func:`lhe_pdf_index`).

Processes
---------
:data:`MC_PROCESSES` lists the simulated samples of chapter 00; :data:`W_FIT_PROCESSES` maps the
samples of the W selection to the process names of the m_W fit; :data:`PROCESS_STYLE` gives
every sample, fit process and display group a legend label and one colour (CMS palette).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# ================================================================= particle constants (GeV)

#: Muon mass.  PDG 2024: 105.6583755 ± 0.0000023 MeV.  Used by the generator and chapter 01.
MUON_MASS = 0.1056583755
#: The muon mass chapter 02 has always used for the invariant mass of calibrated dimuons
#: (:func:`wmnb.muonscale.kinematics.dimuon_mass`): :data:`MUON_MASS` rounded to 6 digits.  Kept
#: so the calibration stays bit-identical; switching to :data:`MUON_MASS` moves dimuon masses by
#: ~1e-8 relative (events at bin edges migrate), which is the lead's decision.
MUON_MASS_CALIB = 0.105658
#: Electron mass as the generator uses it.  PDG 2024: 0.51099895000 MeV (kept rounded: the
#: value enters the generated events).
ELECTRON_MASS = 0.000511
#: Tau mass as the generator uses it.  PDG 2022: 1776.86 ± 0.12 MeV (PDG 2024: 1776.93 ± 0.09;
#: kept: the value enters the generated events).
TAU_MASS = 1.77686
#: Fine-structure constant at q² = 0 as the generator's FSR uses it.  CODATA 2018:
#: 1/137.035999084.
ALPHA_EM = 1 / 137.036

# ---------------------------------------------------------------- selection cuts shared by the
# analysis (wmnb.engine.selections) and the universe's efficiency truth (wmnb.universe.efficiency)
#: transverse impact parameter of a prompt muon (cm): the ID step's cut
DXY_MAX = 0.05
#: relative isolation (pfRelIso04_all) of an isolated muon: the isolation step's cut
ISO_MAX = 0.15

#: Z mass and uncertainty.  PDG 2024: 91.1880 ± 0.0020 GeV (the m_Z reference of the momentum
#: calibration, chapter 02).
Z_MASS_PDG = 91.1880
Z_MASS_PDG_ERR = 0.0020
#: Z total width and uncertainty.  PDG 2024: 2.4955 ± 0.0023 GeV (chapter 07's Γ_Z nuisance).
Z_WIDTH_PDG = 2.4955
Z_WIDTH_PDG_ERR = 0.0023
#: W total width and uncertainty.  PDG 2024: 2.085 ± 0.042 GeV (chapter 08's Γ_W nuisance).
W_WIDTH_PDG = 2.085
W_WIDTH_PDG_ERR = 0.042
#: J/psi(1S) mass.  PDG 2024: 3096.900 ± 0.006 MeV.
JPSI_MASS = 3.0969
#: Upsilon(1S) mass.  PDG 2024: 9460.40 ± 0.10 MeV.
UPSILON_1S_MASS = 9.4604


# ================================================================= Breit–Wigner line shapes

#: Window of the generated boson mass (GeV): the universe draws W and Z masses from the
#: running-width line shape on this range, and the mass reweighting normalises over it.
GENERATED_MASS_RANGE_GEV: tuple[float, float] = (50.0, 150.0)

def _running_width_denominator(s: Any, mass: float, width: float) -> Any:
    """``(s − M²)² + s² Γ² / M²`` (the arithmetic order is part of the bit-identity contract)."""
    return (s - mass**2) ** 2 + s * s * width**2 / mass**2


def breit_wigner(m: np.ndarray, mass: float, width: float) -> np.ndarray:
    """Running-width relativistic Breit–Wigner ``1 / ((m² − M²)² + m⁴ Γ² / M²)`` (float64).

    Normalisation: none (unnormalised), and it is a density **in s = m²**: ``∫ BW ds`` over the
    whole line is ``≈ π / (M Γ)`` for ``Γ ≪ M``.  As a density in ``m`` use
    :func:`breit_wigner_mass_density` (``2m ×`` this).  Use it for event-weight *ratios*.
    """
    s = np.asarray(m, dtype=np.float64) ** 2
    return 1.0 / _running_width_denominator(s, mass, width)


def breit_wigner_mass_density(m: np.ndarray, mass: float, width: float) -> np.ndarray:
    """``2m / ((m² − M²)² + m⁴ Γ² / M²)``: the running-width line shape as a density **in m**.

    Normalisation: none; ``∫ … dm`` over the whole line equals ``∫ BW ds`` (see
    :func:`breit_wigner`).  This is the density the universe samples boson masses from, so the
    generated total of a weight ``w(m)`` is ``∫ w · (this) dm / ∫ (this) dm`` over the
    generator's mass window.  Keeps the input's dtype (the generator passes float64).
    """
    s = m * m
    return 2 * m / _running_width_denominator(s, mass, width)


def breit_wigner_fixed_width(m: np.ndarray, mass: float, width: float) -> np.ndarray:
    """Fixed-width relativistic Breit–Wigner ``1 / ((m² − M²)² + M² Γ²)``, unnormalised, in s.

    Not the universe's line shape (that has a running width, see the module docstring); kept
    for the dimuon m_Z templates of chapter 02, which have always used it.
    """
    return 1.0 / ((m * m - mass * mass) ** 2 + (mass * width) ** 2)


def width_for_mass(mass: float, ref_mass: float, ref_width: float) -> float:
    """Γ(M) = Γ0 · (M / M0)³: the SM scaling of the total width at fixed couplings."""
    if ref_mass <= 0 or ref_width <= 0:
        raise ValueError(f"reference mass and width must be positive, got M0={ref_mass}, Γ0={ref_width}")
    return ref_width * (mass / ref_mass) ** 3


def dlog_breit_wigner_dmass(m: np.ndarray, mass: float, width: float) -> np.ndarray:
    """``∂ ln BW(m; M, Γ) / ∂M`` of the running-width Breit–Wigner at fixed width (GeV⁻¹).

    The same for :func:`breit_wigner` and :func:`breit_wigner_mass_density` (the Jacobian does
    not depend on M)."""
    s = m * m
    d = (s - mass**2) ** 2 + s * s * width**2 / mass**2
    return (4 * mass * (s - mass**2) + 2 * s * s * width**2 / mass**3) / d


# ================================================================= LHE weights (NanoAOD order)

#: Scale factors of the index ``i`` in ``3 * iMuR + iMuF``.
LHE_SCALE_FACTORS: tuple[float, float, float] = (0.5, 1.0, 2.0)
#: Number of ``LHEScaleWeight`` entries.
N_LHE_SCALE = 9


def lhe_scale_index(i_mur: int, i_muf: int) -> int:
    """Index of (μR factor ``LHE_SCALE_FACTORS[i_mur]``, μF factor ``LHE_SCALE_FACTORS[i_muf]``)
    in ``LHEScaleWeight``."""
    if not (0 <= i_mur <= 2 and 0 <= i_muf <= 2):
        raise ValueError(f"scale indices must be 0, 1 or 2, got iMuR={i_mur}, iMuF={i_muf}")
    return 3 * i_mur + i_muf


#: Index of the nominal (μR = μF = 1) entry.
LHE_SCALE_NOMINAL = lhe_scale_index(1, 1)
#: (log2 μR, log2 μF) of every ``LHEScaleWeight`` entry, in index order.
LHE_SCALE_LOG2: tuple[tuple[float, float], ...] = tuple(
    (r, f) for r in (-1.0, 0.0, 1.0) for f in (-1.0, 0.0, 1.0))


def _factor_name(x: float) -> str:
    return f"{x:g}".replace(".", "p")


#: Names of the entries, in index order: ``muR0p5_muF0p5``, ..., ``muR1_muF1`` (nominal), ...
LHE_SCALE_NAMES: tuple[str, ...] = tuple(
    f"muR{_factor_name(r)}_muF{_factor_name(f)}" for r in LHE_SCALE_FACTORS for f in LHE_SCALE_FACTORS)
#: The three scale nuisances as (up index, down index): μR alone, μF alone, both together.
LHE_SCALE_PAIRS: dict[str, tuple[int, int]] = {
    "MuR": (lhe_scale_index(2, 1), lhe_scale_index(0, 1)),
    "MuF": (lhe_scale_index(1, 2), lhe_scale_index(1, 0)),
    "MuRMuF": (lhe_scale_index(2, 2), lhe_scale_index(0, 0)),
}

#: Index of the central member of ``LHEPdfWeight``.
LHE_PDF_CENTRAL = 0


def lhe_pdf_index(k: int, up: bool) -> int:
    """Index in ``LHEPdfWeight`` of Hessian eigenvector ``k`` (0-based): up ``1 + 2k``, down ``2 + 2k``."""
    if k < 0:
        raise ValueError(f"eigenvector index must be >= 0, got {k}")
    return 1 + 2 * k if up else 2 + 2 * k


def lhe_pdf_pairs(n_members: int) -> int:
    """Number of Hessian eigenvectors in an ``LHEPdfWeight`` of ``n_members`` = 1 + 2n entries."""
    return (n_members - 1) // 2


# ================================================================= tag and probe

#: The tag-and-probe efficiency steps in the paper's order, each ``(probe flags, pass flag)`` on
#: the columns of chapter 01's ``tnp`` skim: every probe that passes a step is a probe of the
#: next one.  The reconstruction (standalone) step probes inner tracks and asks for a standalone
#: muon; tracking probes standalone muons and asks for the global match; ID + impact parameter
#: probes global muons; the trigger probes ID-passing muons; isolation probes triggering,
#: ID-passing muons; the veto (not a step of the chain: the second muon's) probes inner tracks
#: and asks for the loose ID.  The universe's efficiency truth (:mod:`wmnb.universe.efficiency`) is
#: defined for these probes.
TNP_STEPS: dict[str, tuple[tuple[str, ...], str]] = {
    "reco": (("probe_pass_trk",), "probe_pass_sta"),
    "tracking": (("probe_pass_sta",), "probe_pass_glb"),
    "id": (("probe_pass_glb",), "probe_pass_id"),
    "trigger": (("probe_pass_glb", "probe_pass_id"), "probe_pass_trig"),
    "isolation": (("probe_pass_glb", "probe_pass_id", "probe_pass_trig"), "probe_pass_iso"),
    # the W selection's veto on a second muon: the loose ID of a muon with an inner track
    "veto": (("probe_pass_trk",), "probe_pass_loose"),
}


def tnp_step_masks(cols: Mapping[str, np.ndarray], step: str) -> tuple[np.ndarray, np.ndarray]:
    """(probe, passing probe) masks of the tag-and-probe ``step`` (:data:`TNP_STEPS`) on ``tnp``
    skim columns; the failing probes are ``probe & ~passing``."""
    if step not in TNP_STEPS:
        raise ValueError(f"unknown tag-and-probe step {step!r}; choose one of {list(TNP_STEPS)}")
    return probe_masks(cols, *TNP_STEPS[step], step=step)


def probe_masks(cols: Mapping[str, np.ndarray], flags: tuple[str, ...], pass_flag: str,
                step: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(probe, passing probe): probes have every flag of ``flags``, passing ones ``pass_flag``
    too; a missing column is named (``step`` says whose)."""
    missing = [k for k in (*flags, pass_flag) if k not in cols]
    if missing:
        raise KeyError(f"tnp columns lack {missing} (step {step!r}); rerun chapter 01")
    probe = np.ones(len(cols[pass_flag]), bool)
    for f in flags:
        probe &= np.asarray(cols[f], bool)
    return probe, probe & np.asarray(cols[pass_flag], bool)


# ================================================================= processes

#: The simulated samples of chapter 00, in manifest order.
MC_PROCESSES: tuple[str, ...] = ("wplus_munu", "wminus_munu", "z_mumu", "w_taunu", "z_tautau", "ttbar",
                                 "diboson", "qcd", "jpsi", "upsilon")
#: Every process a truth card gives a cross section: the samples plus the combinatorial dimuon
#: background of the MuOnia data (no simulation).
CARD_PROCESSES: tuple[str, ...] = (*MC_PROCESSES, "dimuon_bkg")
#: Simulated samples of the W selection -> process name in the m_W fit (chapter 08), in the order
#: the fit has always used.
W_FIT_PROCESSES: dict[str, str] = {
    "wplus_munu": "wplus_munu", "wminus_munu": "wminus_munu",
    "z_mumu": "z_mumu", "z_tautau": "z_tautau", "w_taunu": "w_taunu",
    "ttbar": "top", "diboson": "diboson", "qcd": "nonprompt",
}
#: Log-normal normalisation priors of the W fits' background processes (fit process names); the
#: simulated nonprompt's 30 % stands in until chapter 05's data-driven estimate replaces it.
W_FIT_NORM_KAPPAS: dict[str, float] = {"z_mumu": 1.03, "z_tautau": 1.03, "top": 1.06, "diboson": 1.16,
                                       "nonprompt": 1.30}
#: Luminosity (1.2 %) and W production cross-section (3 %) priors of the W fits.
LUMI_KAPPA, W_XSEC_KAPPA = 1.012, 1.03

#: name -> (legend label, colour) for every sample, m_W-fit process and display group.  Colours
#: from the CMS palettes (6- and 10-colour sets); processes that appear together in a plot
#: have different colours.
PROCESS_STYLE: dict[str, tuple[str, str]] = {
    # simulated samples
    "wplus_munu": (r"W$^+\to\mu^+\nu$", "#f89c20"),
    "wminus_munu": (r"W$^-\to\mu^-\bar\nu$", "#e2a66b"),
    # the helicity fit's out-of-acceptance parts of the signal (chapter 09 without overflow bins)
    "wplus_munu_ooa": (r"W$^+\to\mu^+\nu$ out of acceptance", "#ffd08a"),
    "wminus_munu_ooa": (r"W$^-\to\mu^-\bar\nu$ out of acceptance", "#f2d2b0"),
    "z_mumu": (r"Z$\to\mu\mu$", "#5790fc"),
    "w_taunu": (r"W$\to\tau\nu$", "#964a8b"),
    "z_tautau": (r"Z$\to\tau\tau$", "#7a21dd"),
    "ttbar": (r"t$\bar{\mathrm{t}}$", "#9c9ca1"),
    "diboson": ("Diboson", "#e42536"),
    "qcd": ("Nonprompt (QCD MC)", "#b9ac70"),
    "jpsi": (r"J/$\psi\to\mu\mu$", "#bd1f01"),
    "upsilon": (r"$\Upsilon\to\mu\mu$", "#a96b59"),
    "dimuon_bkg": ("Combinatorial dimuons", "#94a4a2"),
    # process names of the m_W fit that differ from the sample names
    "top": (r"t$\bar{\mathrm{t}}$", "#9c9ca1"),
    "nonprompt": ("Nonprompt", "#b9ac70"),
    # display groups
    "wmunu": (r"W$\to\mu\nu$", "#f89c20"),
    "other": ("Other", "#92dadd"),
}


def process_style(name: str) -> tuple[str, str | None]:
    """(legend label, colour) of a sample, fit process or group; an unknown name gets itself as
    label and colour None (matplotlib then picks the next colour of its cycle)."""
    return PROCESS_STYLE.get(name, (name, None))


def process_label(name: str) -> str:
    """Legend label of a sample, fit process or group (the name itself if unknown)."""
    return process_style(name)[0]


def process_colour(name: str) -> str | None:
    """Colour of a sample, fit process or group (None if unknown: matplotlib's cycle)."""
    return process_style(name)[1]
