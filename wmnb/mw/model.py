"""Chapter 08's fit model: the shared layer's :class:`~wmnb.templatefit.model.ModelSpec`.

:func:`make_spec` turns the W templates into a model (the recipe, :class:`wmnb.mw.templates.WMassRecipe`,
supplies the POI layouts :data:`POI_LAYOUTS`, the cross-check regions and the normalisation
uncertainties); :func:`to_builder` hands it to ``wmnb.fit``, :mod:`wmnb.templatefit.reffit` fits
it independently.
"""
from __future__ import annotations

from ..templatefit.model import ModelSpec, asimov, make_spec, to_builder
from .templates import POI_LAYOUTS

__all__ = ["POI_LAYOUTS", "ModelSpec", "asimov", "make_spec", "to_builder"]
