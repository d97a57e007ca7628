"""Generator physics: kinematics, angular coefficients, theory weights, lineshape, FSR, detector."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from wmnb.conventions import MUON_MASS
from wmnb.universe import kinematics as kin
from wmnb.universe import load_card
from wmnb.universe import physics as ph
from wmnb.universe.detector import curvature_bias, relative_resolution, simulate
from wmnb.universe.processes import GENERATORS, generate_w_munu


@pytest.fixture(scope="module")
def nominal():
    return load_card("nominal")


@pytest.fixture(scope="module")
def data():
    return load_card("data")


def test_cs_angles_round_trip():
    rng = np.random.default_rng(1)
    n = 20000
    p = kin.boson_p4(rng.uniform(60, 100, n), rng.exponential(20, n), rng.normal(0, 2, n), rng.uniform(-np.pi, np.pi, n))
    c = rng.uniform(-1, 1, n)
    f = rng.uniform(0, 2 * np.pi, n)
    l1, l2 = kin.decay_two_body(p, c, f, MUON_MASS, MUON_MASS)
    np.testing.assert_allclose(l1 + l2, p, atol=1e-7 * np.abs(p).max())
    c2, f2 = kin.cs_angles(l1, l2)
    np.testing.assert_allclose(c2, c, atol=1e-8)
    dphi = np.angle(np.exp(1j * (f2 - f)))
    assert np.max(np.abs(dphi)) < 1e-6


def test_cs_axes_follow_the_boson_direction():
    """Standard Collins-Soper frame: z along the sign of the boson p_z, x along its q_T, and a
    right-handed (x, y, z) for both signs of y (a lab-fixed z would point along +z always)."""
    for y in (-1.0, 1.0):
        p = kin.boson_p4(np.array([91.0]), np.array([5.0]), np.array([y]), np.array([0.0]))
        x, yy, z = kin.cs_axes(p)
        assert z[0, 2] * np.sign(y) > 0.99
        assert x[0, 0] > 0.99                    # q_T along +x_lab
        np.testing.assert_allclose(np.cross(x, yy), z, atol=1e-12)


@pytest.mark.parametrize("boson", ["wplus", "wminus", "z"])
def test_angular_coefficient_limits(nominal, data, boson):
    for card in (nominal, data):
        tp = ph.theory_point(card["physics"], boson)
        y = np.linspace(-4, 4, 41)
        zero = ph.angular_coefficients(np.zeros_like(y), y, tp)
        np.testing.assert_allclose(zero[:4], 0.0, atol=1e-12)  # A0..A3 vanish at q_T = 0
        qt = np.full_like(y, 30.0)
        a = ph.angular_coefficients(qt, y, tp)
        # standard CS frame: A1 and A4 even in y (same sign in both hemispheres), zero at y = 0
        np.testing.assert_allclose(a[1], a[1][::-1], atol=1e-12)
        np.testing.assert_allclose(a[4], a[4][::-1], atol=1e-12)
        np.testing.assert_allclose(a[[1, 4], y.size // 2], 0.0, atol=1e-12)
        np.testing.assert_allclose(a[0], a[0][::-1])
        # positivity of the decay density over the whole (q_T, y, angles) space
        qq, yy, cc, ff = np.meshgrid(np.linspace(0, 300, 31), np.linspace(-5, 5, 21), np.linspace(-1, 1, 41),
                                     np.linspace(0, 2 * np.pi, 37), indexing="ij")
        coeffs = ph.angular_coefficients(qq.ravel(), yy.ravel(), tp)
        assert ph.angular_density(cc.ravel(), ff.ravel(), coeffs).min() >= 0.0
    # W charges: opposite A4 sign (V-A), same magnitude rules
    tpp, tpm = ph.theory_point(nominal["physics"], "wplus"), ph.theory_point(nominal["physics"], "wminus")
    a4p = ph.angular_coefficients(np.array([5.0]), np.array([1.0]), tpp)[4]
    a4m = ph.angular_coefficients(np.array([5.0]), np.array([1.0]), tpm)[4]
    assert a4p[0] < -0.3 and a4m[0] > 0.3


def test_angular_moments_match_coefficients(nominal):
    """Sampled decay angles reproduce the moments of PHYSICS.md at fixed (q_T, y)."""
    tp = ph.theory_point(nominal["physics"], "wplus")
    n = 200_000
    qt, y = np.full(n, 40.0), np.full(n, 1.2)
    a = ph.angular_coefficients(qt, y, tp)
    c, f = ph.sample_angles(np.random.default_rng(7), a)
    s = np.sqrt(1 - c**2)
    moments = {
        0: (0.5 * (1 - 3 * c**2), lambda A: 3 / 20 * (A - 2 / 3)),
        1: (2 * s * c * np.cos(f), lambda A: A / 5),
        2: (0.5 * s**2 * np.cos(2 * f), lambda A: A / 20),
        3: (s * np.cos(f), lambda A: A / 4),
        4: (c, lambda A: A / 4),
    }
    for i, (x, expect) in moments.items():
        pull = (x.mean() - expect(a[i, 0])) / (x.std() / np.sqrt(n))
        assert abs(pull) < 4.5, (i, pull)


def test_qt_and_rapidity_spectra(nominal):
    """Realistic W/Z q_T spectra (peak at 3-5.5 GeV, about half the events below 10 GeV, a few per
    cent above 50 GeV) and rapidity densities that the samplers follow."""
    rng = np.random.default_rng(3)
    fine = np.linspace(0.0, 30.0, 601)
    for boson in ("wplus", "wminus", "z"):
        tp = ph.theory_point(nominal["physics"], boson)
        y = ph.sample_y(rng, 300_000, tp)
        qt = ph.sample_qt(rng, y, tp)
        # the mode of the analytic density at the median |y| (the sampled peak is flat-topped)
        mode = fine[np.argmax(ph.qt_density(fine, np.full(fine.size, np.median(np.abs(y))), tp))]
        assert 3.0 < mode < 5.5, (boson, mode)
        assert 0.40 < np.mean(qt < 10) < 0.60, boson
        assert 0.02 < np.mean(qt > 50) < 0.10, boson   # the fixed-order tail (the old model: 1 %)
        # the sampler follows the analytic density
        hy, ey = np.histogram(y, bins=40, range=(-4, 4))
        expect = ph.y_density(0.5 * (ey[1:] + ey[:-1]), tp) * 0.2 * y.size
        assert np.max(np.abs(hy - expect) / np.sqrt(expect)) < 5
    # W+ is broader in rapidity than W- (u vs d valence): charge asymmetry grows with |y|
    yp = ph.sample_y(rng, 200_000, ph.theory_point(nominal["physics"], "wplus"))
    ym = ph.sample_y(rng, 200_000, ph.theory_point(nominal["physics"], "wminus"))
    assert np.std(yp) > np.std(ym)


@pytest.mark.parametrize("variation", ["scale", "pdf"])
def test_theory_weights_reproduce_direct_generation(nominal, variation):
    """Reweighting the nominal sample with an LHE-like weight equals generating at the varied
    point: y, q_T and cos(theta) histograms agree within statistics."""
    phys = nominal["physics"]
    rng = np.random.default_rng(11)
    n = 150_000
    tp0 = ph.theory_point(phys, "wminus")
    y = ph.sample_y(rng, n, tp0)
    qt = ph.sample_qt(rng, y, tp0)
    c, f = ph.sample_angles(rng, ph.angular_coefficients(qt, y, tp0))
    scale_w, pdf_w = ph.theory_weights(phys, "wminus", y, qt, c, f)
    if variation == "scale":
        w = scale_w[:, 8]  # muR x2, muF x2
        tp1 = ph.theory_point(phys, "wminus", 1.0, 1.0)
    else:
        w = pdf_w[:, 1]  # eigenvector 0 up
        shift = np.zeros(phys["pdf"]["n_eigen"])
        shift[0] = 1.0
        tp1 = ph.theory_point(phys, "wminus", pdf_shift=shift)
    assert np.all(scale_w[:, 4] == 1.0) and np.all(pdf_w[:, 0] == 1.0)
    y1 = ph.sample_y(rng, n, tp1)
    qt1 = ph.sample_qt(rng, y1, tp1)
    c1, _ = ph.sample_angles(rng, ph.angular_coefficients(qt1, y1, tp1))
    w = w / w.mean()  # shapes (the normalisation change is tp1.xsec_factor)
    for x0, x1, rng_ in ((y, y1, (-4, 4)), (qt, qt1, (0, 60)), (c, c1, (-1, 1))):
        h0, _ = np.histogram(x0, bins=20, range=rng_, weights=w)
        v0, _ = np.histogram(x0, bins=20, range=rng_, weights=w**2)
        h1, _ = np.histogram(x1, bins=20, range=rng_)
        ok = h1 > 50
        chi2 = np.sum((h0 - h1)[ok] ** 2 / (v0 + h1)[ok])
        assert chi2 / ok.sum() < 2.0
    # and the variation is not trivial: the weights move the spectra
    assert np.std(w) > 0.005


def test_breit_wigner_reweighting_moves_the_mass(nominal):
    tp = ph.theory_point(nominal["physics"], "wplus")
    m = ph.sample_mass(np.random.default_rng(2), 1_000_000, tp)
    # the sampler follows the running-width lineshape (independent numerical integration)
    edges = np.linspace(70, 90, 41)
    h, _ = np.histogram(m, bins=edges)
    fine = np.linspace(50, 150, 400001)
    dens = ph.breit_wigner(fine, tp.mass, tp.width)
    cdf = np.concatenate([[0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    expect = np.diff(np.interp(edges, fine, cdf / cdf[-1])) * m.size
    assert np.max(np.abs(h - expect) / np.sqrt(expect)) < 5
    w = ph.breit_wigner(m, tp.mass + 0.1, tp.width) / ph.breit_wigner(m, tp.mass, tp.width)
    core = np.abs(m - tp.mass) < 5
    shift = np.average(m[core], weights=w[core]) - m[core].mean()
    m2 = ph.sample_mass(np.random.default_rng(3), 1_000_000, ph.with_mass(tp, tp.mass + 0.1))
    core2 = np.abs(m2 - tp.mass) < 5
    direct = m2[core2].mean() - m[core].mean()
    assert shift > 0.05 and abs(shift - direct) < 0.01


def test_fsr_rate_and_energy_fraction(nominal):
    rng = np.random.default_rng(4)
    t = generate_w_munu(rng, 100_000, nominal["physics"], "wplus")
    emitted = t.gen["valid"][:, 4]
    expect = ph.fsr_probability(np.array([80.0]), 1.0, nominal["physics"]["fsr"]["zmin"])[0]
    assert abs(emitted.mean() - expect) < 0.01
    # momentum conservation of the emission (3-vectors)
    pre = kin.massless_p4(t.gen["pt"][:, 1], t.gen["eta"][:, 1], t.gen["phi"][:, 1])
    post = kin.massless_p4(t.gen["pt"][:, 3], t.gen["eta"][:, 3], t.gen["phi"][:, 3])
    gam = kin.massless_p4(t.gen["pt"][:, 4], t.gen["eta"][:, 4], t.gen["phi"][:, 4])
    gam[~emitted] = 0
    np.testing.assert_allclose((post + gam)[:, 1:], pre[:, 1:], atol=2e-3 * pre[:, 0:1].max())


def test_detector_scale_and_resolution_follow_the_card(data):
    """Reconstructed curvature / true curvature has the card's mean bias and width per muon
    class (an independent evaluation of dk/k = A - e k + q M / k and of the resolution)."""
    det = data["detector"]
    rng = np.random.default_rng(5)
    t = GENERATORS["z_mumu"](rng, 200_000, data["physics"])
    t = t.select(t.passed)
    r = simulate(t, det, np.random.default_rng(6), is_data=False)
    pt_t, eta_t, _ = kin.pt_eta_phi(t.mu_p4.reshape(-1, 4))
    ok = (r["muon_exists"][:, :2] & r["muon"]["isTracker"][:, :2]).ravel()
    ratio = (pt_t / r["muon"]["pt"][:, :2].ravel())[ok]  # k_reco / k_true
    q = t.mu_charge.ravel()[ok]
    bias = curvature_bias(det, pt_t[ok], eta_t[ok], q)
    sig = relative_resolution(det, pt_t[ok], eta_t[ok])
    pulls = (ratio - 1 - bias) / sig
    assert abs(pulls.mean()) < 0.02 and abs(pulls.std() - 1) < 0.02
    # the bias itself is visible: regressing (k_reco/k_true - 1) on the card's bias gives slope 1
    w = 1 / sig**2
    slope = np.sum(w * bias * (ratio - 1)) / np.sum(w * bias**2)
    err = 1 / np.sqrt(np.sum(w * bias**2))
    assert abs(slope - 1) < 5 * err and err < 0.1


def test_isolation_and_trigger_efficiency_fall_with_upar(nominal):
    phys, det = nominal["physics"], nominal["detector"]
    t = GENERATORS["wplus_munu"](np.random.default_rng(8), 200_000, phys)
    t = t.select(t.passed)
    r = simulate(t, det, np.random.default_rng(9), is_data=False)
    _, _, phi = kin.pt_eta_phi(t.mu_p4[:, 0])
    upar = t.had[:, 0] * np.cos(phi) + t.had[:, 1] * np.sin(phi)
    ok = r["muon"]["isGlobal"][:, 0] & (r["muon"]["pt"][:, 0] > 26)
    iso_pass = r["muon"]["pfRelIso04_all"][:, 0] < 0.15
    trig = r["muon"]["triggerMatch"][:, 0]
    lo, hi = ok & (upar < -10), ok & (upar > 10)
    assert iso_pass[hi].mean() < iso_pass[lo].mean() - 0.02
    assert trig[hi].mean() < trig[lo].mean() - 0.005


def test_nonprompt_extended_abcd_overestimates(nominal):
    """The nonprompt iso-m_T correlation is such that the extended-ABCD (geometric)
    extrapolation of the isolation pass/fail ratio overestimates by 10-20 %, and secondary
    vertices enrich nonprompt muons."""
    phys, det = nominal["physics"], nominal["detector"]
    t = GENERATORS["qcd"](np.random.default_rng(12), 300_000, phys)
    t = t.select(t.passed)
    r = simulate(t, det, np.random.default_rng(13), is_data=False)
    mu, ex = r["muon"], r["muon_exists"]
    # the W selection of PHYSICS.md without the isolation and m_T cuts
    good = ex & mu["mediumId"] & (np.abs(mu["dxy"]) < 0.05) & (mu["pt"] > 26) & (mu["pt"] < 56) & (np.abs(mu["eta"]) < 2.4)
    loose = ex & mu["looseId"] & (mu["pt"] > 15)
    i = np.argmax(good, axis=1)
    row = np.arange(t.n)
    ok = r["scalars"]["HLT_IsoMu24"] & (good.sum(1) == 1) & (loose.sum(1) == 1) & mu["triggerMatch"][row, i]
    mt = np.sqrt(2 * mu["pt"][row, i] * r["scalars"]["MET_pt"] * (1 - np.cos(mu["phi"][row, i] - r["scalars"]["MET_phi"])))
    passed = mu["pfRelIso04_all"][row, i] < 0.15
    cnt = {}
    for name, lo, hi in (("low", 0, 20), ("mid", 20, 40), ("high", 40, 1e9)):
        region = ok & (mt > lo) & (mt < hi)
        cnt[name] = (np.sum(region & passed), np.sum(region & ~passed))
    ratio = {k: p / f for k, (p, f) in cnt.items()}
    estimate = ratio["mid"] ** 2 / ratio["low"]
    over = estimate / ratio["high"]
    assert 1.05 < over < 1.30, over  # 10-20 % expected; +-5 % statistical spread at this size
    assert mu["svMatched"][row, i][ok].mean() > 0.3
    tw = GENERATORS["wplus_munu"](np.random.default_rng(14), 50_000, phys)
    tw = tw.select(tw.passed)
    rw = simulate(tw, det, np.random.default_rng(15), is_data=False)
    assert rw["muon"]["svMatched"][rw["muon_exists"][:, 0], 0].mean() < 0.03


def test_prefiring_weights_and_data_losses(nominal, data):
    t = GENERATORS["wplus_munu"](np.random.default_rng(16), 100_000, nominal["physics"])
    t = t.select(t.passed)
    mc = simulate(t, nominal["detector"], np.random.default_rng(17), is_data=False)
    dt = simulate(t, data["detector"], np.random.default_rng(17), is_data=True)
    w = mc["scalars"]["L1PreFiringWeight_Nom"]
    assert 0.975 < w.mean() < 0.997
    assert np.all(mc["scalars"]["L1PreFiringWeight_Up"] <= w) and np.all(mc["scalars"]["L1PreFiringWeight_Dn"] >= w)
    lost = 1 - dt["keep"].mean()
    assert 0.003 < lost < 0.03
    assert np.all(dt["scalars"]["L1PreFiringWeight_Nom"] == 1)


def test_theory_point_rejects_unknown_boson(nominal):
    with pytest.raises(ValueError, match="unknown boson"):
        ph.theory_point(nominal["physics"], "higgs")


def test_data_physics_differs_through_reachable_parameters(nominal, data):
    """The data universe's theory is the nominal one moved along the scale and PDF directions
    that the simulation's LHE-like weights span (plus m_W and the nonperturbative kT/CS terms)."""
    dn, dd = copy.deepcopy(nominal["physics"]), copy.deepcopy(data["physics"])
    assert dd["pdf"]["effect_seed"] == dn["pdf"]["effect_seed"]
    assert any(abs(s) > 0.1 for s in dd["pdf"]["shift"])
    assert dd["scales"]["log2_mur"] != 0 and abs(dd["scales"]["log2_mur"]) <= 1


