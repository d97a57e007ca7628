"""Tests of the recoil DNN module: the density, the features, training on a known toy, the PIT,
persistence, the summed-pdf closure and the corrected recoil.

Every run is small (toys <= 30k events, a few epochs, one TensorFlow thread where the runtime
has not started yet).
"""
from __future__ import annotations

import itertools
import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorflow as tf
from scipy import integrate, stats

try:  # one thread keeps the trainings reproducible; impossible once another test started TensorFlow
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:
    pass

from wmnb.recoil.dnn import (
    A_MAX,
    FEATURE_NAMES,
    FEATURES,
    PARAMS,
    PT_FLOOR,
    DNNError,
    RecoilDNN,
    _batch_nll,
    corrected_recoil,
    features,
    pit,
    summed_pdf,
    tailed_gauss_cdf,
    tailed_gauss_logpdf,
    tailed_gauss_logpdf_np,
    tailed_gauss_pdf,
    tailed_gauss_ppf,
    targets,
    wrap_angle,
)

# Keras' own model.save trips numpy 2's __array__(copy=...) deprecation; nothing this module controls
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

#: (mu, sigma, a_L, a_R): symmetric, asymmetric, both clamp edges, a narrow and a wide one
SHAPES = [(0.0, 1.0, 1.5, 1.5), (0.3, 0.1, 0.5, 2.5), (-1.0, 2.0, 3.0, 0.3), (0.0, 0.05, 5.0, 5.0),
          (2.0, 0.7, 0.3, 0.3), (0.1, 1.3, 1.0, 4.0)]


def _tf_logpdf(t: Any, mu: float, sigma: float, al: float, ar: float) -> np.ndarray:
    """The TensorFlow density in float64, in terms of (sigma, a) rather than their logs."""
    t = tf.constant(np.asarray(t, dtype=np.float64))
    return tailed_gauss_logpdf(t, mu, math.log(sigma), math.log(al), math.log(ar)).numpy()


def _pieces(mu: float, sigma: float, al: float, ar: float) -> list[tuple[float, float]]:
    """Integration ranges split at the junctions (quad is accurate on each smooth piece)."""
    lo, hi = mu - al * sigma, mu + ar * sigma
    return [(-np.inf, lo), (lo, hi), (hi, np.inf)]


# ---------------------------------------------------------------------------------------------
# 1. the density
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_density_integrates_to_one(shape: tuple[float, float, float, float]) -> None:
    total = sum(integrate.quad(lambda t: tailed_gauss_pdf(t, *shape), a, b, epsabs=1e-13, epsrel=1e-12)[0]
                for a, b in _pieces(*shape))
    assert total == pytest.approx(1.0, abs=1e-8)
    # the TensorFlow density (vectorised: Simpson on each smooth piece, tails cut where exp(-40))
    mu, sigma, al, ar = shape
    knots = mu + sigma * np.array([-al - 40.0 / al, -al, ar, ar + 40.0 / ar])
    total_tf = sum(integrate.simpson(np.exp(_tf_logpdf(g, *shape)), x=g)
                   for g in (np.linspace(lo, hi, 20001) for lo, hi in itertools.pairwise(knots)))
    assert total_tf == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("shape", SHAPES)
def test_density_and_derivative_continuous_at_junctions(shape: tuple[float, float, float, float]) -> None:
    mu, sigma, al, ar = shape
    eps = 1e-7 * sigma
    for junction in (mu - al * sigma, mu + ar * sigma):
        below, above = _tf_logpdf([junction - eps, junction + eps], *shape)
        assert above == pytest.approx(below, abs=1e-6)
        # d ln f / dt on either side, from TensorFlow's gradient
        t = tf.Variable([junction - eps, junction + eps], dtype=tf.float64)
        with tf.GradientTape() as tape:
            lp = tailed_gauss_logpdf(t, mu, math.log(sigma), math.log(al), math.log(ar))
        d_below, d_above = tape.gradient(lp, t).numpy()
        assert d_above == pytest.approx(d_below, rel=1e-5, abs=1e-5)
    # the shape itself: Gaussian core (ln f quadratic), exponential tails (ln f linear)
    z = np.array([-al - 2.0, -al - 1.0, -0.5 * al, 0.0, 0.5 * ar, ar + 1.0, ar + 2.0])
    lp = _tf_logpdf(mu + sigma * z, *shape)
    peak = lp[3]
    assert lp[2] - peak == pytest.approx(-0.125 * al**2, abs=1e-12)
    assert lp[4] - peak == pytest.approx(-0.125 * ar**2, abs=1e-12)
    assert lp[1] - lp[0] == pytest.approx(al, abs=1e-12)      # slope a_L per unit z below
    assert lp[5] - lp[6] == pytest.approx(ar, abs=1e-12)      # slope -a_R per unit z above


