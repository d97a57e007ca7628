"""Boson physics of the universe: lineshape, rapidity, q_T, angular coefficients, theory weights.

The differential cross section of a vector boson V (W+, W-, Z) is factorised as

    dsigma = sigma * p(m) * p(y) * p(q_T | y) * (3/16pi) [1 + cos^2 + sum_i A_i(q_T, y) P_i] dOmega

with every factor an explicit, normalised density whose parameters come from the truth card
(:class:`TheoryPoint`); the q_T density is the resummation-like model of
:mod:`wmnb.universe.qtmodel` (perturbative, nonperturbative and matching handles acting on
different q_T regions).  The renormalisation/factorisation-scale and PDF-like eigenvector
variations move those parameters (muR: the Sudakov cusp term, the fixed-order tail, A0/A2, A1 and
A3; muF: the q_T scale, the rapidity width, A4, A1 and A3); because the densities are exact, the
LHE-like weights are exact density ratios and change y, q_T and A_i coherently, so reweighting the
simulation with them reproduces a universe generated directly at the varied point (tested).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from . import qtmodel
from .qtmodel import QtParams
from ..conventions import (ALPHA_EM, GENERATED_MASS_RANGE_GEV, LHE_SCALE_LOG2, LHE_SCALE_NOMINAL, MUON_MASS, N_LHE_SCALE,
                           breit_wigner_mass_density, lhe_pdf_index)

BOSONS = ("wplus", "wminus", "z")
Y_MAX = 5.0
MASS_RANGE = {"wplus": GENERATED_MASS_RANGE_GEV, "wminus": GENERATED_MASS_RANGE_GEV, "z": GENERATED_MASS_RANGE_GEV}
GAMMA_STAR = 4e-4  # size of the photon continuum under the Z, relative to the Z peak, at m = M_Z
N_PDF_PARAMS = 5   # per boson: alpha, beta, q_T scale, a4, xsec


@dataclass(frozen=True)
class TheoryPoint:
    """The parameters of one boson's densities at one point of theory space."""

    boson: str
    mass: float       # GeV
    width: float      # GeV
    alpha: float
    beta: float
    power: float
    qt: QtParams      # the q_T density (wmnb.universe.qtmodel)
    a0: float
    a1: float
    a2: float
    a3: float
    a4: float
    y4: float
    xsec_factor: float = 1.0

    @property
    def charge(self) -> int:
        return {"wplus": 1, "wminus": -1, "z": 0}[self.boson]


def pdf_effects(physics: dict[str, Any]) -> np.ndarray:
    """Fixed matrix (n_eigen, 3 bosons, 5 parameters) of eigenvector effects, in units of the
    card's sigma_* sizes, from ``physics.pdf.effect_seed``.

    W+ and W- share part of each eigenvector's effect (as u and d valence would); columns are
    (alpha [absolute], beta, q_T scale, a4, xsec [relative])."""
    pdf = physics["pdf"]
    rng = np.random.default_rng(int(pdf["effect_seed"]))
    n = int(pdf["n_eigen"])
    common = rng.normal(size=(n, 1, N_PDF_PARAMS))
    own = rng.normal(size=(n, 3, N_PDF_PARAMS))
    eff = 0.6 * common + 0.8 * own
    scale = np.array([pdf["sigma_alpha"], pdf["sigma_beta"], pdf["sigma_qt_scale"], pdf["sigma_a4"], pdf["sigma_xsec"]])
    # eigenvectors are ordered by decreasing size, as in a Hessian set
    size = np.linspace(1.5, 0.3, n)[:, None, None]
    return eff * scale * size


