"""How the shipped truth cards were made (run ``python -m wmnb.universe.cardmaker`` to rewrite them).

The cards in ``cards/`` are the source of truth for generation; this module only documents where
their numbers come from and keeps the three consistent: ``closure`` is ``nominal`` (the
simulation's physics and detector) with its own m_W.  The per-eta detector profiles are smooth shapes plus small fixed
bin-to-bin noise (seeded), with sizes taken from the CMS calibration (corrections of a few 1e-4 in
curvature, resolution 1 % central to 3-4 % forward, trigger charge asymmetry up to 5 % forward).
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .card import CARDS_DIR, FIELDS, N_ETA, SCHEMA, Field, validate_card

ETA = -2.35 + 0.1 * np.arange(N_ETA)
AETA = np.abs(ETA) / 2.4


def _r(x: np.ndarray, digits: int = 6) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in np.asarray(x, dtype=float)]


# ---------------------------------------------------------------- hadronic recoil (detector.recoil)
# The three estimators of wmnb/universe/recoil.py.  The PF core at q_T = 0 and the mean pileup
# (sigma0^2 + (pf_coupling * imbalance)^2 + sigma_pu^2 <PV_npvs> ~ 44 GeV^2, robust width with the
# tails ~ 6.9 GeV) is close to the version-1 Gaussian width (4 GeV (+) 1.3 GeV sqrt(npv), 6.9 GeV
# at the mean pileup), so the m_T acceptance barely moves; what is new
# is its structure: u_par wider than u_perp (the q_T term is mostly along the recoil), rapidity
# and activity dependence, a 3 % -> 10 % tail of mismeasured jets, and a charged share of 0.6
# for the track-only MET (CMS: TkMET response ~0.5-0.6, pileup-robust; PUPPI keeps ~30 % of the
# pileup term).  The data differ from the simulation by a few per cent in response, 5-10 % in the
# widths and 20-30 % in the tails (sizes of the CMS data/simulation recoil differences).


def nominal_recoil() -> dict[str, Any]:
    """The simulation's recoil block."""
    return {
        "response_plateau": 0.88, "response_low": 0.45, "response_qt": 15.0, "response_y": 0.015,
        "sigma0": 3.0, "sigma_pu": 1.3, "sigma_qt": 0.10, "perp_qt_ratio": 0.5, "sigma_y": 0.08,
        "activity_shape": 3.0,
        "tails": {"frac_low": 0.03, "frac_high": 0.10, "frac_qt": 25.0, "width0": 12.0, "width_qt": 0.2},
        "charged": {"fraction": 0.6, "spread": 0.12, "y_loss": 0.06, "imbalance": 6.5, "pf_coupling": 0.3,
                    "pu_leak": 0.08},
        "puppi": {"pu_fraction": 0.3, "response": 0.96},
        "features": {"sumet_ue": 200.0, "sumet_qt": 2.0, "sumet_pu": 30.0, "nch_ue": 30.0, "nch_per_gev": 0.8},
    }


def data_recoil() -> dict[str, Any]:
    """The data's recoil block: response -2 to -7 %, widths +7-8 %, tail fraction +30 % and tail
    width +12 %, a slightly lower charged share and more soft activity than the simulation."""
    return {
        "response_plateau": 0.86, "response_low": 0.42, "response_qt": 15.0, "response_y": 0.018,
        "sigma0": 3.2, "sigma_pu": 1.4, "sigma_qt": 0.107, "perp_qt_ratio": 0.55, "sigma_y": 0.09,
        "activity_shape": 2.7,
        "tails": {"frac_low": 0.04, "frac_high": 0.13, "frac_qt": 22.0, "width0": 13.5, "width_qt": 0.23},
        "charged": {"fraction": 0.58, "spread": 0.13, "y_loss": 0.07, "imbalance": 7.0, "pf_coupling": 0.33,
                    "pu_leak": 0.09},
        "puppi": {"pu_fraction": 0.33, "response": 0.95},
        "features": {"sumet_ue": 215.0, "sumet_qt": 2.1, "sumet_pu": 32.0, "nch_ue": 32.0, "nch_per_gev": 0.85},
    }


