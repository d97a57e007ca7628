"""Quantile morphing of the recoil (wmnb.recoil.morphing): the CDF, the regressors, the chain.

Small samples and few trees (n_jobs=1): the whole file runs in well under 30 s on one core.
"""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import xgboost as xgb
from scipy import stats
from scipy.interpolate import PchipInterpolator

from wmnb.recoil.morphing import (
    QUANTILE_LEVELS,
    BDTQuantiles,
    BinnedQuantiles,
    ChainedMorph,
    MorphingError,
    QuantileModel,
    cdf,
    inverse_cdf,
    morph_1d,
    repair_crossing,
)

LV = QUANTILE_LEVELS
Q_STD = stats.norm.ppf(LV)                 # N(0, 1)
Q_WIDE = 2.0 + 3.0 * Q_STD                 # N(2, 3)
#: small BDT settings for the tests
FAST_BDT = functools.partial(BDTQuantiles.fit, n_estimators=40, max_depth=4, learning_rate=0.3, n_jobs=1)


# --- 1. the per-event CDF and the 1-D mapping on known distributions -----------------------------


def test_levels_default():
    assert LV.size == 15 and LV[0] == 0.02 and LV[-1] == 0.98 and 0.5 in LV
    assert np.all(np.diff(LV) > 0)


def test_morph_1d_maps_gaussians_exactly():
    """N(0,1) -> N(2,3): x -> 2 + 3x in the bulk, monotone (and still affine) in the tails."""
    x = np.linspace(-2.0, 2.0, 4001)
    y = morph_1d(x, LV, Q_STD, Q_WIDE)
    np.testing.assert_allclose(y, 2.0 + 3.0 * x, atol=1e-3)
    tails = np.concatenate([np.linspace(-40.0, -2.0, 2000), np.linspace(2.0, 40.0, 2000)])
    yt = morph_1d(tails, LV, Q_STD, Q_WIDE)
    assert np.all(np.isfinite(yt))
    assert np.all(np.diff(yt[:2000]) > 0) and np.all(np.diff(yt[2000:]) > 0)
    # the construction is affine-covariant (quantiles 2 + 3q give the CDF F((x - 2) / 3)), tails too
    np.testing.assert_allclose(yt, 2.0 + 3.0 * tails, atol=1e-9)


def test_morph_1d_nonlinear_map_and_composition():
    """N(0,1) -> Gamma(3): close to the true map in the bulk; equals inverse_cdf(cdf(x)) everywhere."""
    q_to = stats.gamma.ppf(LV, 3.0)
    x = np.linspace(-2.0, 2.0, 801)
    truth = stats.gamma.ppf(stats.norm.cdf(x), 3.0)
    y = morph_1d(x, LV, Q_STD, q_to)
    assert np.max(np.abs(y - truth)) < 0.03
    xs = np.linspace(-6.0, 5.0, 1101)
    np.testing.assert_allclose(morph_1d(xs, LV, Q_STD, q_to), inverse_cdf(cdf(xs, LV, Q_STD), LV, q_to), atol=1e-8)


def test_cdf_inverse_round_trip_inside_and_far_outside():
    x = np.concatenate([np.linspace(-1.9, 1.9, 1001),      # inside the quantiles
                        np.linspace(-10.0, -2.2, 500),      # far below q_1 = -2.05 (F down to ~1e-10)
                        np.linspace(2.2, 7.0, 500)])        # far above q_L (1 - F down to ~1e-7)
    p = cdf(x, LV, Q_STD)
    assert np.all(np.diff(p[:1001]) > 0)
    np.testing.assert_allclose(inverse_cdf(p, LV, Q_STD), x, rtol=0, atol=1e-9)
    # per-event quantiles (n, L), random shapes
    rng = np.random.default_rng(3)
    n = 2000
    q = repair_crossing(rng.normal(size=(n, LV.size)) * rng.uniform(0.2, 5.0, (n, 1)) + rng.normal(size=(n, 1)))
    xe = rng.uniform(q[:, 0] - 2.0, q[:, -1] + 1.0)
    pe = cdf(xe, LV, q)
    # where the CDF is resolvable: above the 1e-12 clip, and 1 - F well above the float spacing
    ok = (pe > 1e-11) & (pe < 1.0 - 1e-7)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(inverse_cdf(pe[ok], LV, q[ok]), xe[ok], rtol=0, atol=1e-9)
    # 0 and 1 are clipped to finite values
    assert np.all(np.isfinite(inverse_cdf(np.array([0.0, 1.0]), LV, Q_STD)))


