"""Local variations stay sparse from the template builder to both fitters, and give the same
model as their dense form; the reference fit's analytic Hessian agrees with finite differences."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wmnb.fit import ModelBuilder
from wmnb.mw.systematics import MwConfig
from wmnb.mw.templates import build_templates
from wmnb.templatefit import model as tmodel
from wmnb.templatefit import reffit

from test_mw import G0, M0, toy_universe
from test_pipeline_contract import ToyLazy

CONFIG = MwConfig(ref_mass_gev=M0, ref_width_gev=G0, qt_edges=(0.0, 5.0, 10.0, np.inf), mass_eta_merge=1)


@pytest.fixture(scope="module")
def lazy_templates():
    samples, data = toy_universe(20_000, M0 + 0.02, seed=11)
    return build_templates(samples, data, CONFIG, corrections=[ToyLazy()])


def _dense_spec(spec: tmodel.ModelSpec) -> tmodel.ModelSpec:
    """``spec`` with every local shape written out over all bins (the old, dense storage)."""
    shapes = []
    for s in spec.shapes:
        up, down = s.dense(spec.nominal[spec.processes.index(s.process)])
        shapes.append(dataclasses.replace(s, up=up, down=down, bins=None))
    return dataclasses.replace(spec, shapes=shapes)


def test_local_variations_are_stored_on_their_bins_only(lazy_templates):
    wp = lazy_templates.processes["wplus_munu"]
    local = [k for k, s in wp.shapes.items() if k.startswith("effStat")]
    assert local and all(wp.shapes[k].bins is not None for k in local)
    dense_bytes = 2 * wp.nominal.nbytes
    # one eta bin of 48: a sparse shape holds a few per cent of the dense pair
    assert max(wp.shapes[k].nbytes for k in local) < 0.1 * dense_bytes
    for k in local:
        up, down = wp.varied(k)
        changed = np.flatnonzero((up != wp.nominal).ravel() | (down != wp.nominal).ravel())
        assert np.isin(changed, wp.shapes[k].bins).all()      # nothing changes outside its bins
        eta_bins = np.unique(np.unravel_index(wp.shapes[k].bins, wp.nominal.shape)[0])
        assert eta_bins.size == 1                             # ToyLazy's local rows: one eta bin


def test_sparse_and_dense_shapes_build_the_same_model(lazy_templates):
    spec = tmodel.make_spec(lazy_templates)
    assert any(s.bins is not None for s in spec.shapes)
    sparse_model = tmodel.to_builder(spec).build()
    dense_model = tmodel.to_builder(_dense_spec(spec)).build()
    for key in ("rows_param", "rows_tf", "k_row", "k_col"):
        np.testing.assert_array_equal(getattr(sparse_model, key), getattr(dense_model, key), err_msg=key)
    np.testing.assert_allclose(sparse_model.k_val, dense_model.k_val, rtol=1e-12, atol=0)
    assert sparse_model.params == dense_model.params


def test_builder_adds_a_local_variation_given_twice():
    nom = np.array([10.0, 20.0, 30.0, 40.0])
    b = ModelBuilder(nom)
    b.add_process("s", nom, signal=True)
    b.add_shape_systematic("v", "s", np.array([11.0, 33.0]), np.array([9.0, 27.0]), bins=np.array([0, 2]))
    b.add_shape_systematic("v", "s", np.array([22.0, 33.0]), np.array([18.0, 27.0]), bins=np.array([1, 2]))
    m = b.build()
    expect = np.zeros(4)
    expect[[0, 1]] = 0.5 * np.log(1.1 / 0.9)
    expect[2] = 2 * 0.5 * np.log(1.1 / 0.9)
    full = np.zeros(4)
    full[m.k_col] = m.k_val
    np.testing.assert_allclose(full, expect, rtol=1e-12)
    with pytest.raises(ValueError, match="increasing"):
        b.add_shape_systematic("w", "s", np.array([1.0, 1.0]), bins=np.array([2, 1]))
    with pytest.raises(ValueError, match="2 values for 3 bins"):
        b.add_shape_systematic("w", "s", np.array([1.0, 1.0]), bins=np.array([0, 1, 2]))


@pytest.mark.parametrize("pois,float_norm", [("mass", False), ("charge", True)])
def test_reference_hessian_is_the_second_derivative(lazy_templates, pois, float_norm):
    spec = tmodel.make_spec(lazy_templates, pois=pois, float_norm=float_norm)
    m = reffit.RefModel(spec)
    rng = np.random.default_rng(3)
    x = m.start() + 0.3 * rng.normal(size=len(m.names))
    x[m.is_norm] = 1.05
    h = m.hessian(x)
    step = 1e-5
    fd = np.empty_like(h)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = step
        fd[i] = (m.grad(x + e) - m.grad(x - e)) / (2 * step)
    scale = np.abs(fd).max()
    assert np.abs(h - fd).max() < 1e-5 * scale


def test_reference_fit_is_the_same_with_sparse_or_dense_shapes(lazy_templates):
    spec = tmodel.make_spec(lazy_templates)
    a = reffit.fit(spec)
    b = reffit.fit(_dense_spec(spec))
    assert a.converged and b.converged
    np.testing.assert_allclose(a.x, b.x, atol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(a.cov)), np.sqrt(np.diag(b.cov)), rtol=1e-6)
    assert abs(a.value("mass") * spec.mass_step_mev - 20.0) < 4 * a.error("mass") * spec.mass_step_mev


def test_nuisances_of_interest_are_reported_like_pois(lazy_templates):
    from wmnb.templatefit.fitting import run_fit

    with pytest.raises(KeyError, match="noSuchGroup"):
        tmodel.make_spec(lazy_templates, nois=["noSuchGroup"])
    spec = tmodel.make_spec(lazy_templates, nois=["muonEfficiency", "lazyScale2"])
    groups = spec.groups()
    assert "lazyScale2" in spec.nois and "lazyScale4" not in spec.nois
    assert {n for n in spec.nois if n != "lazyScale2"} == {n for n, g in groups.items() if g == "muonEfficiency"}
    ref = run_fit(spec, backend="reference")
    fast = run_fit(spec, backend="wmnb", full_cov=False)      # only POI and NOI rows kept
    full = run_fit(spec, backend="wmnb", full_cov=True)
    for n in spec.nois:
        assert fast.values[n] == pytest.approx(full.nuisances[n][0], abs=1e-6)
        assert fast.errors[n] == pytest.approx(full.nuisances[n][1], rel=1e-6)
        assert fast.values[n] == pytest.approx(ref.values[n], abs=2e-3)
        assert fast.errors[n] == pytest.approx(ref.errors[n], rel=2e-3)
    a, b = spec.nois[:2]
    assert fast.corr(a, b) == pytest.approx(full.corr(a, b), abs=1e-6)


def _split(cols: dict, n: int) -> list[dict]:
    size = len(next(iter(cols.values())))
    edges = np.linspace(0, size, n + 1).astype(int)
    return [{k: v[a:b] for k, v in cols.items()} for a, b in zip(edges[:-1], edges[1:])]


def test_chunked_templates_equal_the_one_pass_templates(lazy_templates):
    samples, data = toy_universe(20_000, M0 + 0.02, seed=11)
    chunked = build_templates({k: _split(v, 3) for k, v in samples.items()}, _split(data, 4), CONFIG,
                              corrections=[ToyLazy()], mass_shifts_mev=(30.0,))
    whole = build_templates(samples, data, CONFIG, corrections=[ToyLazy()], mass_shifts_mev=(30.0,))
    np.testing.assert_array_equal(chunked.data, whole.data)
    for name, w in whole.processes.items():
        c = chunked.processes[name]
        np.testing.assert_allclose(c.nominal, w.nominal, rtol=1e-12)
        np.testing.assert_allclose(c.sumw2, w.sumw2, rtol=1e-12)
        assert c.shapes.keys() == w.shapes.keys()
        for k in w.shapes:
            assert (c.shapes[k].bins is None) == (w.shapes[k].bins is None)
            for a, b in zip(c.varied(k), w.varied(k)):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"{name} {k}")
        if w.mass_halves is not None:
            np.testing.assert_allclose(c.mass_halves[0], w.mass_halves[0], rtol=1e-10, atol=1e-12)
    for p in whole.signal:
        np.testing.assert_allclose(chunked.mass_scan[30.0][p], whole.mass_scan[30.0][p], rtol=1e-12)
        np.testing.assert_allclose(chunked.mass_up[p], whole.mass_up[p], rtol=1e-12)


def test_skim_chunks_read_a_skim_in_pieces(tmp_path):
    from wmnb.engine.skims import SkimChunks, read_skim_file, write_skim

    rng = np.random.default_rng(1)
    cols = {"mu_pt": rng.uniform(20, 60, 2500), "weight": np.ones(2500),
            "lhe_pdf": rng.normal(1, 0.01, (2500, 5)).astype(np.float32)}
    path = write_skim(tmp_path / "s.root", cols)
    chunks = list(SkimChunks(path, step_rows=1000, weight_scale=2.0))
    assert [len(c["mu_pt"]) for c in chunks] == [1000, 1000, 500]
    whole = read_skim_file(path)
    np.testing.assert_array_equal(np.concatenate([c["mu_pt"] for c in chunks]), whole["mu_pt"])
    np.testing.assert_array_equal(np.concatenate([c["lhe_pdf"] for c in chunks]), whole["lhe_pdf"])
    assert np.all(np.concatenate([c["weight"] for c in chunks]) == 2.0)
    assert len(list(SkimChunks(path, 1000))) == 3              # re-iterable, nothing cached
    with pytest.raises(KeyError, match="no column"):
        SkimChunks(path, columns=("mu_eta",))
    with pytest.raises(FileNotFoundError, match="chapter 01"):
        SkimChunks(tmp_path / "missing.root")
    empty = write_skim(tmp_path / "e.root", {k: v[:0] for k, v in cols.items()})
    assert [len(c["mu_pt"]) for c in SkimChunks(empty)] == [0]


def test_released_fits_keep_what_they_report(lazy_templates):
    from wmnb.templatefit.fitting import run_fit

    spec = tmodel.make_spec(lazy_templates, pois="charge")
    kept = run_fit(spec, backend="wmnb")
    light = run_fit(spec, backend="wmnb", full_cov=False, keep_raw=False)
    assert light.raw is None and kept.raw is not None
    assert light.values == pytest.approx(kept.values, abs=1e-9)
    rho = light.corr("mass_plus", "mass_minus")
    assert rho == pytest.approx(kept.corr("mass_plus", "mass_minus"), abs=1e-9) and abs(rho) < 1
    with pytest.raises(KeyError, match="keep_raw=True"):
        light.corr("mass_plus", "effStat1")


def test_warm_started_cross_checks_find_the_same_minimum(lazy_templates):
    from wmnb.mw import fitting

    nominal = fitting.run_fit(tmodel.make_spec(lazy_templates), backend="wmnb")
    which = ["charge", "norm_floating"]
    cold = fitting.cross_checks(lazy_templates, which, backend="wmnb")
    warm = fitting.cross_checks(lazy_templates, which, nominal=nominal, backend="wmnb")
    for name in which:
        assert warm[name].values == pytest.approx(cold[name].values, abs=1e-5)
        assert warm[name].errors == pytest.approx(cold[name].errors, rel=1e-5)
    ref = fitting.cross_checks(lazy_templates, ["charge"], nominal=nominal, backend="reference")
    assert ref["charge"].values == pytest.approx(cold["charge"].values, abs=2e-3 * 100)


def test_chord_injection_scan_finds_the_same_minima_as_fresh_fits(lazy_templates):
    from wmnb.templatefit.fitting import injection_scan, run_fit

    ts = lazy_templates
    spec = tmodel.make_spec(ts)
    assert len(ts.mass_scan) == 0
    ts = build_templates(*toy_universe(20_000, M0 + 0.02, seed=11), CONFIG, corrections=[ToyLazy()],
                         mass_shifts_mev=(-60.0, -20.0, 0.0, 40.0, 80.0))
    spec = tmodel.make_spec(ts)
    scan = injection_scan(ts, backend="wmnb")
    for shift, value, error in scan:
        fresh = run_fit(spec, data=tmodel.asimov(ts, shift)[spec.mask], backend="wmnb", full_cov=False)
        assert value == pytest.approx(fresh.values["mass"], abs=1e-4)
        assert error == pytest.approx(fresh.errors["mass"], rel=1e-5)
        assert abs(value - shift) < 1.0          # the toy's smoothing-free interpolation closes
