"""The shared template-fit layer: what chapters 07 (W-like Z), 08 (m_W) and 09 (helicity fit)
configure rather than copy.

* :mod:`~wmnb.templatefit.binning` – :class:`Binning`: any axes, each read from a skim column;
* :mod:`~wmnb.templatefit.breitwigner` – running-width Breit–Wigner mass weights (Γ ∝ M³) of
  any boson's mass templates (the W's of chapters 04 and 08, the Z's of chapter 07);
* :mod:`~wmnb.templatefit.templates` – templates built on the one correction pipeline from a
  chapter's :class:`TemplateRecipe` (selection, binning, signal, built-in variations, mass
  reweighting, regions, POI layouts, normalisations), lazy and local variations, template
  corrections;
* :mod:`~wmnb.templatefit.model` – the neutral :class:`ModelSpec` (any number of POIs) and its
  ``wmnb.fit`` builder;
* :mod:`~wmnb.templatefit.reffit` – the independent numpy/scipy reference fit;
* :mod:`~wmnb.templatefit.fitting` – fits, data-statistics-only fits, injection scans, random starts;
* :mod:`~wmnb.templatefit.blinding` – the hidden offset of a blinded POI;
* :mod:`~wmnb.templatefit.tables` – impact tables next to a reference, cross-check rows.
"""
from __future__ import annotations

from .binning import Axis, Binning
from .fitting import TemplateFit, run_fit
from .model import ModelSpec, make_spec
from .templates import ProcessTemplate, TemplateRecipe, TemplateSet, build_templates

__all__ = ["Axis", "Binning", "ModelSpec", "ProcessTemplate", "TemplateFit", "TemplateRecipe", "TemplateSet",
           "build_templates", "make_spec", "run_fit"]
