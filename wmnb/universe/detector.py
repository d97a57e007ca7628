"""Detector simulation: from generator-level :class:`~wmnb.universe.processes.Truth` to
NanoAOD-like reconstructed events, with every knob read from the card's ``detector`` section.

Muons: standalone reconstruction, tracking (global match), ID and trigger efficiencies versus
(pT, eta, charge) from :mod:`wmnb.universe.efficiency`; fake muon candidates (hadrons of the
recoil: the tag-and-probe background) from :mod:`wmnb.universe.fakes`; curvature bias dk/k = A - e k + q M/k and resolution
(sigma_pT/pT)^2 = a^2 + c^2 pT^2 + b^2/(1 + d^2/pT^2) per eta bin; isolation from the underlying
event, pileup, the recoil projected on the muon (u_par) and, for nonprompt muons, the jet remnant;
trigger isolation, hence a u_par-dependent trigger efficiency.  Events: pileup, the hadronic
recoil and three MET estimators (PF, track-only, PUPPI: :mod:`wmnb.universe.recoil`), prefiring,
veto electrons, extra soft muons, dimuon triggers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..conventions import MUON_MASS
from . import efficiency as E
from . import kinematics as kin
from .card import N_ETA, eta_bin
from .efficiency import step_efficiency  # noqa: F401  (its home moved; kept importable from here)
from .fakes import append_fakes, fake_muons
from .processes import K_MU, Truth
from .recoil import Recoil, simulate_recoil

K_RECO = K_MU + 1  # truth muon slots + one extra soft nonprompt muon (fake candidates are appended)


def _per_eta(values: list[float], ibin: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)[ibin]


def curvature_bias(det: dict[str, Any], pt: np.ndarray, eta: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """dk/k = A - e k + q M / k for muons at (pt, eta, charge) (k = 1/pt)."""
    ms = det["momentum_scale"]
    ib = eta_bin(eta)
    k = 1.0 / pt
    return _per_eta(ms["A"], ib) - _per_eta(ms["e"], ib) * k + charge * _per_eta(ms["M"], ib) / k


def relative_resolution(det: dict[str, Any], pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """sigma_pT/pT = sqrt(a^2 + c^2 pT^2 + b^2/(1 + d^2/pT^2)) per eta bin."""
    r = det["resolution"]
    ib = eta_bin(eta)
    a, b, c, d = (_per_eta(r[x], ib) for x in "abcd")
    return np.sqrt(a * a + c * c * pt * pt + b * b / (1.0 + d * d / (pt * pt)))


def prefire_probability(pref: dict[str, Any], eta: np.ndarray) -> np.ndarray:
    """Prefiring probability per muon, rising as |eta|^3 from p_central to p_forward."""
    return pref["p_central"] + (pref["p_forward"] - pref["p_central"]) * np.minimum(np.abs(eta) / 2.4, 1.0) ** 3


def _choice(rng: np.random.Generator, values: list[int], probs: list[float], shape: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.int32)[rng.choice(len(values), size=shape, p=probs)]


def simulate(truth: Truth, det: dict[str, Any], rng: np.random.Generator, is_data: bool) -> dict[str, Any]:
    """Reconstruct the events of ``truth`` with detector card section ``det``.

    Returns ``{"scalars": {branch: (n,)}, "muon": {field: (n, K_RECO)}, "muon_exists": (n, K_RECO),
    "electron": {field: (n, 2)}, "electron_exists": ..., "keep": (n,), "recoil": Recoil}`` where
    ``keep`` is False for data events lost to prefiring and ``recoil`` holds the recoil estimators
    with their generator-side diagnostics (not written)."""
    n = truth.n
    eff = det["efficiency"]
    # ---------------- pileup
    pu = det["pileup"]
    n_true = rng.gamma(pu["shape"], pu["mean"] / pu["shape"], n)
    npv = 1 + rng.poisson(n_true * pu["vertex_eff"])
    npv_good = npv - rng.binomial(npv - 1, 0.03)

    # ---------------- truth muons + one soft nonprompt slot
    p4 = np.zeros((n, K_RECO, 4))
    p4[:, :K_MU] = truth.mu_p4
    charge = np.zeros((n, K_RECO), dtype=np.int32)
    charge[:, :K_MU] = truth.mu_charge
    valid = np.zeros((n, K_RECO), dtype=bool)
    valid[:, :K_MU] = truth.mu_valid
    prompt = np.zeros((n, K_RECO), dtype=bool)
    prompt[:, :K_MU] = truth.mu_prompt
    activity = np.zeros((n, K_RECO))
    activity[:, :K_MU] = truth.mu_activity
    sv_prob = np.zeros((n, K_RECO))
    sv_prob[:, :K_MU] = np.where(truth.mu_prompt, det["vertexing"]["sv_fake"], truth.sv_prob)
    gen_slot = np.full((n, K_RECO), -1, dtype=np.int32)
    gen_slot[:, :K_MU] = truth.mu_gen
    soft = rng.random(n) < det["extra_objects"]["soft_muon_prob"]
    s_pt = 3.0 + rng.exponential(4.0, n)
    s_eta = rng.uniform(-2.4, 2.4, n)
    s_phi = rng.uniform(-np.pi, np.pi, n)
    p4[:, K_MU] = kin.massless_p4(s_pt, s_eta, s_phi, MUON_MASS)
    charge[:, K_MU] = np.where(rng.random(n) < 0.5, 1, -1)
    valid[:, K_MU] = soft
    activity[:, K_MU] = s_pt * rng.exponential(1.0, n)
    sv_prob[:, K_MU] = 0.3

    flat = p4.reshape(-1, 4)
    pt_t, eta_t, phi_t = (a.reshape(n, K_RECO) for a in kin.pt_eta_phi(flat))
    pt_t = np.maximum(pt_t, 1e-3)
    in_acc = valid & (np.abs(eta_t) < 2.4) & (pt_t > 3.0)

    u = lambda: rng.random((n, K_RECO))  # noqa: E731
    # the efficiency steps (wmnb.universe.efficiency): every inner track of a muon is kept as a
    # tracker muon, so the reco step (tracks -> standalone) and the tracking step (standalone ->
    # global) measure exactly the card's efficiencies
    sa = in_acc & (u() < E.reco_efficiency(det, pt_t, eta_t, charge))
    has_trk = in_acc & (u() < E.TRACK_EFF)
    glob = sa & has_trk & (u() < E.tracking_efficiency(det, pt_t, eta_t, charge))
    is_trk = has_trk
    exists = is_trk | sa

    # ---------------- momentum: track curvature with bias and resolution, or standalone
    bias = curvature_bias(det, pt_t, eta_t, charge)
    sig = relative_resolution(det, pt_t, eta_t)
    k_reco = (1.0 + bias) * (1.0 + sig * rng.standard_normal((n, K_RECO))) / pt_t
    pt_trk = 1.0 / np.maximum(np.abs(k_reco), 1e-6)
    pt_sa = pt_t * np.abs(1.0 + det["resolution"]["standalone"] * rng.standard_normal((n, K_RECO)))
    pt_r = np.where(is_trk, pt_trk, pt_sa)
    ang = det["resolution"]["angle"]
    eta_r = eta_t + ang * rng.standard_normal((n, K_RECO))
    phi_r = np.mod(phi_t + ang * rng.standard_normal((n, K_RECO)) + np.pi, 2 * np.pi) - np.pi

    # ---------------- ID, impact parameters, secondary vertices
    medium = glob & (u() < E.id_efficiency(det, pt_t, eta_t, charge))
    tight = medium & (u() < 0.98)
    loose = (glob | is_trk) & (u() < eff["loose_id"])
    vx = det["vertexing"]
    sv = exists & (u() < sv_prob)
    disp = np.where(prompt, 0.0, rng.exponential(1.0, (n, K_RECO)) * np.where(sv, 1.0, 0.3))
    dxy = vx["dxy_sigma_cm"] * rng.standard_normal((n, K_RECO)) + np.where(rng.random((n, K_RECO)) < 0.5, -1, 1) * disp * 0.02
    dz = vx["dz_sigma_cm"] * rng.standard_normal((n, K_RECO)) + np.where(prompt, 0.0, 0.01 * rng.standard_normal((n, K_RECO)))

    # ---------------- isolation (needs the recoil direction relative to the muon)
    iso_p = eff["isolation"]
    ux_t, uy_t = truth.had[:, 0:1], truth.had[:, 1:2]
    upar_true = ux_t * np.cos(phi_t) + uy_t * np.sin(phi_t)
    leak = iso_p["recoil_leak"] * np.maximum(upar_true, 0.0) * rng.exponential(1.0, (n, K_RECO))
    cone = (rng.gamma(iso_p["ue_shape"], iso_p["ue_scale"], (n, K_RECO))
            + iso_p["pu_per_vertex"] * npv[:, None] * rng.gamma(2.0, 0.5, (n, K_RECO))
            + leak + activity)
    iso = cone / pt_r

    # ---------------- single-muon trigger with trigger-level isolation
    tr = eff["trigger"]
    # HLT isolation: coarser (smeared) and without recoil subtraction, so it sees the recoil
    # leaking into the cone twice as much: the trigger efficiency depends on u_par as well
    iso_trig = (cone + 2.0 * leak) / pt_r * np.maximum(1.0 + tr["iso_smear"] * rng.standard_normal((n, K_RECO)), 0.0)
    p_trig = E.trigger_muon_efficiency(det, pt_t, eta_t, charge, pt_r)
    trig_match = glob & (u() < p_trig) & (iso_trig < tr["iso_cut"]) & (np.abs(eta_r) < 2.4)
    hlt_isomu = np.any(trig_match, axis=1)

    # ---------------- dimuon triggers on the two truth-muon slots
    both = is_trk[:, 0] & is_trk[:, 1] & (charge[:, 0] != charge[:, 1])
    both &= (rng.random(n) < tr["dimuon_eff"]) & (rng.random(n) < tr["dimuon_eff"])
    m0 = kin.massless_p4(pt_r[:, 0], eta_r[:, 0], phi_r[:, 0], MUON_MASS)
    m1 = kin.massless_p4(pt_r[:, 1], eta_r[:, 1], phi_r[:, 1], MUON_MASS)
    pair = m0 + m1
    mpair = kin.mass(pair)
    ptpair = np.hypot(pair[:, 1], pair[:, 2])
    both &= (pt_r[:, 0] > 3.5) & (pt_r[:, 1] > 3.5)
    hlt_jpsi = both & (ptpair > 20.0) & (mpair > 2.9) & (mpair < 3.3)
    hlt_ups = both & (ptpair > 13.0) & (mpair > 8.5) & (mpair < 11.5)

    # ---------------- electrons (prompt + fakes), for the vetoes
    ee = det["extra_objects"]
    e_pt_t, e_eta_t, e_phi_t = kin.pt_eta_phi(truth.ele_p4)
    e_ok = truth.ele_valid & (np.abs(e_eta_t) < 2.5) & (e_pt_t > 5.0) & (rng.random(n) < ee["electron_eff"])
    fake = rng.random(n) < ee["fake_electron_prob"]
    el = {
        "pt": np.stack([e_pt_t * (1 + 0.03 * rng.standard_normal(n)), 10.0 + rng.exponential(10.0, n)], axis=1),
        "eta": np.stack([e_eta_t, rng.uniform(-2.5, 2.5, n)], axis=1),
        "phi": np.stack([e_phi_t, rng.uniform(-np.pi, np.pi, n)], axis=1),
        "cutBased": np.stack([_choice(rng, [4, 3, 2, 1], [0.75, 0.1, 0.08, 0.07], n),
                              _choice(rng, [1, 2, 3], [0.6, 0.3, 0.1], n)], axis=1),
    }
    el_exists = np.stack([e_ok, fake], axis=1)

    # ---------------- hadronic recoil and the three MET estimators (wmnb/universe/recoil.py)
    rec = simulate_recoil(truth, det["recoil"], npv, n_true, rng)
    met = met_estimators(rec, pt_r, phi_r, exists, is_trk, el, el_exists)

    # ---------------- prefiring
    pref = det["prefiring"]
    p_pref = np.where(exists, prefire_probability(pref, eta_r), 0.0)
    w_nom = np.prod(1.0 - p_pref, axis=1)
    w_up = np.prod(1.0 - np.minimum(p_pref * (1 + pref["rel_unc"]), 1.0), axis=1)
    w_dn = np.prod(1.0 - p_pref * (1 - pref["rel_unc"]), axis=1)
    if is_data:
        keep = rng.random(n) < w_nom  # a prefired event is lost
        w_nom = w_up = w_dn = np.ones(n)
    else:
        keep = np.ones(n, dtype=bool)

    muon = {
        "pt": pt_r, "eta": eta_r, "phi": phi_r, "mass": np.full((n, K_RECO), MUON_MASS),
        "charge": charge, "pfRelIso04_all": iso, "dxy": dxy, "dz": dz,
        "looseId": loose, "mediumId": medium, "tightId": tight,
        "isGlobal": glob, "isTracker": is_trk, "isStandalone": sa,
        "genPartIdx": gen_slot, "triggerMatch": trig_match, "svMatched": sv,
    }
    # fake muon candidates from the hadronic activity (the tag-and-probe background): an
    # independent stream, so they change no other object of the event
    fakes = fake_muons(truth.had, det["fake_muons"], det, rng.spawn(1)[0])
    muon, exists = append_fakes(muon, exists, fakes)
    scalars = {
        **met,
        "PV_npvs": npv.astype(np.int32), "PV_npvsGood": npv_good.astype(np.int32),
        "Pileup_nTrueInt": n_true,
        "HLT_IsoMu24": hlt_isomu, "HLT_IsoTkMu24": hlt_isomu.copy(),
        "HLT_Dimuon20_Jpsi": hlt_jpsi, "HLT_Dimuon13_Upsilon": hlt_ups,
        "L1PreFiringWeight_Nom": w_nom, "L1PreFiringWeight_Up": w_up, "L1PreFiringWeight_Dn": w_dn,
    }
    assert len(det["momentum_scale"]["A"]) == N_ETA
    return {"scalars": scalars, "muon": muon, "muon_exists": exists, "electron": el,
            "electron_exists": el_exists, "keep": keep, "recoil": rec}


#: mantissa bits of the added MET branches (NanoAOD stores TkMET, PuppiMET and the scalar sums
#: with ``precision=10``); ``MET_pt`` / ``MET_phi`` keep full float32 as in version 1
MET_EXTRA_BITS = 10


def met_estimators(rec: Recoil, pt: np.ndarray, phi: np.ndarray, exists: np.ndarray, is_trk: np.ndarray,
                   el: dict[str, np.ndarray], el_exists: np.ndarray) -> dict[str, np.ndarray]:
    """``MET_*``, ``TkMET_*``, ``PuppiMET_*`` (pt, phi, sumEt) and ``PV_nCharged``: each MET is
    -(leptons + recoil), with every reconstructed muon and electron excluded from the recoil
    (TkMET: the muons with a track, and the electrons); scalar sums add the leptons' pT."""
    from .events import round_mantissa

    mpt = np.where(exists, pt, 0.0)
    mx, my = mpt * np.cos(phi), mpt * np.sin(phi)
    ept = np.where(el_exists, el["pt"], 0.0)
    ex = np.sum(ept * np.cos(el["phi"]), axis=1)
    ey = np.sum(ept * np.sin(el["phi"]), axis=1)
    e_sum = np.sum(ept, axis=1)
    lx, ly, ls = np.sum(mx, axis=1) + ex, np.sum(my, axis=1) + ey, np.sum(mpt, axis=1) + e_sum
    lep = {"pf": (lx, ly, ls), "puppi": (lx, ly, ls)}
    # standalone-only muons (rare) have no track: they stay in the TkMET's recoil
    rows, slots = np.nonzero(exists & ~is_trk)
    tkx, tky, tks = lx.copy(), ly.copy(), ls.copy()
    np.subtract.at(tkx, rows, mx[rows, slots])
    np.subtract.at(tky, rows, my[rows, slots])
    np.subtract.at(tks, rows, mpt[rows, slots])
    lep["tk"] = (tkx, tky, tks)
    out: dict[str, np.ndarray] = {}
    for name, key in (("MET", "pf"), ("TkMET", "tk"), ("PuppiMET", "puppi")):
        lx, ly, ls = lep[key]
        ux, uy = rec.u[key]
        mex, mey = -(lx + ux), -(ly + uy)
        pt_m, phi_m = np.hypot(mex, mey), np.arctan2(mey, mex)
        if name == "MET":
            out["MET_pt"], out["MET_phi"] = pt_m, phi_m
        else:
            # rounding may step over +-pi: keep the angle in range
            out[f"{name}_pt"] = round_mantissa(pt_m, MET_EXTRA_BITS)
            out[f"{name}_phi"] = np.clip(round_mantissa(phi_m, MET_EXTRA_BITS), -np.float32(np.pi), np.float32(np.pi))
        out[f"{name}_sumEt"] = round_mantissa(rec.sumet[key] + ls, MET_EXTRA_BITS)
    out["PV_nCharged"] = rec.n_charged
    return out
