"""Truth cards: the schema of every knob of the synthetic universe, and the validated loader.

A truth card is a YAML mapping.  Its structure, units, allowed ranges and meaning are fixed by
:data:`SCHEMA` below (the single source of the documentation: the shipped cards' comments and the
book's reference page are generated from it).  :func:`load_card` accepts a shipped card name
(``nominal``, ``data``, ``closure``) or a path and returns the validated mapping; any missing key,
unknown key, wrong type or out-of-range value raises :class:`CardError` naming the field.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..conventions import CARD_PROCESSES

CARDS_DIR = Path(__file__).resolve().parent / "cards"
SHIPPED_CARDS = ("nominal", "data", "closure")
N_ETA = 48
ETA_EDGES = tuple(round(-2.4 + 0.1 * i, 1) for i in range(N_ETA + 1))

PROCESSES = CARD_PROCESSES    # every process the card gives a cross section (wmnb.conventions)


class CardError(ValueError):
    """An invalid truth card; the message names the file and the offending field."""


@dataclass(frozen=True)
class Field:
    """One leaf of the card schema.

    kind: ``float``, ``int``, ``str`` or ``list`` (a list of floats, of ``length`` entries, or of
    the length named by another field when ``length`` is a string such as ``physics.pdf.n_eigen``).
    """

    kind: str
    doc: str
    unit: str = ""
    lo: float | None = None
    hi: float | None = None
    length: int | str | None = None


def F(doc: str, unit: str = "", lo: float | None = None, hi: float | None = None) -> Field:
    return Field("float", doc, unit, lo, hi)


def L(doc: str, unit: str = "", lo: float | None = None, hi: float | None = None,
      length: int | str = N_ETA) -> Field:
    return Field("list", doc, unit, lo, hi, length)


def _eff(step: str) -> dict[str, Field]:
    return {
        "plateau": L(f"{step} efficiency plateau per eta bin (48 bins of 0.1 in [-2.4, 2.4])", "", 0.0, 1.0),
        "charge_asym": L(f"relative charge asymmetry of the {step} efficiency: eff(q) = plateau*(1 + q*asym)",
                         "", -0.1, 0.1),
    }


def _pt_shape(step: str) -> dict[str, Field]:
    return {
        "depth": L(f"{step}: relative inefficiency of the low-pT turn-on at pT = 15 GeV, per eta bin: "
                   "eff *= (1 - depth*exp(-(pT-15)/scale)) * (1 + slope*(pT-40))", "", 0.0, 0.5),
        "scale": F(f"{step}: pT scale of that turn-on", "GeV", 1.0, 50.0),
        "slope": L(f"{step}: relative efficiency slope per GeV around pT = 40 GeV, per eta bin", "1/GeV",
                   -0.002, 0.002),
    }


#: universe v2, tag and probe: the pT dependence of every efficiency step (data and simulation
#: differ, so the scale factors depend on pT) and the fake muon candidates under the Z peak
TNP_SCHEMA: dict[str, Any] = {
    "efficiency_pt": {s: _pt_shape(s) for s in ("reco", "tracking", "id", "trigger")},
    "fake_muons": {
        "rate": F("mean number of fake muon candidates (hadrons; pT > 10 GeV, |eta| < 2.4) per event at zero "
                  "hadronic recoil: Poisson mean rate*(1 + |u_T|/recoil_scale)", "", 0.0, 0.5),
        "recoil_scale": F("hadronic-recoil scale of the growth of the fake rate with the jet activity", "GeV", 1.0, 200.0),
        "pt_power": F("fake candidate pT spectrum ~ pT^-pt_power above 10 GeV", "", 2.0, 8.0),
        "jet_fraction": F("fraction of fake candidates along the recoil (jets); the rest is isotropic (random tracks)",
                          "", 0.0, 1.0),
        "type_weights": L("relative rates of tracker-only (fail the reco step), standalone-only (punch-through, "
                          "decays in flight: fail the tracking step) and global fake candidates (normalised)",
                          "", 0.0, 1.0, 3),
        "medium_prob": F("probability that a global fake candidate passes the medium ID", "", 0.0, 1.0),
        "iso_mean": F("mean relative isolation of a fake candidate (exponential; fakes sit in jets)", "", 0.01, 10.0),
    },
}


_RAP = {
    "alpha": F("quadratic rise of dsigma/dy: p(y) ~ (1 + alpha*y^2) * exp(-|y/beta|^power)", "", -0.2, 0.5),
    "beta": F("rapidity fall-off scale", "", 1.0, 6.0),
    "power": F("rapidity fall-off power", "", 1.0, 8.0),
}

SCHEMA: dict[str, Any] = {
    "name": Field("str", "card name (recorded in the files' provenance)"),
    "description": Field("str", "free text: what this universe is for"),
    "physics": {
        "mw_mev": F("W boson mass (pole, running-width Breit-Wigner)", "MeV", 79000.0, 82000.0),
        "gw_mev": F("W boson width; varies with m_W as m_W^3 in the SM", "MeV", 1500.0, 2700.0),
        "mz_mev": F("Z boson mass", "MeV", 90000.0, 92500.0),
        "gz_mev": F("Z boson width", "MeV", 2000.0, 3000.0),
        "xsec_pb": {p: F(f"inclusive cross section x branching ratio of process {p} "
                         "(for qcd, jpsi, upsilon, dimuon_bkg: after the generator filter)", "pb", 0.0, 1e8)
                    for p in PROCESSES},
        "rapidity": {"wplus": dict(_RAP), "wminus": dict(_RAP), "z": dict(_RAP)},
        # ---- q_T model (wmnb/universe/qtmodel.py): each piece acts on its own q_T region
        "qt": {
            "y_slope": F("relative growth of the q_T scale per unit |y|: p(qT|y) = p0(qT/s)/s, s = 1 + y_slope*|y|", "", -0.5, 0.5),
            "resummation": {
                "cusp": F("perturbative: cusp-like Sudakov coefficient, S_pert += cusp*[-L/lam - ln(1-lam*L)/lam^2], "
                          "L = ln(1 + (Q b*/b0)^2); shapes qT ~ 3-30 GeV", "", 0.0, 0.3),
                "cusp_running": F("perturbative: running-coupling growth lam of the cusp term (lam * L(b_max) < 0.95)", "", 0.0, 0.09),
                "noncusp": F("perturbative: hard-region (non-cusp, boundary-term-like) coefficient, "
                             "S_pert += noncusp*ln(1 + (Q b/b0)^2/(1 + b^2/noncusp_b^2)); shapes qT ~ 15-40 GeV", "", -0.2, 0.5),
                "noncusp_b": F("b above which the non-cusp term saturates", "GeV^-1", 0.01, 1.0),
                "b_max": F("b* prescription: the perturbative exponent freezes at b >> b_max, b* = b/sqrt(1 + b^2/b_max^2)", "GeV^-1", 0.2, 3.0),
            },
            "nonperturbative": {
                "kt_w": F("intrinsic kT of W+ and W- (uncorrelated with Z): S_NP += kt^2 b^2/2 * b^2/(b^2 + kt_b^2); acts at qT < ~5 GeV", "GeV", 0.0, 5.0),
                "kt_z": F("intrinsic kT of Z (uncorrelated with W)", "GeV", 0.0, 5.0),
                "kt_b": F("b below which the intrinsic-kT term turns from Gaussian to quartic (lambda4-like)", "GeV^-1", 0.1, 5.0),
                "cs_kernel": F("Collins-Soper-kernel-like coefficient, one value for W and Z (correlated): "
                               "S_NP += cs_kernel*ln(Q^2/cs_q0^2)*cs_b*(sqrt(1 + b^2/cs_b^2) - 1), linear in b at large b, "
                               "its effect grows with ln Q^2 (acts at qT < ~10 GeV)", "GeV", 0.0, 2.0),
                "cs_b": F("b at which the CS-kernel term turns from quadratic to linear", "GeV^-1", 0.01, 2.0),
                "cs_q0": F("reference scale Q0 of the CS-kernel evolution", "GeV", 0.5, 10.0),
            },
            "matching": {
                "scale": F("matching: the resummed part hands over to fixed order around qT = scale * m_V "
                           "(paper: 0.5, varied 0.35-0.75); acts at qT > ~30 GeV", "", 0.2, 0.8),
                "width": F("transition between scale*m_V/width and scale*m_V*width (smoothstep in ln qT)", "", 1.1, 2.0),
                "fo_power": F("fixed-order tail F(qT) = fo_norm/m_V * (m_V/(2 qT))^fo_power * (1.25/(1 + qT^2/m_V^2))^fo_falloff", "", 1.5, 6.0),
                "fo_norm": F("fixed-order density at qT = m_V/2, in units of 1/m_V", "", 0.01, 3.0),
                "fo_falloff": F("steepening of the fixed-order tail above qT ~ m_V (the parton luminosity falls)", "", 0.0, 3.0),
            },
            "beyond_family": {
                "kt_smear": F("data only (0 in the simulation): Gaussian convolution of the qT vector, width per component "
                              "at y = 0; an x-dependent intrinsic kT that no point of the simulation's family produces", "GeV", 0.0, 3.0),
                "kt_smear_dy": F("relative growth of kt_smear per unit |y|: sigma(y) = kt_smear*(1 + kt_smear_dy*|y|)", "", 0.0, 3.0),
            },
        },
        "angular": {
            "a0": F("A0 = a0 * qT^2/(qT^2 + M^2)", "", 0.0, 2.0),
            "a1": F("A1 = a1 * 2 qT M/(qT^2 + M^2) * tanh(|y|) * 0.5 (standard Collins-Soper frame: z along the boson p_z)", "", -2.0, 2.0),
            "a2": F("A2 = a2 * qT^2/(qT^2 + M^2) (a2 = a0 is Lam-Tung)", "", 0.0, 2.0),
            "a3": F("A3 = charge * a3 * qT/(qT + M) (W); a3/4 for Z", "", -1.0, 1.0),
            "a4_w": F("W: A4 = -charge * a4_w * tanh(|y|/y4) * (1 - A0) (theta of the charged lepton)", "", 0.0, 1.5),
            "a4_z": F("Z: A4 = a4_z * tanh(|y|/y4) * (1 - A0) (theta of the mu-)", "", 0.0, 0.5),
            "y4": F("rapidity scale of the A4 dilution", "", 0.3, 5.0),
        },
        "scales": {
            "log2_mur": F("renormalisation scale of this universe, log2(muR/muR0) (0 = nominal)", "", -1.0, 1.0),
            "log2_muf": F("factorisation scale, log2(muF/muF0)", "", -1.0, 1.0),
            "dfo_power_mur": F("change of qt.matching.fo_power per unit log2 muR", "", -1.0, 1.0),
            "dcusp_mur": F("relative change of qt.resummation.cusp per unit log2 muR", "", -0.5, 0.5),
            "da02_mur": F("relative change of a0 and a2 per unit log2 muR", "", -0.5, 0.5),
            "da1_mur": F("relative change of a1 (A1) per unit log2 muR", "", -0.5, 0.5),
            "da3_mur": F("relative change of a3 (A3) per unit log2 muR", "", -0.5, 0.5),
            "dsigma_mur": F("relative change of the cross section per unit log2 muR", "", -0.2, 0.2),
            "dqt_scale_muf": F("relative change of the q_T scale per unit log2 muF", "", -0.5, 0.5),
            "dbeta_muf": F("relative change of rapidity beta per unit log2 muF", "", -0.2, 0.2),
            "da4_muf": F("relative change of a4 per unit log2 muF", "", -0.5, 0.5),
            "da1_muf": F("relative change of a1 (A1) per unit log2 muF", "", -0.5, 0.5),
            "da3_muf": F("relative change of a3 (A3) per unit log2 muF", "", -0.5, 0.5),
            "dsigma_muf": F("relative change of the cross section per unit log2 muF", "", -0.2, 0.2),
        },
        "pdf": {
            "n_eigen": Field("int", "number of Hessian PDF-like eigenvectors (LHEPdfWeight has 1 + 2 n_eigen entries)", "", 1, 60),
            "effect_seed": Field("int", "seed of the fixed matrix of eigenvector effects (must be equal in all cards)", "", 0, 2**31),
            "sigma_alpha": F("1-sigma size of an eigenvector's effect on rapidity alpha (absolute)", "", 0.0, 0.1),
            "sigma_beta": F("1-sigma relative effect on rapidity beta", "", 0.0, 0.1),
            "sigma_qt_scale": F("1-sigma relative effect on the q_T scale", "", 0.0, 0.1),
            "sigma_a4": F("1-sigma relative effect on a4", "", 0.0, 0.2),
            "sigma_xsec": F("1-sigma relative effect on the cross sections", "", 0.0, 0.1),
            "shift": L("this universe's position in eigenvector space (0 = central PDF)", "sigma", -3.0, 3.0, "physics.pdf.n_eigen"),
        },
        "fsr": {
            "strength": F("multiplier of the leading-log photon-emission probability (alpha/pi)(ln(m^2/mmu^2)-1)ln(1/zmin)", "", 0.0, 3.0),
            "zmin": F("minimum photon energy fraction", "", 1e-4, 0.1),
        },
        "tau": {
            "br_mu": F("BR(tau -> mu nu nu)", "", 0.1, 0.25),
            "br_e": F("BR(tau -> e nu nu)", "", 0.1, 0.25),
            "polarisation_w": F("tau polarisation in W decays", "", -1.0, 1.0),
        },
        "quarkonia": {
            "jpsi_mass_mev": F("J/psi mass", "MeV", 3000.0, 3200.0),
            "jpsi_width_mev": F("J/psi natural width", "MeV", 0.0, 1.0),
            "upsilon_mass_mev": L("Upsilon(1S, 2S, 3S) masses", "MeV", 9000.0, 11000.0, 3),
            "upsilon_width_mev": L("Upsilon(1S, 2S, 3S) widths", "MeV", 0.0, 1.0, 3),
            "upsilon_fractions": L("relative yields of Upsilon(1S, 2S, 3S) (normalised)", "", 0.0, 1.0, 3),
            "jpsi_pt0": F("J/psi pT spectrum scale, p(pT) ~ pT (1 + pT^2/(n p0^2))^-n", "GeV", 1.0, 20.0),
            "jpsi_power": F("J/psi pT spectrum power n", "", 1.5, 8.0),
            "upsilon_pt0": F("Upsilon pT spectrum scale", "GeV", 1.0, 30.0),
            "upsilon_power": F("Upsilon pT spectrum power", "", 1.5, 8.0),
            "ymax": F("quarkonia and combinatorial background are flat in |y| < ymax", "", 0.5, 3.0),
            "bkg_slope_jpsi": F("exponential slope of the combinatorial m_mumu in the J/psi window", "1/GeV", -5.0, 5.0),
            "bkg_jpsi_fraction": F("fraction of the combinatorial background in the J/psi window (rest: Upsilon window)", "", 0.0, 1.0),
        },
        "top_diboson": {
            "ttbar_qt_scale": F("mean q_T of the leptonic W system in ttbar (exponential)", "GeV", 10.0, 300.0),
            "ttbar_extra_lepton": F("probability of a second prompt lepton (e or mu) in ttbar", "", 0.0, 1.0),
            "diboson_qt_scale": F("mean q_T of the leptonic W in diboson", "GeV", 5.0, 200.0),
            "diboson_extra_lepton": F("probability of extra prompt leptons in diboson", "", 0.0, 1.0),
        },
        "nonprompt": {
            "pt_power": F("nonprompt muon pT spectrum ~ pT^-power above the 20 GeV generator cut", "", 2.0, 8.0),
            "z_a": F("Beta(z_a, z_b) momentum fraction of the muon in its jet", "", 0.5, 10.0),
            "z_b": F("Beta(z_a, z_b) second parameter", "", 0.5, 10.0),
            "cone_fraction": F("mean fraction of the jet remnant inside the isolation cone", "", 0.0, 1.0),
            "met_scale": F("scale of the multijet fake missing pT: met_scale * h, h ~ Exp(1) the latent mismeasurement hardness", "GeV", 1.0, 50.0),
            "met_kappa": F("growth of the jet activity around the muon with h: x = (1-z)/z * (1 + kappa h^gamma)", "", 0.0, 20.0),
            "met_gamma": F("power gamma of that growth (the nonlinearity of the iso-m_T correlation: ABCD overestimate)", "", 0.1, 5.0),
            "neutrino_fraction": F("mean pT fraction of the semileptonic neutrino relative to the muon", "", 0.0, 2.0),
            "sv_prob": F("probability that a nonprompt muon is attached to a secondary vertex", "", 0.0, 1.0),
            "dxy_scale_cm": F("scale of the nonprompt |dxy| (exponential)", "cm", 0.0, 1.0),
        },
    },
    "detector": {
        "momentum_scale": {
            "A": L("magnetic-field-like curvature bias: dk/k = A - e k + q M / k, k = 1/pT", "", -0.01, 0.01),
            "e": L("energy-loss-like bias (multiplies k)", "GeV", -0.05, 0.05),
            "M": L("misalignment-like sagitta bias (multiplies q/k = q pT)", "1/GeV", -0.001, 0.001),
        },
        "resolution": {
            "a": L("(sigma_pT/pT)^2 = a^2 + c^2 pT^2 + b^2/(1 + d^2/pT^2): multiple scattering term", "", 0.0, 0.2),
            "b": L("correlation term", "", 0.0, 0.2),
            "c": L("hit-resolution term", "1/GeV", 0.0, 0.01),
            "d": L("scale of the correlation term", "GeV", 0.1, 500.0),
            "standalone": F("relative pT resolution of standalone-only muons", "", 0.01, 0.5),
            "angle": F("resolution of eta and phi", "rad", 0.0, 0.01),
        },
        "efficiency": {
            "reco": _eff("standalone-muon reconstruction"),
            "tracking": _eff("tracking (global-muon match)"),
            "id": {**_eff("medium ID + impact parameter"),
                   "low_pt_drop": F("ID inefficiency added at low pT: eff *= 1 - drop*exp(-(pT-15)/scale)", "", 0.0, 0.5),
                   "low_pt_scale": F("pT scale of the low-pT drop", "GeV", 1.0, 50.0)},
            "trigger": {**_eff("single-muon trigger (before its isolation)"),
                        "threshold": F("HLT muon pT threshold (smooth turn-on)", "GeV", 10.0, 40.0),
                        "turnon_width": F("width of the trigger turn-on (Gaussian CDF)", "GeV", 0.05, 5.0),
                        "iso_cut": F("trigger-level relative isolation cut", "", 0.05, 2.0),
                        "iso_smear": F("relative smearing of the trigger-level isolation", "", 0.0, 1.0),
                        "dimuon_eff": F("per-muon efficiency of the dimuon (quarkonium) triggers", "", 0.0, 1.0)},
            "isolation": {
                "ue_shape": F("Gamma shape of the underlying-event sum pT in the cone", "", 0.5, 10.0),
                "ue_scale": F("Gamma scale of that sum", "GeV", 0.0, 5.0),
                "pu_per_vertex": F("mean pileup sum pT in the cone per vertex", "GeV", 0.0, 1.0),
                "recoil_leak": F("fraction of the recoil projected on the muon (u_par > 0) that enters the cone", "", 0.0, 1.0),
            },
            "loose_id": F("loose-ID efficiency of a reconstructed muon", "", 0.0, 1.0),
        },
        # ---- hadronic recoil: three estimators (PF, track-only, PUPPI), wmnb/universe/recoil.py
        "recoil": {
            "response_plateau": F("PF recoil response (mean u_par / q_T along the recoil) at high q_T, y = 0", "", 0.2, 1.5),
            "response_low": F("PF recoil response at q_T = 0 (under-calibrated soft recoil)", "", 0.0, 1.5),
            "response_qt": F("q_T scale of the response turn-on: R = low + (plateau - low)(1 - exp(-q_T/scale))", "GeV", 1.0, 100.0),
            "response_y": F("loss of response with boson rapidity: R *= exp(-response_y y^2) (recoil moving forward)", "", 0.0, 0.2),
            "sigma0": F("calorimeter noise term of the PF recoil resolution, per component, at y = 0", "GeV", 0.0, 30.0),
            "sigma_pu": F("pileup term of the PF recoil resolution per component per sqrt(PV_npvs)", "GeV", 0.0, 10.0),
            "sigma_qt": F("calorimeter term proportional to q_T along the recoil (u_par)", "", 0.0, 1.0),
            "perp_qt_ratio": F("the q_T-proportional calorimeter term across the recoil (u_perp) over the one along it", "", 0.0, 2.0),
            "sigma_y": F("growth of the calorimeter terms with boson rapidity: x (1 + sigma_y y^2)", "", 0.0, 1.0),
            "activity_shape": F("Gamma shape of the per-event hadronic activity a (mean 1) that scales the soft "
                                "charged-neutral imbalance, the charged multiplicity and the scalar sums", "", 0.5, 100.0),
            "tails": {
                "frac_low": F("probability of a mismeasured-jet (tail) event at q_T = 0", "", 0.0, 0.5),
                "frac_high": F("probability of a tail event at high q_T", "", 0.0, 0.5),
                "frac_qt": F("q_T scale of the rise of the tail probability", "GeV", 1.0, 200.0),
                "width0": F("per-component width of the tail component at q_T = 0 (added in quadrature to the "
                            "calorimeter term of PF and PUPPI)", "GeV", 0.0, 50.0),
                "width_qt": F("growth of the tail width per GeV of q_T", "", 0.0, 2.0),
            },
            "charged": {
                "fraction": F("mean charged share of the hard recoil at y = 0 (TkMET response over PF response)", "", 0.0, 1.0),
                "spread": F("event-by-event standard deviation of the charged share", "", 0.0, 0.5),
                "y_loss": F("loss of the charged share with boson rapidity: x exp(-y_loss y^2) (tracker acceptance)", "", 0.0, 1.0),
                "imbalance": F("charged-neutral imbalance of the soft hadrons per component at activity 1 (TkMET sees it "
                               "whole, PF and PUPPI pf_coupling of it)", "GeV", 0.0, 30.0),
                "pf_coupling": F("fraction of the charged-share fluctuations that survives in the PF and PUPPI recoil "
                                 "(1 - neutral/charged response)", "", 0.0, 1.0),
                "pu_leak": F("fraction of the pileup term in the TkMET (pileup tracks associated to the primary vertex)", "", 0.0, 1.0),
            },
            "puppi": {
                "pu_fraction": F("fraction of the PF pileup term (and pileup scalar sum) left in the PUPPI MET", "", 0.0, 1.0),
                "response": F("PUPPI hard-recoil response relative to PF (primary-vertex neutrals lost to the weights)", "", 0.5, 1.5),
            },
            "features": {
                "sumet_ue": F("PF scalar sum of the primary vertex's soft activity at activity 1", "GeV", 0.0, 2000.0),
                "sumet_qt": F("PF scalar sum of the hard recoil per GeV of q_T", "", 0.0, 10.0),
                "sumet_pu": F("PF scalar sum per pileup interaction (Pileup_nTrueInt)", "GeV", 0.0, 200.0),
                "nch_ue": F("mean charged multiplicity of the primary vertex (PV_nCharged) at activity 1, q_T = 0", "", 0.0, 500.0),
                "nch_per_gev": F("charged particles per GeV of charged hard recoil", "1/GeV", 0.0, 10.0),
            },
        },
        "pileup": {
            "mean": F("mean number of true interactions (Gamma distributed)", "", 1.0, 80.0),
            "shape": F("Gamma shape of the true-interaction distribution", "", 1.0, 100.0),
            "vertex_eff": F("probability that an interaction gives a reconstructed vertex", "", 0.1, 1.0),
        },
        "prefiring": {
            "p_central": F("prefiring probability per muon at eta = 0", "", 0.0, 0.1),
            "p_forward": F("prefiring probability per muon at |eta| = 2.4 (cubic in |eta| between)", "", 0.0, 0.2),
            "rel_unc": F("relative uncertainty of the prefiring probability (Up/Dn weights)", "", 0.0, 1.0),
        },
        "vertexing": {
            "dxy_sigma_cm": F("prompt transverse impact-parameter resolution", "cm", 0.0, 0.1),
            "dz_sigma_cm": F("prompt longitudinal impact-parameter resolution", "cm", 0.0, 0.5),
            "sv_fake": F("probability that a prompt muon is attached to a secondary vertex (sets the prompt "
                         "contamination of the SV control region: ~1 % at 2e-4)", "", 0.0, 0.5),
        },
        "extra_objects": {
            "soft_muon_prob": F("probability of an extra soft nonprompt muon per event", "", 0.0, 0.5),
            "fake_electron_prob": F("probability of a fake veto electron per event", "", 0.0, 0.5),
            "electron_eff": F("efficiency of a prompt electron (|eta| < 2.5) at veto level", "", 0.0, 1.0),
        },
        **TNP_SCHEMA,
    },
}


def _leaves(schema: dict[str, Any], prefix: str = "") -> list[tuple[str, Field]]:
    out: list[tuple[str, Field]] = []
    for key, sub in schema.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(sub, Field):
            out.append((path, sub))
        else:
            out.extend(_leaves(sub, path))
    return out


FIELDS: dict[str, Field] = dict(_leaves(SCHEMA))
"""Every leaf of the schema by dotted path, e.g. ``FIELDS['detector.momentum_scale.A']``."""


def get(card: dict[str, Any], path: str) -> Any:
    """Value of the dotted ``path`` in ``card``."""
    node: Any = card
    for part in path.split("."):
        node = node[part]
    return node


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _out_of_range(where: str, path: str, f: Field, x: Any) -> CardError:
    return CardError(f"{where}: field '{path}' = {x!r} is out of range [{f.lo}, {f.hi}] {f.unit}".rstrip())


def _check_range(where: str, path: str, f: Field, x: float) -> None:
    try:
        value = float(x)
    except OverflowError:  # an integer beyond any float is beyond every range, too
        raise _out_of_range(where, path, f, x) from None
    if not math.isfinite(value):
        raise CardError(f"{where}: field '{path}' must be finite, got {x!r}")
    if (f.lo is not None and x < f.lo) or (f.hi is not None and x > f.hi):
        raise _out_of_range(where, path, f, x)


def validate_card(card: Any, where: str = "truth card") -> dict[str, Any]:
    """Check ``card`` against :data:`SCHEMA`; return it with numbers converted to floats.

    Raises :class:`CardError` naming the first offending field (missing, unknown, wrong type,
    wrong length, out of range).
    """
    if not isinstance(card, dict):
        raise CardError(f"{where}: a truth card must be a YAML mapping, got {type(card).__name__}")

    def walk(node: Any, schema: dict[str, Any], prefix: str) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise CardError(f"{where}: field '{prefix}' must be a mapping, got {type(node).__name__}")
        # key=str: YAML keys may be numbers, which do not sort together with strings
        unknown = sorted(set(node) - set(schema), key=str)
        if unknown:
            raise CardError(f"{where}: unknown field '{(prefix + '.' if prefix else '') + str(unknown[0])}' "
                            f"(allowed here: {sorted(schema)})")
        out: dict[str, Any] = {}
        for key, sub in schema.items():
            path = f"{prefix}.{key}" if prefix else key
            if key not in node:
                raise CardError(f"{where}: missing field '{path}'")
            if isinstance(sub, Field):
                out[key] = _check_leaf(node[key], sub, path)
            else:
                out[key] = walk(node[key], sub, path)
        return out

    def _check_leaf(x: Any, f: Field, path: str) -> Any:
        if f.kind == "str":
            if not isinstance(x, str):
                raise CardError(f"{where}: field '{path}' must be a string, got {x!r}")
            return x
        if f.kind == "int":
            if not isinstance(x, int) or isinstance(x, bool):
                raise CardError(f"{where}: field '{path}' must be an integer, got {x!r}")
            _check_range(where, path, f, x)
            return int(x)
        if f.kind == "float":
            if not _is_number(x):
                raise CardError(f"{where}: field '{path}' must be a number ({f.unit or 'dimensionless'}), got {x!r}")
            _check_range(where, path, f, x)
            return float(x)
        # list
        if not isinstance(x, list) or not all(_is_number(v) for v in x):
            raise CardError(f"{where}: field '{path}' must be a list of numbers, got {type(x).__name__}")
        out = []
        for i, v in enumerate(x):
            try:
                out.append(float(v))
            except OverflowError:  # an integer beyond any float (ranges are checked below)
                raise _out_of_range(where, f"{path}[{i}]", f, v) from None
        return out

    out = walk(card, SCHEMA, "")
    # lengths and ranges of lists (lengths may refer to other fields)
    for path, f in FIELDS.items():
        if f.kind != "list":
            continue
        vals = get(out, path)
        n = f.length if isinstance(f.length, int) else get(out, str(f.length))
        if len(vals) != n:
            raise CardError(f"{where}: field '{path}' must have {n} entries, got {len(vals)}")
        for i, v in enumerate(vals):
            _check_range(where, f"{path}[{i}]", f, v)
    fr = get(out, "physics.quarkonia.upsilon_fractions")
    if sum(fr) <= 0:
        raise CardError(f"{where}: field 'physics.quarkonia.upsilon_fractions' must not be all zero")
    if sum(get(out, "detector.fake_muons.type_weights")) <= 0:
        raise CardError(f"{where}: field 'detector.fake_muons.type_weights' must not be all zero")
    return out


def _choices() -> str:
    """What ``--truth`` accepts, for error messages."""
    return f"give a shipped card ({', '.join(SHIPPED_CARDS)}) or the path of a YAML file"


def card_path(name_or_path: str | os.PathLike) -> Path:
    """Path of a shipped card (``nominal``, ``data``, ``closure``) or of a YAML file.

    A missing file raises :class:`FileNotFoundError`; an empty name, a directory or another
    non-file raises :class:`CardError`; every message lists the shipped cards."""
    if not str(os.fspath(name_or_path)).strip():
        # Path("") is ".", an existing directory: say what was really given
        raise CardError(f"the truth card name is empty: {_choices()}")
    p = Path(name_or_path)
    if p.is_dir():
        raise CardError(f"truth card {p} is a directory, not a YAML file: {_choices()}")
    if p.exists() and not p.is_file():
        raise CardError(f"truth card {p} is not a regular file: {_choices()}")
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"truth card {p} does not exist: {_choices()}")
        return p
    shipped = CARDS_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise FileNotFoundError(f"truth card {str(name_or_path)!r} is neither a file nor a shipped card: {_choices()}")
    return shipped


def load_card(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a truth card (shipped name or path); raises :class:`CardError`."""
    path = card_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CardError(f"truth card {path} cannot be read: {err}") from err
    try:
        raw = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as err:  # ValueError: e.g. an integer of > 4300 digits
        raise CardError(f"truth card {path} is not valid YAML: {err}") from err
    return validate_card(raw, where=f"truth card {path}")