# ---------------------------------------------------------------- theory (q_T model, scales)
#: The simulation's q_T model (wmnb/universe/qtmodel.py).  Tuned to the shape of the measured W
#: q_T spectrum (peak near 3.5-4 GeV, about half the events below 10 GeV, ~20 % of the peak
#: density at 20 GeV, ~3 % at 50 GeV, 5 % of the events above 50 GeV and 1 % above 100 GeV; the
#: previous model had only 1 % above 50 GeV) with the nonperturbative part at the size of b*-
#: prescription fits (intrinsic kT ~ 1.5 GeV; the CS-kernel term 0.3 ln(Q^2/1 GeV^2) ~ 2.6 GeV x b
#: at large b for Q ~ m_W);
#: matching at 0.5 m_V as in the paper.  Each piece acts on its own q_T region, so the
#: knobs are independent handles (tests/test_universe_qt.py measures their overlaps).
QT_NOMINAL: dict[str, Any] = {
    "y_slope": 0.05,
    "resummation": {"cusp": 0.05, "cusp_running": 0.05, "noncusp": 0.02, "noncusp_b": 0.05, "b_max": 1.0},
    "nonperturbative": {"kt_w": 1.6, "kt_z": 1.7, "kt_b": 1.0, "cs_kernel": 0.30, "cs_b": 0.25, "cs_q0": 1.0},
    "matching": {"scale": 0.5, "width": 1.6, "fo_power": 2.0, "fo_norm": 0.24, "fo_falloff": 1.2},
    "beyond_family": {"kt_smear": 0.0, "kt_smear_dy": 0.0},
}
#: Scale dependence of the simulation's densities (what its LHEScaleWeight entries move).  A1 and
#: A3 start at O(alpha_s), so they carry the largest relative scale dependence among the A_i
#: (a factor-2 muR variation moves A3 by ~10 %, A1 by ~6 %, A0/A2 by ~6 %).
SCALES_NOMINAL: dict[str, float] = {
    "log2_mur": 0.0, "log2_muf": 0.0,
    "dfo_power_mur": 0.12, "dcusp_mur": 0.03, "da02_mur": 0.06, "da1_mur": 0.06, "da3_mur": 0.10,
    "dsigma_mur": 0.03,
    "dqt_scale_muf": 0.03, "dbeta_muf": 0.01, "da4_muf": 0.03, "da1_muf": 0.02, "da3_muf": 0.04,
    "dsigma_muf": 0.02,
}


