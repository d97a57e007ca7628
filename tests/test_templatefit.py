"""The shared template-fit layer with a recipe that is not chapter 08's: another binning (2-D,
other edges), one signal process and a layout of many POIs, fitted by the reference fitter."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wmnb.mw.systematics import MwConfig, builtin_variations, mass_factors
from wmnb.templatefit import Axis, Binning, build_templates, make_spec
from wmnb.templatefit.fitting import run_fit
from wmnb.templatefit.model import asimov

from test_mw import G0, M0, toy_universe

ETA4 = np.array([-2.4, -1.2, 0.0, 1.2, 2.4])


@dataclasses.dataclass(frozen=True)
class PlusOnlyRecipe:
    """A W⁺-only fit in (|eta|-blind eta quarters × 12 pT bins) with one mass POI per eta quarter."""

    config: MwConfig
    selection: str = "w"
    binning: Binning = Binning(Axis("eta", ETA4, "mu_eta"), Axis("pt", np.linspace(26.0, 56.0, 13), "mu_pt"))
    signal: tuple[str, ...] = ("wplus_munu",)
    required: tuple[str, ...] = ("mu_pt", "mu_eta", "mu_phi", "mu_charge", "mu_iso", "met_pt", "met_phi",
                                 "veto_pass")
    mass_step_mev: float = 100.0
    bb_scale: float = 0.0
    mass_merge: tuple[str, int] = ("eta", 1)

    @property
    def poi_layouts(self):
        return {"mass": [("mass", "all")],
                "quarters": [(f"mass_q{i}", f"q{i}") for i in range(4)]}

    def process_name(self, sample):
        return sample

    def builtin_variations(self, cols, sample):
        return builtin_variations(cols, sample, self.config)

    def mass_factors(self, cols, shift_mev, sample):
        return mass_factors(cols, self.config, shift_mev, sample)

    def builtin_sources(self):
        return [{"source": "mass (POI)", "kind": "builtin", "group": "massW", "detail": "toy"}]

    def region_mask(self, region):
        if region == "all":
            return np.ones(self.binning.shape, bool)
        i = int(region[1:])
        return self.binning.mask(lambda eta, pt: (eta > ETA4[i]) & (eta < ETA4[i + 1]))

    def norms(self, process, source, float_norm):
        return [("lumi", 1.012, "lumi")] if source == "simulation" else []


@pytest.fixture(scope="module")
def templates():
    samples, data = toy_universe(8_000, M0, seed=21)
    plus = {"wplus_munu": samples["wplus_munu"]}
    cfg = MwConfig(ref_mass_gev=M0, ref_width_gev=G0, use_pdf=False, use_scales=False)
    return build_templates(PlusOnlyRecipe(cfg), plus, np.zeros(48), mass_shifts_mev=(50.0,))


def test_any_binning_and_many_pois(templates):
    ts = templates
    assert ts.data.shape == (4, 12) and ts.processes["wplus_munu"].nominal.shape == (4, 12)
    recipe = ts.recipe
    # +50 MeV (exact reweighting) injected in the second eta quarter only
    q1 = recipe.region_mask("q1")
    data = np.where(q1, asimov(ts, 50.0), ts.prediction())
    spec = make_spec(ts, data=data, pois="quarters")
    assert list(spec.pois) == [f"mass_q{i}" for i in range(4)]
    fit = run_fit(spec, backend="reference")
    for i in range(4):
        want = 50.0 if i == 1 else 0.0
        assert fit.values[f"mass_q{i}"] == pytest.approx(want, abs=8.0), i


def test_unknown_layout_names_the_recipe_layouts(templates):
    with pytest.raises(ValueError, match="quarters"):
        make_spec(templates, pois="charge")


def test_extended_fill_is_identical_to_the_masked_fill():
    rng = np.random.default_rng(4)
    b = Binning(Axis("eta", ETA4, "mu_eta"), Axis("pt", np.linspace(26.0, 56.0, 13), "mu_pt"))
    idx = b.bin_index({"mu_eta": rng.uniform(-2.6, 2.6, 100_000), "mu_pt": rng.uniform(24, 58, 100_000)})
    w = rng.normal(1.0, 0.3, idx.size)
    assert np.array_equal(b.fill_extended(b.extended_index(idx), w), b.fill_values(idx, w))


def test_a_variation_that_changes_nothing_is_no_nuisance(templates):
    """A theory parameter of the other boson leaves a process exactly at nominal: the spec drops
    it (it would be a parameter without any effect on the yields), but keeps real ones."""
    from wmnb.templatefit.templates import Shape

    ts = dataclasses.replace(templates, processes=dict(templates.processes))
    tmpl = dataclasses.replace(ts.processes["wplus_munu"], shapes={})
    nom = tmpl.nominal
    tmpl.shapes["np_kt_z"] = Shape("pTV", nom.copy(), nom.copy())
    tmpl.shapes["local_noop"] = Shape("pTV", nom.ravel()[[1, 5]].copy(), None, np.array([1, 5]))
    tmpl.shapes["real"] = Shape("pTV", nom * 1.01, nom * 0.99)
    ts.processes["wplus_munu"] = tmpl
    assert make_spec(ts).nuisances == ["real", "lumi"]


def test_asymmetric_variations_are_split_not_averaged(templates):
    """An up/down pair with an even part (a one-sided +10 %: up 1.1, down 1.0) gets a second
    nuisance for it; a symmetric pair (1.1, 1/1.1) does not; both fitters see the same model."""
    from wmnb.templatefit.model import EVEN_SUFFIX
    from wmnb.templatefit.templates import Shape

    ts = dataclasses.replace(templates, processes=dict(templates.processes))
    tmpl = dataclasses.replace(ts.processes["wplus_munu"], shapes={})
    nom = tmpl.nominal
    tilt = np.linspace(0.95, 1.05, nom.shape[1])[None, :]
    tmpl.shapes["onesided"] = Shape("pTV", nom * 1.1 * tilt, nom.copy())
    tmpl.shapes["symmetric"] = Shape("pTV", nom * 1.1, nom / 1.1)
    ts.processes["wplus_munu"] = tmpl
    spec = make_spec(ts, data=ts.prediction() * 1.03)
    assert spec.nuisances == ["onesided", "symmetric", "onesided" + EVEN_SUFFIX, "lumi"]
    even = next(s for s in spec.shapes if s.name == "onesided" + EVEN_SUFFIX)
    np.testing.assert_allclose(np.log(even.up / spec.nominal[0]), 0.5 * np.log(1.1 * np.broadcast_to(tilt, nom.shape))[spec.mask])
    assert make_spec(ts, asymmetry_split=None).nuisances == ["onesided", "symmetric", "lumi"]
    a = run_fit(spec, backend="reference")
    b = run_fit(spec)
    for k in ("onesided", "onesided" + EVEN_SUFFIX):
        assert a.nuisances[k][0] == pytest.approx(b.nuisances[k][0], abs=2e-3)


def test_toy_calibrated_gof_tells_a_bad_model_from_a_good_one(templates):
    """The saturated GoF from toys: data drawn as the toys are (the model plus one draw of its
    template noise, then Poisson) give an unremarkable p-value although the asymptotic one is
    tiny (template noise doubles q here); data with a ±15 % bin-to-bin pattern the model cannot
    follow sit beyond every toy."""
    from wmnb.templatefit.fitting import fitter_available, gof_toys

    if not fitter_available():
        pytest.skip("wmnb.fit not importable")
    ts = templates
    rng = np.random.default_rng(11)
    pred = ts.prediction()
    p = ts.processes["wplus_munu"]
    noisy = pred * (1.0 + np.sqrt(p.sumw2) / np.where(pred > 0, pred, 1.0) * rng.standard_normal(pred.shape))
    pattern = 1.0 + 0.15 * (-1.0) ** np.add.outer(np.arange(ts.binning.shape[0]), np.arange(ts.binning.shape[1]))
    out = {}
    for name, mean in (("good", noisy), ("bad", noisy * pattern)):
        spec = make_spec(ts, data=rng.poisson(np.clip(mean, 0.0, None)).astype(float))
        out[name] = gof_toys(spec, run_fit(spec), 19, seed=2)
    assert out["good"]["p_toys"] > 0.1 and out["good"]["p_asymptotic"] < 0.05, out["good"]
    assert out["bad"]["p_toys"] == pytest.approx(1 / 20) and out["bad"]["q_obs"] > out["bad"]["q_toys"][-1]
    assert len(out["good"]["q_toys"]) == 19


def test_toy_fits_started_on_the_start_hessian_reach_the_same_minima(templates):
    """fit_toys(chord_from_start=True) begins each fit with Newton-chord steps on the Hessian
    factor at the common start: the minima (mass, saturated q) are those of a fresh descent."""
    from wmnb.templatefit.fitting import ToyInput, fit_toys, fitter_available, warm_start

    if not fitter_available():
        pytest.skip("wmnb.fit not importable")
    spec = make_spec(templates)
    nominal = run_fit(spec)
    rng = np.random.default_rng(5)
    mean = np.asarray(spec.nominal.sum(0))
    toys = [ToyInput(data=rng.poisson(mean).astype(float)) for _ in range(3)]
    plain = fit_toys(spec, toys, start=warm_start(spec, nominal), backend="wmnb")
    chord = fit_toys(spec, toys, start=warm_start(spec, nominal), backend="wmnb", chord_from_start=True)
    for a, b in zip(plain, chord):
        assert a.values["mass"] == pytest.approx(b.values["mass"], abs=1e-4 * a.errors["mass"])
        assert a.q == pytest.approx(b.q, abs=1e-6)
