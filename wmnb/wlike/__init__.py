"""Chapter 07: the W-like Z mass, the paper's validation of the whole m_W method.

Z→μμ events with one muon treated as a neutrino, fitted in the template muon's (eta, pT, charge)
with the same pipeline, corrections, template builder, model and fitter as the W mass: the
chapter is a configuration of :mod:`wmnb.templatefit`.

* :mod:`~wmnb.wlike.recipe` – the binning (pT up to 60 GeV), processes, built-in nuisances,
  POI layouts and normalisations of the W-like fit;
* :mod:`~wmnb.wlike.chapter` – inputs of a profile, the purity and parity checks, the tables;
* :mod:`~wmnb.wlike.plots` – its own figures (the shared ones are in :mod:`wmnb.templatefit.plots`).
"""

__all__ = ["chapter", "plots", "recipe"]