def test_cdf_is_pchip_between_quantiles_and_exponential_beyond():
    x = np.linspace(-1.9, 1.9, 2001)
    p = cdf(x, LV, Q_STD)
    # a PCHIP, not a piecewise-linear CDF: close to the true Phi (linear misses by ~3e-3 here)
    assert np.max(np.abs(p - stats.norm.cdf(x))) < 1e-3
    # on the pieces not touching the end knots the slopes are scipy's PCHIP slopes
    inner = (x > Q_STD[1]) & (x < Q_STD[-2])
    np.testing.assert_allclose(p[inner], PchipInterpolator(Q_STD, LV)(x[inner]), rtol=0, atol=1e-12)
    # tails: ln F linear below q_1 and ln(1 - F) linear above q_L, with the documented scale
    m = int(np.argmin(np.abs(LV - 0.25)))
    s_lo = (Q_STD[m] - Q_STD[0]) / np.log(LV[m] / LV[0])
    lo = np.linspace(-8.0, Q_STD[0] - 1e-6, 50)
    np.testing.assert_allclose(cdf(lo, LV, Q_STD), LV[0] * np.exp((lo - Q_STD[0]) / s_lo), rtol=1e-12)
    hi = np.linspace(Q_STD[-1] + 1e-6, 6.0, 50)
    s_hi = s_lo    # symmetric quantiles, symmetric tails
    np.testing.assert_allclose(1.0 - cdf(hi, LV, Q_STD), (1 - LV[-1]) * np.exp(-(hi - Q_STD[-1]) / s_hi), rtol=1e-9)
    # the density is continuous at the outer quantiles
    for knot in (Q_STD[0], Q_STD[-1]):
        eps = 1e-6
        left = (cdf(np.array([knot]), LV, Q_STD) - cdf(np.array([knot - eps]), LV, Q_STD)) / eps
        right = (cdf(np.array([knot + eps]), LV, Q_STD) - cdf(np.array([knot]), LV, Q_STD)) / eps
        assert abs(left[0] - right[0]) < 1e-4 * right[0]


def test_tail_scale_survives_coinciding_outer_quantiles():
    """Two nearly equal outer quantiles (an under-fitted model) must not fling tail events away."""
    q = Q_STD.copy()
    q[-1] = q[-2] + 1e-6
    y = morph_1d(np.array([3.0, 4.0]), LV, q, Q_WIDE)
    assert np.all(y < 2.0 + 3.0 * 10.0)


# --- 2. no crossing -----------------------------------------------------------------------------


