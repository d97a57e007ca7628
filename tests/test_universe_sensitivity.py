"""The m_W information-per-event tool (wmnb.universe.sensitivity): Fisher information against toys
with an exactly computable answer, noise subtraction, background dilution, and the generator's
response to the muon resolution."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

from wmnb.conventions import GENERATED_MASS_RANGE_GEV, breit_wigner_mass_density, width_for_mass
from wmnb.universe import load_card
from wmnb.universe import physics as ph
from wmnb.universe import sensitivity as sens

M, G = 80.379, 2.085


@pytest.fixture(scope="module")
def nominal():
    return load_card("nominal")


def _exact_information(smear: float) -> tuple[float, float]:
    """(information per generated event, accepted fraction) of the observable
    pT = m - 40 GeV + N(0, smear) in chapter 08's pT bins, from the bin probabilities of the
    running-width line shape (width ~ M^3) differentiated numerically in M: an independent route
    to the number the tool estimates from events."""
    lo, hi = GENERATED_MASS_RANGE_GEV
    grid = np.linspace(lo, hi, 200001)
    if smear > 0:
        pbin = np.diff(ndtr((sens.PT_EDGES[None, :] - (grid[:, None] - 40.0)) / smear), axis=1)
    else:
        idx = np.searchsorted(sens.PT_EDGES, grid - 40.0, side="right") - 1
        pbin = np.zeros((grid.size, sens.PT_EDGES.size - 1))
        inside = (idx >= 0) & (idx < sens.PT_EDGES.size - 1)
        pbin[np.flatnonzero(inside), idx[inside]] = 1.0

    def probs(mass: float) -> np.ndarray:
        f = breit_wigner_mass_density(grid, mass, width_for_mass(mass, M, G))
        return (f / f.sum()) @ pbin

    h = 1e-3
    p = probs(M)
    dp = (probs(M + h) - probs(M - h)) / (2 * h)
    ok = p > 0
    return float(np.sum(dp[ok] ** 2 / p[ok])), float(p.sum())


def _toy(n: int, seed: int, smear: float, spread: bool) -> sens.WEvents:
    """Masses from the generator's own W+ line shape; 'pT' = m - 40 (+ smearing); eta and charge
    spread over all 2880 bins when ``spread`` (few events per bin: much sampling noise)."""
    rng = np.random.default_rng(seed)
    tp = ph.theory_point(load_card("nominal")["physics"], "wplus")
    m = ph.sample_mass(rng, n, tp)
    pt = m - 40.0 + smear * rng.standard_normal(n)
    eta = rng.uniform(-2.4, 2.4, n) if spread else np.full(n, 0.05)
    q = rng.choice([-1, 1], n) if spread else np.ones(n, dtype=np.int64)
    keep = (pt > sens.PT_EDGES[0]) & (pt < sens.PT_EDGES[-1])
    k = int(keep.sum())
    return sens.WEvents(boson="wplus", n_generated=n, xsec_pb=1.0, gen_mass=m[keep], pt=pt[keep], eta=eta[keep],
                        charge=q[keep], weight=np.full(k, 1.0 / n), qt=np.zeros(k), y=np.zeros(k), n_kinematic=k)


def test_fisher_matches_the_exact_binned_information():
    """The observable is the generated mass itself (shifted into the pT bins): the tool's
    sigma_1 must match the information of the binned line shape to 0.5 %.  Protects the scale of
    the mass score (a wrong derivative, a missing width scaling or a lost normalisation term
    moves it by more), the histogramming and sigma_1 = sqrt(N / I)."""
    info, acc = _exact_information(0.0)
    res = sens.fisher_information([_toy(300_000, 1, 0.0, spread=False)], M, G)
    exact = np.sqrt(acc / info)
    assert res.sigma1_gev == pytest.approx(exact, rel=5e-3)
    assert res.n_selected == pytest.approx(acc, rel=3e-3)
    # a fixed-width template (the wrong convention for chapter 08) differs at the per-mille level,
    # so only a loose check that the option is used at all
    fixed = sens.fisher_information([_toy(300_000, 1, 0.0, spread=False)], M, G, sm_width=False)
    assert fixed.sigma1_gev != res.sigma1_gev


def test_fisher_noise_subtraction_is_unbiased():
    """A 5 GeV smearing spreads the mass information thin over 2880 bins with ~35 events each:
    the raw sum of (dn/dM)^2 / n is then 30-50 % noise.  The noise-corrected estimate must still
    average to the exact information within 3 % (an implementation that skips the subtraction,
    or divides by n_b instead of the n_b - 1 event left after it, fails by more)."""
    info, acc = _exact_information(5.0)
    results = [sens.fisher_information([_toy(100_000, seed, 5.0, spread=True)], M, G) for seed in range(6)]
    est = np.mean([r.n_selected / r.sigma1_gev**2 for r in results])
    noise = np.mean([r.noise_fraction for r in results])
    assert est / info == pytest.approx(1.0, abs=0.03)
    assert noise > 0.2  # the test is sensitive: the uncorrected estimate would be >25 % high


def test_background_of_signal_shape_dilutes_exactly():
    """A background with the signal's own shape making up a fraction f of the sample divides the
    information per selected event by (1 - f)^2: sigma_1 -> sigma_1 / (1 - f)."""
    ev = _toy(200_000, 3, 1.0, spread=False)
    clean = sens.fisher_information([ev], M, G)
    shape = sens.histogram(ev.eta, ev.pt, ev.charge, ev.weight)
    f = 0.11
    diluted = sens.fisher_information([ev], M, G, background=sens.Background(shape, f))
    assert diluted.signal_fraction == pytest.approx(1 - f, rel=1e-9)
    assert diluted.sigma1_gev == pytest.approx(clean.sigma1_gev / (1 - f), rel=2e-3)
    with pytest.raises(ValueError, match="background fraction"):
        sens.Background(shape, 1.0)
    with pytest.raises(ValueError, match="background shape"):
        sens.Background(shape[:, :, :1], 0.1)


def test_worse_resolution_carries_less_information(nominal):
    """On the universe's generator and detector (same seed, so the same events and the same
    normal draws): a ten times worse muon pT resolution (10 % at 40 GeV, wider than the q_T
    smearing of the Jacobian peak) must cost information (sigma_1 up by > 5 %; with the harder
    q_T model of universe v2 a five times worse resolution costs only ~3 %).  The shipped resolution itself costs almost nothing: the generator-level muon carries
    the same information within the sampling noise (the finding of issue 12: the resolution is
    not why the universe is too sensitive)."""
    n, seed = 150_000, 5
    base, _ = sens.card_fisher(nominal, n, seed)
    worse, _ = sens.card_fisher(sens.vary(nominal, sens.scale_resolution(10.0)), n, seed)
    gen, _ = sens.card_fisher(nominal, n, seed, level="gen")
    assert worse.sigma1_gev > 1.05 * base.sigma1_gev
    assert gen.sigma1_gev == pytest.approx(base.sigma1_gev, rel=0.1)
    # the selected fraction is the universe's acceptance x efficiency (0.40 for the shipped card;
    # the paper's 117 M in 16.8 fb^-1 at ~20.5 nb correspond to ~0.30)
    assert 0.25 < base.acceptance["wplus"] < 0.5


@pytest.mark.parametrize("target", [sens.REFERENCE_QT_DECILES["aMC@NLO (SMP-18-012)"],
                                    sens.REFERENCE_QT_QUANTILES["Z data-like 2.5 %"]])
def test_qt_quantile_weights_give_the_target_quantiles(target):
    """Reweighting an exponential q_T sample to given equal-probability quantiles: the weighted
    quantiles hit the targets and the weights average to one (the acceptance stays a fraction of
    produced events)."""
    rng = np.random.default_rng(2)
    qt = rng.exponential(8.0, 400_000)
    w = sens.qt_quantile_weights(qt, target)
    assert w.mean() == pytest.approx(1.0, rel=1e-12)
    order = np.argsort(qt)
    cdf = np.cumsum(w[order]) / w.sum()
    k = len(target) + 1
    got = np.interp(np.arange(1, k) / k, cdf, qt[order])
    np.testing.assert_allclose(got, target, rtol=5e-3)
    with pytest.raises(ValueError, match="increasing positive"):
        sens.qt_quantile_weights(qt, list(target)[::-1])


def test_vary_copies_and_names_bad_keys(nominal):
    c = sens.vary(nominal, {"physics.qt.nonperturbative.kt_w": lambda x: 2 * x, "detector.resolution.a": lambda x: 0.0})
    assert c["physics"]["qt"]["nonperturbative"]["kt_w"] == 2 * nominal["physics"]["qt"]["nonperturbative"]["kt_w"]
    assert all(x == 0.0 for x in c["detector"]["resolution"]["a"])
    assert nominal["detector"]["resolution"]["a"][0] > 0  # the original is untouched
    with pytest.raises(KeyError, match="physics.qt.nonsense"):
        sens.vary(nominal, {"physics.qt.nonsense": 1.0})
