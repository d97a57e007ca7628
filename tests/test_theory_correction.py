"""The theory correction of chapter 06 (wmnb.theory.correction): the q_T reweighting reproduces a
target exactly, empty bins fail by name, the helicity weights move one A_i by the asked amount,
the tables round-trip and act on the right events, PDF CL scaling, a missing LHE branch."""
from __future__ import annotations

import numpy as np
import pytest
import uproot

from wmnb.corrections import SampleInfo
from wmnb.theory import MomentsInputError, angular_moments, read_generator_events
from wmnb.theory.correction import (TheoryCorrection, TheoryTables, load_correction, pdf_variations,
                                    qt_reweighting)
from test_theory_moments import _draw_angles

QE = np.array([0.0, 5.0, 10.0, 20.0, 400.0])
YE = np.array([0.0, 1.0, 2.0, 5.0])


def test_reweighting_reproduces_a_target_spectrum_exactly():
    rng = np.random.default_rng(1)
    qt = rng.exponential(8.0, 200_000)
    y = rng.normal(0.0, 1.5, qt.size)
    w = rng.lognormal(0.0, 0.5, qt.size)
    sim, _, _ = np.histogram2d(np.abs(y), qt, bins=(YE, QE), weights=w)
    target = np.array([[0.4, 0.3, 0.2, 0.1], [0.3, 0.3, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25]])
    factor, empty = qt_reweighting(target, sim)
    assert not empty.any()
    iq = np.searchsorted(QE, qt, side="right") - 1
    iy = np.minimum(np.searchsorted(YE, np.abs(y), side="right") - 1, YE.size - 2)
    rew, _, _ = np.histogram2d(np.abs(y), qt, bins=(YE, QE), weights=w * factor[iy, iq])
    np.testing.assert_allclose(rew / rew.sum(axis=1, keepdims=True), target, rtol=1e-12)
    np.testing.assert_allclose(rew.sum(axis=1), sim.sum(axis=1), rtol=1e-12)   # |y| untouched
    # a wrong convention (prediction over the *global* simulated fractions) fails this test
    wrong = target / (sim / sim.sum())
    bad, _, _ = np.histogram2d(np.abs(y), qt, bins=(YE, QE), weights=w * wrong[iy, iq])
    assert not np.allclose(bad.sum(axis=1), sim.sum(axis=1), rtol=1e-3)


