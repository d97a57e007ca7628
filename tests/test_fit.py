"""Tests of the binned profile-likelihood fitter (wmnb.fit): cross-checks and validation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from wmnb.fit import Model, ModelBuilder, fit, scan, toys
from wmnb.fit.fitter import likelihood_for
from wmnb.fit.toymodels import counting_model, expected_at_mass, wmass_toy


def small_model(seed: int = 1, poisson: bool = True) -> Model:
    """12 bins, 2 processes, shape POI with an even part, norm POI, split shape, asymmetric norm, BB."""
    rng = np.random.default_rng(seed)
    B = 12
    i = np.arange(B)
    sig = 1000 * np.exp(-0.5 * ((i - 6) / 3) ** 2) + 50
    bkg = np.full(B, 300.0)
    b = ModelBuilder(np.zeros(B))
    b.add_process("S", sig, sumw2=sig * 0.3, signal=True)
    b.add_process("Bk", bkg, sumw2=bkg * 0.5)
    b.add_poi_shape("mass", "S", up=sig * (1 + 0.02 * (i - 6) / 6 + 0.004),
                    down=sig * (1 - 0.02 * (i - 6) / 6 + 0.001))
    b.add_norm_poi("mu", "S")
    b.add_shape_systematic("eff", "S", up=sig * (1 + 0.01 * i / B), down=sig * (1 - 0.012 * i / B),
                           group="eff", symmetrize="split")
    b.add_norm_systematic("lumi", ["S", "Bk"], 1.02, group="lumi")
    b.add_norm_systematic("bnorm", "Bk", (0.9, 1.15), group="bkg")
    m = b.build()
    mu = m.expected({"mass": 0.3, "mu": 1.05, "bnorm": 0.5})
    m.data = rng.poisson(mu).astype(float) if poisson else mu
    return m


@pytest.fixture(scope="module")
def wtoy():
    return wmass_toy()


# ------------------------------------------------------------------ model building and I/O
def test_builder_rejects_bad_input():
    b = ModelBuilder(np.ones(5))
    with pytest.raises(ValueError, match="has 4 bins, the data has 5"):
        b.add_process("A", np.ones(4))
    b.add_process("A", np.ones(5))
    with pytest.raises(KeyError, match="process 'B' not added"):
        b.add_norm_systematic("x", "B", 1.1)
    with pytest.raises(ValueError, match="kappa must be > 0"):
        b.add_norm_systematic("x", "A", -1.0)
    with pytest.raises(KeyError, match="not a POI"):
        b.add_prior("nope", 1.0)


def test_hist_weight_storage_gives_sumw2():
    import hist

    h = hist.Hist(hist.axis.Regular(4, 0, 1), storage=hist.storage.Weight())
    h.fill([0.1, 0.1, 0.6, 0.9], weight=[2.0, 1.0, 3.0, 1.0])
    b = ModelBuilder(h.values())
    b.add_process("A", h)
    b.add_norm_poi("mu", "A")
    from wmnb.fit.model import ModelWarning

    with pytest.warns(ModelWarning, match="bins \\[1\\]"):  # bin 1 is empty in every respect
        m = b.build()
    np.testing.assert_allclose(m.sumw2[0], [5.0, 0.0, 9.0, 1.0])
    np.testing.assert_allclose(m.nominal[0], [3.0, 0.0, 3.0, 1.0])


def test_poi_shape_reproduces_templates_at_pm1():
    m = small_model()
    i = np.arange(12)
    sig = 1000 * np.exp(-0.5 * ((i - 6) / 3) ** 2) + 50
    up = sig * (1 + 0.02 * (i - 6) / 6 + 0.004)
    dn = sig * (1 - 0.02 * (i - 6) / 6 + 0.001)
    np.testing.assert_allclose(m.expected_per_process({"mass": 1.0})[0], up, rtol=1e-12)
    np.testing.assert_allclose(m.expected_per_process({"mass": -1.0})[0], dn, rtol=1e-12)
    np.testing.assert_allclose(m.expected_per_process({"mu": 1.7})[0], 1.7 * sig, rtol=1e-12)


def test_hdf5_round_trip(tmp_path):
    m = small_model()
    m.bb_scale = 1.25
    p = m.save(tmp_path / "model.h5")
    m2 = Model.load(p)
    for key in ("nominal", "sumw2", "data", "k_row", "k_col", "k_val", "rows_param", "rows_tf", "kinds"):
        np.testing.assert_array_equal(getattr(m, key), getattr(m2, key))
    assert m2.params == m.params and m2.groups == m.groups and m2.bb_scale == 1.25
    r1 = fit(m, impacts=False, global_impacts=False)
    r2 = fit(m2, impacts=False, global_impacts=False)
    np.testing.assert_array_equal(r1.x, r2.x)  # bit for bit
    with pytest.raises(ValueError, match="not a wmnb fit model"):
        import h5py

        with h5py.File(tmp_path / "other.h5", "w") as f:
            f.attrs["format"] = "something"
        Model.load(tmp_path / "other.h5")


def test_npz_reader(tmp_path):
    rng = np.random.default_rng(3)
    S, P, B = 4, 2, 6
    logk = rng.normal(0, 0.02, (S, P, B))
    logk[2, 1] = 0.0
    nominal = rng.uniform(50, 100, (P, B))
    np.savez(tmp_path / "m.npz", processes=np.array(["W", "Z"]), nominal=nominal, sumw2=nominal * 0.1,
             systs=np.array(["massShift100MeV", "a", "b", "c"]),
             constrained=np.array([False, True, True, True]), logk=logk, data=nominal.sum(0))
    m = Model.read(tmp_path / "m.npz")
    assert m.pois == ["massShift100MeV"]
    theta = np.array([0.3, -1.0, 0.5, 2.0])
    ref = nominal * np.exp(np.einsum("s,spb->pb", theta, logk))
    np.testing.assert_allclose(m.expected_per_process(theta), ref, rtol=1e-12)
    ms = Model.from_npz(tmp_path / "m.npz", signal_strength=True)  # rabbit-fit's default model
    assert ms.pois == ["massShift100MeV", "r_W"]
    ref_s = ref.copy()
    ref_s[0] *= 1.3
    np.testing.assert_allclose(ms.expected_per_process(np.append(theta, 1.3)), ref_s, rtol=1e-12)
    with pytest.raises(ValueError, match="lacks arrays"):
        np.savez(tmp_path / "bad.npz", nominal=nominal)
        Model.from_npz(tmp_path / "bad.npz")


@pytest.mark.parametrize("layout", ["blocks", "fortran"])
def test_npz_logk_read_in_blocks_equals_the_dense_array(tmp_path, monkeypatch, layout):
    """The .npz reader decompresses logk a block of systematics at a time (never the dense array
    whole); with blocks of one row, and for a Fortran-ordered array (read whole), the model is the
    same as from the dense array."""
    from wmnb.fit import model as model_mod

    rng = np.random.default_rng(7)
    S, P, B = 9, 3, 5
    logk = np.where(rng.uniform(size=(S, P, B)) < 0.4, rng.normal(0, 0.02, (S, P, B)), 0.0)
    nominal = rng.uniform(50, 100, (P, B))
    arrays = dict(processes=np.array(["W", "Z", "T"]), nominal=nominal, sumw2=nominal * 0.1,
                  systs=np.array([f"s{i}" for i in range(S)]), constrained=np.arange(S) > 0, data=nominal.sum(0))
    np.savez_compressed(tmp_path / "m.npz", logk=logk if layout == "blocks" else np.asfortranarray(logk), **arrays)
    monkeypatch.setattr(model_mod, "NPZ_BLOCK_BYTES", 1)
    m = Model.from_npz(tmp_path / "m.npz")
    theta = rng.normal(0, 1, S)
    ref = nominal * np.exp(np.einsum("s,spb->pb", theta, logk))
    np.testing.assert_allclose(m.expected_per_process(theta), ref, rtol=1e-13)
    assert m.k_val.size == np.count_nonzero(logk)


# ------------------------------------------------------------------ exact derivatives
@pytest.mark.parametrize("entry_path", [False, True])
def test_structured_hessian_equals_autodiff(monkeypatch, entry_path):
    from wmnb.fit.likelihood import Likelihood

    monkeypatch.setattr(Likelihood, "ENTRY_PATH", entry_path)   # small models pick the dense one
    m = small_model()
    lik = likelihood_for(m)
    lik.set_data(m.data)
    x = tf.constant(m.values_from({"mass": 0.2, "mu": 1.1, "eff": 0.3, "lumi": -0.5, "bnorm": 0.7}))
    _, g, H = lik.value_grad_hess(x)
    Ha = lik.hessian_autodiff(x).numpy()
    np.testing.assert_allclose(H.numpy(), Ha, rtol=1e-10, atol=1e-9 * np.abs(Ha).max())
    # gradient against central finite differences of the NLL
    eps = 1e-6
    xn = x.numpy()
    fd = [(float(lik.value(tf.constant(xn + eps * e))) - float(lik.value(tf.constant(xn - eps * e)))) / (2 * eps)
          for e in np.eye(m.nparams)]
    np.testing.assert_allclose(g.numpy(), fd, rtol=1e-5, atol=1e-4)
    # a model whose rows are one per parameter but include a log (normalisation) row
    mc = counting_model()
    lc = likelihood_for(mc)
    lc.set_data(mc.data)
    xc = tf.constant([1.3, 0.4], tf.float64)
    np.testing.assert_allclose(lc.value_grad_hess(xc)[2].numpy(), lc.hessian_autodiff(xc).numpy(), rtol=1e-10)


# ------------------------------------------------------------------ cross-checks
def test_iminuit_crosscheck():
    """Same POIs and errors (1e-4 relative) on an independent path: iminuit's MIGRAD (numerical
    derivatives of the NLL) for the minimum, and a covariance from central finite differences of
    the autodiff gradient at Minuit's minimum (independent of our Hessian assembly and minimiser).
    Minuit's own HESSE (second differences of the NLL) only reaches ~2e-3 here: checked loosely.
    """
    from iminuit import Minuit

    m = small_model(seed=5)
    res = fit(m)
    lik = likelihood_for(m)
    lik.set_data(m.data)

    def nll(v):
        return float(lik.value(tf.constant(np.asarray(v, np.float64))))

    mi = Minuit(nll, m.default_values(), name=m.params)
    mi.errordef = Minuit.LIKELIHOOD
    mi.strategy = 2
    mi.tol = 1e-7
    mi.migrad()
    mi.hesse()
    assert mi.valid
    xm = np.array(mi.values)
    h = 1e-5
    cols = []
    for e in np.eye(m.nparams):
        gp = lik.value_and_grad(tf.constant(xm + h * e))[1].numpy()
        gm = lik.value_and_grad(tf.constant(xm - h * e))[1].numpy()
        cols.append((gp - gm) / (2 * h))
    hfd = np.array(cols)
    cfd = np.linalg.inv(0.5 * (hfd + hfd.T))
    for i, p in enumerate(m.params):
        err = res.error(p)
        assert abs(mi.values[p] - res.value(p)) < 1e-4 * err, p
        assert abs(np.sqrt(cfd[i, i]) / err - 1) < 1e-4, (p, np.sqrt(cfd[i, i]), err)
        assert abs(mi.errors[p] / err - 1) < 5e-3, (p, mi.errors[p], err)


def test_linearised_analytic_solution():
    """Near-quadratic model: the Gauss-Newton closed form gives the same POI and error."""
    rng = np.random.default_rng(11)
    B = 40
    nom = rng.uniform(0.8e8, 1.2e8, B)
    b = ModelBuilder(nom)
    b.add_process("W", nom, signal=True)
    A = {"poi": rng.normal(0, 2e-5, B), "n1": rng.normal(0, 1e-5, B), "n2": rng.normal(0, 1e-5, B)}
    b.add_poi_shape("poi", "W", up=nom * np.exp(A["poi"]), down=nom * np.exp(-A["poi"]))
    for k in ("n1", "n2"):
        b.add_shape_systematic(k, "W", up=nom * np.exp(A[k]), down=nom * np.exp(-A[k]), group=k)
    m = b.build()
    truth = np.array([0.7, 0.3, -0.4])
    d = nom * (1 + sum(t * A[k] for t, k in zip(truth, A))) + rng.normal(0, np.sqrt(nom))
    res = fit(m, data=d)
    # linearised: n = nom (1 + J x), chi2 with V = diag(d) plus unit constraints on n1, n2
    J = np.stack([nom * A[k] for k in A], 1)
    Hlin = J.T @ (J / d[:, None]) + np.diag([0.0, 1.0, 1.0])
    xlin = np.linalg.solve(Hlin, J.T @ ((d - nom) / d))
    clin = np.linalg.inv(Hlin)
    assert abs(res.value("poi") - xlin[0]) < 1e-4 * np.sqrt(clin[0, 0])
    assert abs(res.error("poi") / np.sqrt(clin[0, 0]) - 1) < 1e-4


def test_pyhf_agreement():
    """HistFactory workspace with compatible modifiers: normfactor (mu linear), normsys with
    symmetric kappas (code1 exponential interpolation = log-normal), no MC-stat modifiers
    (our BB-lite is switched off by sumw2 = 0)."""
    pyhf = pytest.importorskip("pyhf")
    sig = [20.0, 40.0, 60.0, 30.0, 10.0]
    bkg = [100.0, 90.0, 80.0, 70.0, 60.0]
    data = [125.0, 140.0, 150.0, 98.0, 72.0]
    spec = {"channels": [{"name": "ch", "samples": [
        {"name": "sig", "data": sig, "modifiers": [
            {"name": "mu", "type": "normfactor", "data": None},
            {"name": "lumi_s", "type": "normsys", "data": {"hi": 1.05, "lo": 1 / 1.05}}]},
        {"name": "bkg", "data": bkg, "modifiers": [
            {"name": "bnorm", "type": "normsys", "data": {"hi": 1.1, "lo": 1 / 1.1}}]}]}],
        "observations": [{"name": "ch", "data": data}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}], "version": "1.0.0"}
    ws = pyhf.Workspace(spec)
    pdf = ws.model()
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(tolerance=1e-6, strategy=2))
    bestfit = pyhf.infer.mle.fit(ws.data(pdf), pdf, return_uncertainties=True)
    names = pdf.config.par_names
    b = ModelBuilder(np.array(data))
    b.add_process("sig", np.array(sig), signal=True)
    b.add_process("bkg", np.array(bkg))
    b.add_norm_poi("mu", "sig")
    b.add_norm_systematic("lumi_s", "sig", 1.05, group="lumi")
    b.add_norm_systematic("bnorm", "bkg", 1.1, group="bkg")
    res = fit(b.build())
    # pyhf's uncertainties come from Minuit's HESSE (about 1e-2 here); the exact reference is the
    # Hessian of pyhf's own NLL (its independent model implementation) by central differences
    x0 = bestfit[:, 0]
    d = ws.data(pdf)
    n = x0.size
    hh = 1e-4
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            ei, ej = np.eye(n)[i] * hh, np.eye(n)[j] * hh
            H[i, j] = -(pdf.logpdf(x0 + ei + ej, d)[0] - pdf.logpdf(x0 + ei - ej, d)[0]
                        - pdf.logpdf(x0 - ei + ej, d)[0] + pdf.logpdf(x0 - ei - ej, d)[0]) / (4 * hh * hh)
    efd = np.sqrt(np.diag(np.linalg.inv(H)))
    for name in ("mu", "lumi_s", "bnorm"):
        k = names.index(name)
        v, e = bestfit[k]
        assert abs(res.value(name) - v) < 1e-3 * res.error(name), name
        assert abs(res.error(name) / e - 1) < 1e-2, (name, res.error(name), e)
        assert abs(res.error(name) / efd[k] - 1) < 1e-4, (name, res.error(name), efd[k])


def test_counting_experiment_analytic():
    """One bin, no systematics effect at fixed nuisance: stat = sqrt(n)/s, Asimov GOF = 0."""
    m = counting_model(s=100.0, b=50.0)
    res = fit(m, asimov=True)
    assert res.converged
    assert abs(res.value("mu") - 1.0) < 1e-9
    imp = res.impacts_nominal("mu")
    assert imp["stat"] == pytest.approx(np.sqrt(150.0) / 100.0, rel=1e-9)
    assert res.gof()[0] == pytest.approx(0.0, abs=1e-9)
    # total^2 = stat^2 + bkg^2 in a linear-Gaussian-like case (nominal impacts)
    assert imp["total"] ** 2 == pytest.approx(imp["stat"] ** 2 + imp["bkg"] ** 2, rel=1e-3)


# ------------------------------------------------------------------ impacts and outputs
def test_impacts_consistency_asimov():
    m = small_model(poisson=False)
    res = fit(m, asimov=True)  # every bin and constraint at its optimum: linear response exact
    g = res.impacts_global("mass")
    tot = np.sqrt(sum(v**2 for k, v in g.items() if k != "total"))
    assert tot == pytest.approx(g["total"], rel=1e-9)  # global impacts add up in quadrature
    n = res.impacts_nominal("mass")
    assert n["total"] == g["total"] == pytest.approx(res.error("mass"))
    assert set(n) >= {"stat", "binByBinStat", "total", "eff", "lumi", "bkg"}
    assert n["stat"] < n["total"] and n["binByBinStat"] > 0
    # the BB-lite scale inflates the MC-stat impact
    m.bb_scale = 1.25  # editing the model after a fit must not reuse the cached likelihood
    assert fit(m, asimov=True).impacts_nominal("mass")["binByBinStat"] > n["binByBinStat"]
    m.bb_scale = 1.0
    json.dumps(res.to_dict())
    y = res.postfit_yields
    assert np.all(y.total_err > 0) and y.total.shape == (12,)
    np.testing.assert_allclose(y.total, res.data, rtol=1e-8)  # Asimov fit reproduces the data
    assert res.gof()[0] == pytest.approx(0.0, abs=1e-8)
    pre = res.prefit_yields
    assert np.all(pre.total_err > y.total_err)  # the fit constrains the yields
    assert res.correlation("mass", "mass") == pytest.approx(1.0)


def test_asimov_mass_injection_20_points(wtoy):
    """20 injected masses in +-100 MeV, exact reweighted expectations, recovered within 0.1 MeV."""
    m, toy = wtoy
    worst = 0.0
    for delta in np.linspace(-100, 100, 20):
        res = fit(m, data=expected_at_mass(m, toy, delta), impacts=False, global_impacts=False, full_cov=False)
        assert res.converged
        worst = max(worst, abs(res.value("mass") * 100 - delta))
    assert worst < 0.1, worst


def test_random_starts_same_minimum(wtoy):
    m, toy = wtoy
    data = np.random.default_rng(4).poisson(expected_at_mass(m, toy, 30.0)).astype(float)
    ref = fit(m, data=data, impacts=False, global_impacts=False, full_cov=False)
    for seed in range(10):
        r = fit(m, data=data, seed=seed, impacts=False, global_impacts=False, full_cov=False)
        assert r.converged, (seed, r.message)
        assert abs(r.nll - ref.nll) < 1e-7
        assert abs(r.value("mass") - ref.value("mass")) < 1e-5 * ref.error("mass")


def test_scan_is_parabolic_near_minimum(wtoy):
    m, _ = wtoy
    res = fit(m, asimov=True, impacts=False, global_impacts=False)
    s = res.error("mass")
    sc = scan(m, "mass", [-s, 0.0, s], asimov=True)
    np.testing.assert_allclose(sc["dnll2"], [1.0, 0.0, 1.0], atol=0.02)


def test_blinding_hides_offset(capsys, tmp_path):
    from wmnb.fit.cli import cli_fit
    from wmnb.fit.fitter import blind_offset

    m = small_model()
    clear = fit(m)
    res = fit(m, blind={"mass": 1234})
    off = blind_offset(m, "mass", 1234)
    assert abs(off) > 1e-3
    assert res.value("mass") == pytest.approx(clear.value("mass") + off)
    assert res.error("mass") == pytest.approx(clear.error("mass"))
    d = res.to_dict()
    assert d["pois"]["mass"]["value"] == pytest.approx(clear.value("mass") + off)
    d.pop("timing")
    texts = [repr(res), str(res), res.summary(), json.dumps(d)]
    print(res)
    print(res.summary())
    m.save(tmp_path / "m.h5")
    assert cli_fit([str(tmp_path / "m.h5"), "--blind", "mass:1234"]) == 0
    assert cli_fit([str(tmp_path / "m.h5"), "--json", "--blind", "mass:1234"]) == 0
    out = capsys.readouterr().out.splitlines()
    line = json.loads(out[-1])
    assert line["blinded"] == ["mass"] and line["poi"] == pytest.approx(res.value("mass"))
    for key in ("wall_s", "timing"):  # run-dependent numbers could match digits by chance
        line.pop(key)
    texts += [json.dumps(line)] + [t for t in out[:-1] if not t.startswith("wall time")]
    for t in texts:
        for fmt in ("{:.6g}", "{:.8g}", "{}", "{!r}"):
            assert fmt.format(off) not in t
            assert fmt.format(off * 100) not in t
    res.unblind()
    assert res.value("mass") == pytest.approx(clear.value("mass")) and res.blinded == []


def test_cli_json(tmp_path, capsys):
    from wmnb.fit.cli import cli_fit

    m = small_model()
    m.save(tmp_path / "m.h5")
    assert cli_fit([str(tmp_path / "m.h5"), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("poi", "poi_err", "edm", "nparams", "wall_s"):
        assert key in line
    assert line["nparams"] == m.nparams and line["poi_err"] > 0
    assert cli_fit([str(tmp_path / "missing.h5")]) == 2
    assert "cannot read model" in capsys.readouterr().err


def test_reproducible_bit_for_bit():
    m = small_model()
    a, b = fit(m), fit(m)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.cov, b.cov)
    assert a.impacts_global("mass") == b.impacts_global("mass")


def test_toy_coverage():
    """500 toys with Poisson data and randomised global observables: pulls ~ N(0, 1)."""
    m, _ = wmass_toy(n_events=60_000, neta=2, npt=10, yield_w=2e5, n_eff=1, seed=3)
    out = toys(m, 500, seed=7, poi="mass")
    assert out["converged"].mean() > 0.99
    p = out["pulls"][out["converged"]]
    assert abs(p.mean()) < 0.1, p.mean()
    assert abs(p.std() - 1) < 0.1, p.std()


def test_chord_steps_reach_the_same_minimum_with_fewer_hessians(wtoy):
    """The Newton-chord steps of the minimiser replace Hessians by gradients where the
    quadratic model holds; the minimum, its NLL and the errors must be those of pure Newton."""
    from wmnb.fit import minimize as mz

    m, toy = wtoy
    data = np.random.default_rng(7).poisson(expected_at_mass(m, toy, -40.0)).astype(float)
    lik = likelihood_for(m)
    lik.set_data(data)
    lik.set_global_obs()
    counts = {}
    results = {}
    for k in (0, mz.CHORD_STEPS):
        calls = {"H": 0}
        original = lik.value_grad_hess

        def counted(x, _orig=original, _calls=calls):
            _calls["H"] += 1
            return _orig(x)

        lik.value_grad_hess = counted
        try:
            results[k] = mz.minimize(lik, m.default_values(), chord_steps=k)
        finally:
            del lik.value_grad_hess
        counts[k] = calls["H"]
        assert results[k].converged, results[k].message
    pure, chord = results[0], results[mz.CHORD_STEPS]
    assert abs(chord.nll - pure.nll) < 1e-8
    np.testing.assert_allclose(chord.x, pure.x, atol=1e-5)
    assert counts[mz.CHORD_STEPS] < counts[0], counts          # measured: 2 against 3
