"""Chapter 02 (muon momentum calibration): closure tests on toy dimuon samples with known biases."""
from __future__ import annotations

import numpy as np
import pytest

from wmnb.muonscale.binning import Binning4D, check_columns, quantile_pt_edges
from wmnb.muonscale.massfit import MassFitConfig, fit_bins
from wmnb.muonscale.paramfit import bin_moments, fit_parameters, pulls
from wmnb.muonscale.scale_model import ScaleParams, apply_bias, correct_pt, delta, eta_edges
from wmnb.muonscale.toys import generate_dimuons, random_scale_params


def test_correct_pt_inverts_the_bias_model():
    rng = np.random.default_rng(1)
    p = random_scale_params(rng, eta_edges(), A=1e-3, e=3e-3, M=1e-4)
    pt = rng.uniform(3, 100, 10000)
    eta = rng.uniform(-2.4, 2.4, 10000)
    q = rng.choice([-1.0, 1.0], 10000)
    meas = apply_bias(pt, eta, q, p)
    # the bias is really applied (k_meas/k - 1 = delta) and really removed
    np.testing.assert_allclose(pt / meas - 1, delta(pt, eta, q, p), rtol=1e-12, atol=1e-15)
    assert np.max(np.abs(meas / pt - 1)) > 1e-3
    np.testing.assert_allclose(correct_pt(meas, eta, q, p), pt, rtol=1e-9)


def test_scale_params_validate_shapes():
    with pytest.raises(ValueError, match="ScaleParams.A must have shape"):
        ScaleParams(eta_edges(4), np.zeros(3), np.zeros(4), np.zeros(4))


@pytest.fixture(scope="module")
def toy_fit():
    """12 eta bins, 250 k J/psi (+ background) in data with random biases, 2x simulation."""
    rng = np.random.default_rng(7)
    edges = eta_edges(12)
    bias = random_scale_params(rng, edges, A=1e-3, e=3e-3, M=1e-4)
    data = generate_dimuons(250_000, rng, bias=bias, window=(2.9, 3.3), n_bkg=40_000, pt_parent=(6.0, 8.0))
    mc = generate_dimuons(500_000, rng, window=(2.8, 3.4), pt_parent=(6.0, 8.0))
    b = Binning4D(edges, quantile_pt_edges(np.r_[mc["mup_pt"], mc["mum_pt"]], 3))
    midx, didx = b.index(mc), b.index(data)
    res = fit_bins(didx, data["mass"], midx, mc["mass"], MassFitConfig())
    return dict(bias=bias, data=data, mc=mc, binning=b, res=res, midx=midx, didx=didx)


def test_bin_fits_recover_the_injected_scale(toy_fit):
    res, data, bias = toy_fit["res"], toy_fit["data"], toy_fit["bias"]
    assert res.n_fits > 200
    assert res.n_failed <= 0.02 * res.n_fits
    # true mass scale of each bin: mean of [(1+d+)(1+d-)]^(-1/2) - 1 over its signal events
    sig = data["is_signal"]
    n = len(sig)
    dp = delta(data["mup_gen_pt"], data["mup_gen_eta"], np.ones(n), bias)
    dm = delta(data["mum_gen_pt"], data["mum_gen_eta"], -np.ones(n), bias)
    ratio = ((1 + dp) * (1 + dm)) ** -0.5 - 1
    idx = toy_fit["didx"]
    pos = np.clip(np.searchsorted(res.bins, idx), 0, res.n_fits - 1)
    m = (res.bins[pos] == idx) & sig
    true_s = np.bincount(pos[m], ratio[m], res.n_fits) / np.maximum(np.bincount(pos[m], minlength=res.n_fits), 1)
    pull = ((res.s - true_s) / res.s_err)[res.ok]
    assert abs(pull.mean()) < 0.2, pull.mean()
    assert 0.8 < pull.std() < 1.25, pull.std()


def test_parameter_fit_closure_pulls(toy_fit):
    res, b, bias = toy_fit["res"], toy_fit["binning"], toy_fit["bias"]
    mom = bin_moments(toy_fit["midx"], toy_fit["mc"], res.bins)
    pf = fit_parameters(b, res, mom)
    assert pf.determined.all()
    pu = pulls(pf, bias)
    assert len(pu) == 36
    assert abs(pu.mean()) < 0.5, pu.mean()
    assert 0.6 < pu.std(ddof=1) < 1.5, pu.std(ddof=1)
    assert 0.7 < pf.chi2 / pf.ndf < 1.4
    # the measurement has power: the injected biases are far from zero in units of the errors
    v = pf.vector()
    assert v @ np.linalg.solve(pf.cov, v) > 5 * len(v)
    # ... and a fit that ignores the charge-dependent term is visibly wrong (the test can fail)
    wrong = ScaleParams(bias.edges, bias.A, bias.e, -bias.M)
    assert np.std(pulls(pf, wrong)) > 1.5


def test_sparse_bins_are_skipped_with_a_record(toy_fit):
    res, data, mc, b = toy_fit["res"], toy_fit["data"], toy_fit["mc"], toy_fit["binning"]
    cfg = MassFitConfig(min_data=100_000)
    r = fit_bins(b.index(data), data["mass"], b.index(mc), mc["mass"], cfg)
    assert r.n_fits == 0 and r.skipped["few_data"] > 0
    assert res.skipped["few_data"] >= 0 and sum(res.skipped.values()) + res.n_fits > res.n_fits - 1


def test_bad_inputs_give_clear_errors():
    with pytest.raises(KeyError, match="mum_pt"):
        check_columns({"mup_pt": [1.0], "mup_eta": [0.0], "mum_eta": [0.0], "mass": [3.1]}, "jpsi/data")
    with pytest.raises(ValueError, match="different lengths"):
        check_columns({"mup_pt": [1.0], "mup_eta": [0.0], "mum_pt": [1.0, 2.0], "mum_eta": [0.0], "mass": [3.1]}, "x")
    with pytest.raises(ValueError, match="mass window"):
        fit_bins(np.zeros(3, int), np.ones(3), np.zeros(3, int), np.ones(3), MassFitConfig(window=(3.3, 2.9)))
    with pytest.raises(ValueError, match="positive"):
        delta(np.array([-1.0]), np.array([0.0]), np.array([1.0]), ScaleParams.zeros(eta_edges(2)))


@pytest.mark.parametrize("background", [True, False])
def test_null_bins_give_unbiased_unit_pulls(background):
    """Data and simulation from the same detector: every bin's scale must be compatible with 0."""
    rng = np.random.default_rng(21 + background)
    nb, nper = 120, 400
    d = generate_dimuons(2 * nb * nper, rng, window=(2.9, 3.3), n_bkg=(nb * nper // 3) if background else 0,
                         pt_parent=(6.0, 8.0))
    m = generate_dimuons(4 * nb * nper, rng, window=(2.8, 3.4), pt_parent=(6.0, 8.0))
    di, mi = rng.integers(0, nb, len(d["mass"])), rng.integers(0, nb, len(m["mass"]))
    r = fit_bins(di, d["mass"], mi, m["mass"], MassFitConfig(background=background))
    assert r.n_fits == nb and r.n_failed == 0
    z = r.s / r.s_err
    assert abs(z.mean()) < 3 / np.sqrt(nb)
    assert 0.8 < z.std() < 1.2
