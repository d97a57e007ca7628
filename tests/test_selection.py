"""The skim selections against an independent per-event reference (plain Python loops)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import uproot

from wmnb.conventions import MUON_MASS
from wmnb.engine import selections as S
from wmnb.engine.skims import run_selections
from wmnb.engine.testing import write_toy_nanoaod

N = 3000


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    return {"mc": str(write_toy_nanoaod(d / "mc.root", N, seed=11)),
            "data": str(write_toy_nanoaod(d / "data.root", N, seed=12, mc=False)),
            "onia": str(write_toy_nanoaod(d / "onia.root", N, seed=13, kind="onia"))}


def _events(path):
    t = uproot.open(path)["Events"]
    arrs = t.arrays(library="ak")
    return arrs.to_list()


def _mt(pt, phi, met, mphi):
    return math.sqrt(max(2 * pt * met * (1 - math.cos(phi - mphi)), 0.0))


def _ref_w(ev):
    """Reference W skim for one event: (muon index, veto) or None."""
    if not (ev["HLT_IsoMu24"] or ev["HLT_IsoTkMu24"]):
        return None
    n = len(ev["Muon_pt"])
    best = None
    for i in range(n):
        good = (ev["Muon_mediumId"][i] and abs(ev["Muon_eta"][i]) < 2.4 and ev["Muon_pt"][i] > 20
                and abs(ev["Muon_dxy"][i]) < 0.05 and ev["Muon_triggerMatch"][i])
        if good and (best is None or ev["Muon_pt"][i] > ev["Muon_pt"][best]):
            best = i
    if best is None:
        return None
    extra = sum(1 for i in range(n) if i != best and ev["Muon_looseId"][i] and ev["Muon_pt"][i] > 15
                and abs(ev["Muon_eta"][i]) < 2.4)
    ele = sum(1 for i in range(len(ev["Electron_pt"])) if ev["Electron_pt"][i] > 10
              and abs(ev["Electron_eta"][i]) < 2.5 and ev["Electron_cutBased"][i] >= 1)
    return best, extra == 0 and ele == 0


def test_w_selection_matches_reference(toy):
    res = run_selections([toy["mc"]], ["w"], norm=2.0, step=1000, progress=False)["w"]
    cols = res["columns"]
    evs = _events(toy["mc"])
    rows = []
    for ev in evs:
        r = _ref_w(ev)
        if r is not None:
            rows.append((ev, *r))
    assert len(rows) == len(cols["weight"]) > 100
    for k, (ev, i, veto) in enumerate(rows):
        assert cols["event"][k] == ev["event"]
        assert cols["mu_pt"][k] == np.float32(ev["Muon_pt"][i])
        assert cols["mu_charge"][k] == ev["Muon_charge"][i]
        assert cols["veto_pass"][k] == veto
        mt = _mt(ev["Muon_pt"][i], ev["Muon_phi"][i], ev["MET_pt"], ev["MET_phi"])
        assert cols["mt"][k] == pytest.approx(mt, rel=1e-5, abs=1e-4)
        w = ev["genWeight"] * 2.0 * ev["L1PreFiringWeight_Nom"]
        assert cols["weight"][k] == pytest.approx(w, rel=1e-12)
        # u = -(MET + mu): u_par = u . mu_hat
        ux = -(ev["MET_pt"] * math.cos(ev["MET_phi"]) + ev["Muon_pt"][i] * math.cos(ev["Muon_phi"][i]))
        uy = -(ev["MET_pt"] * math.sin(ev["MET_phi"]) + ev["Muon_pt"][i] * math.sin(ev["Muon_phi"][i]))
        upar = ux * math.cos(ev["Muon_phi"][i]) + uy * math.sin(ev["Muon_phi"][i])
        assert cols["ut_para"][k] == pytest.approx(upar, rel=1e-4, abs=1e-3)
        # gen matching: the muon's GenPart and the boson's other daughter
        gi = ev["Muon_genPartIdx"][i]
        if gi >= 0:
            assert cols["mu_gen_pt"][k] == np.float32(ev["GenPart_pt"][gi])
        else:
            assert np.isnan(cols["mu_gen_pt"][k])
    # cutflow consistency: last skim step equals the number of rows, weights add up
    cf = res["cutflow"]
    assert cf["trigger-matched"][0] == len(rows)
    assert cf["trigger-matched"][1] == pytest.approx(cols["weight"].sum())
    assert cf["all events"][0] == N


def _ref_pair(ev, trig, pt_min, window, need_dxy, need_match):
    if not any(ev[t] for t in trig):
        return None
    n = len(ev["Muon_pt"])
    good = [i for i in range(n) if ev["Muon_mediumId"][i] and abs(ev["Muon_eta"][i]) < 2.4
            and ev["Muon_pt"][i] > pt_min and (not need_dxy or abs(ev["Muon_dxy"][i]) < 0.05)]
    if len(good) < 2:
        return None
    good.sort(key=lambda i: -ev["Muon_pt"][i])
    a, b = good[0], good[1]
    if ev["Muon_charge"][a] * ev["Muon_charge"][b] >= 0:
        return None
    if need_match and not (ev["Muon_triggerMatch"][a] or ev["Muon_triggerMatch"][b]):
        return None
    p4 = [0.0, 0.0, 0.0, 0.0]
    for i in (a, b):
        pt, eta, phi = ev["Muon_pt"][i], ev["Muon_eta"][i], ev["Muon_phi"][i]
        px, py, pz = pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta)
        e = math.sqrt(px * px + py * py + pz * pz + MUON_MASS ** 2)
        p4 = [p4[0] + e, p4[1] + px, p4[2] + py, p4[3] + pz]
    m = math.sqrt(max(p4[0] ** 2 - p4[1] ** 2 - p4[2] ** 2 - p4[3] ** 2, 0))
    if not window[0] < m < window[1]:
        return None
    plus = a if ev["Muon_charge"][a] > 0 else b
    minus = b if plus == a else a
    return plus, minus, m


@pytest.mark.parametrize("selection", ["z", "jpsi", "upsilon"])
def test_dimuon_selections_match_reference(toy, selection):
    path = toy["onia"] if selection in ("jpsi", "upsilon") else toy["mc"]
    cols = run_selections([path], [selection], step=700, progress=False)[selection]["columns"]
    if selection == "z":
        args = (("HLT_IsoMu24", "HLT_IsoTkMu24"), 20.0, S.Z_MASS_SKIM, True, True)
    elif selection == "jpsi":
        args = (("HLT_Dimuon20_Jpsi",), 3.0, S.JPSI_MASS_SKIM, False, False)
    else:
        args = (("HLT_Dimuon13_Upsilon",), 3.0, S.UPSILON_MASS_SKIM, False, False)
    rows = [(ev, r) for ev in _events(path) if (r := _ref_pair(ev, *args)) is not None]
    assert len(rows) == len(cols["mass"]) > 50
    for k, (ev, (ip, im, m)) in enumerate(rows):
        assert cols["event"][k] == ev["event"]
        assert cols["mup_pt"][k] == np.float32(ev["Muon_pt"][ip])
        assert cols["mum_eta"][k] == np.float32(ev["Muon_eta"][im])
        assert cols["mup_charge"][k] == 1 and cols["mum_charge"][k] == -1
        assert cols["mass"][k] == pytest.approx(m, rel=1e-5)


def test_wlike_parity_and_recoil(toy):
    res = run_selections([toy["mc"]], ["z", "wlike"], step=1000, progress=False)
    z, wl = res["z"]["columns"], res["wlike"]["columns"]
    assert len(z["mass"]) == len(wl["mass"])
    odd = z["event"] % 2 == 1
    np.testing.assert_array_equal(wl["mu_pt"], np.where(odd, z["mup_pt"], z["mum_pt"]))
    np.testing.assert_array_equal(wl["mu_charge"], np.where(odd, 1, -1))
    np.testing.assert_array_equal(wl["mu2_charge"], np.where(odd, -1, 1))
    # MET with mu2 made invisible = MET + mu2; m_T from mu and that MET
    ex = z["met_pt"] * np.cos(z["met_phi"]) + wl["mu2_pt"] * np.cos(wl["mu2_phi"])
    ey = z["met_pt"] * np.sin(z["met_phi"]) + wl["mu2_pt"] * np.sin(wl["mu2_phi"])
    met = np.hypot(ex, ey)
    mt = np.sqrt(2 * wl["mu_pt"] * met * (1 - np.cos(wl["mu_phi"] - np.arctan2(ey, ex))))
    np.testing.assert_allclose(wl["mt"], mt, rtol=2e-4, atol=2e-3)
    # the reversed choice is the same formula with the roles swapped
    ex2 = z["met_pt"] * np.cos(z["met_phi"]) + wl["mu_pt"] * np.cos(wl["mu_phi"])
    ey2 = z["met_pt"] * np.sin(z["met_phi"]) + wl["mu_pt"] * np.sin(wl["mu_phi"])
    mt2 = np.sqrt(2 * wl["mu2_pt"] * np.hypot(ex2, ey2) * (1 - np.cos(wl["mu2_phi"] - np.arctan2(ey2, ex2))))
    np.testing.assert_allclose(wl["alt_mt"], mt2, rtol=2e-4, atol=2e-3)
    # W-like events are mostly Z decays: m_T peaks near m_Z, not at zero
    assert np.median(wl["mt"]) > 50


def test_tnp_pairs_match_reference(toy):
    cols = run_selections([toy["mc"]], ["tnp"], step=1000, progress=False)["tnp"]["columns"]
    rows = []
    for ev in _events(toy["mc"]):
        if not (ev["HLT_IsoMu24"] or ev["HLT_IsoTkMu24"]):
            continue
        n = len(ev["Muon_pt"])
        for t in range(n):
            if not (ev["Muon_tightId"][t] and abs(ev["Muon_eta"][t]) < 2.4 and ev["Muon_pt"][t] > 25
                    and abs(ev["Muon_dxy"][t]) < 0.05 and ev["Muon_pfRelIso04_all"][t] < 0.15
                    and ev["Muon_triggerMatch"][t]):
                continue
            for p in range(n):
                if p == t or ev["Muon_charge"][p] * ev["Muon_charge"][t] >= 0:
                    continue
                if not (abs(ev["Muon_eta"][p]) < 2.4 and ev["Muon_pt"][p] > 15):
                    continue
                pt1, pt2 = ev["Muon_pt"][t], ev["Muon_pt"][p]
                m2 = 2 * pt1 * pt2 * (math.cosh(ev["Muon_eta"][t] - ev["Muon_eta"][p])
                                      - math.cos(ev["Muon_phi"][t] - ev["Muon_phi"][p]))
                if 50 < math.sqrt(m2) < 130:
                    rows.append((ev["event"], pt1, pt2, bool(ev["Muon_isGlobal"][p]),
                                 bool(ev["Muon_pfRelIso04_all"][p] < 0.15)))
    got = sorted(zip(cols["event"].tolist(), cols["tag_pt"].tolist(), cols["probe_pt"].tolist(),
                     cols["probe_pass_glb"].tolist(), cols["probe_pass_iso"].tolist()))
    ref = sorted((e, float(np.float32(a)), float(np.float32(b)), g, i) for e, a, b, g, i in rows)
    assert len(ref) > 50
    assert got == ref


def test_final_cuts_and_abcd():
    cols = {"mu_pt": np.array([30., 30., 30., 30., 30., 30., 20., 30.]),
            "mu_iso": np.array([0.1, 0.3, 0.1, 0.3, 0.1, 0.3, 0.1, 0.1]),
            "mt": np.array([50., 50., 30., 30., 10., 10., 50., 50.]),
            "veto_pass": np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)}
    np.testing.assert_array_equal(S.w_signal_mask(cols), [1, 0, 0, 0, 0, 0, 0, 0])
    regions = S.abcd_region(cols)
    names = [S.ABCD_REGIONS[r] if r >= 0 else None for r in regions]
    assert names == ["pass_high", "fail_high", "pass_mid", "fail_mid", "pass_low", "fail_low", None, None]
    cf = S.final_cutflow("w", {**cols, "weight": np.ones(8)})
    assert list(cf) == ["skim", "26<pT<56", "veto", "iso<0.15", "mT>40"]
    assert cf["mT>40"][0] == 1


def test_data_weights_are_one(toy):
    cols = run_selections([toy["data"]], ["w"], progress=False)["w"]["columns"]
    assert len(cols["weight"]) > 100
    assert np.all(cols["weight"] == 1.0)
    assert "gen_mass" not in cols and "lhe_pdf" not in cols


def test_mc_gen_and_lhe_columns(toy):
    cols = run_selections([toy["mc"]], ["w"], progress=False)["w"]["columns"]
    assert cols["lhe_scale"].shape == (len(cols["weight"]), 9)
    assert cols["lhe_pdf"].shape == (len(cols["weight"]), 11)
    # W events (GenV_pdgId = ±24): the other lepton is the neutrino, charge matches the boson
    w = np.abs(cols["gen_pdgid"]) == 24
    matched = w & ~np.isnan(cols["mu_gen_pt"])
    assert matched.sum() > 100
    assert np.all(np.sign(cols["gen_pdgid"][matched]) == cols["mu_charge"][matched])
    assert np.all(np.isfinite(cols["nu_gen_pt"][matched]))