def qt_params(physics: dict[str, Any], boson: str, log2_mur: float = 0.0, log2_muf: float = 0.0,
              qt_scale: float = 1.0) -> QtParams:
    """The boson's q_T parameters from the card's ``physics.qt`` block at the given (total)
    scale point; ``qt_scale`` multiplies the q_T scale (PDF-like effects)."""
    qt, sc = physics["qt"], physics["scales"]
    res, npt, mat, beyond = qt["resummation"], qt["nonperturbative"], qt["matching"], qt["beyond_family"]
    is_w = boson != "z"
    return QtParams(
        mass=(physics["mw_mev"] if is_w else physics["mz_mev"]) / 1000.0,
        cusp=res["cusp"] * (1.0 + sc["dcusp_mur"] * log2_mur),
        cusp_running=res["cusp_running"], noncusp=res["noncusp"], noncusp_b=res["noncusp_b"], b_max=res["b_max"],
        kt=npt["kt_w"] if is_w else npt["kt_z"], kt_b=npt["kt_b"],
        cs_kernel=npt["cs_kernel"], cs_b=npt["cs_b"], cs_q0=npt["cs_q0"],
        matching_scale=mat["scale"], matching_width=mat["width"],
        fo_power=mat["fo_power"] + sc["dfo_power_mur"] * log2_mur, fo_norm=mat["fo_norm"], fo_falloff=mat["fo_falloff"],
        qt_scale=qt_scale * (1.0 + sc["dqt_scale_muf"] * log2_muf), y_slope=qt["y_slope"],
        kt_smear=beyond["kt_smear"], kt_smear_dy=beyond["kt_smear_dy"],
    )


def theory_point(physics: dict[str, Any], boson: str, d_log2_mur: float = 0.0,
                 d_log2_muf: float = 0.0, pdf_shift: np.ndarray | None = None) -> TheoryPoint:
    """The boson's :class:`TheoryPoint` for the card's physics, moved by extra scale factors
    (in log2 units) and an extra PDF eigenvector shift (in sigma units)."""
    if boson not in BOSONS:
        raise ValueError(f"unknown boson {boson!r}; expected one of {BOSONS}")
    sc = physics["scales"]
    lr = sc["log2_mur"] + d_log2_mur
    lf = sc["log2_muf"] + d_log2_muf
    theta = np.asarray(physics["pdf"]["shift"], dtype=float)
    if pdf_shift is not None:
        theta = theta + pdf_shift
    d = np.tensordot(theta, pdf_effects(physics), axes=(0, 0))[BOSONS.index(boson)]
    rap = physics["rapidity"][boson]
    ang = physics["angular"]
    is_w = boson != "z"
    mass = (physics["mw_mev"] if is_w else physics["mz_mev"]) / 1000.0
    width = (physics["gw_mev"] if is_w else physics["gz_mev"]) / 1000.0
    a02 = 1.0 + sc["da02_mur"] * lr
    a4 = (ang["a4_w"] if is_w else ang["a4_z"]) * (1.0 + sc["da4_muf"] * lf) * (1.0 + d[3])
    # A1 and A3 start at O(alpha_s) and carry the largest relative scale dependence of the A_i
    a1 = ang["a1"] * (1.0 + sc["da1_mur"] * lr) * (1.0 + sc["da1_muf"] * lf)
    a3 = ang["a3"] * (1.0 + sc["da3_mur"] * lr) * (1.0 + sc["da3_muf"] * lf)
    return TheoryPoint(
        boson=boson, mass=mass, width=width,
        alpha=rap["alpha"] + d[0],
        beta=rap["beta"] * (1.0 + sc["dbeta_muf"] * lf) * (1.0 + d[1]),
        power=rap["power"],
        qt=qt_params(physics, boson, lr, lf, qt_scale=1.0 + d[2]),
        a0=ang["a0"] * a02, a1=a1, a2=ang["a2"] * a02, a3=a3, a4=a4, y4=ang["y4"],
        xsec_factor=(1.0 + sc["dsigma_mur"] * lr) * (1.0 + sc["dsigma_muf"] * lf) * (1.0 + d[4]),
    )


# ---------------------------------------------------------------- lineshape

