"""Dimuon kinematics."""
from __future__ import annotations

import numpy as np

from ..conventions import MUON_MASS_CALIB


def dimuon_mass(pt1: np.ndarray, eta1: np.ndarray, phi1: np.ndarray,
                pt2: np.ndarray, eta2: np.ndarray, phi2: np.ndarray,
                mass: float = MUON_MASS_CALIB) -> np.ndarray:
    """Invariant mass (GeV) of two muons given (pT, eta, phi), including the muon mass."""
    pt1, eta1, phi1, pt2, eta2, phi2 = (np.asarray(a, dtype=np.float64)
                                        for a in (pt1, eta1, phi1, pt2, eta2, phi2))
    px = pt1 * np.cos(phi1) + pt2 * np.cos(phi2)
    py = pt1 * np.sin(phi1) + pt2 * np.sin(phi2)
    pz = pt1 * np.sinh(eta1) + pt2 * np.sinh(eta2)
    e1 = np.sqrt((pt1 * np.cosh(eta1)) ** 2 + mass ** 2)
    e2 = np.sqrt((pt2 * np.cosh(eta2)) ** 2 + mass ** 2)
    m2 = (e1 + e2) ** 2 - px ** 2 - py ** 2 - pz ** 2
    return np.sqrt(np.maximum(m2, 0.0))