def test_density_reduces_to_gaussian_for_large_tails() -> None:
    t = np.linspace(-4.5, 4.5, 91)
    # numpy (no clamp): a = 30 puts the tails beyond any float64 probability
    assert tailed_gauss_logpdf_np(t, 0.0, 1.0, 30.0, 30.0) == pytest.approx(stats.norm.logpdf(t), abs=1e-12)
    # TensorFlow clamps a at A_MAX = 5: the tails carry ~6e-7, so the core is the Gaussian to ~1e-6
    lp = _tf_logpdf(t * 0.3 + 1.0, 1.0, 0.3, 100.0, 100.0)
    assert lp == pytest.approx(stats.norm.logpdf(t * 0.3 + 1.0, 1.0, 0.3), abs=2e-6)
    assert lp == pytest.approx(_tf_logpdf(t * 0.3 + 1.0, 1.0, 0.3, A_MAX, A_MAX), abs=1e-14)
    # and a small a is visibly not Gaussian (the test above can fail)
    assert np.max(np.abs(_tf_logpdf(t, 0.0, 1.0, 1.0, 1.0) - stats.norm.logpdf(t))) > 1.0


@pytest.mark.parametrize("shape", SHAPES)
def test_cdf_matches_numeric_integral_and_ppf_inverts_it(shape: tuple[float, float, float, float]) -> None:
    mu, sigma, al, ar = shape
    zs = [-al - 3.0, -al - 0.2, -al + 0.1, 0.0, 0.4 * ar, ar - 0.05, ar + 0.3, ar + 4.0]
    for z in zs:
        t = mu + sigma * z
        ranges = [(a, min(b, t)) for a, b in _pieces(*shape) if a < t]
        num = sum(integrate.quad(lambda u: tailed_gauss_pdf(u, *shape), a, b, epsabs=1e-14,
                                 epsrel=1e-12)[0] for a, b in ranges)
        assert float(tailed_gauss_cdf(t, *shape)) == pytest.approx(num, abs=1e-9, rel=1e-8)
    p = np.array([1e-6, 0.01, 0.2, 0.5, 0.77, 0.99, 1 - 1e-6])
    assert tailed_gauss_cdf(tailed_gauss_ppf(p, *shape), *shape) == pytest.approx(p, rel=1e-9, abs=1e-12)
    # the inverse the other way round, where F (not 1 - F) still resolves the point
    ts = mu + sigma * np.asarray(zs)
    f = tailed_gauss_cdf(ts, *shape)
    ok = (f > 1e-9) & (f < 1 - 1e-6)
    assert tailed_gauss_ppf(f[ok], *shape) == pytest.approx(ts[ok], abs=1e-6 * sigma)


