"""Theory corrections (chapter 06).

* :mod:`~wmnb.theory.moments` — A0..A7 and σ_UL in (q_T, |y|) bins from angular moments of the
  inclusive generator-level simulation, with their covariance;
* :mod:`~wmnb.theory.prediction` — the analytic q_T prediction (b-space resummation stand-in)
  with its named theory nuisances (TNPs, nonperturbative, matching, thresholds, fixed order);
* :mod:`~wmnb.theory.correction` — the published weight correction: q_T reweighting (nominal),
  ``pTV``, ``angularCoeffs``, ``pdf`` and ``EW`` variations, superseding chapter 08's built-in
  PDF and scale nuisances;
* :mod:`~wmnb.theory.ew` — the FSR-strength variation (pre-FSR muons from the Collins–Soper angles);
* :mod:`~wmnb.theory.mwbias` — the generator-level m_W bias of the data universe's theory;
* :mod:`~wmnb.theory.chapter` — what the notebook runs (tables, Z validation fit, FSR fit,
  closures against the truth, summary) and :mod:`~wmnb.theory.plots` its figures.
"""
from __future__ import annotations

from ..angular import angular_density, harmonic_polynomials
from .correction import TheoryCorrection, TheoryTables
from .moments import (
    COEFFICIENTS,
    AngularMoments,
    MomentsInputError,
    angular_moments,
    moments_from_files,
    read_generator_events,
)
from .prediction import NUISANCES, PredictionInputs, QtPrediction, TheoryNuisance

__all__ = ["COEFFICIENTS", "NUISANCES", "AngularMoments", "MomentsInputError", "PredictionInputs", "QtPrediction",
           "TheoryCorrection", "TheoryNuisance", "TheoryTables", "angular_density", "angular_moments",
           "harmonic_polynomials", "moments_from_files", "read_generator_events"]