def nominal_card() -> dict[str, Any]:
    """The simulation universe."""
    rng = np.random.default_rng(1001)
    noise = lambda s: rng.normal(0.0, s, N_ETA)  # noqa: E731
    eff_noise = lambda s: rng.normal(0.0, s, N_ETA)  # noqa: E731
    return {
        "name": "nominal",
        "description": "Simulation universe: the generator's nominal physics and the simulated detector.",
        "physics": {
            "mw_mev": 80379.0, "gw_mev": 2085.0, "mz_mev": 91188.0, "gz_mev": 2495.5,
            "xsec_pb": {"wplus_munu": 11800.0, "wminus_munu": 8700.0, "z_mumu": 1950.0,
                        "w_taunu": 3560.0, "z_tautau": 620.0, "ttbar": 230.0, "diboson": 40.0,
                        "qcd": 8800.0, "jpsi": 16200.0, "upsilon": 1100.0, "dimuon_bkg": 1400.0},
            "rapidity": {"wplus": {"alpha": 0.045, "beta": 3.3, "power": 4.0},
                         "wminus": {"alpha": 0.0, "beta": 2.9, "power": 2.4},
                         "z": {"alpha": 0.02, "beta": 3.2, "power": 3.3}},
            "qt": copy.deepcopy(QT_NOMINAL),
            "angular": {"a0": 1.1, "a1": 0.5, "a2": 1.0, "a3": 0.1, "a4_w": 1.15, "a4_z": 0.08, "y4": 1.6},
            "scales": dict(SCALES_NOMINAL),
            "pdf": {"n_eigen": 20, "effect_seed": 2016, "sigma_alpha": 0.004, "sigma_beta": 0.006,
                    "sigma_qt_scale": 0.005, "sigma_a4": 0.01, "sigma_xsec": 0.008, "shift": [0.0] * 20},
            "fsr": {"strength": 1.0, "zmin": 0.005},
            "tau": {"br_mu": 0.1739, "br_e": 0.1782, "polarisation_w": -1.0},
            "quarkonia": {"jpsi_mass_mev": 3096.9, "jpsi_width_mev": 0.0926,
                          "upsilon_mass_mev": [9460.4, 10023.4, 10355.1],
                          "upsilon_width_mev": [0.054, 0.032, 0.020],
                          "upsilon_fractions": [0.62, 0.24, 0.14],
                          "jpsi_pt0": 6.0, "jpsi_power": 3.0, "upsilon_pt0": 8.0, "upsilon_power": 3.0,
                          "ymax": 2.4, "bkg_slope_jpsi": -0.8, "bkg_jpsi_fraction": 0.6},
            "top_diboson": {"ttbar_qt_scale": 70.0, "ttbar_extra_lepton": 0.35,
                            "diboson_qt_scale": 35.0, "diboson_extra_lepton": 0.5},
            "nonprompt": {"pt_power": 4.0, "z_a": 8.0, "z_b": 1.5, "cone_fraction": 0.6,
                          "met_scale": 20.0, "met_kappa": 0.15, "met_gamma": 2.0,
                          "neutrino_fraction": 0.35, "sv_prob": 0.55, "dxy_scale_cm": 0.02},
        },
        "detector": {
            "momentum_scale": {
                "A": _r(6e-5 * np.cos(np.pi * ETA / 4.8) + noise(3e-5)),
                "e": _r(2e-4 * (1 + 1.5 * AETA**2) + noise(5e-5)),
                "M": _r(4e-6 * np.sin(np.pi * ETA / 2.4) + noise(2e-6)),
            },
            "resolution": {
                "a": _r(0.0075 + 0.012 * AETA**2.5),
                "b": _r(0.003 + 0.006 * AETA**2),
                "c": _r(1.4e-4 + 5.5e-4 * AETA**3),
                "d": _r(25.0 + 10 * AETA),
                "standalone": 0.10, "angle": 0.0004,
            },
            "efficiency": {
                "reco": {"plateau": _r(np.clip(0.985 - 0.02 * AETA**4 + eff_noise(0.002), 0, 1)),
                         "charge_asym": _r(0.002 * ETA / 2.4)},
                "tracking": {"plateau": _r(np.clip(0.996 - 0.006 * AETA**2 + eff_noise(0.0007), 0, 1)),
                             "charge_asym": _r(np.zeros(N_ETA))},
                "id": {"plateau": _r(np.clip(0.985 - 0.015 * AETA**2 + eff_noise(0.002), 0, 1)),
                       "charge_asym": _r(0.001 * ETA / 2.4),
                       "low_pt_drop": 0.03, "low_pt_scale": 10.0},
                "trigger": {"plateau": _r(np.clip(0.93 - 0.10 * AETA**6 + eff_noise(0.004), 0, 1)),
                            "charge_asym": _r(0.005 * np.sign(ETA) * AETA**3),
                            "threshold": 24.0, "turnon_width": 0.6, "iso_cut": 0.35, "iso_smear": 0.25,
                            "dimuon_eff": 0.95},
                "isolation": {"ue_shape": 2.0, "ue_scale": 0.45, "pu_per_vertex": 0.035,
                              "recoil_leak": 0.05},
                "loose_id": 0.995,
            },
            "recoil": nominal_recoil(),
            "pileup": {"mean": 25.0, "shape": 8.0, "vertex_eff": 0.70},
            "prefiring": {"p_central": 0.005, "p_forward": 0.02, "rel_unc": 0.2},
            # sv_fake: a prompt muon attached to a displaced secondary vertex is rare; at 2e-4 the
            # SV control region (the W signal-region cuts + an SV-matched muon) is ~99 % nonprompt
            # (paper: prompt contamination < 2 %); the earlier 0.01 left it ~31 % prompt
            "vertexing": {"dxy_sigma_cm": 0.0025, "dz_sigma_cm": 0.006, "sv_fake": 2e-4},
            "extra_objects": {"soft_muon_prob": 0.01, "fake_electron_prob": 0.004, "electron_eff": 0.9},
            **tnp_nominal(),
        },
    }


