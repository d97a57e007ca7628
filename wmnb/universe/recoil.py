"""The hadronic recoil and its three estimators: PF-like, track-only and pileup-mitigated (PUPPI-like).

The model (every symbol a knob of the card's ``detector.recoil`` block, book/universe-format.md)
is built so that a calibration has something to learn beyond a mean and a width per q_T bin:

* **Hard recoil** H (the true hadronic recoil, ``truth.had``; |H| = q_T for W and Z), with unit
  vectors e_par = H/|H| and e_perp.  Its charged share f (what tracks see) fluctuates event by
  event, f = clip(f_bar + spread * z, 0, 1) with f_bar = ``charged.fraction`` *
  exp(-``charged.y_loss`` y^2) (at large boson rapidity y the recoil leaves the tracker).
* **Soft hadrons** of the primary vertex: an activity a ~ Gamma(``activity_shape``) with mean 1
  per event; the soft particles balance each other, but their charged and neutral parts do not:
  a charged-neutral imbalance W (per component ``charged.imbalance`` * sqrt(a)) that the track-only
  MET sees whole and the PF MET only as ``charged.pf_coupling`` * W (PF measures the neutrals).
* **PF response** R(q_T, y) = [low + (plateau - low)(1 - exp(-q_T/response_qt))] *
  exp(-response_y y^2): under-calibrated at low q_T and forward.
* **Calorimeter term** E (PF and PUPPI share it), per component sigma0 (+) sigma_qt q_T along the
  recoil and sigma_qt * perp_qt_ratio * q_T across it, both x (1 + sigma_y y^2): u_par and u_perp
  have different widths.  With probability f_tail(q_T) = frac_low + (frac_high - frac_low)(1 -
  exp(-q_T/frac_qt)) a mismeasured jet adds a wide component (width0 + width_qt q_T per component,
  in quadrature): non-Gaussian tails whose fraction grows with q_T.
* **Pileup term** V (per component sigma_pu sqrt(PV_npvs)): whole in PF, ``puppi.pu_fraction`` of
  it in PUPPI, ``charged.pu_leak`` of it in the track-only MET.

Estimators (recoil vectors, leptons excluded; the MET is -(leptons + recoil) in
:func:`wmnb.universe.detector.simulate`)::

    u_PF    = R H (1 + k (f - f_bar)) + k W + E + V + photons + multijet mismeasurement
    u_PUPPI = R r_P H (1 + k (f - f_bar)) + k W + E + p V + photons + multijet mismeasurement
    u_Tk    = R f H + W + l V

with k = ``charged.pf_coupling``, r_P = ``puppi.response``, p = ``puppi.pu_fraction``, l =
``charged.pu_leak``.  The three share f, W, E and V, so their errors are positively correlated;
TkMET has the lowest response (R f_bar) and, once divided by it, the worst resolution, but the
least pileup dependence.  Features: the scalar sums (``MET_sumEt``, ``TkMET_sumEt``,
``PuppiMET_sumEt``, hadronic parts here) and the charged multiplicity of the primary vertex
``PV_nCharged`` ~ Poisson(nch_ue a + nch_per_gev f q_T) carry information on a and f, i.e. on the
event's resolution and TkMET response (what a regression of the recoil can exploit).

With ``charged.spread = charged.imbalance = tails.frac_* = response_y = sigma_y = 0`` and
``perp_qt_ratio = 1`` the PF recoil is the version-1 model: Gaussian, equal widths, no rapidity
dependence (the tests use that to show the old generator fails them).  Ten random numbers per
event: a, seven normals (f; W, V and E two each), the tail choice and the multiplicity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: the estimators: skim prefix -> NanoAOD branch prefix
ESTIMATORS = {"met": "MET", "tkmet": "TkMET", "puppimet": "PuppiMET"}


@dataclass
class Recoil:
    """Reconstructed recoil of ``n`` events.

    ``u``: estimator (``pf``, ``tk``, ``puppi``) -> recoil vector (x, y) components, (n,) each
    (leptons excluded);
    ``sumet``: estimator -> (n,) hadronic scalar sum (leptons excluded); ``n_charged``: (n,)
    charged multiplicity of the primary vertex; ``diag``: generator-side quantities for tests
    and plots, never written to files (``activity``, ``charged_fraction``, ``tail`` (bool),
    ``response``, ``qt``, ``y``, ``npv``, ``e_par`` (n, 2): the unit vector along the true
    recoil).  :func:`core_sigmas` gives the event's PF core widths from them."""

    u: dict[str, tuple[np.ndarray, np.ndarray]]
    sumet: dict[str, np.ndarray]
    n_charged: np.ndarray
    diag: dict[str, np.ndarray]


def response(rc: dict[str, Any], qt: np.ndarray, y: np.ndarray) -> np.ndarray:
    """PF recoil response R(q_T, y) (mean of u_par over q_T, along the recoil)."""
    turn = 1.0 - np.exp(-np.asarray(qt) / rc["response_qt"])
    r = rc["response_low"] + (rc["response_plateau"] - rc["response_low"]) * turn
    return r * np.exp(-rc["response_y"] * np.square(y))


def tail_fraction(rc: dict[str, Any], qt: np.ndarray) -> np.ndarray:
    """Probability of a mismeasured-jet (tail) event at q_T."""
    t = rc["tails"]
    return t["frac_low"] + (t["frac_high"] - t["frac_low"]) * (1.0 - np.exp(-np.asarray(qt) / t["frac_qt"]))


def tail_width(rc: dict[str, Any], qt: np.ndarray) -> np.ndarray:
    """Per-component width of the tail component (added in quadrature to the calorimeter term)."""
    t = rc["tails"]
    return t["width0"] + t["width_qt"] * np.asarray(qt)


