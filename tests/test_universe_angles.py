"""The Collins-Soper convention of the universe, measured on generated W and Z events.

The angles are *measured* here from the generator-level decay products (``GenPart`` slots 1 and
2: the leptons before FSR) with :func:`wmnb.universe.kinematics.cs_angles`, the same function a
chapter would use, and compared with an independent closed formula for cos theta_CS; the
coefficients come from the moments of PHYSICS.md (A1 = 5 <sin 2theta cos phi>, A3 = 4 <sin theta
cos phi>, A4 = 4 <cos theta>).
"""
from __future__ import annotations

import numpy as np
import pytest

from wmnb.universe import kinematics as kin
from wmnb.universe import load_card
from wmnb.universe import physics as ph
from wmnb.universe.processes import generate_w_munu, generate_z_mumu

Y_MIN = 0.3      # |y| of the hemispheres (A1 and A4 vanish at y = 0)
QT_A1 = 15.0     # A1 ~ q_T/M: measured where it is large


def _p4(truth, slot: int) -> np.ndarray:
    g = truth.gen
    return kin.massless_p4(g["pt"][:, slot], g["eta"][:, slot], g["phi"][:, slot], g["mass"][:, slot])


@pytest.fixture(scope="module")
def events():
    """(lepton whose angles the universe reports, other decay product, y, q_T) per boson."""
    phys = load_card("nominal")["physics"]
    out = {}
    for i, (boson, n) in enumerate((("wplus", 200_000), ("wminus", 200_000), ("z", 400_000))):
        rng = np.random.default_rng(500 + i)
        t = generate_z_mumu(rng, n, phys) if boson == "z" else generate_w_munu(rng, n, phys, boson)
        # slot 1: the muon before FSR (mu- for the Z), slot 2: the neutrino / the mu+
        out[boson] = (_p4(t, 1), _p4(t, 2), t.genv["y"], t.genv["pt"], t)
    return out


def _moment(x: np.ndarray, factor: float) -> tuple[float, float]:
    return factor * float(x.mean()), factor * float(x.std() / np.sqrt(x.size))


def _a1_a4(lep, other, mask) -> dict[str, tuple[float, float]]:
    c, f = kin.cs_angles(lep[mask], other[mask])
    s = np.sqrt(1 - c * c)
    return {"A1": _moment(2 * s * c * np.cos(f), 5.0), "A3": _moment(s * np.cos(f), 4.0),
            "A4": _moment(c, 4.0)}


