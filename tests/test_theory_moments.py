"""Angular coefficients from moments (wmnb.theory.moments): toys with known A0..A7, the
lepton <-> antilepton signs, the Lam-Tung difference, the universe's own W events, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import uproot

from wmnb.theory import COEFFICIENTS, MomentsInputError, angular_density, angular_moments, moments_from_files

QT_EDGES = [0.0, 10.0, 20.0, 40.0]
Y_EDGES = [0.0, 1.0, 2.5]


def _draw_angles(rng: np.random.Generator, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cos theta, phi) from (1 + cos^2) + sum A_i P_i with per-event coefficients (8, n), by
    accept-reject under a bound valid for any coefficients (|P_i| <= 1)."""
    n = coeffs.shape[1]
    bound = 2.0 + np.sum(np.abs(coeffs), axis=0)
    c, f = np.empty(n), np.empty(n)
    todo = np.arange(n)
    while todo.size:
        ct = rng.uniform(-1, 1, todo.size)
        ph = rng.uniform(0, 2 * np.pi, todo.size)
        dens = angular_density(ct, ph, coeffs[:, todo])
        assert np.all(dens >= 0), "toy coefficients violate positivity"
        ok = rng.random(todo.size) * bound[todo] < dens
        c[todo[ok]], f[todo[ok]] = ct[ok], ph[ok]
        todo = todo[~ok]
    return c, f


def _toy(seed: int, n: int = 240_000):
    """Events uniform in the (q_T, |y|) cells with cell-dependent A0..A7 (all eight nonzero) and
    widely spread positive weights; returns the events and the true coefficients per cell."""
    rng = np.random.default_rng(seed)
    nq, ny = len(QT_EDGES) - 1, len(Y_EDGES) - 1
    truth = np.empty((nq, ny, 8))
    base = np.array([0.3, 0.15, 0.25, -0.1, 0.6, 0.05, -0.08, 0.07])
    for i in range(nq):
        for j in range(ny):
            truth[i, j] = base * (1 + 0.3 * i - 0.4 * j) + 0.02 * rng.standard_normal(8)
    qt = rng.uniform(QT_EDGES[0], QT_EDGES[-1], n)
    y = rng.uniform(-Y_EDGES[-1], Y_EDGES[-1], n)
    iq = np.searchsorted(QT_EDGES, qt, side="right") - 1
    iy = np.searchsorted(Y_EDGES, np.abs(y), side="right") - 1
    c, f = _draw_angles(rng, truth[iq, iy].T)
    # widely spread weights (<w^2>/<w>^2 ~ 1.9), so an error formula without the squared weights fails
    w = rng.lognormal(-0.32, 0.8, n)
    return (qt, y, c, f, w), truth


def test_moments_recover_known_coefficients_with_honest_errors():
    """Pulls of all eight coefficients in every cell against the toy's truth: mean ~0, width ~1.
    A wrong moment constant (e.g. A1 = 4<sin2t cos phi>) or a wrong error formula breaks this."""
    pulls = []
    for seed in (1, 2, 3):
        (qt, y, c, f, w), truth = _toy(seed)
        m = angular_moments(qt, y, c, f, w, QT_EDGES, Y_EDGES)
        pulls.append(m.pulls(truth).ravel())
    p = np.concatenate(pulls)
    assert p.size == 3 * 3 * 2 * 8 and np.all(np.isfinite(p))
    assert abs(p.mean()) < 0.3 and 0.8 < p.std() < 1.2, (p.mean(), p.std())
    assert np.max(np.abs(p)) < 4.5


def test_unpolarised_cross_section_is_the_normalised_weight_sum():
    (qt, y, c, f, w), _ = _toy(4, 50_000)
    m = angular_moments(qt, y, c, f, w, QT_EDGES, Y_EDGES, norm=2.5)
    assert np.isclose(m.sigma.sum(), 2.5 * w.sum())
    assert np.allclose(m.sigma_err ** 2, [[2.5**2 * np.sum(w[(qt >= QT_EDGES[i]) & (qt < QT_EDGES[i + 1])
                                                              & (np.abs(y) >= Y_EDGES[j]) & (np.abs(y) < Y_EDGES[j + 1])] ** 2)
                                           for j in range(2)] for i in range(3)])