def charged_share(rc: dict[str, Any], y: np.ndarray) -> np.ndarray:
    """Mean charged share f_bar(y) of the hard recoil (TkMET response over PF response)."""
    ch = rc["charged"]
    return ch["fraction"] * np.exp(-ch["y_loss"] * np.square(y))


def core_sigmas(rc: dict[str, Any], qt: np.ndarray, y: np.ndarray, npv: np.ndarray,
                activity: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-core widths (sigma_par, sigma_perp) of the PF recoil per component, given q_T, y,
    the number of vertices and the activity (the clipping of f at 0 and 1 neglected)."""
    qt, y = np.asarray(qt, float), np.asarray(y, float)
    ch = rc["charged"]
    k = ch["pf_coupling"]
    ycal = 1.0 + rc["sigma_y"] * y * y
    soft = (k * ch["imbalance"]) ** 2 * activity + rc["sigma_pu"] ** 2 * np.asarray(npv, float)
    cal_par = ycal ** 2 * (rc["sigma0"] ** 2 + (rc["sigma_qt"] * qt) ** 2)
    cal_perp = ycal ** 2 * (rc["sigma0"] ** 2 + (rc["sigma_qt"] * rc["perp_qt_ratio"] * qt) ** 2)
    share = (response(rc, qt, y) * k * ch["spread"] * qt) ** 2
    return np.sqrt(share + cal_par + soft), np.sqrt(cal_perp + soft)


def simulate_recoil(truth: Any, rc: dict[str, Any], npv: np.ndarray, n_true: np.ndarray,
                    rng: np.random.Generator) -> Recoil:
    """The three recoil estimators, scalar sums and charged multiplicity of ``truth``'s events
    (module docstring) for the card block ``rc`` = ``detector.recoil``.  Vectorised on
    components (x, y arrays): about 0.4 us per event."""
    n = truth.n
    hx, hy = truth.had[:, 0], truth.had[:, 1]
    qt = np.hypot(hx, hy)
    inv = np.divide(1.0, qt, out=np.zeros(n), where=qt > 1e-9)
    px = np.where(qt > 1e-9, hx * inv, 1.0)        # e_par (a random-free fallback at q_T = 0)
    py = hy * inv
    y = np.asarray(truth.genv["y"], float)
    y2 = y * y
    ch, pu, ft = rc["charged"], rc["puppi"], rc["features"]

    # the random numbers: activity, seven normals, the tail choice and (below) the multiplicity
    a = rng.gamma(rc["activity_shape"], 1.0 / rc["activity_shape"], n)
    z = rng.standard_normal((7, n))   # f; W (2); pileup (2); calorimeter along, across
    tail = rng.random(n) < tail_fraction(rc, qt)

    f_bar = charged_share(rc, y)
    f = np.clip(f_bar + ch["spread"] * z[0], 0.0, 1.0)
    resp = response(rc, qt, y)
    k = ch["pf_coupling"]
    # charged-neutral imbalance of the soft hadrons and the pileup term (both isotropic)
    sw = ch["imbalance"] * np.sqrt(a)
    wx, wy = sw * z[1], sw * z[2]
    sv = rc["sigma_pu"] * np.sqrt(np.asarray(npv, float))
    vx, vy = sv * z[3], sv * z[4]
    # calorimeter term along / across the recoil, with the mismeasured-jet component in tails
    ycal = 1.0 + rc["sigma_y"] * y2
    s_tail2 = np.where(tail, tail_width(rc, qt), 0.0) ** 2
    q2 = (rc["sigma_qt"] * qt) ** 2
    c_par = np.sqrt(ycal * ycal * (rc["sigma0"] ** 2 + q2) + s_tail2) * z[5]
    c_perp = np.sqrt(ycal * ycal * (rc["sigma0"] ** 2 + rc["perp_qt_ratio"] ** 2 * q2) + s_tail2) * z[6]
    ex, ey = c_par * px - c_perp * py, c_par * py + c_perp * px

    nx, ny = truth.gam[:, 0] + truth.extra_u[:, 0], truth.gam[:, 1] + truth.extra_u[:, 1]
    g_pf = resp * (1.0 + k * (f - f_bar))
    common_x, common_y = k * wx + ex + nx, k * wy + ey + ny     # shared by PF and PUPPI
    u_pf = (g_pf * hx + common_x + vx, g_pf * hy + common_y + vy)
    g_pp, p_pu = pu["response"] * g_pf, pu["pu_fraction"]
    u_puppi = (g_pp * hx + common_x + p_pu * vx, g_pp * hy + common_y + p_pu * vy)
    g_tk, leak = resp * f, ch["pu_leak"]
    u_tk = (g_tk * hx + wx + leak * vx, g_tk * hy + wy + leak * vy)

    s_hard = ft["sumet_qt"] * qt
    s_soft = ft["sumet_ue"] * a
    s_pu = ft["sumet_pu"] * np.asarray(n_true, float)
    sumet = {"pf": s_hard + s_soft + s_pu,
             "puppi": pu["response"] * s_hard + s_soft + p_pu * s_pu,
             "tk": f * s_hard + ch["fraction"] * s_soft + leak * s_pu}
    n_charged = rng.poisson(ft["nch_ue"] * a + ft["nch_per_gev"] * f * qt).astype(np.int32)
    diag = {"activity": a, "charged_fraction": f, "tail": tail, "response": resp, "qt": qt, "y": y,
            "npv": np.asarray(npv), "e_par": np.stack([px, py], axis=1)}
    return Recoil(u={"pf": u_pf, "tk": u_tk, "puppi": u_puppi}, sumet=sumet, n_charged=n_charged, diag=diag)