def tnp_nominal() -> dict[str, Any]:
    """The simulation's tag-and-probe knobs (universe v2): pT shapes of the efficiency steps and
    the fake muon candidates.  Their own seeded noise, so they move no other knob."""
    rng = np.random.default_rng(1201)
    noise = lambda s: rng.normal(0.0, s, N_ETA)  # noqa: E731
    return {
        "efficiency_pt": {
            "reco": {"depth": _r(np.clip(0.004 + 0.006 * AETA**2 + noise(0.0005), 0, 1)), "scale": 8.0,
                     "slope": _r(5e-5 * AETA + noise(1e-5))},
            "tracking": {"depth": _r(np.clip(0.002 + 0.002 * AETA**2 + noise(0.0003), 0, 1)), "scale": 6.0,
                         "slope": _r(noise(1e-5))},
            "id": {"depth": _r(np.clip(0.004 + 0.004 * AETA**2 + noise(0.0005), 0, 1)), "scale": 10.0,
                   "slope": _r(3e-5 + noise(1e-5))},
            "trigger": {"depth": _r(np.clip(0.006 + 0.010 * AETA**2 + noise(0.001), 0, 1)), "scale": 5.0,
                        "slope": _r(1e-4 + noise(2e-5))},
        },
        # fakes: ~1 % of events carry a hadron reconstructed as a muon candidate above 10 GeV, more
        # with more jet activity; most are tracker-only (reco-step failing probes), fewer
        # standalone-only (tracking-step failing probes), few global
        "fake_muons": {"rate": 0.01, "recoil_scale": 15.0, "pt_power": 4.0, "jet_fraction": 0.7,
                       "type_weights": [0.80, 0.12, 0.08], "medium_prob": 0.15, "iso_mean": 0.8},
    }


def tnp_data(tnp: dict[str, Any]) -> dict[str, Any]:
    """The data's tag-and-probe knobs: deeper low-pT turn-ons and different pT slopes than the
    simulation (pT-dependent scale factors in every step, of the size of the paper's: a few
    per mille to a per cent across 25-55 GeV), and 20 % more fake candidates with a harder
    spectrum (the background in data is not the simulation's)."""
    rng = np.random.default_rng(2202)
    noise = lambda s: rng.normal(0.0, s, N_ETA)  # noqa: E731
    out = {"efficiency_pt": {k: dict(v) for k, v in tnp["efficiency_pt"].items()},
           "fake_muons": dict(tnp["fake_muons"])}
    ept = out["efficiency_pt"]

    def add(step: str, key: str, delta: np.ndarray) -> None:
        ept[step][key] = _r(np.clip(np.array(ept[step][key]) + delta, 0 if key == "depth" else -1, 1))

    add("reco", "depth", 0.006 + 0.008 * AETA**2 + noise(0.001))
    add("reco", "slope", -2.5e-4 * (1 + AETA) + noise(2e-5))
    ept["reco"]["scale"] = 10.0
    add("tracking", "depth", 0.003 + 0.005 * AETA**2 + noise(0.0005))
    add("tracking", "slope", -1.5e-4 + noise(1e-5))
    add("id", "depth", 0.005 + noise(0.001))
    add("id", "slope", 1.2e-4 * (1 - AETA) + noise(2e-5))
    add("trigger", "depth", 0.009 + 0.010 * AETA**2 + noise(0.001))
    add("trigger", "slope", -1e-4 - 1e-4 * AETA + noise(2e-5))
    ept["trigger"]["scale"] = 6.0
    ept["tracking"]["scale"] = 7.0
    ept["id"]["scale"] = 9.0
    # the fakes of data: more of them, a slightly harder spectrum (a different m_mumu shape
    # under the peak than the simulation's), more punch-through
    out["fake_muons"].update({"rate": 0.012, "recoil_scale": 14.0, "pt_power": 3.8, "jet_fraction": 0.65,
                              "type_weights": [0.78, 0.14, 0.08], "medium_prob": 0.18, "iso_mean": 0.85})
    return out


