"""Chapter 08: the W-boson mass from the muon (eta, pT, charge) distribution.

Modules, in data-flow order:

The chapter is a thin user of the shared template-fit layer, :mod:`wmnb.templatefit` (binning
objects, templates on the one correction pipeline, the model spec, the independent reference
fit, blinding, fits and scans).  What is particular to the W mass:

* :mod:`~wmnb.mw.binning` – the 48 × 30 × 2 observable and its cross-check regions;
* :mod:`~wmnb.mw.systematics` – the chapter's own nuisances and the correction hook
  (how chapters 02–07 add theirs without editing this package);
* :mod:`~wmnb.mw.templates` – the W-mass recipe of the template-fit layer;
* :mod:`~wmnb.mw.model` – its model (POI layouts for one mass, charge, eta splits);
* :mod:`~wmnb.mw.fitting` – the chapter's fits (nominal, stat-only, injection, cross-checks);
* :mod:`~wmnb.mw.chapter` – inputs of a profile, sensitivity and impact tables;
* :mod:`~wmnb.mw.plots`, :mod:`~wmnb.mw.panel` – figures and the interactive panel.
"""

__all__ = ["binning", "chapter", "fitting", "model", "panel", "plots", "systematics", "templates"]