def test_tf_and_numpy_densities_agree() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    mu, sigma = rng.normal(size=n), np.exp(rng.uniform(-3, 1, n))
    al, ar = np.exp(rng.uniform(math.log(0.3), math.log(5.0), (2, n)))
    t = mu + sigma * rng.normal(scale=3.0, size=n)
    ref = tailed_gauss_logpdf_np(t, mu, sigma, al, ar)
    lp64 = tailed_gauss_logpdf(tf.constant(t), mu, np.log(sigma), np.log(al), np.log(ar)).numpy()
    assert lp64 == pytest.approx(ref, abs=1e-10)
    lp32 = tailed_gauss_logpdf(tf.constant(t, tf.float32), mu, np.log(sigma), np.log(al), np.log(ar)).numpy()
    assert lp32 == pytest.approx(ref, abs=1e-3, rel=1e-5)
    with pytest.raises(ValueError, match="sigma"):
        tailed_gauss_cdf(0.0, 0.0, -1.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# 2. training on a toy with known conditional densities; the PIT
# ---------------------------------------------------------------------------------------------

def _toy_truth(x: np.ndarray) -> dict[str, np.ndarray]:
    """mu_1 = 0.3 - 0.1 x0, sigma_1 = 0.15 + 0.05 x1 (tails 1.5, 1.5);
    mu_2 = 0.05 x1, sigma_2 = 0.2 + 0.05 x0 (tails 1.0, 2.0); x2 is an irrelevant feature."""
    n = len(x)
    return {"mu": np.stack([0.3 - 0.1 * x[:, 0], 0.05 * x[:, 1]], axis=1),
            "sigma": np.stack([0.15 + 0.05 * x[:, 1], 0.2 + 0.05 * x[:, 0]], axis=1),
            "al": np.stack([np.full(n, 1.5), np.full(n, 1.0)], axis=1),
            "ar": np.stack([np.full(n, 1.5), np.full(n, 2.0)], axis=1)}


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.stack([rng.uniform(-2, 2, n), rng.uniform(-2, 2, n), rng.normal(size=n)], axis=1).astype(np.float32)
    p = _toy_truth(x)
    y = tailed_gauss_ppf(rng.uniform(size=(n, 2)), p["mu"], p["sigma"], p["al"], p["ar"])
    return x, y.astype(np.float32)


@pytest.fixture(scope="module")
def toy_model() -> RecoilDNN:
    x, y = _toy(30_000, seed=1)
    return RecoilDNN.fit(x, y, hidden=(64, 64), epochs=25, batch_size=512, learning_rate=2e-3, patience=6,
                         seed=0, feature_names=("x0", "x1", "x2"))


@pytest.fixture(scope="module")
def toy_test() -> tuple[np.ndarray, np.ndarray]:
    """An independent sample for the PIT and the closure."""
    return _toy(10_000, seed=2)


def _pit_deviation(u: np.ndarray, bins: int = 10) -> float:
    """The largest relative deviation of a PIT histogram's bins from flat."""
    counts = np.histogram(u, bins, (0.0, 1.0))[0]
    return float(np.max(np.abs(counts / (len(u) / bins) - 1.0)))


def test_fit_recovers_conditional_mu_and_sigma(toy_model: RecoilDNN) -> None:
    grid = np.array([[a, b, 0.0] for a in (-1.0, 0.0, 1.0) for b in (-1.0, 0.0, 1.0)], dtype=np.float32)
    pred, true = toy_model.predict(grid), _toy_truth(grid)
    assert set(pred) == set(PARAMS) and all(v.shape == (len(grid), 2) for v in pred.values())
    # mu within 0.2 sigma and sigma within 15 % at every point (24k training events)
    assert np.all(np.abs(pred["mu"] - true["mu"]) < 0.2 * true["sigma"])
    assert np.all(np.abs(pred["sigma"] / true["sigma"] - 1.0) < 0.15)
    # the tails are harder to pin down: only roughly
    assert np.all(np.abs(pred["al"].mean(axis=0) - true["al"][0]) < 0.4)
    assert np.all(np.abs(pred["ar"].mean(axis=0) - true["ar"][0]) < 0.6)
    # the dependence is learned, not just the average: mu_1 falls with x0 by 0.1 per unit
    slope = (pred["mu"][6:9, 0] - pred["mu"][0:3, 0]).mean() / 2.0
    assert slope == pytest.approx(-0.1, abs=0.02)


def test_pit_flat_for_trained_model_not_for_wrong_ones(toy_model: RecoilDNN,
                                                       toy_test: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = toy_test
    params = toy_model.predict(x)
    u = pit(y, params)
    assert u.shape == (len(x), 2) and np.all((u >= 0) & (u <= 1))
    for j in range(2):
        # 10 bins of 1000 events: 3 % statistical spread plus the imperfection of a 24k-event,
        # 20-epoch fit (seeds 0-3 give 0.05-0.11); the wrong models below give > 0.3
        assert _pit_deviation(u[:, j]) < 0.15
        assert stats.kstest(u[:, j], "uniform").pvalue > 1e-4
        # calibrated conditionally too: the quarter of the events with x0 > 1 (seeds 0-3: <= 0.12)
        assert _pit_deviation(u[x[:, 0] > 1.0, j], bins=5) < 0.2
    # the true model, for scale
    u_true = pit(y, _toy_truth(x))
    assert all(stats.kstest(u_true[:, j], "uniform").pvalue > 1e-3 for j in range(2))

    wide = dict(params, sigma=2.0 * params["sigma"])          # too wide: PIT piles up at 0.5
    shifted = dict(params, mu=params["mu"] + 0.5 * params["sigma"])   # biased: PIT tilts
    for wrong in (wide, shifted):
        uw = pit(y, wrong)
        for j in range(2):
            assert _pit_deviation(uw[:, j]) > 0.3
            assert stats.kstest(uw[:, j], "uniform").pvalue < 1e-10
    # the global mean and width of each target for every event: calibrated on the whole
    # sample by construction, but not where mu depends on the feature (x0 > 1 for target 1)
    glob = {"mu": np.broadcast_to(y.mean(axis=0), y.shape), "sigma": np.broadcast_to(y.std(axis=0), y.shape),
            "al": np.full(y.shape, 1.5), "ar": np.full(y.shape, 1.5)}
    ug = pit(y, glob)
    assert _pit_deviation(ug[x[:, 0] > 1.0, 0], bins=5) > 0.3


def test_fit_history_restores_best_epoch(toy_model: RecoilDNN) -> None:
    s, h = toy_model.settings, toy_model.history
    assert len(h["train_nll"]) == len(h["val_nll"]) == s["epochs_run"] <= s["epochs"]
    assert s["best_epoch"] == int(np.argmin(h["val_nll"]))
    assert s["best_val_nll"] == min(h["val_nll"])
    assert toy_model.train_time_s > 0 and s["events_epochs_per_s"] > 0
    assert s["n_train"] + s["n_val"] == 30_000 and s["n_val"] == 6_000
    # the returned weights are the best epoch's: recompute the validation NLL (in target units,
    # so the standardisation's Jacobian is included) from the documented split
    x, y = _toy(30_000, seed=1)
    val = np.random.default_rng(0).permutation(len(x))[: s["n_val"]]
    p = toy_model.predict(x[val])
    nll = -tailed_gauss_logpdf_np(y[val], p["mu"], p["sigma"], p["al"], p["ar"]).sum(axis=1).mean()
    assert nll == pytest.approx(min(h["val_nll"]), abs=1e-4)
    # training helped: the best validation NLL beats the first epoch's
    assert min(h["val_nll"]) < h["val_nll"][0]


def test_fit_is_deterministic_for_a_seed() -> None:
    x, y = _toy(4_000, seed=5)

    def fit(seed: int) -> np.ndarray:
        m = RecoilDNN.fit(x, y, hidden=(16, 16), epochs=2, batch_size=256, seed=seed)
        return m.predict(x[:200])["mu"]

    first, again, other = fit(0), fit(0), fit(1)
    # one CPU thread: bit-identical (with several threads only to float32 round-off)
    np.testing.assert_allclose(again, first, rtol=0, atol=1e-7)
    assert np.max(np.abs(other - first)) > 1e-4


def test_weights_enter_the_loss() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(size=(6, 2)).astype(np.float32)
    raw = rng.normal(size=(6, 8)).astype(np.float32)
    w = np.array([0, 1, 2, 3, 1, 1], dtype=np.float32)
    dup = np.repeat(np.arange(6), w.astype(int))
    weighted = float(_batch_nll(y, raw, w)) * 6 / w.sum()
    assert weighted == pytest.approx(float(_batch_nll(y[dup], raw[dup], np.ones(len(dup), np.float32))), rel=1e-5)

    # a fit with zero weight on one of two populations learns only the other one
    n = 6_000
    x = rng.normal(size=(n, 2)).astype(np.float32)
    pop = rng.uniform(size=n) < 0.5
    yy = np.stack([np.where(pop, 0.5, -0.5) + 0.1 * rng.normal(size=n), 0.1 * rng.normal(size=n)], axis=1)
    m = RecoilDNN.fit(x, yy, np.where(pop, 1.0, 0.0), hidden=(16, 16), epochs=6, batch_size=256,
                      learning_rate=3e-3)
    mu = m.predict(x[:500])["mu"][:, 0]
    assert np.median(mu) == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="negative weight"):
        RecoilDNN.fit(x, yy, np.where(pop, 1.0, -0.1), epochs=1)
    with pytest.raises(ValueError, match="weight"):
        RecoilDNN.fit(x, yy, np.ones(n - 1), epochs=1)


# ---------------------------------------------------------------------------------------------
# 3. features and targets
# ---------------------------------------------------------------------------------------------

def _event_columns(n: int, seed: int) -> dict[str, np.ndarray]:
    """A toy event set with every column :func:`features` needs (rough physical ranges)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for prefix, scale in (("ut", 15.0), ("tkmet_ut", 10.0), ("puppimet_ut", 12.0)):
        cols[f"{prefix}_x"], cols[f"{prefix}_y"] = rng.normal(scale=scale, size=(2, n))
    for name, scale in (("met_sumet", 800.0), ("tkmet_sumet", 300.0), ("puppimet_sumet", 500.0)):
        cols[name] = rng.exponential(scale, n)
    cols["npv"] = rng.poisson(20, n).astype(float)
    cols["n_charged"] = rng.poisson(40, n).astype(float)
    return cols


def _rotate(x: np.ndarray, y: np.ndarray, phi: float) -> tuple[np.ndarray, np.ndarray]:
    return x * math.cos(phi) - y * math.sin(phi), x * math.sin(phi) + y * math.cos(phi)


def test_features_and_targets_are_rotation_invariant() -> None:
    cols = _event_columns(2_000, seed=11)
    rng = np.random.default_rng(12)
    hx, hy = rng.normal(scale=20.0, size=(2, 2_000))
    f, t = features(cols), targets(cols, hx, hy)
    assert f.shape == (2_000, len(FEATURE_NAMES)) and f.dtype == np.float32
    for phi in rng.uniform(-math.pi, math.pi, 3):
        rot = dict(cols)
        for prefix in ("ut", "tkmet_ut", "puppimet_ut"):
            rot[f"{prefix}_x"], rot[f"{prefix}_y"] = _rotate(cols[f"{prefix}_x"], cols[f"{prefix}_y"], phi)
        np.testing.assert_allclose(features(rot), f, rtol=1e-5, atol=1e-5)
        t_rot = targets(rot, *_rotate(hx, hy, phi))
        np.testing.assert_allclose(t_rot[:, 0], t[:, 0], atol=1e-5)
        np.testing.assert_allclose(wrap_angle(t_rot[:, 1] - t[:, 1]), 0.0, atol=1e-5)
    # and a feature that is *not* rotation invariant would be caught: the raw x component moves
    assert not np.allclose(_rotate(cols["ut_x"], cols["ut_y"], 0.5)[0], cols["ut_x"], atol=1e-3)


def test_feature_conventions() -> None:
    cols = {name: np.array([1.0]) for name in FEATURES}
    cols.update(ut_x=np.array([10.0]), ut_y=np.array([0.0]), tkmet_ut_x=np.array([0.0]),
                tkmet_ut_y=np.array([5.0]), puppimet_ut_x=np.array([-3.0]), puppimet_ut_y=np.array([0.0]),
                npv=np.array([17.0]), n_charged=np.array([33.0]), met_sumet=np.array([400.0]))
    f = dict(zip(FEATURE_NAMES, features(cols)[0].astype(float)))
    assert f["log1p_ut_pf"] == pytest.approx(math.log1p(10.0))
    assert f["slog_tk_par"] == pytest.approx(0.0, abs=1e-7)
    assert f["slog_tk_perp"] == pytest.approx(math.log1p(5.0))          # across = +90 degrees
    assert f["slog_puppi_par"] == pytest.approx(-math.log1p(3.0))       # against u_PF: negative
    assert f["log1p_ut_puppi"] == pytest.approx(math.log1p(3.0))
    assert f["log1p_sumet_pf"] == pytest.approx(math.log1p(400.0))
    assert (f["npv"], f["n_charged"]) == (17.0, 33.0)


@pytest.mark.parametrize("column", FEATURES)
def test_features_missing_column_fails_by_name(column: str) -> None:
    cols = _event_columns(10, seed=1)
    del cols[column]
    with pytest.raises(KeyError, match=f"'{column}'.*rerun chapter 01"):
        features(cols)


@pytest.mark.parametrize("column, bad", [("tkmet_ut_y", np.nan), ("npv", np.inf), ("ut_x", -np.inf)])
def test_features_non_finite_fails_by_name(column: str, bad: float) -> None:
    cols = _event_columns(10, seed=1)
    cols[column] = cols[column].copy()
    cols[column][3] = bad
    with pytest.raises(ValueError, match=f"'{column}'"):
        features(cols)


def test_target_values() -> None:
    # |H| = 2 |u|, 0.3 rad ahead; a pair straddling +-pi; a vanishing PF recoil (floored)
    phi_u = np.array([0.7, 3.0, 0.0])
    mag_u = np.array([10.0, 5.0, 0.0])
    phi_h = np.array([1.0, -3.0, 1.2])
    mag_h = np.array([20.0, 5.0, 3.0])
    cols = {"ut_x": mag_u * np.cos(phi_u), "ut_y": mag_u * np.sin(phi_u)}
    t = targets(cols, mag_h * np.cos(phi_h), mag_h * np.sin(phi_h))
    assert t.shape == (3, 2) and t.dtype == np.float32
    np.testing.assert_allclose(t[:, 0], [math.log(2.0), 0.0, math.log(3.0 / PT_FLOOR)], rtol=1e-6)
    np.testing.assert_allclose(t[:, 1], [0.3, 2 * math.pi - 6.0, 1.2], atol=1e-6)
    assert wrap_angle(np.array([math.pi, -math.pi, 3 * math.pi]))  == pytest.approx([math.pi] * 3)
    with pytest.raises(KeyError, match="ut_y"):
        targets({"ut_x": np.zeros(3)}, np.zeros(3), np.zeros(3))


# ---------------------------------------------------------------------------------------------
# 4. persistence
# ---------------------------------------------------------------------------------------------

def test_save_load_round_trip(toy_model: RecoilDNN, toy_test: tuple[np.ndarray, np.ndarray],
                              tmp_path: Path) -> None:
    path = toy_model.save(tmp_path / "sub" / "recoil_dnn.keras")
    side = path.with_suffix(".json")
    assert path.is_file() and side.is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]   # no temporary left over
    meta = json.loads(side.read_text())
    assert meta["feature_names"] == ["x0", "x1", "x2"] and meta["hidden"] == [64, 64]
    assert np.allclose(meta["x_mean"], toy_model.x_mean) and np.allclose(meta["y_scale"], toy_model.y_scale)
    with zipfile.ZipFile(path) as z:   # the native format: a config and HDF5 weights, no pickle
        assert "config.json" in z.namelist() and not any(n.endswith((".pkl", ".pickle")) for n in z.namelist())
    # plain Keras loads it without any custom objects
    assert tf.keras.models.load_model(path, compile=False).output_shape[-1] == 8

    loaded = RecoilDNN.load(path)
    x = toy_test[0][:3000]
    a, b = toy_model.predict(x), loaded.predict(x)
    for k in PARAMS:
        np.testing.assert_array_equal(b[k], a[k])
    assert loaded.feature_names == toy_model.feature_names and loaded.hidden == toy_model.hidden
    assert loaded.history == toy_model.history and loaded.settings == toy_model.settings
    with pytest.raises(ValueError, match=r"\.keras"):
        toy_model.save(tmp_path / "model.h5")


def test_load_missing_or_corrupt_fails_by_name(toy_model: RecoilDNN, tmp_path: Path) -> None:
    missing = tmp_path / "nothing.keras"
    with pytest.raises(DNNError, match=r"nothing\.keras.*rerun chapter 04"):
        RecoilDNN.load(missing)

    good = toy_model.save(tmp_path / "good.keras")
    cases: dict[str, Callable[[Path], object]] = {
        "model_garbage": lambda p: p.write_bytes(b"this is not a zip file"),
        "model_truncated": lambda p: p.write_bytes(good.read_bytes()[:200]),
        "sidecar_garbage": lambda p: p.with_suffix(".json").write_text("{not json"),
        "sidecar_wrong_format": lambda p: p.with_suffix(".json").write_text(json.dumps({"format": "other"})),
        "sidecar_missing": lambda p: p.with_suffix(".json").unlink(),
        "sidecar_wrong_width": lambda p: p.with_suffix(".json").write_text(json.dumps(
            dict(json.loads(good.with_suffix(".json").read_text()), feature_names=["a", "b"],
                 x_mean=[0, 0], x_scale=[1, 1]))),
    }
    for name, corrupt in cases.items():
        path = tmp_path / f"{name}.keras"
        path.write_bytes(good.read_bytes())
        path.with_suffix(".json").write_text(good.with_suffix(".json").read_text())
        corrupt(path)
        stem = path.stem
        with pytest.raises(DNNError, match=rf"{stem}\.(keras|json).*rerun chapter 04"):
            RecoilDNN.load(path)


# ---------------------------------------------------------------------------------------------
# 5. the summed-pdf closure
# ---------------------------------------------------------------------------------------------

def _binned_expectation(params: dict[str, np.ndarray], edges: np.ndarray, weight: np.ndarray | None,
                        sub: int = 8) -> np.ndarray:
    """Integrate summed_pdf over each bin (Simpson on ``sub`` intervals per bin), (bins, 2)."""
    fine = np.stack([np.linspace(e[0], e[-1], (len(e) - 1) * sub + 1) for e in edges.T], axis=1)
    dens = summed_pdf(fine, params, weight)
    out = np.empty((edges.shape[0] - 1, 2))
    for j in range(2):
        for b in range(edges.shape[0] - 1):
            sl = slice(b * sub, (b + 1) * sub + 1)
            out[b, j] = integrate.simpson(dens[sl, j], x=fine[sl, j])
    return out


def test_summed_pdf_closure(toy_model: RecoilDNN, toy_test: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = toy_test
    edges = np.stack([np.linspace(-0.4, 1.0, 29), np.linspace(-1.0, 1.24, 29)], axis=1)

    def chi2_pvalue(params: dict[str, np.ndarray], j: int, syst: float = 0.0) -> float:
        obs = np.histogram(y[:, j], edges[:, j])[0]
        exp = _binned_expectation(params, edges, None)[:, j]
        chi2 = float(np.sum((obs - exp) ** 2 / (exp + (syst * exp) ** 2)))
        return float(stats.chi2.sf(chi2, len(obs)))

    for j in range(2):
        # the true densities close to statistical precision ...
        assert chi2_pvalue(_toy_truth(x), j) > 1e-3
        # ... the trained model too, allowing 3 % per bin for its imperfection ...
        assert chi2_pvalue(toy_model.predict(x), j, syst=0.03) > 1e-3
        # ... a too-wide model does not
        truth = _toy_truth(x)
        assert chi2_pvalue(dict(truth, sigma=2.0 * truth["sigma"]), j, syst=0.03) < 1e-10

    # linear in the weights, and a wide grid integrates to the sum of the weights
    params = toy_model.predict(x[:500])
    w = np.random.default_rng(4).uniform(0.5, 2.0, 500)
    grid = np.linspace(-8.0, 8.0, 8001)
    dens = summed_pdf(grid, params, w)
    assert dens.shape == (len(grid), 2)
    assert integrate.simpson(dens, x=grid, axis=0) == pytest.approx([w.sum()] * 2, rel=1e-6)
    np.testing.assert_allclose(summed_pdf(grid[::100], params, 2.0 * w), 2.0 * dens[::100], rtol=1e-12)
    np.testing.assert_allclose(summed_pdf(grid[::100], params), summed_pdf(grid[::100], params, np.ones(500)))


# ---------------------------------------------------------------------------------------------
# 6. the corrected recoil
# ---------------------------------------------------------------------------------------------

def test_corrected_recoil_scales_and_rotates() -> None:
    rng = np.random.default_rng(21)
    n = 1_000
    ux, uy = rng.normal(scale=15.0, size=(2, n))
    scale, delta = rng.uniform(0.8, 2.5, n), rng.uniform(-math.pi, math.pi, n)
    cols = {"ut_x": ux, "ut_y": uy}
    params = {"mu": np.stack([np.log(scale), delta], axis=1), "sigma": np.full((n, 2), 0.1),
              "al": np.ones((n, 2)), "ar": np.ones((n, 2))}
    cx, cy = corrected_recoil(cols, params)
    ex, ey = (scale * (ux * np.cos(delta) - uy * np.sin(delta)), scale * (ux * np.sin(delta) + uy * np.cos(delta)))
    np.testing.assert_allclose(cx, ex, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(cy, ey, rtol=1e-10, atol=1e-9)
    # mu = the targets of a true recoil H gives back H (the inverse of targets)
    hx, hy = rng.normal(scale=20.0, size=(2, n))
    t = targets(cols, hx, hy).astype(np.float64)
    bx, by = corrected_recoil(cols, dict(params, mu=t))
    np.testing.assert_allclose(bx, hx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(by, hy, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="parameters"):
        corrected_recoil(cols, dict(params, mu=params["mu"][:10]))
