"""Theory corrections (chapter 06): the generator-level analysis of the inclusive W and Z
simulation, so far the angular coefficients A0..A7 and the unpolarised cross section from
angular moments in (q_T, |y|) bins (:mod:`wmnb.theory.moments`)."""
from __future__ import annotations

from .moments import (
    COEFFICIENTS,
    AngularMoments,
    MomentsInputError,
    angular_density,
    angular_moments,
    harmonic_polynomials,
    moments_from_files,
    read_generator_events,
)

__all__ = ["COEFFICIENTS", "AngularMoments", "MomentsInputError", "angular_density", "angular_moments",
           "harmonic_polynomials", "moments_from_files", "read_generator_events"]
