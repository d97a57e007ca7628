"""Breit–Wigner reweighting of the generator-level W mass.

The mass templates of the fit are the nominal simulation reweighted event by event from the
mass hypothesis it was generated with, ``(M0, Γ0)``, to ``M0 ± ΔM``.  Conventions (PHYSICS.md):

* running-width Breit–Wigner in ``s = m²``:  ``BW(m; M, Γ) = 1 / ((m² − M²)² + m⁴ Γ² / M²)``;
* the width follows the mass by the Standard-Model relation at fixed couplings, ``Γ ∝ M³``;
* the weight is ``w = BW(m; M', Γ') / BW(m; M0, Γ0)``, multiplied by the ratio of the line-shape
  integrals so that the *total* generated cross section is unchanged: the template moves the
  line shape only, and acceptance effects of the shift are kept (they are physical).

All masses here are in GeV (as the ``gen_mass`` column); the chapter talks MeV only at its edges.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import integrate

#: Generator mass range used for the normalisation integral of the line shape (GeV).  The
#: integral is dominated by the peak, so the exact range matters at the 1e-5 level only.
NORM_RANGE_GEV = (10.0, 300.0)


def width_for_mass(mass: float, ref_mass: float, ref_width: float) -> float:
    """Γ(M) = Γ0 · (M / M0)³: the SM scaling of the total width at fixed couplings."""
    if ref_mass <= 0 or ref_width <= 0:
        raise ValueError(f"reference mass and width must be positive, got M0={ref_mass}, Γ0={ref_width}")
    return ref_width * (mass / ref_mass) ** 3


def breit_wigner(m: np.ndarray, mass: float, width: float) -> np.ndarray:
    """Running-width relativistic Breit–Wigner (unnormalised), ``1/((m²−M²)² + m⁴Γ²/M²)``."""
    m2 = np.asarray(m, dtype=np.float64) ** 2
    return 1.0 / ((m2 - mass**2) ** 2 + m2**2 * width**2 / mass**2)


@lru_cache(maxsize=256)
def _line_shape_integral(mass: float, width: float, lo: float, hi: float) -> float:
    """∫ BW dm over [lo, hi]; the peak is passed to quad as a break point for accuracy."""
    val, _ = integrate.quad(lambda x: float(breit_wigner(x, mass, width)), lo, hi,
                            points=[mass - 5 * width, mass, mass + 5 * width], limit=400,
                            epsabs=0.0, epsrel=1e-11)
    return val


def mass_weights(gen_mass: np.ndarray, ref_mass: float, ref_width: float, new_mass: float,
                 new_width: float | None = None, normalise: bool = True) -> np.ndarray:
    """Per-event weights moving the line shape from ``(ref_mass, ref_width)`` to ``new_mass``.

    ``new_width`` defaults to the SM scaling :func:`width_for_mass`.  With ``normalise`` the
    weights integrate to one over the generated line shape (see the module docstring).
    Events with a non-positive or non-finite generator mass make the weight meaningless, so they
    raise rather than silently get weight 1.
    """
    gen_mass = np.asarray(gen_mass, dtype=np.float64)
    if gen_mass.size and not (np.all(np.isfinite(gen_mass)) and gen_mass.min() > 0):
        bad = int(np.count_nonzero(~np.isfinite(gen_mass) | (gen_mass <= 0)))
        raise ValueError(f"gen_mass has {bad} non-positive or non-finite entries: mass weights need the "
                         "generator boson mass of every signal event (is this a signal skim?)")
    if new_width is None:
        new_width = width_for_mass(new_mass, ref_mass, ref_width)
    w = breit_wigner(gen_mass, new_mass, new_width) / breit_wigner(gen_mass, ref_mass, ref_width)
    if normalise:
        lo, hi = NORM_RANGE_GEV
        w *= (_line_shape_integral(float(ref_mass), float(ref_width), lo, hi)
              / _line_shape_integral(float(new_mass), float(new_width), lo, hi))
    return w