def test_reweighting_empty_bins_fail_by_name():
    sim = np.array([[10.0, 5.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    pred = np.array([[0.5, 0.3, 0.199, 0.001], [0.5, 0.3, 0.1, 0.1]])
    with pytest.raises(ValueError, match=r"\|y\| bins \[1\] have no simulated events"):
        qt_reweighting(pred, sim, what="of wplus")
    sim[1] = [3.0, 2.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"of z: \|y\| bin 1 has empty q_T bins holding 10.00%"):
        qt_reweighting(pred, sim, what="of z")
    pred[1] = [0.5, 0.3, 0.1995, 0.0005]     # little prediction in the empty bin: factor 1 there
    factor, empty = qt_reweighting(pred, sim)
    assert empty.sum() == 2 and factor[0, 3] == 1.0 and factor[1, 3] == 1.0


def _tables(a_nom: float = 0.2, shift: float = 0.05) -> TheoryTables:
    hq, hy = np.array([0.0, 10.0, 400.0]), np.array([0.0, 5.0])
    nom = {b: np.full((YE.size - 1, QE.size - 1), f) for b, f in (("wplus", 1.1), ("wminus", 0.9), ("z", 1.05))}
    var = {b: {"np_kt_w": (np.full_like(v, 1.2), np.full_like(v, 0.8))} for b, v in nom.items() if b != "z"}
    var["z"] = {"np_kt_z": (np.full_like(nom["z"], 1.3), np.full_like(nom["z"], 0.7))}
    ang = {b: np.zeros((2, 1, 8)) for b in nom}
    for b in ang:
        ang[b][..., 0] = a_nom
    sh = {b: {f"{s}{d}": np.zeros((2, 1, 8)) for s in ("MuR", "MuF") for d in ("Up", "Down")} for b in nom}
    for b in sh:
        sh[b]["MuRUp"][..., 0] = shift
        sh[b]["MuRDown"][..., 0] = -shift
    return TheoryTables(QE, YE, hq, hy, nom, var, ang, sh, 1.0, {"test": True})


def _columns(n: int = 6) -> dict[str, np.ndarray]:
    return {"gen_pdgid": np.array([24, -24, 23, 24, 0, 23])[:n], "gen_qt": np.array([1.0, 7.0, 12.0, 30.0, 5.0, 3.0])[:n],
            "gen_y": np.array([0.5, -1.5, 2.5, 0.1, 0.0, -0.2])[:n],
            "gen_cos_cs": np.array([0.3, -0.5, 0.9, 0.0, 0.2, -0.7])[:n],
            "gen_phi_cs": np.array([0.1, 1.0, 2.0, 3.0, 4.0, 5.0])[:n],
            "lhe_pdf": np.tile([1.0, 1.1, 0.9], (n, 1))}


def test_correction_acts_on_the_right_events_and_round_trips(tmp_path):
    tabs = _tables()
    path = tabs.save(tmp_path / "theory.h5")
    corr = load_correction(path)
    assert corr.supersedes == ("pdf", "scales")
    np.testing.assert_array_equal(corr.tables.qt_nominal["z"], tabs.qt_nominal["z"])
    assert corr.tables.provenance == {"test": True}
    cols = _columns()
    info = SampleInfo("wplus_munu", False, "w")
    np.testing.assert_allclose(corr.nominal_factor(cols, info), [1.1, 0.9, 1.05, 1.1, 1.0, 1.05])
    assert corr.nominal_factor(cols, SampleInfo("data", True, "w")) is None
    assert corr.nominal_factor(cols, SampleInfo("ttbar", False, "w")) is None
    vs = {v.nuisance: v for v in corr.iter_variations(cols, info)}
    kt_w, kt_z = vs["np_kt_w"].full(6), vs["np_kt_z"].full(6)
    np.testing.assert_allclose(kt_w[0], [1.2, 1.2, 1.0, 1.2, 1.0, 1.0])        # W-only parameter
    np.testing.assert_allclose(kt_z[0], [1.0, 1.0, 1.3, 1.0, 1.0, 1.3])
    # A0 muR, W class, q_T bin 0: events 0 and 1 only, factor 1 + dA P0 / (1 + cos^2 + A0 P0)
    v = vs["A0_MuR_W_qT0"]
    assert sorted(v.rows.tolist()) == [0, 1]
    c = cols["gen_cos_cs"][v.rows]
    p0 = 0.5 * (1 - 3 * c * c)
    np.testing.assert_allclose(v.up, 1 + 0.05 * p0 / (1 + c * c + 0.2 * p0))
    np.testing.assert_allclose(v.down, 1 - 0.05 * p0 / (1 + c * c + 0.2 * p0))
    assert sorted(vs["A0_MuR_Z_qT1"].rows.tolist()) == [2]
    np.testing.assert_allclose(vs["pdf1"].up, 1.1)
    assert {v.group for v in vs.values()} == {"pTV", "angularCoeffs", "pdf"}
    with pytest.raises(KeyError, match=r"lacks the generator columns \['gen_cos_cs'\]"):
        corr.nominal_factor({k: v for k, v in cols.items() if k != "gen_cos_cs"}, info)
    (tmp_path / "bad.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"bad\.h5: not a readable HDF5 file of theory tables"):
        load_correction(tmp_path / "bad.h5")


def test_helicity_weights_move_one_coefficient_by_the_shift():
    """Events drawn with A0..A4 reweighted by 1 + dA_i P_i / (1 + cos^2 + sum A_j P_j) have
    A_i + dA_i and the other coefficients unchanged (within their errors)."""
    rng = np.random.default_rng(5)
    n = 400_000
    a = np.array([0.3, 0.1, 0.25, -0.08, 0.5, 0.0, 0.0, 0.0])
    c, f = _draw_angles(rng, np.tile(a[:, None], (1, n)))
    qt, y = np.full(n, 5.0), np.full(n, 0.5)
    hq, hy = np.array([0.0, 10.0]), np.array([0.0, 1.0])
    for i, da in ((0, 0.2), (4, -0.15), (1, 0.1)):
        ang = {"wplus": np.tile(a, (1, 1, 1))}
        shift = np.zeros((1, 1, 8))
        shift[..., i] = da
        sh = {"wplus": {"MuRUp": shift, "MuRDown": -shift, "MuFUp": 0 * shift, "MuFDown": 0 * shift}}
        tabs = TheoryTables(hq, hy, hq, hy, {"wplus": np.ones((1, 1))}, {"wplus": {}}, ang, sh)
        cols = {"gen_pdgid": np.full(n, 24), "gen_qt": qt, "gen_y": y, "gen_cos_cs": c, "gen_phi_cs": f}
        var = {v.nuisance: v for v in TheoryCorrection(tabs).iter_variations(cols, SampleInfo("wplus_munu", False, "w"))}
        up, _ = var[f"A{i}_MuR_W_qT0"].full(n)
        m0 = angular_moments(qt, y, c, f, None, hq, hy)
        m1 = angular_moments(qt, y, c, f, up, hq, hy)
        expect = m0.coeffs[0, 0].copy()
        expect[i] += da
        pulls = (m1.coeffs[0, 0] - expect) / m0.errors()[0, 0]
        assert np.all(np.abs(pulls[:5]) < 0.5), (i, np.round(pulls, 3))   # a weight without the 1/D fails by >10 sigma


def test_pdf_variations_and_cl_scale():
    pdf = np.array([[1.0, 1.0 + 0.1645, 1.0 - 0.1645]])
    (v,) = list(pdf_variations(pdf, 1.645))
    np.testing.assert_allclose([v.up[0], v.down[0]], [1.1, 0.9])
    with pytest.raises(ValueError, match="1 \\+ 2k"):
        list(pdf_variations(np.ones((2, 4))))


def test_missing_lhe_branch_fails_by_name(tmp_path):
    cols = {b: np.ones(3, np.float32) for b in ("GenV_pt", "GenV_y", "GenV_cosThetaCS", "GenV_phiCS", "genWeight")}
    with uproot.recreate(tmp_path / "gen.root") as f:
        f.mktree("Events", {k: v.dtype for k, v in cols.items()}).extend(cols)
    with pytest.raises(MomentsInputError, match=r"gen\.root: missing branch\(es\) \['LHEScaleWeight'\]"):
        read_generator_events([tmp_path / "gen.root"], weight_branches=("LHEScaleWeight",))


def test_pre_fsr_decay_products_invert_the_collins_soper_angles():
    """The two-body decay at given Collins-Soper angles (wmnb.theory.ew) against the universe's own
    frame (an independent implementation): its angles of the products are the ones put in."""
    from wmnb.theory.ew import decay_products
    from wmnb.universe.kinematics import cs_angles

    rng = np.random.default_rng(3)
    n = 2000
    m, qt = rng.uniform(60, 120, n), rng.exponential(15.0, n)
    y, phi = rng.uniform(-3, 3, n), rng.uniform(-np.pi, np.pi, n)
    c, f = rng.uniform(-1, 1, n), rng.uniform(0, 2 * np.pi, n)
    first, second = decay_products(m, qt, y, phi, c, f)
    c2, f2 = cs_angles(first, second)
    np.testing.assert_allclose(c2, c, atol=1e-9)
    np.testing.assert_allclose(np.cos(f2 - f), 1.0, atol=1e-9)
    boson = first + second
    np.testing.assert_allclose(np.hypot(boson[:, 1], boson[:, 2]), qt, rtol=1e-9, atol=1e-9)


def test_fsr_variation_keeps_the_count_and_scales_the_radiating_muons():
    from wmnb.theory.ew import decay_products, emission_fraction, fsr_factors

    emitted = np.r_[np.ones(150, bool), np.zeros(850, bool)]
    f = fsr_factors(emitted, 0.15, 0.05)
    assert abs(f.mean() - 1.0) < 1e-12 and f[0] == 1.05 and f[-1] < 1.0
    with pytest.raises(ValueError, match="no non-radiating muons"):
        fsr_factors(emitted, 0.99, 0.05)
    # GenPart records: W -> mu (radiating once) nu; Z -> mu mu (none); (pdgId, mother index)
    pdg = np.array([24, -13, 14, -13, 22, 23, 13, -13, 13, -13])
    mother = np.array([-1, 0, 0, 1, 3, -1, 0, 0, 1, 2])
    assert emission_fraction(pdg, mother, np.array([5, 5])) == pytest.approx(1 / 3)
    # a skim event whose final muon is 3 % below the pre-FSR one radiated, one equal to it did not
    m, qt, y, phi, c, fi = (np.array([80.0, 80.0]), np.array([5.0, 5.0]), np.array([0.3, 0.3]), np.zeros(2),
                            np.array([0.2, 0.2]), np.array([1.0, 1.0]))
    lep, _ = decay_products(m, qt, y, phi, c, fi)
    pt = np.hypot(lep[:, 1], lep[:, 2])
    cols = {"gen_pdgid": np.array([-24, -24]), "gen_mass": m, "gen_qt": qt, "gen_y": y, "gen_phi": phi,
            "gen_cos_cs": c, "gen_phi_cs": fi, "mu_gen_pt": pt * np.array([0.97, 1.0]), "mu_charge": np.array([-1, -1])}
    tabs = _tables()
    tabs.fsr_emission = {"wplus": 0.15, "wminus": 0.15, "z": 0.15}
    var = {v.nuisance: v for v in TheoryCorrection(tabs).iter_variations(cols, SampleInfo("wminus_munu", False, "w"))}
    np.testing.assert_allclose(var["ew_fsr_strength"].up, [1.05, (1 - 1.05 * 0.15) / 0.85])
    assert "ew_fsr_strength" not in {v.nuisance for v in TheoryCorrection(tabs).iter_variations(
        cols, SampleInfo("w_taunu", False, "w"))}


def _w_toy(seed: int, n: int = 60_000):
    """Generator-level W events whose final-muon pT follows the boson mass (a Jacobian edge)."""
    from wmnb.conventions import breit_wigner_mass_density

    rng = np.random.default_rng(seed)
    events, muons = {}, {}
    for boson in ("wplus", "wminus"):
        grid = np.linspace(60.0, 100.0, 4001)
        cdf = np.cumsum(breit_wigner_mass_density(grid, 80.4, 2.085))
        m = np.interp(rng.random(n), cdf / cdf[-1], grid)
        c, f = rng.uniform(-1, 1, n), rng.uniform(0, 2 * np.pi, n)
        qt = rng.exponential(6.0, n)
        pt = 0.5 * m * np.sqrt(1 - c * c) * (1 + 0.02 * rng.standard_normal(n)) + 0.3 * qt * np.cos(f)
        events[boson] = {"GenV_pt": qt, "GenV_y": rng.uniform(-2, 2, n), "GenV_cosThetaCS": c, "GenV_phiCS": f,
                         "GenV_mass": m, "genWeight": np.ones(n)}
        muons[boson] = {"pt": pt, "eta": rng.uniform(-2.4, 2.4, n), "charge": np.full(n, 1 if boson == "wplus" else -1)}
    return events, muons


def test_generator_mw_bias_recovers_an_injected_mass_and_zero():
    from wmnb.theory.mwbias import _mass_factor, generator_mw_bias

    events, muons = _w_toy(11)
    corr = TheoryCorrection(_tables())
    expected = {"wplus": 2e6, "wminus": 1.5e6}
    ones = {b: np.ones(60_000) for b in events}
    zero = generator_mw_bias(events, muons, ones, corr, expected, 80.4, 2.085)
    assert abs(zero.fixed) < 1e-3 and abs(zero.free) < 1e-3
    shifted = {b: _mass_factor(events[b]["GenV_mass"], 80.4, 2.085, 0.030) for b in events}
    res = generator_mw_bias(events, muons, shifted, corr, expected, 80.4, 2.085)
    assert abs(res.fixed - 30.0) < 0.1 * res.stat_error + 1.0, res       # interpolation of the ±100 MeV templates
    assert 0 < res.stat_error < res.error + 1e-9
