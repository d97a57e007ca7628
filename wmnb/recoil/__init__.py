"""The hadronic recoil calibration (chapter 04).

* :mod:`~wmnb.recoil.inputs` — the Z→μμ recoil of data and simulation through the correction
  pipeline, the simulated q_T reweighted to the data, the backgrounds' share;
* :mod:`~wmnb.recoil.morphing` — conditional quantiles (binned in q_T, or xgboost quantile
  regressions), monotone CDFs with exponential tails, the chained quantile morphing;
* :mod:`~wmnb.recoil.dnn` — the semi-parametric DNN recoil regression (TensorFlow: the per-event
  density of the PF recoil's log-scale and angle corrections, double-sided exponential-tailed
  Gaussians; PIT and summed-pdf closures; not imported here, so the package loads without TF);
* :mod:`~wmnb.recoil.correction` — the published ``recoil`` correction and its model files;
* :mod:`~wmnb.recoil.chapter` — what the notebook runs: the models of both methods, the Z closure
  on held-out events and against the truth; :mod:`~wmnb.recoil.plots` its figures.

Still to come (issue 16): the recoil nuisances, the DNN trained on the universe's Z and W and shown
in the book, and the m_T cross-check of m_W.
"""
from __future__ import annotations

from .chapter import RecoilCalibration, RecoilConfig, calibrate
from .inputs import RecoilSample, load_z
from .morphing import BDTQuantiles, BinnedQuantiles, ChainedMorph, MorphingError

__all__ = ["BDTQuantiles", "BinnedQuantiles", "ChainedMorph", "MorphingError", "RecoilCalibration", "RecoilConfig",
           "RecoilSample", "calibrate", "load_z"]
