"""Chapter 07, the W-like m_Z: the recipe, the parity split, the blinding and the closure.

The closure tests run on the smoke profile's skims (made through the runner when missing):

* the pure-detector closure universe (the simulation's physics and detector) must give back
  the closure card's m_Z (read through the truth gate) within 3σ;
* the same data fitted with the simulation's reference moved by +100 MeV (exact reweighting)
  must give −100 MeV: a fit that only returned its reference would be 100 MeV off (on smoke
  σ ≈ 170 MeV, so this is a sanity bound; the default profile's chapter records both pulls);
* Asimov pseudo-data with the signal reweighted exactly by +50 MeV must give +50 MeV to
  0.1 MeV with the unsmoothed mass templates: this one fails for any error in the mass
  machinery whatever the statistics.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from wmnb.engine import skim_path
from wmnb.templatefit import blinding, fitting
from wmnb.templatefit.model import asimov, make_spec
from wmnb.templatefit.templates import reference_shifted
from wmnb.wlike import chapter
from wmnb.wlike.recipe import FIT_PROCESSES, NEGLIGIBLE_SAMPLES, WLIKE_BINNING, WLikeConfig, WLikeRecipe

PROFILE = "smoke"


def _recipe(**kw) -> WLikeRecipe:
    return WLikeRecipe(WLikeConfig(ref_mass_gev=91.188, ref_width_gev=2.4955), **kw)


def test_wlike_observable_is_the_w_muon_binning_up_to_60_gev():
    assert WLIKE_BINNING.shape == (48, 34, 2)
    assert WLIKE_BINNING.axis("pt").edges[[0, -1]].tolist() == [26.0, 60.0]
    r = _recipe()
    assert r.selection == "wlike" and r.signal == ("z_mumu",) and r.process_name("ttbar") == "top"
    assert r.region_mask("central").sum() == 18 * 34 * 2            # |eta| < 0.9: 18 of 48 bins
    with pytest.raises(ValueError, match="unknown region"):
        r.region_mask("barrel")


def test_wlike_normalisations_follow_the_source():
    r = _recipe()
    assert {n for n, *_ in r.norms("z_mumu", "simulation", False)} == {"lumi", "norm_zxsec"}
    assert {n for n, *_ in r.norms("z_tautau", "simulation", False)} == {"lumi", "norm_zxsec"}
    assert {n for n, *_ in r.norms("top", "simulation", False)} == {"lumi", "norm_top"}
    assert r.norms("z_mumu", "simulation", True) == [("lumi", r.config.lumi_kappa, "lumi")]
    assert r.norms("anything", "some_correction", False) == []


def test_the_wlike_offset_is_not_the_w_mass_offset():
    assert blinding.offset_mev(20161, "mz_wlike") != blinding.offset_mev(20161)
    assert blinding.offset_mev(20161) == blinding.offset_mev(20161, "mw")
    assert blinding.present(91188.0, 1, True, quantity="mz_wlike") == 91188.0
    with pytest.raises(ValueError, match="unknown blinded quantity"):
        blinding.offset_mev(1, "mt")


def test_recoil_correction_morphs_wlike_events_along_the_dimuon():
    from wmnb.corrections import SampleInfo
    from wmnb.recoil.correction import MT_THRESHOLDS, RecoilCorrection

    corr = RecoilCorrection(morph=None, method="binned")    # type: ignore[arg-type]  (boson() needs no model)
    info = SampleInfo(name="z_mumu", is_data=False, selection="wlike", muon_prefixes=("mu", "mu2"))
    cols = {"pair_pt": np.array([10.0]), "pair_phi": np.array([0.5]), "pair_y": np.array([0.3]),
            "gen_qt": np.array([99.0]), "gen_phi": np.array([2.0]), "gen_y": np.array([1.0])}
    assert corr.applies_to(info)
    qt, phi, y = corr.boson(cols, info)
    assert (qt[0], phi[0], y[0]) == (10.0, 0.5, 0.3)
    assert MT_THRESHOLDS["wlike"] == (45.0,)


@pytest.fixture(scope="module")
def skims():
    needed = list(FIT_PROCESSES) + list(NEGLIGIBLE_SAMPLES) + ["data", "closure"]
    if not all(skim_path(PROFILE, "wlike", s).is_file() for s in needed):
        from wmnb import runner

        runner.run(PROFILE, only=["01_selection"], progress=False)
    return chapter.load_skims(PROFILE, 20_000)


@pytest.mark.slow
def test_each_event_is_used_once_per_sample_with_the_parity_rule():
    from wmnb.engine import read_skim

    if not skim_path(PROFILE, "wlike", "data").is_file():
        from wmnb import runner

        runner.run(PROFILE, only=["01_selection"], progress=False)
    counts = chapter.parity_counts(read_skim(PROFILE, "wlike", "data"))
    nominal, reversed_ = counts["nominal"], counts["reversed"]
    assert nominal["events"] > 100 and reversed_["events"] > 100
    assert nominal["repeated"] == 0 and reversed_["repeated"] == 0
    assert nominal["odd_positive"] and nominal["even_negative"]
    # the reversed sample takes the other muon: negative in odd events, positive in even ones
    assert not reversed_["odd_positive"] and not reversed_["even_negative"]


@pytest.fixture(scope="module")
def closure_templates(skims):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return chapter.build(PROFILE, "closure", skims=skims, mass_shifts_mev=(50.0, 200.0))


@pytest.mark.slow
def test_closure_universe_gives_back_its_z_mass(closure_templates):
    from wmnb import truth

    ts = closure_templates
    truth_shift = truth.compare("closure", "physics.mz_mev", purpose="test_wlike: closure") - ts.config.ref_mass_gev * 1e3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        plain = fitting.run_fit(make_spec(ts), full_cov=False, keep_raw=False)
        moved = fitting.run_fit(make_spec(reference_shifted(ts, 100.0)), full_cov=False, keep_raw=False)
    assert plain.errors["mass"] < 400.0
    assert abs(plain.values["mass"] - truth_shift) < 3 * plain.errors["mass"]
    assert abs(moved.values["mass"] - (truth_shift - 100.0)) < 3 * moved.errors["mass"]
    # the same data: the two fits differ by the moved reference, up to the template smoothing
    assert abs((plain.values["mass"] - moved.values["mass"]) - 100.0) < 0.5 * plain.errors["mass"]


@pytest.mark.slow
def test_asimov_injection_is_recovered_exactly(closure_templates):
    exact = closure_templates.with_config(dataclasses.replace(closure_templates.config, mass_eta_merge=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit = fitting.run_fit(make_spec(exact, data=asimov(exact, 50.0)), full_cov=False, keep_raw=False)
    assert fit.values["mass"] == pytest.approx(50.0, abs=0.1)


@pytest.mark.slow
def test_reference_shift_needs_its_exact_templates(closure_templates):
    moved = reference_shifted(closure_templates, 100.0)
    p = "z_mumu"
    np.testing.assert_array_equal(moved.processes[p].nominal, closure_templates.mass_up[p])
    np.testing.assert_array_equal(moved.mass_down[p], closure_templates.processes[p].nominal)
    with pytest.raises(KeyError, match="needs exact templates"):
        reference_shifted(closure_templates, 30.0)


@pytest.mark.slow
def test_purity_table_shows_a_clean_z_sample(skims):
    rows = chapter.purity_table(PROFILE, chunk_rows=20_000, corrections=[])
    assert {r["sample"] for r in rows} == set(FIT_PROCESSES) | set(NEGLIGIBLE_SAMPLES)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert chapter.signal_purity(rows) > 0.98
    assert sum(r["share"] for r in rows if not r["fitted"]) < 0.005


@pytest.mark.slow
def test_parity_bootstrap_weights_each_event_once_for_both_samples(skims):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        nominal = chapter.build(PROFILE, "data", skims=skims, corrections=[])
        reversed_ = chapter.build(PROFILE, "data", skims=skims, corrections=[], reversed_parity=True)
        a = chapter.parity_bootstrap(nominal, reversed_, skims[1]["data"], [], 4, seed=3)
        b = chapter.parity_bootstrap(nominal, reversed_, skims[1]["data"], [], 4, seed=3)
    assert a == b                                   # reproducible from the seed
    assert a["n_nominal"] == nominal.n_data and a["n_reversed"] == reversed_.n_data
    assert 0 < a["n_overlap"] <= min(a["n_nominal"], a["n_reversed"])
    assert a["spread_mev"] > 0
    with pytest.raises(ValueError, match="at least 2"):
        chapter.parity_bootstrap(nominal, reversed_, skims[1]["data"], [], 1, seed=3)