def breit_wigner(m: np.ndarray, mass: float, width: float) -> np.ndarray:
    """The running-width Breit-Wigner as a density in m, unnormalised:
    :func:`wmnb.conventions.breit_wigner_mass_density`, ``2m / ((m²-M²)² + m⁴Γ²/M²)``."""
    return breit_wigner_mass_density(m, mass, width)


def lineshape(m: np.ndarray, tp: TheoryPoint) -> np.ndarray:
    """Unnormalised mass density: running-width BW, plus a photon continuum for the Z."""
    bw = breit_wigner(m, tp.mass, tp.width)
    if tp.boson == "z":
        peak = 2 * tp.mass / (tp.mass**4 * tp.width**2 / tp.mass**2)
        bw = bw + GAMMA_STAR * peak * (tp.mass / m) ** 4
    return bw


def _inverse_cdf_sampler(x: np.ndarray, pdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(x))])
    cdf /= cdf[-1]
    return np.interp(u, cdf, x)


@lru_cache(maxsize=32)
def _mass_table(tp: TheoryPoint) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = MASS_RANGE[tp.boson]
    grid = np.linspace(lo, hi, 200001)
    pdf = lineshape(grid, tp)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    return grid, cdf / cdf[-1]


def sample_mass(rng: np.random.Generator, n: int, tp: TheoryPoint) -> np.ndarray:
    """Masses from :func:`lineshape` in the boson's mass window (fine-grid inverse CDF)."""
    grid, cdf = _mass_table(tp)
    return np.interp(rng.random(n), cdf, grid)


def sample_resonance(rng: np.random.Generator, n: int, mass: float, width: float) -> np.ndarray:
    """Masses of a narrow resonance (non-relativistic BW, truncated at +-20 widths)."""
    if width <= 0:
        return np.full(n, mass)
    u = rng.uniform(np.arctan(-20.0), np.arctan(20.0), n)
    return mass + 0.5 * width * np.tan(u)


# ---------------------------------------------------------------- rapidity

def _y_shape(y: np.ndarray, tp: TheoryPoint) -> np.ndarray:
    return np.maximum(1.0 + tp.alpha * y * y, 0.0) * np.exp(-np.abs(y / tp.beta) ** tp.power)


_Y_GRID = np.linspace(-Y_MAX, Y_MAX, 4001)


def y_density(y: np.ndarray, tp: TheoryPoint) -> np.ndarray:
    """Normalised rapidity density on |y| < Y_MAX."""
    norm = np.trapezoid(_y_shape(_Y_GRID, tp), _Y_GRID)
    return np.where(np.abs(y) < Y_MAX, _y_shape(y, tp) / norm, 0.0)


def sample_y(rng: np.random.Generator, n: int, tp: TheoryPoint) -> np.ndarray:
    """Rapidities from :func:`y_density`."""
    return _inverse_cdf_sampler(_Y_GRID, _y_shape(_Y_GRID, tp), rng.random(n))


# ---------------------------------------------------------------- q_T

def qt_density(qt: np.ndarray, y: np.ndarray, tp: TheoryPoint) -> np.ndarray:
    """Normalised p(q_T | y) (:func:`wmnb.universe.qtmodel.density`; a point with the data-only
    beyond-family smearing has none and raises)."""
    return qtmodel.density(qt, y, tp.qt)


def sample_qt(rng: np.random.Generator, y: np.ndarray, tp: TheoryPoint) -> np.ndarray:
    """q_T given y (:func:`wmnb.universe.qtmodel.sample`: exact inverse cumulative; the data's
    beyond-family smearing included)."""
    return qtmodel.sample(rng, y, tp.qt)


