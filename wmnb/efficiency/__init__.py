"""Muon efficiencies by tag and probe (chapter 03).

* :mod:`~wmnb.efficiency.binning` — the steps' bins (48 eta × probe pT × charge [× u_∥]): reco,
  tracking, ID, trigger, isolation (with and without trigger) and the second-muon veto's loose ID;
* :mod:`~wmnb.efficiency.tnpfit` — all pass/fail m_μμ fits at once (projected Fisher scoring in
  numpy), the quality rule and its fallbacks, closure pulls at the truth, the iminuit reference loop;
* :mod:`~wmnb.efficiency.measure` — spectra, simulated signal templates, the resolution
  difference, the fits of every model;
* :mod:`~wmnb.efficiency.smoothing` and :mod:`~wmnb.efficiency.scalefactors` — SF smoothing in pT
  (and u_∥) per eta-charge slice, F-test orders, eigen-variations, failing-probe SFs;
* :mod:`~wmnb.efficiency.tables` — the correctionlib (schema v2) artefact;
* :mod:`~wmnb.efficiency.correction` — the published ``muon_efficiency`` weight correction;
* :mod:`~wmnb.efficiency.chapter` — what the notebook runs; :mod:`~wmnb.efficiency.plots` its figures.
"""
from __future__ import annotations

from .binning import STEPS, StepBinning, step_binnings
from .correction import MuonEfficiencyCorrection
from .tables import EfficiencyTables, load_tables, write_tables
from .tnpfit import PassFailInput, PassFailResult, fit_pass_fail, measure_efficiencies

__all__ = ["STEPS", "EfficiencyTables", "MuonEfficiencyCorrection", "PassFailInput", "PassFailResult", "StepBinning",
           "fit_pass_fail", "load_tables", "measure_efficiencies", "step_binnings", "write_tables"]