def test_repair_crossing_on_crafted_array():
    q = np.array([[3.0, 1.0, 2.0, 5.0],      # crossing
                  [1.0, 1.0, 1.0, 1.0],      # all tied
                  [0.0, 1.0, 2.0, 3.0]])     # already fine
    r = repair_crossing(q)
    assert np.all(np.diff(r, axis=1) > 0)
    np.testing.assert_array_equal(r[0], [1.0, 2.0, 3.0, 5.0])     # sorted; gaps above the floor are kept
    np.testing.assert_allclose(r[1], 1.0 + 1e-6 * np.arange(4), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(r[2], q[2])
    with pytest.raises(MorphingError, match="repair_crossing"):
        cdf(np.zeros(3), np.array([0.1, 0.5, 0.6, 0.9]), q)


def test_bdt_predict_never_crosses():
    rng = np.random.default_rng(2)
    n = 5000
    c = rng.uniform(0.0, 50.0, (n, 2))
    x = 0.1 * c[:, 0] + (0.2 + 0.1 * c[:, 0]) * rng.standard_t(3, size=n)
    levels = np.array([0.45, 0.47, 0.49, 0.5, 0.51, 0.53, 0.55])    # close levels, few trees: they cross
    model = BDTQuantiles.fit(x, c, None, levels=levels, n_estimators=10, max_depth=3, learning_rate=0.5, n_jobs=1)
    raw = model.predict_raw(c)
    assert np.mean(np.any(np.diff(raw, axis=1) < 0, axis=1)) > 0.1    # independent outputs do cross
    pred = model.predict(c)
    assert pred.shape == (n, levels.size)
    assert np.all(np.diff(pred, axis=1) > 0)
    assert isinstance(model, QuantileModel)
    # deterministic for a seed
    again = BDTQuantiles.fit(x, c, None, levels=levels, n_estimators=10, max_depth=3, learning_rate=0.5, n_jobs=1)
    np.testing.assert_array_equal(again.predict_raw(c), raw)


# --- 3. binned quantiles ------------------------------------------------------------------------


def _toy_1d(rng: np.random.Generator, n: int, shift: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    qt = rng.uniform(0.0, 100.0, n)
    return shift + 0.1 * qt + scale * (1.0 + 0.05 * qt) * rng.normal(size=n), qt


EDGES = np.linspace(0.0, 100.0, 11)


def test_binned_quantiles_median_and_width():
    rng = np.random.default_rng(7)
    x, qt = _toy_1d(rng, 50_000, 0.0, 1.0)
    model = BinnedQuantiles.fit(x, qt, None, EDGES)
    mid = 0.5 * (EDGES[1:] + EDGES[:-1])
    pred = model.predict(np.column_stack([mid, np.zeros_like(mid)]))    # extra columns are ignored
    sigma = 1.0 + 0.05 * mid
    i50, i16, i84 = (int(np.argmin(np.abs(LV - p))) for p in (0.5, 0.16, 0.84))
    assert np.all(np.abs(pred[:, i50] - 0.1 * mid) < 0.05 * sigma)
    assert np.all(np.abs(0.5 * (pred[:, i84] - pred[:, i16]) / sigma - 1.0) < 0.04)
    # linear between the centres, constant beyond the outer ones, never crossing
    between = model.predict(np.array([0.5 * (model.centres[3] + model.centres[4])]))
    np.testing.assert_allclose(between[0], 0.5 * (model.values[3] + model.values[4]))
    np.testing.assert_array_equal(model.predict(np.array([-50.0, 500.0])), model.values[[0, -1]])
    assert np.all(np.diff(model.predict(rng.uniform(-10, 110, 1000)), axis=1) > 0)


def test_binned_quantiles_use_the_weights():
    """Tilting a Gaussian by exp(t x) shifts it by t sigma^2: the weighted median must follow."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=40_000)
    qt = rng.uniform(0.0, 10.0, x.size)
    t = 0.3
    model = BinnedQuantiles.fit(x, qt, np.exp(t * x), [0.0, 5.0, 10.0])
    i50 = int(np.argmin(np.abs(LV - 0.5)))
    np.testing.assert_allclose(model.values[:, i50], t, atol=0.04)


def test_binned_morph_gives_the_data_width_per_bin():
    rng = np.random.default_rng(9)
    x_mc, qt_mc = _toy_1d(rng, 50_000, 0.0, 1.0)
    x_data, qt_data = _toy_1d(rng, 50_000, 0.3, 1.2)
    mc = BinnedQuantiles.fit(x_mc, qt_mc, None, EDGES)
    data = BinnedQuantiles.fit(x_data, qt_data, None, EDGES)
    corrected = morph_1d(x_mc, LV, mc.predict(qt_mc), data.predict(qt_mc))
    b_mc, b_data = np.digitize(qt_mc, EDGES) - 1, np.digitize(qt_data, EDGES) - 1
    for b in range(EDGES.size - 1):
        width_data = x_data[b_data == b].std()
        assert abs(corrected[b_mc == b].std() / width_data - 1.0) < 0.03, b
        assert abs(x_mc[b_mc == b].std() / width_data - 1.0) > 0.1          # the test can fail
        assert abs(corrected[b_mc == b].mean() - x_data[b_data == b].mean()) < 0.05 * width_data


# --- 4. the chain -------------------------------------------------------------------------------


def _toy_2d(rng: np.random.Generator, n: int, a1: float, b1: float, s1: float, k1: float, m2: float, s2: float,
            k2: float, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """(u1, u2) Gaussian given qT: u1 with a qT-dependent mean, both qT-dependent widths, correlation rho."""
    qt = rng.uniform(0.0, 40.0, n)
    z1, z2 = rng.normal(size=(2, n))
    u1 = a1 + b1 * qt + (s1 + k1 * qt) * z1
    u2 = m2 + (s2 + k2 * qt) * (rho * z1 + np.sqrt(1.0 - rho**2) * z2)
    return np.column_stack([u1, u2]), qt[:, None]


def test_chained_morph_gets_the_data_correlation():
    rng = np.random.default_rng(5)
    n = 10_000
    x_mc, c_mc = _toy_2d(rng, n, 0.0, -0.9, 2.0, 0.10, 0.0, 2.0, 0.05, -0.3)
    x_data, c_data = _toy_2d(rng, n, 0.5, -0.85, 2.4, 0.12, 0.3, 2.5, 0.06, 0.4)
    chain = ChainedMorph.fit(x_mc, c_mc, None, x_data, c_data, None, FAST_BDT)
    corrected = chain.apply(x_mc, c_mc)
    assert corrected.shape == x_mc.shape
    # the independent (non-chained) morph: u2 conditioned on qT only, u1 as in the chain
    mc_u2, data_u2 = FAST_BDT(x_mc[:, 1], c_mc, None), FAST_BDT(x_data[:, 1], c_data, None)
    independent = np.column_stack([corrected[:, 0],
                                   morph_1d(x_mc[:, 1], LV, mc_u2.predict(c_mc), data_u2.predict(c_mc))])

    # the whole sample: u2's mean is qT-independent, so its error is ~0.05
    assert abs(corrected[:, 1].mean() - x_data[:, 1].mean()) < 0.12
    edges = [0.0, 10.0, 20.0, 30.0, 40.0]
    for lo, hi in zip(edges[:-1], edges[1:]):
        a = (c_mc[:, 0] >= lo) & (c_mc[:, 0] < hi)
        b = (c_data[:, 0] >= lo) & (c_data[:, 0] < hi)
        width_data = x_data[b].std(axis=0)
        np.testing.assert_array_less(np.abs(corrected[a].mean(axis=0) - x_data[b].mean(axis=0)), 0.1 * width_data)
        np.testing.assert_array_less(np.abs(corrected[a].std(axis=0) / width_data - 1.0), 0.08)
        rho_data = np.corrcoef(x_data[b].T)[0, 1]
        rho_mc = np.corrcoef(x_mc[a].T)[0, 1]
        rho_chained = np.corrcoef(corrected[a].T)[0, 1]
        rho_independent = np.corrcoef(independent[a].T)[0, 1]
        assert abs(rho_chained - rho_data) < 0.1, (lo, rho_chained, rho_data)
        assert abs(rho_independent - rho_mc) < 0.06, (lo, rho_independent, rho_mc)     # keeps the MC's
        assert abs(rho_independent - rho_data) > 0.4                                    # and misses the data's


def test_chained_morph_rule_uses_original_and_corrected_inputs():
    """Variable 1: the MC model sees the original variable 0, the data model the corrected one."""
    seen: dict[str, list[np.ndarray]] = {"mc": [], "data": []}

    class Recorder:
        levels = LV

        def __init__(self, name: str, shift: float) -> None:
            self.name, self.shift = name, shift

        def predict(self, cond: np.ndarray) -> np.ndarray:
            seen[self.name].append(np.array(cond))
            return np.broadcast_to(Q_STD + self.shift, (cond.shape[0], LV.size)).copy()

    chain = ChainedMorph(mc=[Recorder("mc", 0.0), Recorder("mc", 0.0)], data=[Recorder("data", 1.0), Recorder("data", 0.0)])
    x = np.array([[0.0, 0.0], [0.5, -0.5]])
    cond = np.array([[10.0], [20.0]])
    out = chain.apply(x, cond)
    np.testing.assert_allclose(out[:, 0], x[:, 0] + 1.0)                     # shifted by the data model
    np.testing.assert_allclose(out[:, 1], x[:, 1])
    np.testing.assert_array_equal(seen["mc"][1], np.hstack([cond, x[:, :1]]))
    np.testing.assert_array_equal(seen["data"][1], np.hstack([cond, out[:, :1]]))


# --- 5. save / load -----------------------------------------------------------------------------


def test_bdt_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    c = rng.uniform(0.0, 40.0, (3000, 3))
    x = 0.2 * c[:, 0] + (1.0 + 0.05 * c[:, 1]) * rng.normal(size=3000)
    model = BDTQuantiles.fit(x, c, rng.uniform(0.5, 1.5, 3000), n_estimators=8, max_depth=3, n_jobs=1)
    path = model.save(tmp_path / "upar_mc.json")
    doc = json.loads(path.read_text())                         # xgboost's own JSON, not a pickle
    assert "learner" in doc
    loaded = BDTQuantiles.load(path)
    np.testing.assert_array_equal(loaded.levels, model.levels)
    assert loaded.n_cond == 3
    np.testing.assert_array_equal(loaded.predict(c), model.predict(c))
    with pytest.raises(MorphingError, match=r"\.json"):
        model.save(tmp_path / "upar_mc.pkl")


def test_bdt_load_missing_or_corrupt_names_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(MorphingError, match="nope.json"):
        BDTQuantiles.load(missing)
    rng = np.random.default_rng(12)
    c = rng.normal(size=(500, 1))
    model = BDTQuantiles.fit(rng.normal(size=500), c, None, n_estimators=3, max_depth=2, n_jobs=1)
    text = model.save(tmp_path / "good.json").read_text()
    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\x01not json")
    other = tmp_path / "other.json"
    other.write_text('{"learner": {"attributes": {}}}')
    plain = tmp_path / "plain.json"                        # an xgboost model without our attributes
    xgb.train({"objective": "reg:squarederror", "nthread": 1}, xgb.DMatrix(c, label=c[:, 0]), 2).save_model(plain)
    for bad in (truncated, garbage, other, plain):
        with pytest.raises(MorphingError, match=bad.name):
            BDTQuantiles.load(bad)


# --- 6. bad inputs fail by name -----------------------------------------------------------------


def test_bad_inputs_fail_by_name():
    rng = np.random.default_rng(13)
    n = 1000
    x = rng.normal(size=n)
    c = rng.uniform(0.0, 50.0, (n, 3))
    x_nan = x.copy()
    x_nan[5] = np.nan
    c_nan = c.copy()
    c_nan[7, 2] = np.nan
    with pytest.raises(MorphingError, match=r"^x holds 1 NaN"):
        BinnedQuantiles.fit(x_nan, c, None, [0.0, 25.0, 50.0])
    with pytest.raises(MorphingError, match=r"cond\[:, 0\]"):
        BinnedQuantiles.fit(x, np.where(np.arange(n) == 3, np.nan, c[:, 0]), None, [0.0, 25.0, 50.0])
    with pytest.raises(MorphingError, match=r"^x holds"):
        BDTQuantiles.fit(x_nan, c, None, n_estimators=2)
    with pytest.raises(MorphingError, match="cond column 2"):
        BDTQuantiles.fit(x, c_nan, None, n_estimators=2)
    negative = np.ones(n)
    negative[0] = -1.0
    for fit in (functools.partial(BinnedQuantiles.fit, edges=[0.0, 25.0, 50.0]),
                functools.partial(BDTQuantiles.fit, n_estimators=2)):
        with pytest.raises(MorphingError, match="quantiles need non-negative weights"):
            fit(x, c, negative)
    # an empty q_T bin (no events in 20-30) is named, with the advice
    c_gap = np.where((c[:, 0] >= 20.0) & (c[:, 0] < 30.0), c[:, 0] + 10.0, c[:, 0])
    with pytest.raises(MorphingError, match=r"\[20, 30\).*fewer or wider bins"):
        BinnedQuantiles.fit(x, c_gap, None, [0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    with pytest.raises(MorphingError, match=r"\[40, 50\).*holds 9 events"):
        BinnedQuantiles.fit(x[:9 + 50], np.r_[np.full(50, 5.0), np.full(9, 45.0)], None, [0.0, 40.0, 50.0])
    model = BDTQuantiles.fit(x, c, None, n_estimators=2, max_depth=2, n_jobs=1)
    with pytest.raises(MorphingError, match="2 columns, the model was trained on 3"):
        model.predict(c[:, :2])
    with pytest.raises(MorphingError, match="cond column 2"):
        model.predict(c_nan)
    other_levels = BinnedQuantiles.fit(x, c, None, [0.0, 50.0], levels=np.array([0.1, 0.5, 0.9]))
    with pytest.raises(MorphingError, match="different quantile levels"):
        ChainedMorph(mc=[model], data=[other_levels])


def test_compiled_kernels_agree_with_the_numpy_reference():
    """The kernels the chain applies (wmnb.recoil.kernels) against morph_1d, the vectorised
    reference: per-event quantiles of random shapes, events in the bulk and far in both tails,
    and the binned interpolation in q_T done inside the kernel."""
    from wmnb.recoil import kernels

    rng = np.random.default_rng(21)
    n, lv = 20_000, QUANTILE_LEVELS
    base = np.sort(rng.normal(0, 5, (n, lv.size)), axis=1) + np.arange(lv.size) * 0.5
    q_from = repair_crossing(base)
    q_to = repair_crossing(base * rng.uniform(0.7, 1.4, (n, 1)) + rng.normal(0, 2, (n, 1)))
    x = np.concatenate([rng.normal(0, 8, n - 2000), rng.normal(0, 60, 2000)])
    assert np.allclose(kernels.morph_rows(x, lv, q_from, q_to), morph_1d(x, lv, q_from, q_to), rtol=0, atol=1e-10)
    edges = np.array([0.0, 5.0, 10.0, 20.0, 40.0])
    qt = rng.uniform(0, 50, n)
    c = np.stack([qt, np.zeros(n)], 1)
    a = BinnedQuantiles(edges, lv, repair_crossing(np.sort(rng.normal(0, 6, (4, lv.size)), axis=1)))
    b = BinnedQuantiles(edges, lv, repair_crossing(np.sort(rng.normal(1, 8, (4, lv.size)), axis=1)),
                        centres=np.array([2.0, 7.0, 14.0, 30.0]))
    got = kernels.morph_binned(x, qt, lv, a.centres, a.values, b.centres, b.values)
    assert np.allclose(got, morph_1d(x, lv, a.predict(c), b.predict(c)), rtol=0, atol=1e-10)