def data_card() -> dict[str, Any]:
    """The default data universe: every detector knob moved by a realistic amount, m_W and the
    theory parameters shifted within their uncertainties."""
    card = nominal_card()
    rng = np.random.default_rng(2002)
    noise = lambda s: rng.normal(0.0, s, N_ETA)  # noqa: E731
    card["name"] = "data"
    card["description"] = ("Default data universe (the hidden truth): detector knobs differ from "
                           "the simulation, m_W and theory parameters shifted within uncertainties, "
                           "FSR 5 % stronger than in the simulation (the higher-order EW effect that "
                           "an EW uncertainty must cover).")
    ph = card["physics"]
    ph["mw_mev"] = 80351.7
    ph["gw_mev"] = round(2085.0 * (80351.7 / 80379.0) ** 3, 2)
    ph["xsec_pb"]["wplus_munu"] *= 0.98
    ph["xsec_pb"]["wminus_munu"] *= 0.98
    ph["xsec_pb"]["qcd"] *= 1.1
    # theory: in-family shifts within the prediction's uncertainties (NP kT and CS kernel, scales,
    # PDF) plus a beyond-family term the simulation's q_T model cannot produce (see _data_theory)
    _data_theory(ph)
    ph["pdf"]["shift"] = _r(np.clip(rng.normal(0.0, 0.6, ph["pdf"]["n_eigen"]), -2, 2), 4)
    # FSR 5 % stronger than the simulation's: the spread between QED showers / higher-order EW
    # calculations is of that size, and with equal strengths an EW uncertainty (chapter 06) would
    # have nothing to measure; it softens the muon pT spectrum, so a fit that ignores it is biased
    ph["fsr"]["strength"] = 1.05
    ph["nonprompt"].update({"met_scale": 21.0, "sv_prob": 0.5})

    det = card["detector"]
    ms = det["momentum_scale"]
    ms["A"] = _r(np.array(ms["A"]) + 2.2e-4 * (1 - 0.3 * AETA**2) + 0.8e-4 * ETA / 2.4 + noise(4e-5))
    ms["e"] = _r(np.array(ms["e"]) + 8e-4 * (0.6 + AETA**2) + noise(1.5e-4))
    ms["M"] = _r(np.array(ms["M"]) + 2.0e-5 * np.sin(np.pi * ETA / 2.4) + 0.8e-5 * ETA / 2.4 + noise(4e-6))
    res = det["resolution"]
    res["a"] = _r(np.array(res["a"]) * 1.06)
    res["b"] = _r(np.array(res["b"]) * 1.10)
    res["c"] = _r(np.array(res["c"]) * 1.10)
    res["standalone"] = 0.11
    eff = det["efficiency"]
    eff["reco"]["plateau"] = _r(np.clip(np.array(eff["reco"]["plateau"]) - 0.004 - 0.01 * AETA**4 + noise(0.002), 0, 1))
    eff["tracking"]["plateau"] = _r(np.clip(np.array(eff["tracking"]["plateau"]) - 0.002 + noise(0.001), 0, 1))
    eff["id"]["plateau"] = _r(np.clip(np.array(eff["id"]["plateau"]) - 0.006 + noise(0.002), 0, 1))
    eff["id"]["charge_asym"] = _r(0.003 * ETA / 2.4)
    eff["trigger"]["plateau"] = _r(np.clip(np.array(eff["trigger"]["plateau"]) - 0.015 - 0.03 * AETA**6 + noise(0.004), 0, 1))
    eff["trigger"]["charge_asym"] = _r(0.025 * np.sign(ETA) * AETA**3 + 0.003)
    eff["trigger"]["turnon_width"] = 0.7
    eff["isolation"].update({"ue_scale": 0.5, "pu_per_vertex": 0.04, "recoil_leak": 0.06})
    det["recoil"] = data_recoil()
    det["pileup"].update({"mean": 23.0, "shape": 7.0})
    det["prefiring"].update({"p_central": 0.006, "p_forward": 0.022})
    det.update(tnp_data(det))
    return card


