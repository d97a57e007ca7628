"""Vectorised relativistic kinematics for the generator: four-vectors as (E, px, py, pz) arrays.

Only what the universe needs: building boson four-vectors from (m, q_T, y, phi), boosts, the
standard Collins-Soper frame (z axis along the sign of the boson p_z, see :func:`cs_axes`) and
conversions to (pT, eta, phi).
All functions take and return float64 numpy arrays with a leading event axis.
"""
from __future__ import annotations

import numpy as np

from ..conventions import MUON_MASS


def boson_p4(m: np.ndarray, qt: np.ndarray, y: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Four-vector (N, 4) of a particle with mass ``m``, transverse momentum ``qt``, rapidity
    ``y`` and azimuth ``phi``."""
    mt = np.sqrt(m * m + qt * qt)
    return np.stack([mt * np.cosh(y), qt * np.cos(phi), qt * np.sin(phi), mt * np.sinh(y)], axis=-1)


def massless_p4(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, m: float | np.ndarray = 0.0) -> np.ndarray:
    """Four-vector (N, 4) from (pt, eta, phi) and a mass."""
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px * px + py * py + pz * pz + np.asarray(m) ** 2)
    return np.stack([e, px, py, pz], axis=-1)


def boost(p: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Boost four-vectors ``p`` (N, 4) by velocity ``beta`` (N, 3) (active boost: a particle at
    rest acquires velocity ``beta``)."""
    b2 = np.sum(beta * beta, axis=-1)
    b2 = np.minimum(b2, 1.0 - 1e-15)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p[:, 1:], axis=-1)
    gamma2 = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    e = gamma * (p[:, 0] + bp)
    vec = p[:, 1:] + (gamma2 * bp + gamma * p[:, 0])[:, None] * beta
    return np.concatenate([e[:, None], vec], axis=-1)


def velocity(p: np.ndarray) -> np.ndarray:
    """Velocity (N, 3) of four-vectors ``p``."""
    return p[:, 1:] / p[:, :1]


def pt_eta_phi(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pT, eta, phi) of four-vectors (N, 4); eta is clipped to +-20 for pT = 0."""
    px, py, pz = p[:, 1], p[:, 2], p[:, 3]
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
    return pt, np.clip(eta, -20.0, 20.0), np.arctan2(py, px)


def mass(p: np.ndarray) -> np.ndarray:
    """Invariant mass of four-vectors (N, 4) (negative m^2 clipped to zero)."""
    m2 = p[:, 0] ** 2 - np.sum(p[:, 1:] ** 2, axis=-1)
    return np.sqrt(np.maximum(m2, 0.0))


def rapidity(p: np.ndarray) -> np.ndarray:
    """Rapidity of four-vectors (N, 4)."""
    return 0.5 * np.log((p[:, 0] + p[:, 3]) / np.maximum(p[:, 0] - p[:, 3], 1e-300))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def cs_axes(boson: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collins-Soper axes (x, y, z unit vectors, each (N, 3)) in the boson rest frame.

    Convention (the standard Collins-Soper frame, PHYSICS.md "Theory"): with p1 the beam that
    moves along the sign of the boson's lab p_z and p2 the other one, both boosted into the boson
    rest frame, z bisects p1 and -p2 (z = p1_hat - p2_hat, normalised), y = p1_hat x (-p2_hat)
    (normalised) and x = y x z, which points along the boson q_T.  For p_z < 0 this is the
    frame of p_z > 0 rotated by pi about x (z -> -z, y -> -y, x unchanged), so the frame stays
    right-handed.  A boson with p_z = 0 exactly takes the +z beam as p1.

    Why: the quark of a q-qbar annihilation comes more often from the beam the boson moves along
    (valence against sea), so in this frame A1 and A4 (the coefficients that change sign when z is
    reversed) have the same sign at y > 0 and y < 0 and survive binning in |y| (a lab-fixed z
    would make them odd in y).
    """
    n = boson.shape[0]
    beta = velocity(boson)
    p1 = np.tile([1.0, 0.0, 0.0, 1.0], (n, 1))
    p2 = np.tile([1.0, 0.0, 0.0, -1.0], (n, 1))
    r1 = _unit(boost(p1, -beta)[:, 1:])
    r2 = _unit(boost(p2, -beta)[:, 1:])
    z = _unit(r1 - r2)
    x = -(r1 + r2)
    # q_T = 0 leaves x undefined: any transverse direction will do
    small = np.linalg.norm(x, axis=-1) < 1e-12
    x[small] = [1.0, 0.0, 0.0]
    x = _unit(x - np.sum(x * z, axis=-1, keepdims=True) * z)
    # orient z along the boson's direction of motion (swapping the roles of the beams flips z and
    # y = p1 x (-p2) and keeps x)
    flip = np.where(boson[:, 3] < 0, -1.0, 1.0)[:, None]
    z = z * flip
    y = np.cross(z, x)
    return x, y, z


def decay_two_body(boson: np.ndarray, cos_theta: np.ndarray, phi: np.ndarray,
                   m1: float = MUON_MASS, m2: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Decay ``boson`` (N, 4) into two particles whose first has Collins-Soper angles
    (``cos_theta``, ``phi``); returns the lab four-vectors of (first, second)."""
    m = mass(boson)
    # two-body momentum in the rest frame
    pstar = np.sqrt(np.maximum((m * m - (m1 + m2) ** 2) * (m * m - (m1 - m2) ** 2), 0.0)) / (2 * m)
    x, y, z = cs_axes(boson)
    st = np.sqrt(np.maximum(1.0 - cos_theta**2, 0.0))
    d = (st * np.cos(phi))[:, None] * x + (st * np.sin(phi))[:, None] * y + cos_theta[:, None] * z
    e1 = np.sqrt(pstar**2 + m1 * m1)
    e2 = np.sqrt(pstar**2 + m2 * m2)
    q1 = np.concatenate([e1[:, None], pstar[:, None] * d], axis=-1)
    q2 = np.concatenate([e2[:, None], -pstar[:, None] * d], axis=-1)
    beta = velocity(boson)
    return boost(q1, beta), boost(q2, beta)


def cs_angles(lep: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collins-Soper (cos theta, phi) of ``lep`` in the pair (``lep`` + ``other``), with the
    convention of :func:`cs_axes`; phi in [0, 2 pi).

    Which decay product is ``lep`` is part of the convention: the universe uses the charged
    lepton for W (the antilepton mu+ for W+, the lepton mu- for W-) and the mu- for Z.  Taking
    the other one instead gives (-cos theta, phi + pi) event by event (the two are back to back
    in the rest frame), so P0, P1, P2 (and P5, P6) are unchanged and P3, P4 (and P7) change sign:
    A0, A1, A2 stay, A3 and A4 flip."""
    boson = lep + other
    x, y, z = cs_axes(boson)
    lr = _unit(boost(lep, -velocity(boson))[:, 1:])
    cos_t = np.sum(lr * z, axis=-1)
    phi = np.arctan2(np.sum(lr * y, axis=-1), np.sum(lr * x, axis=-1))
    return cos_t, np.mod(phi, 2 * np.pi)
