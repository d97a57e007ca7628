"""Chapter 02: the published correction (pT correction, smearing, weight-based variations),
the uncertainty model and the resolution measurement."""
from __future__ import annotations

import numpy as np
import pytest

from wmnb.muonscale.correction import MomentumCalibration, load_correction, publish_correction, write_artefact
from wmnb.muonscale.resolution import BinMuons, DataResolution, ResolutionModel, measure_mc_resolution
from wmnb.muonscale.scale_model import ScaleParams, apply_bias, eta_edges
from wmnb.muonscale.toys import default_resolution, random_scale_params
from wmnb.muonscale.uncertainty import (Variation, closure_chi2, closure_scale_factor, eigen_variations)
from wmnb.corrections import SampleInfo, discover


def _toy_resolution(n_eta: int = 24, extra_a2: float = 0.0) -> DataResolution:
    edges = eta_edges(n_eta)
    c = 0.5 * (edges[1:] + edges[:-1])
    mc = ResolutionModel(edges, 0.006 + 0.004 * np.abs(c), np.full(n_eta, 0.004), np.full(n_eta, 1.5e-4),
                         np.full(n_eta, 5.0))
    data = ResolutionModel(edges, np.sqrt(mc.a ** 2 + extra_a2), mc.b.copy(), mc.c.copy(), mc.d.copy())
    return DataResolution(mc, data, np.eye(4 * n_eta), 0.0, 0)


def _muons(rng, n, pt_lo=20.0, pt_hi=70.0, falling=False):
    gen = pt_lo + rng.exponential(8.0, n) if falling else rng.uniform(pt_lo, pt_hi, n)
    eta = rng.uniform(-2.4, 2.4, n)
    reco = gen / np.abs(1 + default_resolution(gen, eta) * rng.standard_normal(n))
    return gen, eta, reco


def test_data_correction_removes_the_bias_and_recomputes_the_mass():
    rng = np.random.default_rng(3)
    bias = random_scale_params(rng, eta_edges(), A=5e-4, e=1e-3, M=5e-5)
    n = 20000
    cols = {}
    for p, q in (("mup", 1.0), ("mum", -1.0)):
        pt = rng.uniform(5, 60, n)
        cols[f"{p}_true"] = pt
        cols[f"{p}_eta"] = rng.uniform(-2.4, 2.4, n)
        cols[f"{p}_phi"] = rng.uniform(-np.pi, np.pi, n)
        cols[f"{p}_pt"] = apply_bias(pt, cols[f"{p}_eta"], np.full(n, q), bias).astype(np.float64)
    cols["mass"] = np.zeros(n)
    corr = MomentumCalibration(bias, [], None)
    corr.correct(cols, SampleInfo("data", True, "jpsi", ("mup", "mum")))
    for p in ("mup", "mum"):
        np.testing.assert_allclose(cols[f"{p}_pt"], cols[f"{p}_true"], rtol=1e-9)
    assert np.all(cols["mass"] > 0)
    # single-muon skims need the charge column
    with pytest.raises(KeyError, match="mu_charge"):
        corr.correct({"mu_pt": np.ones(3) * 30, "mu_eta": np.zeros(3)}, SampleInfo("data", True, "w", ("mu",)))


def test_simulation_smearing_is_reproducible_and_has_the_measured_width():
    rng = np.random.default_rng(4)
    n = 200_000
    pt = np.full(n, 40.0)
    eta = rng.uniform(-0.1, 0.1, n)
    res = _toy_resolution(extra_a2=0.005 ** 2)
    corr = MomentumCalibration(ScaleParams.zeros(eta_edges(48)), [], res, seed=11)
    a = {"mu_pt": pt.copy(), "mu_eta": eta, "mu_charge": np.ones(n)}
    b = {"mu_pt": pt.copy(), "mu_eta": eta, "mu_charge": np.ones(n)}
    info = SampleInfo("wplus_munu", False, "w", ("mu",))
    corr.correct(a, info)
    corr.correct(b, info)
    np.testing.assert_array_equal(a["mu_pt"], b["mu_pt"])
    width = np.std(pt / a["mu_pt"] - 1)
    assert width == pytest.approx(0.005, rel=0.02)