def sample_powerlaw_pt(rng: np.random.Generator, n: int, p0: float, power: float,
                       ptmin: float = 0.0, ptmax: float = 1e3) -> np.ndarray:
    """pT from p(pT) ~ pT (1 + pT^2/(power p0^2))^-power, truncated to [ptmin, ptmax]."""
    s = p0 * p0 * power
    f = lambda q: (1.0 + q * q / s) ** (1.0 - power)  # noqa: E731  (1 - CDF)
    u = rng.uniform(f(ptmax), f(ptmin), n)
    return np.sqrt(s * (u ** (1.0 / (1.0 - power)) - 1.0))


# ---------------------------------------------------------------- angular coefficients

def angular_coefficients(qt: np.ndarray, y: np.ndarray, tp: TheoryPoint) -> np.ndarray:
    """A0..A4 (shape (5, N)) as functions of q_T, y and the boson charge, in the standard
    Collins-Soper frame of :func:`wmnb.universe.kinematics.cs_axes` (z along the sign of the
    boson p_z), for the charged lepton of a W and the mu- of a Z.

    A0..A3 vanish at q_T = 0; A0 = A2 when a0 = a2 (Lam-Tung).  A1 and A4 are even in y and
    vanish at y = 0: they grow with |y| as the chance that the quark comes from the beam the boson
    moves along grows (the dilution of the q-qbar direction).  Sizes follow the measured W/Z
    coefficients (A0 ~ 0.1 at q_T = 25 GeV, |A4| up to ~1 for W at large |y|, ~0.07 for Z)."""
    m2 = tp.mass**2
    f = qt * qt / (qt * qt + m2)
    ay = np.abs(y)
    a0 = tp.a0 * f
    a2 = tp.a2 * f
    a1 = tp.a1 * 2 * qt * tp.mass / (qt * qt + m2) * np.tanh(ay) * 0.5
    q = tp.charge
    a3 = (q if q else 0.25) * tp.a3 * qt / (qt + tp.mass)
    sign4 = -q if q else 1.0
    a4 = sign4 * tp.a4 * np.tanh(ay / tp.y4) * (1.0 - a0)
    return np.stack([a0, a1, a2, a3, a4])


