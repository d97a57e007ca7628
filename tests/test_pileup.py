"""Pileup reweighting (chapter 01): weights from npv, their variation, the published correction."""
from __future__ import annotations

import numpy as np
import pytest

from wmnb.corrections import SampleInfo
from wmnb.selection.pileup import (MINBIAS_REL_UNC, PileupReweighting, PileupWeights, load_correction,
                                   measure_pileup_weights, publish_correction, write_artefact)


def _events(rng, n, mean, shape, vertex_eff=0.7):
    """Like the universe's detector: true interactions ~ Gamma, npv = 1 + Poisson(eff × n_true)."""
    n_true = rng.gamma(shape, mean / shape, n)
    return n_true, 1 + rng.poisson(n_true * vertex_eff)


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(5)
    sim_true, sim_npv = _events(rng, 400_000, 25.0, 8.0)
    data_true, data_npv = _events(rng, 200_000, 23.0, 7.0)
    return sim_true, sim_npv, data_true, data_npv


def test_reweighted_simulation_has_the_data_npv(samples):
    sim_true, sim_npv, _, data_npv = samples
    pw = measure_pileup_weights(data_npv, sim_npv, np.full(sim_npv.size, 0.3))
    rw = pw.nominal[pw.index(sim_npv)]
    got = np.bincount(pw.index(sim_npv), rw, minlength=pw.nmax + 1)
    want = np.bincount(pw.index(data_npv), minlength=pw.nmax + 1).astype(float)
    np.testing.assert_allclose(got / got.sum(), want / want.sum(), atol=1e-12)
    assert abs(np.average(sim_npv, weights=rw) - data_npv.mean()) < 0.05


def test_reweighting_moves_the_true_interactions_towards_the_data(samples):
    """npv samples the true interactions: the reweighted mean must move most of the 2 units from
    the simulation's 25 to the data's 23 (not all: the simulation's prior shrinks it), and the
    inverse weights would move it the wrong way."""
    sim_true, sim_npv, data_true, data_npv = samples
    pw = measure_pileup_weights(data_npv, sim_npv, np.ones(sim_npv.size))
    w = pw.nominal[pw.index(sim_npv)]
    before = sim_true.mean() - data_true.mean()
    after = np.average(sim_true, weights=w) - data_true.mean()
    assert before > 1.8 and abs(after) < 0.6 * before and after > -0.1
    assert np.average(sim_true, weights=1.0 / w) - data_true.mean() > before


def test_variations_stretch_the_data_profile_by_the_minbias_uncertainty(samples):
    _, sim_npv, _, data_npv = samples
    pw = measure_pileup_weights(data_npv, sim_npv, np.ones(sim_npv.size))
    i = pw.index(sim_npv)
    nom, up, down = (np.average(sim_npv, weights=w[i]) for w in (pw.nominal, pw.up, pw.down))
    assert up / nom - 1 == pytest.approx(MINBIAS_REL_UNC, rel=0.15)
    assert 1 - down / nom == pytest.approx(MINBIAS_REL_UNC, rel=0.15)


def test_sparse_tails_are_merged(samples):
    _, sim_npv, _, data_npv = samples
    pw = measure_pileup_weights(data_npv, sim_npv[:3000], np.ones(3000))
    n_eff = pw.sim_counts[pw.sim_counts > 0]
    assert n_eff.min() >= 20 and pw.nmax < data_npv.max()
    with pytest.raises(ValueError, match="too small"):
        measure_pileup_weights(data_npv, sim_npv[:10], np.ones(10))
    with pytest.raises(ValueError, match="events in data"):
        measure_pileup_weights(data_npv[:0], sim_npv, np.ones(sim_npv.size))


def test_published_correction_weights_simulation_only(samples, tmp_path):
    _, sim_npv, _, data_npv = samples
    pw = measure_pileup_weights(data_npv, sim_npv, np.ones(sim_npv.size))
    write_artefact(tmp_path, pw)
    publish_correction(tmp_path)
    corr = load_correction(tmp_path / "pileup_weights.json")
    assert isinstance(corr, PileupReweighting)
    np.testing.assert_array_equal(corr.pileup.nominal, pw.nominal)
    cols = {"npv": sim_npv[:1000]}
    mc = SampleInfo("z_mumu", False, "z", ("mup", "mum"))
    data = SampleInfo("data", True, "z", ("mup", "mum"))
    assert corr.nominal_factor(cols, data) is None and list(corr.iter_variations(cols, data)) == []
    nom = corr.nominal_factor(cols, mc)
    np.testing.assert_array_equal(nom, pw.nominal[pw.index(cols["npv"])])
    (var,) = corr.iter_variations(cols, mc)
    eager = corr.weights(cols, mc)
    np.testing.assert_allclose(var.up * nom, eager.variations["pileupUp"], rtol=1e-12)
    np.testing.assert_allclose(var.down * nom, eager.variations["pileupDown"], rtol=1e-12)
    with pytest.raises(KeyError, match="npv"):
        corr.nominal_factor({"mup_pt": np.ones(3)}, mc)


def test_artefact_version_is_checked(samples):
    _, sim_npv, _, data_npv = samples
    doc = measure_pileup_weights(data_npv, sim_npv, np.ones(sim_npv.size)).to_dict()
    doc["artefact_version"] = 99
    with pytest.raises(ValueError, match="rerun chapter 01"):
        PileupWeights.from_dict(doc)