def test_weight_variation_matches_an_explicit_scale_shift():
    """The smooth weight-based template reproduces the histogram change of a real pT shift."""
    rng = np.random.default_rng(5)
    n = 1_000_000
    gen, eta, reco = _muons(rng, n, falling=True)
    res = _toy_resolution()
    dA = 1e-3
    var = Variation("shift", "muonScale", np.full(48, dA), np.zeros(48), np.zeros(48))
    corr = MomentumCalibration(ScaleParams.zeros(eta_edges(48)), [var], res)
    corr.smear = False
    cols = {"mu_pt": reco, "mu_eta": eta, "mu_charge": np.ones(n), "mu_gen_pt": gen}
    ws = corr.weights(cols, SampleInfo("wplus_munu", False, "w", ("mu",)))
    assert set(ws.variations) == {"shiftUp", "shiftDown"} and ws.groups == {"shift": "muonScale"}
    edges = np.linspace(26, 56, 31)
    h0, _ = np.histogram(reco, edges)
    hw, _ = np.histogram(reco, edges, weights=ws.variations["shiftUp"])
    hd, _ = np.histogram(reco, edges, weights=ws.variations["shiftDown"])
    hs, _ = np.histogram(reco / (1 + dA), edges)          # the explicit (migrating) shift
    d_w, d_s = hw - h0, hs - h0
    amp = np.sum(d_w * d_s) / np.sum(d_s * d_s)
    assert amp == pytest.approx(1.0, abs=0.1)
    # bin by bin (3 GeV bins: the explicit shift is itself noisy, which is why the analysis
    # uses weights) the two agree in shape
    c_w, c_s = d_w.reshape(10, 3).sum(1), d_s.reshape(10, 3).sum(1)
    assert np.corrcoef(c_w, c_s)[0, 1] > 0.9
    np.testing.assert_allclose(hd - h0, -(hw - h0), rtol=0.1, atol=50)
    # unmatched muons (no generator pT) keep weight 1
    cols["mu_gen_pt"] = np.full(n, np.nan)
    ws = corr.weights(cols, SampleInfo("wplus_munu", False, "w", ("mu",)))
    assert np.all(ws.variations["shiftUp"] == 1.0)


def test_publish_and_discover_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("WMNB_RESULTS", str(tmp_path))
    rng = np.random.default_rng(6)
    bias = random_scale_params(rng)
    cov = np.diag(np.tile([1e-10, 1e-8, 1e-12], 48))
    vars_ = eigen_variations(cov, ("A", "e", "M"), 48, "muonScaleStat", "muonScale", scale=2.0)
    chapter_dir = tmp_path / "toy" / "02_calibration"
    write_artefact(chapter_dir, bias, cov, vars_, _toy_resolution(), 2.0, seed=3)
    publish_correction(chapter_dir)
    found = discover("toy", kinds=("muon",))
    assert len(found) == 1 and isinstance(found[0], MomentumCalibration)
    c = found[0]
    np.testing.assert_array_equal(c.params.A, bias.A)
    assert len(c.variations) == 144
    again = load_correction(chapter_dir / "momentum_calibration.json")
    np.testing.assert_array_equal(again.variations[5].dM, c.variations[5].dM)


def test_eigen_variations_reproduce_the_scaled_covariance():
    rng = np.random.default_rng(8)
    L = rng.normal(size=(9, 9))
    cov = L @ L.T * 1e-8
    vs = eigen_variations(cov, ("A", "e", "M"), 3, "s", "g", scale=2.1)
    V = np.stack([np.stack([v.dA, v.de, v.dM], 1).ravel() for v in vs])
    np.testing.assert_allclose(V.T @ V, 2.1 ** 2 * cov, rtol=1e-8, atol=1e-20)


def test_closure_scale_factor_brings_chi2_ndf_to_one():
    rng = np.random.default_rng(9)
    n = 20
    Cz, Cc = np.eye(n), 0.5 * np.eye(n)
    r = rng.normal(0, 2.0, n)                     # residuals larger than the stated errors
    f = closure_scale_factor(r, Cz, Cc)
    assert f > 1
    assert closure_chi2(r, Cz, Cc, f) / n == pytest.approx(1.0, abs=2e-3)
    assert closure_scale_factor(0.1 * r, Cz, Cc) == 1.0


def test_mc_resolution_is_measured_from_gen_matched_muons():
    rng = np.random.default_rng(10)
    gen, eta, reco = _muons(rng, 400_000, 4.0, 60.0)
    model, info = measure_mc_resolution(reco, eta, gen, n_eta=6)
    for pt in (8.0, 40.0):
        for e in (-2.0, 0.2, 1.0):
            true = default_resolution(np.array([pt]), np.array([e]))[0]
            # the toy's a grows with |eta| inside a bin: compare with the bin average
            assert np.sqrt(model.rel2(np.array([pt]), np.array([e]))[0]) == pytest.approx(true, rel=0.1)
    with pytest.raises(ValueError, match="gen-matched"):
        measure_mc_resolution(reco[:10], eta[:10], np.full(10, np.nan))


def _bins_of_muons(rng, n_bins: int, n_per_bin: int, pt_lo: float, pt_hi: float, n_eta: int) -> BinMuons:

    pos = np.repeat(np.arange(n_bins), n_per_bin)
    # each bin: a narrow pT range and one eta bin per muon, like a 4-D bin
    lo = rng.uniform(pt_lo, pt_hi, n_bins)[pos]
    ie_p = rng.integers(0, n_eta, n_bins)[pos]
    ie_m = np.clip(ie_p + rng.integers(-1, 2, len(pos)), 0, n_eta - 1)
    return BinMuons(pos, lo * rng.uniform(1.0, 1.2, len(pos)), lo * rng.uniform(1.0, 1.2, len(pos)),
                    ie_p, ie_m, np.full(n_bins, float(n_per_bin)))