def angular_polynomials(cos_t: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """P0..P4 (shape (5, N))."""
    sin_t = np.sqrt(np.maximum(1.0 - cos_t**2, 0.0))
    return np.stack([
        0.5 * (1.0 - 3.0 * cos_t**2),
        2.0 * sin_t * cos_t * np.cos(phi),
        0.5 * sin_t**2 * np.cos(2.0 * phi),
        sin_t * np.cos(phi),
        cos_t,
    ])


def angular_density(cos_t: np.ndarray, phi: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """1 + cos^2 + sum A_i P_i (normalised by 16 pi/3 over the sphere)."""
    return 1.0 + cos_t**2 + np.sum(coeffs * angular_polynomials(cos_t, phi), axis=0)


def sample_angles(rng: np.random.Generator, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cos theta, phi) from the angular density with per-event coefficients (5, N), by
    accept-reject under a per-event bound."""
    n = coeffs.shape[1]
    bound = 2.0 + np.abs(coeffs[0]) + np.abs(coeffs[1]) + 0.5 * np.abs(coeffs[2]) + np.abs(coeffs[3]) + np.abs(coeffs[4])
    cos_t = np.empty(n)
    phi = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        c = rng.uniform(-1.0, 1.0, todo.size)
        p = rng.uniform(0.0, 2 * np.pi, todo.size)
        dens = angular_density(c, p, coeffs[:, todo])
        if np.any(dens < -1e-9):
            raise ValueError("angular density negative: the card's angular coefficients violate positivity")
        ok = rng.random(todo.size) * bound[todo] < dens
        cos_t[todo[ok]] = c[ok]
        phi[todo[ok]] = p[ok]
        todo = todo[~ok]
    return cos_t, phi


# ---------------------------------------------------------------- theory weights

SCALE_POINTS = LHE_SCALE_LOG2
"""(log2 muR, log2 muF) of the LHEScaleWeight entries (:mod:`wmnb.conventions`)."""


def event_density(tp: TheoryPoint, y: np.ndarray, qt: np.ndarray, cos_t: np.ndarray,
                  phi: np.ndarray, polys: np.ndarray | None = None) -> np.ndarray:
    """sigma_factor * p(y) * p(q_T|y) * angular density: the part of the cross section that
    theory variations change (the lineshape is not varied).  ``polys`` may pass precomputed
    :func:`angular_polynomials`."""
    if polys is None:
        polys = angular_polynomials(cos_t, phi)
    ang = 1.0 + cos_t**2 + np.einsum("in,in->n", angular_coefficients(qt, y, tp), polys)
    return tp.xsec_factor * y_density(y, tp) * qt_density(qt, y, tp) * ang


def theory_weights(physics: dict[str, Any], boson: str, y: np.ndarray, qt: np.ndarray,
                   cos_t: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LHE-like weights (scale (N, 9), pdf (N, 1 + 2 n_eigen)) as exact density ratios to the
    card's own point; NanoAOD order (scale entry 4 and pdf entry 0 are 1)."""
    polys = angular_polynomials(cos_t, phi)
    inv_nominal = 1.0 / event_density(theory_point(physics, boson), y, qt, cos_t, phi, polys)
    scale = np.empty((y.shape[0], N_LHE_SCALE))
    for i, (r, f) in enumerate(SCALE_POINTS):
        if i == LHE_SCALE_NOMINAL:
            scale[:, i] = 1.0
            continue
        scale[:, i] = event_density(theory_point(physics, boson, r, f), y, qt, cos_t, phi, polys) * inv_nominal
    n = int(physics["pdf"]["n_eigen"])
    pdf = np.ones((y.shape[0], 1 + 2 * n))
    for k in range(n):
        for up, sgn in ((True, 1.0), (False, -1.0)):
            shift = np.zeros(n)
            shift[k] = sgn
            pdf[:, lhe_pdf_index(k, up)] = event_density(theory_point(physics, boson, pdf_shift=shift), y, qt, cos_t, phi, polys) * inv_nominal
    return scale, pdf


def fsr_probability(parent_mass: np.ndarray, strength: float, zmin: float) -> np.ndarray:
    """Leading-log probability that a muon from a parent of this mass radiates a photon with
    energy fraction above zmin: (alpha/pi)(ln(m^2/m_mu^2) - 1) ln(1/zmin)."""
    lg = np.log(np.maximum(parent_mass, 1.0) ** 2 / MUON_MASS**2) - 1.0
    return np.clip(strength * ALPHA_EM / np.pi * lg * np.log(1.0 / zmin), 0.0, 0.9)


def sample_fsr_z(rng: np.random.Generator, n: int, zmin: float) -> np.ndarray:
    """Photon energy fractions from (1 + (1-z)^2)/z on [zmin, 1)."""
    out = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        z = zmin ** rng.random(todo.size)  # log-uniform proposal ~ 1/z
        ok = rng.random(todo.size) * 2.0 < 1.0 + (1.0 - z) ** 2
        out[todo[ok]] = z[ok]
        todo = todo[~ok]
    return out


def sample_tau_x(rng: np.random.Generator, n: int, pol: float) -> np.ndarray:
    """Lepton energy fraction in tau -> l nu nu (collinear limit) for tau polarisation ``pol``."""
    out = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        x = rng.random(todo.size)
        f = (5 / 3 - 3 * x**2 + 4 / 3 * x**3) + pol * (1 / 3 - 3 * x**2 + 8 / 3 * x**3)
        ok = rng.random(todo.size) * 2.0 < f
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
    return out


def with_mass(tp: TheoryPoint, mass: float) -> TheoryPoint:
    """A copy of ``tp`` with another pole mass (used by tests and the sensitivity check)."""
    return replace(tp, mass=mass)
