"""The q_T prediction of chapter 06 (wmnb.theory.prediction): its central point reproduces the
generator, each nuisance acts only where (q_T, |y|, boson) it should, bad input fails by name."""
from __future__ import annotations

import numpy as np
import pytest

from wmnb import truth
from wmnb.theory.prediction import (NUISANCES, PredictionError, PredictionInputs, QtPrediction, get_nuisance,
                                    nuisances_for)
from wmnb.universe import theorychecks

QE = np.concatenate([np.arange(0.0, 100.0, 1.0), [100.0, 150.0, 200.0, 400.0]])
YE = np.arange(0.0, 3.0 + 1e-9, 0.25)      # the reweighting's |y| bins (the shape is taken at their centres)
#: coarse q_T edges on which "where it acts" is judged (log-like spacing)
ACT_EDGES = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 130, 160, 200,
                      250, 300, 400.0])


@pytest.fixture(scope="module")
def pred() -> QtPrediction:
    return QtPrediction(PredictionInputs.from_generator_settings(truth.simulation("physics")))


@pytest.mark.parametrize("boson", ["wplus", "z"])
def test_central_prediction_reproduces_the_generator(pred, boson):
    """The prediction's own b-space code at the generator's inputs against the universe's q_T
    density (an independent implementation): equal to 0.3 % in every bin below 100 GeV."""
    ours = pred.fractions(boson, QE, YE)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=2e-4)
    ref = theorychecks.qt_shape(truth.simulation("physics"), boson, QE, YE)
    ref = ref / ref.sum(axis=1, keepdims=True)
    assert np.max(np.abs(ours[:, :100] / ref[:, :100] - 1.0)) < 3e-3
    # the data universe (another theory point + beyond-family smearing) differs by several %
    data = truth.qt_shape("data", boson, QE, YE, purpose="test: the prediction is not the data")
    assert np.max(np.abs(ours[:, :20] / data[:, :20] - 1.0)) > 0.05


def _activity(pred: QtPrediction, boson: str, name: str, ye=(0.25, 0.75)) -> np.ndarray:
    c = pred.fractions(boson, ACT_EDGES, ye)[0]
    r = pred.fractions(boson, ACT_EDGES, ye, {name: 1.0})[0] / c - 1.0
    return np.abs(np.diff(r))          # a pure normalisation change has no activity


@pytest.mark.parametrize("boson", ["wplus", "z"])
def test_each_nuisance_acts_only_where_it_should(pred, boson):
    """The change of the q_T *shape* (the slope of the relative change between neighbouring bins)
    outside a nuisance's declared region is below 30 % of its largest change inside; nuisances of
    the other boson do exactly nothing; the nonperturbative ones are the low-q_T ones and the
    matching/fixed-order ones the high-q_T ones."""
    at = ACT_EDGES[1:-1]
    for n in NUISANCES:
        if boson not in n.bosons:
            np.testing.assert_array_equal(pred.fractions(boson, QE, YE, {n.name: 1.0}), pred.fractions(boson, QE, YE))
            continue
        act = _activity(pred, boson, n.name, (2.75, 3.25) if n.absy_centre and n.absy_centre > 1.5 else (0.25, 0.75))
        inside = (at >= n.region[0]) & (at <= n.region[1])
        assert act[inside].max() > 0, n.name
        if (~inside).any():
            assert act[~inside].max() <= 0.3 * act[inside].max(), (n.name, np.round(act, 4))
        if n.kind == "np":
            assert n.region[1] <= 25.0 and act[at >= 60].max() < 0.05 * act.max(), n.name
        if n.kind in ("matching", "fixed_order"):
            assert n.region[0] >= 15.0 and act[at < 10].max() < 1e-3 * act.max(), n.name


def test_beam_terms_act_in_their_rapidity_range(pred):
    ye = np.array([0.0, 0.25, 1.0, 1.25, 2.0, 2.25, 3.0, 3.25, 4.0, 4.25])
    centres = {"tnp_beam_qqbar": 0, "tnp_beam_qg": 1, "tnp_beam_gqbar": 2, "tnp_beam_qq": 3, "tnp_beam_gg": 4}
    for name, k in centres.items():
        c = pred.fractions("wplus", QE, ye)
        r = np.abs(pred.fractions("wplus", QE, ye, {name: 1.0}) / c - 1.0)[::2, :30].max(axis=1)   # rows at |y| 0,1,2,3,4
        far = [j for j in range(5) if abs(j - k) >= 2]
        assert np.argmax(r) == k and r[far].max() < 0.15 * r[k], (name, np.round(r, 4))


def test_bad_inputs_fail_by_name(pred):
    with pytest.raises(PredictionError, match="unknown boson 'w'"):
        pred.fractions("w", QE, YE)
    with pytest.raises(PredictionError, match="qt_edges"):
        pred.fractions("z", [10.0, 5.0], YE)
    with pytest.raises(KeyError, match="unknown theory nuisance 'np_kt'"):
        get_nuisance("np_kt")
    with pytest.raises(PredictionError, match=r"generator settings lack 'qt'"):
        PredictionInputs.from_generator_settings({"mw_mev": 80000.0})
    assert {n.name for n in nuisances_for("z")} >= {"np_cs_kernel", "np_kt_z"}
    assert "np_kt_w" not in {n.name for n in nuisances_for("z")}
    assert sum(n.kind == "tnp" for n in NUISANCES) == 10
