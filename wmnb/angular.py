"""The helicity decomposition of a vector boson's decay: the harmonic polynomials P0..P7 of the
Collins–Soper angles and the angular density they make with the coefficients A_i.

    dσ/dΩ ∝ (1 + cos²θ) + Σ_i A_i P_i(cosθ, φ)

Shared by the theory chapter (moments, the angular-coefficient nuisances) and the helicity fit
(its per-event helicity weights), which must agree on the polynomials and their order.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def harmonic_polynomials(cos_theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """P0..P7 (shape (8, N)) of the Collins-Soper angles."""
    c = np.asarray(cos_theta, dtype=float)
    f = np.asarray(phi, dtype=float)
    s = np.sqrt(np.clip(1.0 - c * c, 0.0, 1.0))
    s2t = 2.0 * s * c
    return np.stack([0.5 * (1.0 - 3.0 * c * c), s2t * np.cos(f), 0.5 * s * s * np.cos(2.0 * f), s * np.cos(f), c,
                     s * s * np.sin(2.0 * f), s2t * np.sin(f), s * np.sin(f)])


def angular_density(cos_theta: np.ndarray, phi: np.ndarray, coeffs: Sequence[float] | np.ndarray) -> np.ndarray:
    """(1 + cos²θ) + Σ A_i P_i for coefficients of shape (8,) or (8, N) (fewer than 8: the rest 0)."""
    a = np.asarray(coeffs, dtype=float)
    a = np.concatenate([a, np.zeros((8 - a.shape[0],) + a.shape[1:])]) if a.shape[0] < 8 else a
    polys = harmonic_polynomials(cos_theta, phi)
    c = np.asarray(cos_theta, dtype=float)
    return 1.0 + c * c + np.sum((a if a.ndim == 2 else a[:, None]) * polys, axis=0)