def _cos_theta_cs_formula(lep: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Collins-Soper cos theta from light-cone momenta, independent of any boost:
    sign(p_z) * 2 (l+ o- - l- o+) / (Q sqrt(Q^2 + Q_T^2)), p± = (E ± p_z)/sqrt 2."""
    v = lep + other
    q2 = v[:, 0] ** 2 - np.sum(v[:, 1:] ** 2, axis=1)
    qt2 = v[:, 1] ** 2 + v[:, 2] ** 2
    lp, lm = (lep[:, 0] + lep[:, 3]) / np.sqrt(2), (lep[:, 0] - lep[:, 3]) / np.sqrt(2)
    op, om = (other[:, 0] + other[:, 3]) / np.sqrt(2), (other[:, 0] - other[:, 3]) / np.sqrt(2)
    return np.sign(v[:, 3]) * 2 * (lp * om - lm * op) / np.sqrt(q2 * (q2 + qt2))


@pytest.mark.parametrize("boson", ["wplus", "wminus", "z"])
def test_measured_angles_are_the_sampled_ones_in_the_standard_frame(events, boson):
    """Sampling (decay_two_body) and measurement (cs_angles) share one convention, and it is
    the standard frame: cos theta agrees event by event with the closed light-cone formula, which
    orients z along the boson p_z.  With the old lab-fixed axis every y < 0 event would fail."""
    lep, other, y, _, t = events[boson]
    c, f = kin.cs_angles(lep, other)
    np.testing.assert_allclose(c, t.genv["cosThetaCS"], atol=1e-6)
    np.testing.assert_allclose(np.angle(np.exp(1j * (f - t.genv["phiCS"]))), 0.0, atol=1e-5)
    ref = _cos_theta_cs_formula(lep, other)
    # the formula is exact for massless leptons: m_mu^2/M^2 ~ 1e-6 (a wrong frame gives O(1))
    assert np.max(np.abs(c - ref)) < 1e-4
    assert np.any(y < -1)      # the backward hemisphere is tested


@pytest.mark.parametrize("boson, sign4", [("wplus", -1), ("wminus", 1), ("z", 1)])
def test_a1_and_a4_have_one_sign_in_both_rapidity_hemispheres(events, boson, sign4):
    """In the standard CS frame A4 (and A1) keep their sign from y > 0 to y < 0 and agree in
    size, so they survive the |y| binning of the helicity fit.  The lab-fixed frame made them
    odd in y: A4 = -0.83 / +0.82 (W+), +0.77 / -0.76 (W-), +0.050 / -0.053 (Z) for y > 0.3 /
    y < -0.3, and A1 (q_T > 15 GeV) +0.15 / -0.14 (W+), +0.11 / -0.11 (Z): each fails here."""
    lep, other, y, qt, _ = events[boson]
    hemis = {"fwd": y > Y_MIN, "bwd": y < -Y_MIN}
    a4 = {h: _a1_a4(lep, other, m)["A4"] for h, m in hemis.items()}
    a1 = {h: _a1_a4(lep, other, m & (qt > QT_A1))["A1"] for h, m in hemis.items()}
    for name, vals, sign, nsig in (("A4", a4, sign4, 4), ("A1", a1, 1, 3)):
        (vf, ef), (vb, eb) = vals["fwd"], vals["bwd"]
        # the card's sign, significantly, in *each* hemisphere
        assert sign * vf > nsig * ef and sign * vb > nsig * eb, (boson, name, vals)
        # and the same size (the universe is symmetric under y -> -y)
        assert abs(vf - vb) < 4 * np.hypot(ef, eb), (boson, name, vals)


def test_the_other_decay_product_flips_a3_and_a4_only():
    """Lepton <-> antilepton: the other decay product has (-cos theta, phi + pi), under which
    P0, P1, P2 are even and P3, P4 odd (the sign rule of A0..A4)."""
    rng = np.random.default_rng(3)
    c, f = rng.uniform(-1, 1, 1000), rng.uniform(0, 2 * np.pi, 1000)
    p, q = ph.angular_polynomials(c, f), ph.angular_polynomials(-c, f + np.pi)
    np.testing.assert_allclose(q, np.array([1, 1, 1, -1, -1])[:, None] * p, atol=1e-12)


@pytest.mark.parametrize("boson", ["wplus", "z"])
def test_lepton_antilepton_swap_on_generated_events(events, boson):
    """Measuring the angles of the other decay product (the neutrino of the W+, the mu+ of the
    Z) gives (-cos theta, phi + pi) event by event; A1 keeps its sign and value, A4 (and A3)
    change sign.  For W+ the charged antilepton mu+ has A4 < 0 and the neutrino A4 > 0."""
    lep, other, y, qt, _ = events[boson]
    c1, f1 = kin.cs_angles(lep, other)
    c2, f2 = kin.cs_angles(other, lep)
    np.testing.assert_allclose(c2, -c1, atol=1e-9)
    np.testing.assert_allclose(np.angle(np.exp(1j * (f2 - f1 - np.pi))), 0.0, atol=1e-7)
    sel = np.abs(y) > Y_MIN
    a, b = _a1_a4(lep, other, sel), _a1_a4(other, lep, sel)
    assert a["A4"][0] == pytest.approx(-b["A4"][0], abs=1e-9) and a["A3"][0] == pytest.approx(-b["A3"][0], abs=1e-9)
    sign4 = -1 if boson == "wplus" else 1
    assert sign4 * a["A4"][0] > 4 * a["A4"][1] and -sign4 * b["A4"][0] > 4 * b["A4"][1]
    hq = sel & (qt > QT_A1)
    a1, b1 = _a1_a4(lep, other, hq)["A1"], _a1_a4(other, lep, hq)["A1"]
    assert a1[0] == pytest.approx(b1[0], abs=1e-9) and a1[0] > 4 * a1[1]