#: Fields that every card of one universe must share.  ``effect_seed`` draws the matrix of PDF
#: eigenvector effects: the simulation's ``LHEPdfWeight`` and the data's ``pdf.shift`` refer to
#: the same eigenvectors only if all cards draw it from the same seed.
SHARED_FIELDS = ("physics.pdf.effect_seed",)


def check_shared_fields(cards: Mapping[str, dict[str, Any]], sources: Mapping[str, str] | None = None) -> None:
    """Raise :class:`CardError` unless the validated ``cards`` (role -> card, e.g. ``nominal``,
    ``data``, ``closure``) agree on every :data:`SHARED_FIELDS` entry; the message names each
    card (``sources[role]``, e.g. its file, else its name) with its value."""
    sources = sources or {}
    for path in SHARED_FIELDS:
        values = {role: get(card, path) for role, card in cards.items()}
        if len(set(values.values())) > 1:
            listed = ", ".join(f"{role} card ({sources.get(role, cards[role].get('name', role))}) = {v!r}"
                               for role, v in values.items())
            raise CardError(f"field '{path}' must be equal in all cards of a universe, but {listed}")


#: Fields in which the closure card may differ from the nominal one: the closure universe is the
#: simulation with its own W mass (and the width that goes with it).
CLOSURE_OWN_FIELDS = ("physics.mw_mev", "physics.gw_mev")


