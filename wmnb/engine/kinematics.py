"""Kinematic formulas shared by the selections and the histogram engine (numpy, vectorised).

Conventions: the hadronic recoil is u_T = -(p_T^miss + sum of the selected muons' p_T);
projections on a unit direction n̂ (the muon, or the dimuon q_T for the Z selection) are
u_∥ = u_T·n̂ and u_⊥ = u_x·(-n̂_y) + u_y·n̂_x; the transverse mass is
m_T = sqrt(2 pT E_T^miss (1 - cos Δφ)).
"""
from __future__ import annotations

import numpy as np

from ..conventions import MUON_MASS  # the default particle mass of four_vector / pair


def to_xy(pt: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transverse components (float64)."""
    pt = np.asarray(pt, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    return pt * np.cos(phi), pt * np.sin(phi)


def to_ptphi(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pT, phi) of a transverse vector."""
    return np.hypot(x, y), np.arctan2(y, x)


def mt(pt: np.ndarray, phi: np.ndarray, met_pt: np.ndarray, met_phi: np.ndarray) -> np.ndarray:
    """Transverse mass of a muon and the missing transverse momentum."""
    pt = np.asarray(pt, dtype=np.float64)
    met_pt = np.asarray(met_pt, dtype=np.float64)
    dphi = np.asarray(phi, dtype=np.float64) - np.asarray(met_phi, dtype=np.float64)
    return np.sqrt(np.maximum(2.0 * pt * met_pt * (1.0 - np.cos(dphi)), 0.0))


def project(ux: np.ndarray, uy: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u_∥, u_⊥) of the vector (ux, uy) relative to the direction ``phi``."""
    c, s = np.cos(phi), np.sin(phi)
    return ux * c + uy * s, -ux * s + uy * c


def four_vector(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray,
                mass: float | np.ndarray = MUON_MASS) -> tuple[np.ndarray, ...]:
    """(E, px, py, pz) in float64."""
    pt = np.asarray(pt, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    px, py = to_xy(pt, phi)
    pz = pt * np.sinh(eta)
    e = np.sqrt(px * px + py * py + pz * pz + np.asarray(mass, dtype=np.float64) ** 2)
    return e, px, py, pz


def pair(pt1, eta1, phi1, pt2, eta2, phi2, m1=MUON_MASS, m2=MUON_MASS) -> dict[str, np.ndarray]:
    """Invariant mass, pT, rapidity and phi of the sum of two particles."""
    e1, x1, y1, z1 = four_vector(pt1, eta1, phi1, m1)
    e2, x2, y2, z2 = four_vector(pt2, eta2, phi2, m2)
    e, x, y, z = e1 + e2, x1 + x2, y1 + y2, z1 + z2
    m2_ = np.maximum(e * e - x * x - y * y - z * z, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rap = 0.5 * np.log((e + z) / (e - z))
    return {"mass": np.sqrt(m2_), "pt": np.hypot(x, y), "y": rap, "phi": np.arctan2(y, x)}


def rapidity(pt, eta, phi, mass) -> np.ndarray:
    """Rapidity of a particle given (pT, eta, phi, m)."""
    e, _, _, pz = four_vector(pt, eta, phi, mass)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.5 * np.log((e + pz) / (e - pz))


def delta_r2(eta1, phi1, eta2, phi2) -> np.ndarray:
    """ΔR² with Δφ wrapped into [-π, π]."""
    dphi = np.mod(np.asarray(phi1, dtype=np.float64) - phi2 + np.pi, 2 * np.pi) - np.pi
    deta = np.asarray(eta1, dtype=np.float64) - eta2
    return deta * deta + dphi * dphi
