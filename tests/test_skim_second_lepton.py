"""The generator-level second lepton of the W skim (``lep2_gen_*``), which the veto scale factor
of the Z background needs: a synthetic generator record, then the smoke universe's skims."""
from __future__ import annotations

import numpy as np
import pytest

from wmnb.engine import selections as S
from wmnb.engine.nanoaod import Chunk, Collection

# GenPart of three events (pdgId, mother, pt, eta):
#   0: W+ -> mu+ nu, the mu+ radiating twice (three copies); the reco muon matches the last copy
#   1: Z -> mu- mu+, the mu- radiating; the reco mu- matches its last copy
#   2: Z -> mu- mu+, the mu+ radiating; the reco mu+ has no generator match
GEN = [
    [(24, -1, 5.0, 0.5), (-13, 0, 40.0, 0.4), (14, 0, 38.0, -1.1), (-13, 1, 39.0, 0.41), (22, 1, 1.0, 0.4),
     (-13, 3, 37.0, 0.42), (22, 3, 2.0, 0.4)],
    [(23, -1, 3.0, 0.1), (13, 0, 44.0, 0.2), (-13, 0, 45.0, 2.7), (13, 1, 40.0, 0.21), (22, 1, 4.0, 0.2)],
    [(23, -1, 3.0, 0.1), (13, 0, 44.0, -2.2), (-13, 0, 45.0, 1.0), (-13, 2, 41.0, 1.01), (22, 2, 4.0, 1.0)],
]
MATCH = [5, 3, -1]     # the selected muon's GenPart index in each event
CHARGE = [1, -1, 1]


def _chunk() -> Chunk:
    counts = [len(e) for e in GEN]
    off = np.concatenate([[0], np.cumsum(counts)])
    flat = [p for e in GEN for p in e]
    gp = Collection(off, {"pdgId": np.array([p[0] for p in flat], np.int32),
                          "genPartIdxMother": np.array([p[1] for p in flat], np.int32),
                          "pt": np.array([p[2] for p in flat], np.float32),
                          "eta": np.array([p[3] for p in flat], np.float32),
                          "phi": np.zeros(len(flat), np.float32)})
    mu = Collection(np.arange(4), {"genPartIdx": np.array(MATCH, np.int32), "charge": np.array(CHARGE, np.int32)})
    return Chunk("<test>", 0, 3, True, {}, {"Muon": mu, "GenPart": gp})


def test_second_lepton_is_the_other_daughter_after_fsr():
    """W: the neutrino; Z: the other muon at its last (post-FSR) copy, also when the selected
    muon has no generator match.  A rule that returned the selected muon's own chain, the
    pre-FSR copy or the first daughter would fail here."""
    out = S._gen_second_lepton(_chunk(), np.ones(3, bool), np.arange(3), np.array(CHARGE))
    np.testing.assert_array_equal(out["lep2_gen_pdgid"], [14, -13, 13])
    np.testing.assert_allclose(out["lep2_gen_pt"], [38.0, 45.0, 44.0])
    np.testing.assert_allclose(out["lep2_gen_eta"], [-1.1, 2.7, -2.2], rtol=1e-6)


@pytest.fixture(scope="module")
def smoke_w_skims():
    from wmnb.engine import read_skim, skim_path

    samples = ("wplus_munu", "z_mumu", "qcd")
    if not all(skim_path("smoke", "w", s).is_file() for s in samples):
        from wmnb import runner

        runner.run("smoke", only=["01_selection"], progress=False)
    return {s: read_skim("smoke", "w", s) for s in samples}


def test_w_skim_second_lepton_on_smoke(smoke_w_skims):
    """On the smoke universe: the W's second lepton is its neutrino (``nu_gen_*``); for Z -> mu
    mu it is the opposite-charge muon, the selected muon and it rebuild the Z mass, and it lies
    in the veto acceptance (pT > 15 GeV, |eta| < 2.4) for almost every event that fails the veto
    but for few that pass it (those are what the veto scale factor corrects).  The eta of the
    wrong muon, or no eta at all, fails this."""
    w, z, qcd = (smoke_w_skims[s] for s in ("wplus_munu", "z_mumu", "qcd"))
    for c in (w, z, qcd):
        assert set(S.LEP2_COLUMNS) <= set(c)
    assert np.all(w["lep2_gen_pdgid"] == 14)
    np.testing.assert_array_equal(w["lep2_gen_pt"], w["nu_gen_pt"])
    np.testing.assert_array_equal(w["lep2_gen_phi"], w["nu_gen_phi"])
    assert np.all(np.isfinite(w["lep2_gen_eta"]))
    # Z -> mu mu: the other muon
    assert np.all(z["lep2_gen_pdgid"] == 13 * z["mu_charge"])
    inacc = (np.abs(z["lep2_gen_eta"]) < 2.4) & (z["lep2_gen_pt"] > 15)
    veto = z["veto_pass"].astype(bool)
    assert veto.sum() > 200 and (~veto).sum() > 200
    assert inacc[~veto].mean() > 0.97 and inacc[veto].mean() < 0.2
    m = _mass(z["mu_gen_pt"], z["mu_gen_eta"], z["mu_gen_phi"], z["lep2_gen_pt"], z["lep2_gen_eta"], z["lep2_gen_phi"])
    d = (m - z["gen_mass"])[np.isfinite(m)]
    assert abs(np.median(d)) < 0.05 and np.mean(np.abs(d) < 1.0) > 0.7     # below the Z only by FSR
    # nonprompt muons: no boson, no second lepton
    assert np.all(qcd["lep2_gen_pdgid"] == 0) and np.all(np.isnan(qcd["lep2_gen_eta"]))


def _mass(pt1, eta1, phi1, pt2, eta2, phi2) -> np.ndarray:
    p = [np.asarray(x, np.float64) for x in (pt1, eta1, phi1, pt2, eta2, phi2)]
    m2 = 2 * p[0] * p[3] * (np.cosh(p[1] - p[4]) - np.cos(p[2] - p[5]))
    return np.sqrt(np.maximum(m2, 0.0))