def test_data_resolution_fit_recovers_a_b_c_d_from_mass_variances():
    """Extra mass variances generated from a known data model (a, b, c and d all different from
    simulation) are fitted back: every parameter within 3 sigma and sigma(pT)/pT within 1 %."""
    from wmnb.muonscale.resolution import _bin_average, fit_data_resolution

    rng = np.random.default_rng(11)
    n = 4
    edges = eta_edges(n)
    mc = ResolutionModel(edges, np.full(n, 0.008), np.full(n, 0.004), np.full(n, 1.5e-4), np.full(n, 20.0))
    true = ResolutionModel(edges, mc.a * 1.06, mc.b * 1.12, mc.c * 1.10, mc.d * 0.8)
    pieces = []
    for lo, hi, nb in ((3.0, 15.0, 150), (25.0, 55.0, 60)):       # J/psi-like and Z-like bins
        mu = _bins_of_muons(rng, nb, 50, lo, hi, n)
        pars = lambda m: np.stack([m.a, m.b, m.c, m.d], axis=1)    # noqa: E731
        dvar = _bin_average(mu, pars(true), n)[0] - _bin_average(mu, pars(mc), n)[0]
        err = np.full(nb, 2e-7)
        pieces.append((dvar + err * rng.standard_normal(nb), err, mu))
    res = fit_data_resolution(mc, pieces)
    fitted = np.stack([res.data.a, res.data.b, res.data.c, res.data.d], axis=1).ravel()
    truth = np.stack([true.a, true.b, true.c, true.d], axis=1).ravel()
    pull = (fitted - truth) / np.sqrt(np.diag(res.cov))
    assert np.all(np.abs(pull) < 3.5), pull.reshape(n, 4)
    x = 0.5 * (edges[1:] + edges[:-1])
    for pt in (5.0, 40.0):
        sig, err = res.data_rel_sigma(pt, x)
        ref = np.sqrt(true.rel2(np.full(n, pt), x))
        assert np.allclose(sig, ref, rtol=0.01), (pt, sig / ref)
        assert np.all(err > 0)
    # simulation is smeared by the difference: extra_rel2 is data minus simulation
    assert np.allclose(res.extra_rel2(np.full(n, 40.0), x),
                       true.rel2(np.full(n, 40.0), x) - mc.rel2(np.full(n, 40.0), x), rtol=0.05)
    # without any bin the fit refuses clearly
    with pytest.raises(ValueError, match="no 4-D bin"):
        fit_data_resolution(mc, [(np.full(3, np.nan), np.ones(3), _bins_of_muons(rng, 3, 5, 3, 5, n))])


def test_simulation_smearing_is_per_muon_whatever_the_chunk_or_selection():
    """The smearing of a muon depends on its event and charge only: the same with the sample
    read whole or in chunks (chapter 08 reads skims in chunks), and the same for a Z muon read
    as mup/mum in the Z skim or as the W-like muon; its width is the measured one."""
    rng = np.random.default_rng(8)
    n = 100_000
    res = _toy_resolution(extra_a2=0.004 ** 2)
    corr = MomentumCalibration(ScaleParams.zeros(eta_edges(48)), [], res, seed=3)
    event = rng.permutation(10 * n)[:n].astype(np.uint64)
    pt = rng.uniform(26, 56, n)
    eta = rng.uniform(-0.1, 0.1, n)
    q = np.where(rng.random(n) < 0.5, 1, -1)
    whole = {"mu_pt": pt.copy(), "mu_eta": eta, "mu_charge": q, "event": event, "run": np.ones(n, np.uint32)}
    info = SampleInfo("z_mumu", False, "wlike", ("mu",))
    corr.correct(whole, info)
    pieces = []
    for sl in (slice(0, 33_333), slice(33_333, n)):
        part = {k: v[sl].copy() for k, v in whole.items() if k != "mu_pt"} | {"mu_pt": pt[sl].copy()}
        corr.correct(part, info)
        pieces.append(part["mu_pt"])
    np.testing.assert_array_equal(np.concatenate(pieces), whole["mu_pt"])
    plus = q > 0
    zcols = {"mup_pt": pt[plus].copy(), "mup_eta": eta[plus], "mum_pt": pt[plus].copy(), "mum_eta": eta[plus],
             "event": event[plus], "run": np.ones(int(plus.sum()), np.uint32)}
    corr.correct(zcols, SampleInfo("z_mumu", False, "z", ("mup", "mum")))
    np.testing.assert_array_equal(zcols["mup_pt"], whole["mu_pt"][plus])      # same event, same charge
    assert not np.array_equal(zcols["mum_pt"], zcols["mup_pt"])               # the other muon: its own draw
    assert np.std(pt / whole["mu_pt"] - 1) == pytest.approx(0.004, rel=0.03)
    other = MomentumCalibration(ScaleParams.zeros(eta_edges(48)), [], res, seed=4)
    again = {k: (v.copy() if k == "mu_pt" else v) for k, v in whole.items()} | {"mu_pt": pt.copy()}
    other.correct(again, info)
    assert np.corrcoef(again["mu_pt"] - pt, whole["mu_pt"] - pt)[0, 1] < 0.05   # the seed matters