def test_lepton_antilepton_flips_a3_a4_a7_only():
    """theta -> pi - theta, phi -> phi + pi (the antilepton's angles): A3, A4, A7 change sign,
    the other five do not, event by event (so exactly)."""
    (qt, y, c, f, w), _ = _toy(5, 60_000)
    a = angular_moments(qt, y, c, f, w, QT_EDGES, Y_EDGES).coeffs
    b = angular_moments(qt, y, -c, f + np.pi, w, QT_EDGES, Y_EDGES).coeffs
    flips = {"A3", "A4", "A7"}
    for i, name in enumerate(COEFFICIENTS):
        sign = -1.0 if name in flips else 1.0
        assert np.allclose(b[..., i], sign * a[..., i], atol=1e-12), name
    assert np.all(np.abs(a[..., 4]) > 0.2)      # the flip is not a trivially zero coefficient


def test_lam_tung_difference_and_its_error():
    rng = np.random.default_rng(6)
    n = 200_000
    for a2, expect_zero in ((0.3, True), (0.1, False)):
        coeffs = np.zeros((8, n))
        coeffs[0], coeffs[2] = 0.3, a2
        c, f = _draw_angles(rng, coeffs)
        m = angular_moments(np.full(n, 5.0), np.zeros(n), c, f, None, [0, 10], [0, 1])
        d, e = m.lam_tung()
        pull = float(d[0, 0] - (0.3 - a2)) / float(e[0, 0])
        assert abs(pull) < 4, (a2, pull)
        assert (abs(float(d[0, 0] / e[0, 0])) < 4) == expect_zero, (a2, d, e)


def test_universe_w_events_give_the_card_coefficients():
    """The moments of the universe's W+ events (standard CS frame) against the card's A0..A4
    averaged over each cell's events; A5..A7 (T-odd, absent from the generator) vanish."""
    from wmnb.universe import load_card
    from wmnb.universe import physics as ph
    from wmnb.universe.processes import generate_w_munu

    phys = load_card("nominal")["physics"]
    t = generate_w_munu(np.random.default_rng(7), 400_000, phys, "wplus")
    g = t.genv
    m = angular_moments(g["pt"], g["y"], g["cosThetaCS"], g["phiCS"], None, QT_EDGES, Y_EDGES)
    tp = ph.theory_point(phys, "wplus")
    card = ph.angular_coefficients(g["pt"], g["y"], tp)           # (5, n)
    iq = np.searchsorted(QT_EDGES, g["pt"], side="right") - 1
    iy = np.searchsorted(Y_EDGES, np.abs(g["y"]), side="right") - 1
    ok = (iq >= 0) & (iq < 3) & (iy < 2)
    ref = np.zeros((3, 2, 8))
    for i in range(3):
        for j in range(2):
            sel = ok & (iq == i) & (iy == j)
            ref[i, j, :5] = card[:, sel].mean(axis=1)
    p = m.pulls(ref)
    assert np.all(np.isfinite(p)) and np.max(np.abs(p)) < 4.5, np.round(p, 2)
    a4, e4 = m.coefficient("A4")
    assert np.all(a4 / e4 < -10)        # W+: the charged lepton is the antilepton, A4 < 0 and large


def _write(path, branches):
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.dtype for k, v in branches.items()}).extend(branches)


def test_files_round_trip_and_bad_inputs_fail_by_name(tmp_path):
    (qt, y, c, f, w), truth = _toy(8, 40_000)
    cols = {"GenV_pt": qt.astype(np.float32), "GenV_y": y.astype(np.float32),
            "GenV_cosThetaCS": c.astype(np.float32), "GenV_phiCS": f.astype(np.float32),
            "genWeight": w.astype(np.float32)}
    good = tmp_path / "gen.root"
    _write(good, cols)
    m = moments_from_files([good], QT_EDGES, Y_EDGES)
    assert m.n_events.sum() == qt.size and np.max(np.abs(m.pulls(truth))) < 5
    bad = tmp_path / "no_phi.root"
    _write(bad, {k: v for k, v in cols.items() if k != "GenV_phiCS"})
    with pytest.raises(MomentsInputError, match=r"no_phi\.root.*GenV_phiCS"):
        moments_from_files([bad], QT_EDGES, Y_EDGES)
    with pytest.raises(MomentsInputError, match="missing.root: no such file"):
        moments_from_files([tmp_path / "missing.root"], QT_EDGES, Y_EDGES)
    with pytest.raises(MomentsInputError, match="qt_edges"):
        angular_moments(qt, y, c, f, w, [10, 5], Y_EDGES)
    with pytest.raises(MomentsInputError, match="one length"):
        angular_moments(qt[:-1], y, c, f, w, QT_EDGES, Y_EDGES)
    few = angular_moments(qt[:5], y[:5], c[:5], f[:5], w[:5], QT_EDGES, Y_EDGES, min_events=10)
    assert np.all(np.isnan(few.coeffs))       # empty or nearly empty cells are NaN, not 0
