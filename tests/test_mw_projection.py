"""Chapter 08's comparison with the paper: nuisance counts, the projection to the paper's size and
the coverage of the m_W fit, on small models whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from wmnb.mw import projection
from wmnb.templatefit.fitting import run_fit
from wmnb.templatefit.model import ModelSpec, SpecShape


def _spec(n_signal: float = 4000.0, seed: int = 2) -> ModelSpec:
    """A W-mass-like model over 40 pT bins: a Jacobian-peak signal whose ±100 MeV templates
    shift it, a falling background, an efficiency-statistics shape, a theory shape and the
    luminosity."""
    rng = np.random.default_rng(seed)
    pt = np.linspace(26.5, 55.5, 40)

    def peak(m: float) -> np.ndarray:
        x = np.exp(-0.5 * ((pt - m / 2.0) / 4.0) ** 2) + 0.3
        return n_signal * x / x.sum()

    sig, up, down = peak(80.4), peak(80.5), peak(80.3)
    bkg = 0.2 * n_signal * np.exp(-(pt - 26) / 10) / np.exp(-(pt - 26) / 10).sum()
    nominal = np.stack([sig, bkg])
    t = (pt - 41) / 15
    shapes = [SpecShape("eff_stat_0", "w", sig * (1 + 0.01 * t), sig * (1 - 0.01 * t), "muonEfficiency"),
              SpecShape("pdf1", "w", sig * (1 + 0.005 * t**2), sig * (1 - 0.004 * t**2), "pdf"),
              SpecShape("pdf1SymDiff", "w", sig * (1 + 0.0005 * t**2), None, "pdf")]
    spec = ModelSpec(data=rng.poisson(nominal.sum(0)).astype(float), processes=["w", "bkg"], nominal=nominal,
                     sumw2=nominal / 5.0, signal=["w"], mask=np.ones(40, bool), shapes=shapes,
                     norms=[("lumi", "w", 1.012, "lumi"), ("lumi", "bkg", 1.012, "lumi")],
                     pois={"mass": {"w": (up, down)}})
    return spec


def test_nuisance_counts_stand_next_to_the_papers():
    rows = {r["group"]: r for r in projection.nuisance_counts(_spec())}
    assert rows["muonEfficiency"]["this book"] == 1 and rows["muonEfficiency"]["paper"] == 3658
    assert rows["pdf"]["this book"] == 1 and rows["pdf"]["even parts"] == 1
    assert rows["total"]["this book"] == 3 and rows["total"]["even parts"] == 1 and rows["total"]["paper"] == 4859
    assert [r["group"] for r in projection.nuisance_counts(_spec())].count("lumi") == 1
    assert projection.counts_by_group(_spec()) == {"lumi": 1, "muonEfficiency": 1, "pdf": 2}


def test_the_projection_follows_its_scaling_rules():
    spec = _spec()
    proj, rules = projection.paper_projection(spec, n_data=4800.0, mc_ratio=5.0, n_paper=4800.0 * 100)
    assert rules["yield_scale"] == pytest.approx(100.0)
    np.testing.assert_allclose(proj.nominal, 100 * spec.nominal)
    np.testing.assert_allclose(proj.data, 100 * spec.nominal.sum(0))
    np.testing.assert_allclose(proj.sumw2, spec.sumw2 * 100 * 5.0 / projection.PAPER_MC_RATIO)
    by_name = {s.name: (s, p) for s, p in zip(spec.shapes, proj.shapes)}
    s, p = by_name["eff_stat_0"]                               # statistics-driven: prior / sqrt(100)
    np.testing.assert_allclose(p.logk(proj.nominal[0])[1], 0.1 * s.logk(spec.nominal[0])[1], rtol=1e-10)
    s, p = by_name["pdf1"]                                     # theory: unchanged
    np.testing.assert_allclose(p.logk(proj.nominal[0])[1], s.logk(spec.nominal[0])[1], rtol=1e-10)
    # with data statistics only, the m_W error falls as 1/sqrt(yield scale)
    stat = lambda m: run_fit(ModelSpec(m.nominal.sum(0), m.processes, m.nominal, m.sumw2, m.signal, m.mask,
                                       pois=m.pois, bb_scale=0.0), backend="reference").errors["mass"]
    assert stat(proj) == pytest.approx(stat(dataclass_asimov(spec)) / 10.0, rel=1e-3)
    with pytest.raises(ValueError, match="n_data > 0"):
        projection.paper_projection(spec, n_data=0.0, mc_ratio=5.0)


def dataclass_asimov(spec: ModelSpec) -> ModelSpec:
    import dataclasses

    return dataclasses.replace(spec, data=spec.nominal.sum(0))


@pytest.mark.slow
def test_the_mass_fit_covers():
    """300 pseudo-experiments of a model with the chapter's kinds of nuisances: the m_W pulls
    have mean 0 ± 0.1 and width 1 ± 0.1 (a fit with a wrong error or a biased minimum fails)."""
    pytest.importorskip("tensorflow")
    cov = projection.coverage_toys(_spec(), 300, seed=17)
    assert cov["n_converged"] >= 295
    assert abs(cov["pull_mean"]) < 0.1
    assert abs(cov["pull_width"] - 1.0) < 0.1


def test_the_coverage_command_refuses_bad_input_by_name(capsys):
    from wmnb.mw.coverage import cli_coverage

    assert cli_coverage(["--profile", "smoke", "--toys", "1"]) == 1
    assert "at least 2 toys" in capsys.readouterr().err
    assert cli_coverage(["--profile", "no_such_profile_here", "--toys", "3"]) == 1
    err = capsys.readouterr().err
    assert "no_such_profile_here" in err and "run chapter 00 first" in err
