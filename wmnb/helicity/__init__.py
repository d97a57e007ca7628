"""The helicity fit (chapter 09): m_W with the W production measured in situ.

* :mod:`~wmnb.helicity.binning` — the generator (q_T, |y|) binning of the helicity parameters;
* :mod:`~wmnb.helicity.templates` — helicity fractions, the recipe with one local variation per
  parameter, the nominal and helicity models from one template build, the decomposition;
* :mod:`~wmnb.helicity.chapter` — what the notebook runs (fits, unfolding, prior scans,
  injection test, summary) and :mod:`~wmnb.helicity.plots` its figures.
"""
from __future__ import annotations

from .binning import COMPONENTS, HelicityBinning, HelicityBinningError, parse_binning

__all__ = ["COMPONENTS", "HelicityBinning", "HelicityBinningError", "parse_binning"]
