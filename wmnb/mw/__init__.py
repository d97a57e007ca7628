"""Chapter 08: the W-boson mass from the muon (eta, pT, charge) distribution.

Modules, in data-flow order:

* :mod:`~wmnb.mw.breitwigner` – running-width Breit–Wigner mass weights (Γ ∝ M³);
* :mod:`~wmnb.mw.binning` – the 48 × 30 × 2 observable, fast filling, cross-check regions;
* :mod:`~wmnb.mw.systematics` – the chapter's own nuisances and the correction hook
  (how chapters 02–07 add theirs without editing this package);
* :mod:`~wmnb.mw.templates` – templates from W skims (the seam to the histogram engine);
* :mod:`~wmnb.mw.model` – a neutral model specification and its ``wmnb.fit`` builder;
* :mod:`~wmnb.mw.fitting` – the chapter's fits (nominal, stat-only, injection, cross-checks);
* :mod:`~wmnb.mw.reffit` – an independent numpy/scipy reference fit;
* :mod:`~wmnb.mw.blinding` – the hidden m_W offset;
* :mod:`~wmnb.mw.chapter` – inputs of a profile, sensitivity and impact tables;
* :mod:`~wmnb.mw.plots`, :mod:`~wmnb.mw.panel` – figures and the interactive panel.
"""
