"""The recoil estimators and features in the W, Z and W-like skims (chapter 01 on the smoke
universe): the track-only and PUPPI METs, the scalar sums, PV_npvs and the charged multiplicity,
their recoil on the selection's axis, and their consistency after a muon correction (the
correction pipeline recomputes them from recoil vectors that exclude the muons)."""
from __future__ import annotations

import numpy as np
import pytest

from wmnb.corrections import Correction
from wmnb.engine.kinematics import project, to_ptphi, to_xy
from wmnb.engine.pipeline import run_pipeline
from wmnb.engine.selections import ALT_MET, SUMET

SELECTIONS = ("w", "z", "wlike")
FEATURES = ("tkmet_pt", "tkmet_phi", "puppimet_pt", "puppimet_phi", "tkmet_ut_para", "tkmet_ut_perp",
            "puppimet_ut_para", "puppimet_ut_perp", "met_sumet", "tkmet_sumet", "puppimet_sumet", "npvs", "n_charged")
PREFIXES = {"w": ("mu",), "wlike": ("mu",), "z": ("mup", "mum")}


@pytest.fixture(scope="module")
def skims():
    from wmnb.engine import read_skim, skim_path

    samples = {"w": ("wplus_munu", "z_mumu", "data"), "z": ("z_mumu", "data"), "wlike": ("z_mumu", "data")}
    pairs = [(s, p) for s, ps in samples.items() for p in ps]
    if not all(skim_path("smoke", s, p).is_file() for s, p in pairs):
        from wmnb import runner

        runner.run("smoke", only=["01_selection"], progress=False)
    return {(s, p): read_skim("smoke", s, p) for s, p in pairs}


def _recoil(cols, e, prefixes):
    ex, ey = to_xy(cols[f"{e}_pt"], cols[f"{e}_phi"])
    for p in prefixes:
        x, y = to_xy(cols[f"{p}_pt"], cols[f"{p}_phi"])
        ex, ey = ex + x, ey + y
    return -ex, -ey


def test_skims_carry_the_recoil_estimators(skims):
    """Every W, Z and W-like skim (simulation and data) holds the other estimators and the
    features, finite and in range; their recoil projections follow from their MET and the muons
    as the PF ones do; PF stays where the m_T cut reads it (``met_pt``, ``mt``)."""
    for (sel, sample), cols in skims.items():
        n = len(cols["weight"])
        assert n > 100, (sel, sample)
        for k in FEATURES + ("met_pt", "ut_para", "npv"):
            assert k in cols and len(cols[k]) == n, (sel, sample, k)
            assert np.all(np.isfinite(cols[k])), (sel, sample, k)
        assert np.all(cols["n_charged"] >= 0) and np.all(cols["npvs"] >= cols["npv"])
        for k, _ in SUMET:
            assert np.all(cols[k] > 0), (sel, sample, k)
        axis = cols["pair_phi"] if sel == "z" else cols["mu_phi"]
        for e, _ in ALT_MET:
            para, perp = project(*_recoil(cols, e, PREFIXES[sel]), np.asarray(axis, np.float64))
            np.testing.assert_allclose(cols[f"{e}_ut_para"], para, atol=2e-3 * (1 + np.abs(para).max()))
            np.testing.assert_allclose(cols[f"{e}_ut_perp"], perp, atol=2e-3 * (1 + np.abs(perp).max()))


def test_z_skim_estimators_respond_as_the_truth_says(skims):
    """Z -> mu mu simulation: the track-only recoil responds about half as much as PF, PUPPI a
    little less than PF; the estimators' u_perp (their errors) are positively correlated."""
    z = skims[("z", "z_mumu")]
    m = (z["pair_pt"] > 15) & (z["mass"] > 60) & (z["mass"] < 120)
    resp = {e: -np.mean(z[f"{e}ut_para"][m]) / np.mean(z["pair_pt"][m]) for e in ("", "tkmet_", "puppimet_")}
    assert 0.55 < resp[""] < 0.95 and 0.35 < resp["tkmet_"] / resp[""] < 0.65 and 0.9 < resp["puppimet_"] / resp[""] < 1.0, resp
    c = np.corrcoef([z["ut_perp"], z["tkmet_ut_perp"], z["puppimet_ut_perp"]])
    assert c[0, 1] > 0.1 and c[0, 2] > 0.7 and c[1, 2] > 0.1, c


class _Shift(Correction):
    """Moves every muon's pT by 2 %."""

    name, kinds = "toyShift", ("muon",)

    def correct(self, columns, sample):
        for p in sample.muon_prefixes:
            columns[f"{p}_pt"] = columns[f"{p}_pt"] * 1.02


@pytest.mark.parametrize("sel", SELECTIONS)
def test_estimators_follow_a_muon_correction(skims, sel):
    """After a muon correction the other estimators' METs are recomputed from their recoil, which
    excludes the muons and so does not move: MET' = -(recoil + corrected muons); stale skim
    values would fail.  For W-like the reversed parity makes the other muon invisible."""
    cols = skims[(sel, "z_mumu")]
    u = {e: _recoil(cols, e, PREFIXES[sel]) for e, _ in ALT_MET}
    out = run_pipeline(sel, "z_mumu", cols, corrections=[_Shift()], final_cuts=None).columns
    for e, _ in ALT_MET:
        ux, uy = u[e]
        mx = my = 0.0
        for p in PREFIXES[sel]:
            x, y = to_xy(out[f"{p}_pt"], out[f"{p}_phi"])
            mx, my = mx + x, my + y
        pt, _ = to_ptphi(-(ux + mx), -(uy + my))
        np.testing.assert_allclose(out[f"{e}_pt"], pt, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(out[f"{e}_ut_para"], cols[f"{e}_ut_para"], atol=2e-3 * (1 + np.abs(ux).max()))
        assert not np.allclose(out[f"{e}_pt"], cols[f"{e}_pt"], atol=1e-3)
    if sel == "wlike":
        rev = run_pipeline(sel, "z_mumu", cols, final_cuts=None, wlike_reversed=True).columns
        z = skims[("z", "z_mumu")]
        assert len(z["weight"]) == len(cols["weight"])
        for e, _ in ALT_MET:
            # the reversed choice's MET: the Z skim's MET with the new "neutrino" muon added
            ex, ey = to_xy(z[f"{e}_pt"], z[f"{e}_phi"])
            nx, ny = to_xy(rev["mu2_pt"], rev["mu2_phi"])
            np.testing.assert_allclose(rev[f"{e}_pt"], np.hypot(ex + nx, ey + ny), rtol=2e-4, atol=2e-3)