def test_fsr_is_stronger_in_data_than_in_simulation(nominal, data):
    """The data card's FSR strength differs from the simulation's (an EW uncertainty needs
    something to measure): the photon-emission rate of generated W -> mu nu and Z -> mu mu muons
    follows the ratio of the strengths (1.05).  Equal strengths (the old cards) give 1.00, five
    standard deviations away at this size."""
    ratio_card = data["physics"]["fsr"]["strength"] / nominal["physics"]["fsr"]["strength"]
    assert 1.02 <= ratio_card <= 1.10
    rates = {}
    for name, card in (("nominal", nominal), ("data", data)):
        tw = generate_w_munu(np.random.default_rng(21), 300_000, card["physics"], "wplus")
        tz = GENERATORS["z_mumu"](np.random.default_rng(22), 150_000, card["physics"])
        # photon slots: 4 for the W muon, 5 and 6 for the two Z muons
        emitted = np.concatenate([tw.gen["valid"][:, 4], tz.gen["valid"][:, 5], tz.gen["valid"][:, 6]])
        rates[name] = (emitted.mean(), emitted.size)
    (rn, nn), (rd, nd) = rates["nominal"], rates["data"]
    ratio = rd / rn
    err = ratio * np.hypot(np.sqrt((1 - rn) / (rn * nn)), np.sqrt((1 - rd) / (rd * nd)))
    assert 0.1 < rn < 0.2                             # ~15 % of muons from W/Z radiate above zmin
    assert abs(ratio - ratio_card) < 4 * err, (ratio, err)
    assert ratio - 1.0 > 5 * err, (ratio, err)
