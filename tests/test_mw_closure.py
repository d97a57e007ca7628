"""Closure of chapter 08 on the synthetic universe (smoke profile by default).

* the closure universe (a pure-detector closure: the simulation's physics and detector with an
  m_W of its own, read through ``wmnb.truth``; no calibration applied) must give back that m_W
  (the old closure carried the data's m_W, so showing it unblinded revealed the blinded mass);
* Asimov pseudo-data built from the universe's own simulation, with the signal reweighted
  exactly to the closure card's mass shift, must give back that shift to 0.1 MeV with the
  unsmoothed mass templates, and to 1 % of the uncertainty with the default eta-smoothed ones.

On smoke statistics (about 25 k selected W) the first check is weak (σ ≈ 50 MeV, |pull| < 3);
set ``WMNB_CLOSURE_PROFILE=default`` to run the same test on the default profile (σ ≈ 10 MeV),
whose chapter 08 also records ``closure_pull`` in its summary.json.  The smoke skims are made
through the runner when missing.
"""
from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import pytest

from wmnb.engine import skim_path
from wmnb.mw import chapter, fitting, model
from wmnb.mw.systematics import PROCESSES

PROFILE = os.environ.get("WMNB_CLOSURE_PROFILE", "smoke")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def universe():
    needed = list(PROCESSES) + ["data", "closure"]
    if not all(skim_path(PROFILE, "w", s).is_file() for s in needed):
        from wmnb import runner

        runner.run(PROFILE, only=["01_selection"], progress=False)
    from wmnb import truth

    closure_mw = truth.compare("closure", "physics.mw_mev", purpose="test_mw_closure: closure pull")
    truth_shift = closure_mw - truth.simulation("physics.mw_mev")
    assert truth_shift != 0.0      # a closure with the simulation's mass would test nothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # a few empty edge bins on smoke
        ts = chapter.load_templates(PROFILE, "closure", mass_shifts_mev=(truth_shift,))
    return ts, truth_shift


def test_closure_universe_gives_back_the_card_mass(universe):
    ts, truth_shift = universe
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit = fitting.run_fit(model.make_spec(ts))
    shift, err = fit.values["mass"], fit.errors["mass"]
    # with few simulated events per bin the fit's error understates the real spread (template
    # noise, see chapter.fisher_mass_error): compare with the larger of the two
    err = max(err, chapter.fisher_mass_error(ts)[1])
    assert err < (150.0 if PROFILE == "smoke" else 25.0), err
    assert abs(shift - truth_shift) < 3 * err, (shift, err, truth_shift)


def test_asimov_injection_of_the_closure_mass_on_the_universe_simulation(universe):
    ts, truth_shift = universe
    exact = ts.with_config(dataclasses.replace(ts.config, mass_eta_merge=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit = fitting.run_fit(model.make_spec(exact, data=model.asimov(ts, truth_shift)))
        smoothed = fitting.run_fit(model.make_spec(ts, data=model.asimov(ts, truth_shift)))
    assert fit.values["mass"] == pytest.approx(truth_shift, abs=0.1)
    # the eta-smoothed variation (the chapter's default) cannot follow the exact reweighting's
    # bin-to-bin noise: a non-closure far below the uncertainty
    assert abs(smoothed.values["mass"] - truth_shift) < 0.01 * smoothed.errors["mass"]


def test_reference_fitter_agrees_with_the_tensorflow_fitter(universe):
    ts, _ = universe
    if not fitting.fitter_available():
        pytest.skip("wmnb.fit not importable")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        spec = model.make_spec(ts)
        tf_fit = fitting.run_fit(spec, backend="wmnb")
        ref_fit = fitting.run_fit(spec, backend="reference")
    assert ref_fit.values["mass"] == pytest.approx(tf_fit.values["mass"], abs=0.05 * tf_fit.errors["mass"])
    assert ref_fit.errors["mass"] == pytest.approx(tf_fit.errors["mass"], rel=0.02)
    assert np.isfinite(tf_fit.gof_pvalue)
