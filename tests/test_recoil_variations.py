"""Chapter 04's nuisances: the binned chain's bootstrap eigenvariations, their size against the
known statistical error of a quantile, the shifted chains, and the recoil correction's column
variations (only events near the m_T thresholds, each the re-morphed recoil)."""
from __future__ import annotations

import numpy as np
import pytest

from wmnb.recoil import chapter as C
from wmnb.recoil import correction
from wmnb.recoil.morphing import BinnedQuantiles, ChainedMorph, MorphingError

from test_recoil import _toy_chain, _w_cols


def _toy_recoil(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Simulated-like (u_par, u_perp) and conditions (q_T, y, npv) of the toy chain's universe."""
    rng = np.random.default_rng(seed)
    qt = rng.uniform(0, 40, n)
    x = np.stack([-0.8 * qt + 7 * rng.standard_normal(n), 7 * rng.standard_normal(n)], 1)
    return x, np.stack([qt, np.zeros(n), np.full(n, 18.0)], 1)


def _tables(chain: ChainedMorph) -> np.ndarray:
    return np.stack([m.values for m in (*chain.mc, *chain.data)])  # type: ignore[attr-defined]


def test_a_uniform_shift_of_the_data_quantiles_moves_the_corrected_recoil_by_as_much():
    chain = _toy_chain()
    x, cond = _toy_recoil(5000, seed=4)
    nominal = chain.apply(x, cond)
    assert np.array_equal(chain.shifted(np.zeros_like(_tables(chain))).apply(x, cond), nominal)
    delta = np.zeros_like(_tables(chain))
    delta[2] = 1.0                                   # the data's u_par, every bin and level: +1 GeV
    moved = chain.shifted(delta).apply(x, cond)
    assert np.allclose(moved[:, 0] - nominal[:, 0], 1.0, atol=1e-9)
    # binned u_perp is conditioned on q_T alone: it does not follow the corrected u_par
    assert np.allclose(moved[:, 1], nominal[:, 1], atol=1e-12)
    with pytest.raises(MorphingError, match="delta has 3 tables, the chain 4 models"):
        chain.shifted(delta[:3])
    with pytest.raises(MorphingError, match="a delta table is"):
        chain.shifted(delta[:, :2])


def test_bootstrap_eigenvariations_have_the_size_of_the_statistical_error_of_a_quantile():
    """With every eigenvector kept, the quadrature sum of the shifts of the data's median in a
    q_T bin is the median's statistical error, sqrt(pi/2) sigma / sqrt(n) for a Gaussian."""
    rng = np.random.default_rng(8)
    n, sigma = 20_000, 8.0
    edges = (0.0, 10.0, 20.0, 40.0)
    qt = rng.uniform(0, 40, n)
    cond = np.stack([qt, np.zeros(n), np.full(n, 18.0)], 1)
    training = {side: (np.stack([-0.8 * qt + sigma * rng.standard_normal(n), sigma * rng.standard_normal(n)], 1),
                       cond, np.ones(n)) for side in ("mc", "data")}
    cfg = C.RecoilConfig(qt_edges=edges, n_bootstrap=80, n_stat_variations=79)
    nominal = ChainedMorph.fit(*training["mc"], *training["data"],
                               make=lambda x, c, w: BinnedQuantiles.fit(x, c, w, np.asarray(edges)))
    stat = C.bootstrap_variations(training, nominal, cfg)
    assert stat.deltas.shape == (79, 4, 3, 15) and stat.variance_fraction == pytest.approx(1.0)
    median = list(nominal.data[1].levels).index(0.5)
    per_bin = np.bincount(np.searchsorted(np.asarray(edges), qt, side="right") - 1, minlength=3)
    expected = np.sqrt(np.pi / 2) * sigma / np.sqrt(per_bin)
    for side in (1, 3):                              # u_perp of simulation and data: centred, width sigma
        got = np.sqrt(np.sum(stat.deltas[:, side, :, median] ** 2, axis=0))
        assert np.all((got / expected > 0.75) & (got / expected < 1.3)), (side, got / expected)
    few = C.bootstrap_variations(training, nominal, C.RecoilConfig(qt_edges=edges, n_bootstrap=80, n_stat_variations=4))
    assert few.deltas.shape[0] == 4 and 0.0 < few.variance_fraction < 1.0
    assert np.allclose(few.deltas, stat.deltas[:4])


def test_recoil_column_variations_remorph_only_the_events_near_the_mt_thresholds(tmp_path):
    """The correction's nuisances from its artefact: recoilStat<k> up and down are the chain moved
    by ±delta, evaluated on the events within MT_WINDOW_GEV of 20 or 40 GeV only, where they equal
    what the moved chain as the nominal correction gives."""
    from wmnb.engine.pipeline import run_pipeline

    chain = _toy_chain()
    delta = np.zeros_like(_tables(chain))
    delta[2] = 0.5
    artefact = correction.write_models(tmp_path, {"binned": chain}, 40.0, stat_deltas=delta[None])
    corr = correction.load_correction(artefact)
    assert list(corr.variations) == ["recoilStat0"]
    cols = _w_cols(20_000)
    result = run_pipeline("w", "wplus_munu", cols, corrections=[corr], final_cuts=None)
    (cv,) = corr.column_variations(result.precut, result.info)
    mt = result.precut["mt"]
    near = (np.abs(mt - 20.0) < correction.MT_WINDOW_GEV) | (np.abs(mt - 40.0) < correction.MT_WINDOW_GEV)
    assert np.array_equal(cv.rows, np.flatnonzero(near)) and 0 < cv.rows.size < mt.size / 2
    for values, sign in ((cv.up, 1.0), (cv.down, -1.0)):
        assert values is not None
        ref = run_pipeline("w", "wplus_munu", cols, final_cuts=None,
                           corrections=[correction.RecoilCorrection(chain.shifted(sign * delta), "binned")])
        for k in ("ut_x", "ut_y"):
            assert np.allclose(values[k], ref.columns[k][cv.rows], rtol=0, atol=1e-9), (k, sign)
    assert corr.mt_shift_stats["recoilStat0"] == (correction.MT_WINDOW_GEV, 0, cv.rows.size)
    # a selection without m_T cuts gets none; the Z selection's recoil has no thresholds
    assert list(corr.column_variations(result.precut, result.info.__class__("z_mumu", False, "z", ("mup", "mum")))) == []


def test_a_large_recoil_variation_widens_its_window_and_warns_at_the_largest(tmp_path, monkeypatch):
    """An 8 GeV shift of u_par moves m_T by several GeV: the window doubles until few events move
    by more than half of it, and the varied recoil still equals the moved chain's on every row
    evaluated; with the largest window capped at the first, it warns by name."""
    from wmnb.engine.pipeline import run_pipeline

    chain = _toy_chain()
    delta = np.zeros_like(_tables(chain))
    delta[2] = 8.0
    corr = correction.load_correction(correction.write_models(tmp_path, {"binned": chain}, 40.0, stat_deltas=delta[None]))
    cols = _w_cols(5000)
    result = run_pipeline("w", "wplus_munu", cols, corrections=[corr], final_cuts=None)
    (cv,) = corr.column_variations(result.precut, result.info)
    window = corr.mt_shift_stats["recoilStat0"][0]
    assert window > correction.MT_WINDOW_GEV
    mt = result.precut["mt"]
    assert np.array_equal(cv.rows, np.flatnonzero((np.abs(mt - 20.0) < window) | (np.abs(mt - 40.0) < window)))
    ref = run_pipeline("w", "wplus_munu", cols, final_cuts=None,
                       corrections=[correction.RecoilCorrection(chain.shifted(delta), "binned")])
    assert np.allclose(cv.up["ut_x"], ref.columns["ut_x"][cv.rows], rtol=0, atol=1e-9)
    monkeypatch.setattr(correction, "MT_WINDOW_MAX_GEV", correction.MT_WINDOW_GEV)
    with pytest.warns(UserWarning, match="recoilStat0.*raise wmnb.recoil.correction.MT_WINDOW_MAX_GEV"):
        list(corr.column_variations(result.precut, result.info))


def test_method_delta_carries_the_other_methods_corrected_distributions():
    """With the 'other method' a chain that morphs 2 GeV further in u_par, the method difference
    is a +2 GeV shift of the binned chain's data u_par tables and about nothing elsewhere; with
    the other method equal to the binned one it is about zero."""
    chain = _toy_chain()
    n = 40_000
    x, cond = _toy_recoil(n, seed=9)
    cfg = C.RecoilConfig(qt_edges=(0.0, 10.0, 20.0, 30.0, 40.0))
    same = C.method_delta({"binned": chain, "bdt": chain}, x, cond, np.ones(n), cfg)
    assert same.shape == (4, 4, 15) and np.all(same[:2] == 0.0)
    assert np.max(np.abs(same[2:, :, 2:-2])) < 0.5, np.max(np.abs(same[2:, :, 2:-2]))
    shift = np.zeros_like(_tables(chain))
    shift[2] = 2.0
    moved = C.method_delta({"binned": chain, "bdt": chain.shifted(shift)}, x, cond, np.ones(n), cfg)
    assert np.allclose(moved[2] - same[2], 2.0, atol=1e-6) and np.allclose(moved[3], same[3], atol=1e-9)