def _data_theory(ph: dict[str, Any]) -> None:
    """The data universe's theory: the truth the theory chapter must approach without being able
    to reach it exactly.  In-family: the Sudakov cusp term +3 %, the hard-region term 0.020 ->
    0.025, intrinsic kT +15 % (W) / +10 % (Z), the correlated CS kernel +10 %, muR x 2^0.25, muF x 2^-0.2 (which also move A1, A3 and the q_T tail), PDF eigenvector
    shifts (in data_card), A3 10 % larger (with the scales ~12 %: ~1.2 times its scale
    uncertainty).  Beyond the family: an x-dependent Gaussian intrinsic kT (a convolution of the
    q_T vector whose width grows with |y|), a few per cent on the q_T spectrum that no knob
    setting of the simulation's model reproduces."""
    qt = ph["qt"]
    qt["resummation"].update({"cusp": 0.0515, "noncusp": 0.025})
    qt["nonperturbative"].update({"kt_w": 1.84, "kt_z": 1.87, "cs_kernel": 0.33})
    qt["beyond_family"].update({"kt_smear": 0.3, "kt_smear_dy": 1.0})
    ph["scales"].update({"log2_mur": 0.25, "log2_muf": -0.2})
    ph["angular"]["a3"] = 0.11


#: m_W of the closure universe relative to the simulation's (MeV): inside the +-100 MeV range of
#: the mass templates, and large enough that a fit which only returns the simulation's own mass
#: fails the closure pull on the default profile (sigma ~ 10 MeV)
CLOSURE_MW_OFFSET_MEV = 40.0


def closure_card() -> dict[str, Any]:
    """The pure-detector closure universe: the simulation's physics and detector, with its own
    m_W (the simulation's + :data:`CLOSURE_MW_OFFSET_MEV`, the width scaled as m_W^3, the SM
    relation) that the m_W fit must recover.  Nothing but the mass differs from the simulation, so
    no calibration applies and the fit of its data tests the template machinery alone (the
    theory-coverage test is a different one)."""
    card = nominal_card()
    card["name"] = "closure"
    card["description"] = ("Pure-detector closure universe: the simulation's physics and detector "
                           f"with its own m_W (simulation {CLOSURE_MW_OFFSET_MEV:+g} MeV) that the m_W "
                           "fit must recover.")
    ph = card["physics"]
    mw0, gw0 = ph["mw_mev"], ph["gw_mev"]
    ph["mw_mev"] = mw0 + CLOSURE_MW_OFFSET_MEV
    ph["gw_mev"] = round(gw0 * (ph["mw_mev"] / mw0) ** 3, 2)
    return card


def _yaml_value(x: Any) -> str:
    if isinstance(x, str):
        return '"' + x.replace('"', "'") + '"'
    if isinstance(x, list):
        return "[" + ", ".join(repr(float(v)) for v in x) + "]"
    if isinstance(x, float):
        return repr(x)
    return str(x)


def to_yaml(card: dict[str, Any], header: str) -> str:
    """YAML text of ``card`` with each field's meaning, unit and range as a comment."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]

    def walk(node: dict[str, Any], schema: dict[str, Any], indent: int, prefix: str) -> None:
        for key, sub in schema.items():
            path = f"{prefix}.{key}" if prefix else key
            pad = "  " * indent
            if isinstance(sub, Field):
                rng = f" [{sub.lo}, {sub.hi}]" if sub.lo is not None else ""
                unit = f" ({sub.unit})" if sub.unit else ""
                lines.append(f"{pad}# {sub.doc}{unit}{rng}")
                lines.append(f"{pad}{key}: {_yaml_value(node[key])}")
            else:
                lines.append(f"{pad}{key}:")
                walk(node[key], sub, indent + 1, path)

    walk(card, SCHEMA, 0, "")
    return "\n".join(lines) + "\n"


HEADERS = {
    "nominal": "Truth card 'nominal': the simulation. Every field is documented in place; the schema\n"
               "is wmnb/universe/card.py (SCHEMA) and the book page book/universe-format.md.",
    "data": "Truth card 'data': the hidden truth of the default data universe. Analysis chapters never\n"
            "read this file; only closure tests and 'measured vs truth' panels do.",
    "closure": "Truth card 'closure': the pure-detector closure universe, the nominal card (simulation physics\n"
               "and detector) with its own m_W, which the m_W fit must recover.",
}


def write_cards() -> None:
    """Rewrite the shipped cards from the functions above (validating them first)."""
    for name, make in (("nominal", nominal_card), ("data", data_card), ("closure", closure_card)):
        card = validate_card(make(), where=f"card {name}")
        (CARDS_DIR / f"{name}.yaml").write_text(to_yaml(card, HEADERS[name]))


if __name__ == "__main__":  # pragma: no cover
    assert FIELDS
    write_cards()
