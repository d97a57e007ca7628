"""Chapter 04's m_T cross-check on toys: the shared template-fit layer configured for the muon-pT
and m_T observables recovers an injected W mass from either, the projections keep every event,
the q_T tilt biases the fit, and the upstream corrections act with their nominal effect only."""
from __future__ import annotations

import numpy as np
import pytest

from wmnb.engine.pipeline import run_pipeline
from wmnb.recoil import mtfit
from wmnb.templatefit.templates import build_templates

from test_mw import G0, M0, toy_universe
from test_pipeline_contract import ToyLazy


@pytest.fixture(scope="module")
def toy_sets():
    samples, data = toy_universe(100_000, M0 + 0.15, seed=5)
    return build_templates(mtfit.CrossCheckRecipe(M0, G0), samples, data)


def test_both_observables_recover_an_injected_mass(toy_sets):
    total = sum(t.nominal.sum() for t in toy_sets.processes.values())
    for obs in mtfit.OBSERVABLES:
        proj = mtfit.project(toy_sets, obs)
        # the toys' m_T = 2 pT lies inside 40-120 GeV: no event is lost by either projection
        assert sum(t.nominal.sum() for t in proj.processes.values()) == pytest.approx(total, rel=1e-12)
        shift, err = mtfit.fit_shift(proj)
        assert 5.0 < err < 80.0, (obs, err)
        assert abs(shift - 150.0) < 3.5 * err, (obs, shift, err)


def test_the_qt_tilt_biases_the_fit_and_nothing_else_does(toy_sets):
    proj = mtfit.project(toy_sets, "muon_pt")
    bias = mtfit.tilt_bias(proj)
    assert np.isfinite(bias) and abs(bias) > 0.05, bias
    # the nominal prediction as pseudo-data: no shift at all
    shift, _ = mtfit.fit_shift(proj, proj.prediction())
    assert abs(shift) < 1e-3


def test_nominal_only_keeps_the_weight_and_drops_the_variations():
    samples, _ = toy_universe(4000, M0, seed=3)
    cols = samples["wplus_munu"]
    full = run_pipeline("w", "wplus_munu", cols, corrections=[ToyLazy()])
    nominal = run_pipeline("w", "wplus_munu", cols, corrections=[mtfit.NominalOnly(ToyLazy())])
    assert np.array_equal(full.weight, nominal.weight) and not np.all(full.weight == full.columns["weight"])
    assert list(nominal.variations()) == [] and len(list(full.variations())) > 0
