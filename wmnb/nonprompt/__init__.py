"""Chapter 05: the nonprompt-muon background of the W selection from data (extended ABCD).

:mod:`~wmnb.nonprompt.abcd` (the estimators), :mod:`~wmnb.nonprompt.smoothing` (exp-polynomial
fits), :mod:`~wmnb.nonprompt.regions` (the region recipe of the shared template-fit layer),
:mod:`~wmnb.nonprompt.estimate` (subtraction, smoothing and propagation on histograms),
:mod:`~wmnb.nonprompt.chapter` (the chapter's steps), :mod:`~wmnb.nonprompt.correction` (the
published template) and :mod:`~wmnb.nonprompt.plots`.
"""
from .abcd import REGIONS, NonpromptError, extended_abcd, fake_rate_prompt_rate, simple_abcd
from .chapter import NonpromptConfig, NonpromptMeasurement
from .correction import NonpromptTemplateCorrection
from .smoothing import ExpPolyFit, fit_exp_poly

__all__ = ["REGIONS", "ExpPolyFit", "NonpromptConfig", "NonpromptError", "NonpromptMeasurement",
           "NonpromptTemplateCorrection", "extended_abcd", "fake_rate_prompt_rate", "fit_exp_poly", "simple_abcd"]