def check_closure_card(closure: dict[str, Any], nominal: dict[str, Any], source: str = "closure card") -> None:
    """Raise :class:`CardError` unless ``closure`` is ``nominal`` apart from
    :data:`CLOSURE_OWN_FIELDS` and differs from it in m_W (a pure-detector closure needs a mass
    of its own to recover); the message names the first differing field."""
    for path in FIELDS:
        if path in CLOSURE_OWN_FIELDS or path in ("name", "description"):
            continue
        if get(closure, path) != get(nominal, path):
            raise CardError(f"{source}: field '{path}' differs from the nominal card; the closure universe is the "
                            f"simulation with its own m_W only (regenerate the cards: python -m wmnb.universe.cardmaker)")
    if get(closure, "physics.mw_mev") == get(nominal, "physics.mw_mev"):
        raise CardError(f"{source}: physics.mw_mev equals the simulation's; the closure fit would have nothing to recover")


def card_hash(card: dict[str, Any]) -> str:
    """SHA-256 of the card's canonical JSON (independent of YAML formatting and comments)."""
    text = json.dumps(card, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def eta_bin(eta: Any) -> Any:
    """Index (0..47) of the 0.1-wide eta bin; values outside [-2.4, 2.4] are clipped."""
    import numpy as np

    return np.clip(np.floor((np.asarray(eta) + 2.4) / 0.1).astype(np.int64), 0, N_ETA - 1)
