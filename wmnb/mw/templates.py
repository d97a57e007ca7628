"""Chapter 08's templates: the W-mass fit as a recipe of the shared template-fit layer.

Everything generic (filling, the correction pipeline, mass variations, template corrections,
smoothing) lives in :mod:`wmnb.templatefit.templates`; this module says what is particular to
the W-mass fit, whose recipe (:class:`~wmnb.templatefit.wmass.WMassRecipe`: the ``w`` selection,
the (eta, pT, charge) binning, the signal processes, the recipe's own nuisances, the POI
layouts and the normalisation uncertainties) it shares with the helicity fit.  :func:`build_templates` keeps the chapter's
call signature.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..templatefit import templates as _tf
from ..templatefit.binning import MASS_POI_LAYOUTS
from ..templatefit.templates import MAX_VARIATION, ProcessTemplate, TemplateSet
from ..templatefit.wmass import BUILTIN_SOURCES, WMassRecipe
from .systematics import MASS_PROCESSES, SIGNAL, MwConfig

#: POI layouts: name -> list of (POI name, region of the bins where the POI moves the signal).
POI_LAYOUTS: dict[str, list[tuple[str, str]]] = MASS_POI_LAYOUTS


def build_templates(samples: Mapping[str, _tf.SampleInput], data: _tf.SampleInput | np.ndarray,
                    config: MwConfig, corrections: Sequence[Any] = (),
                    mass_shifts_mev: Iterable[float] = ()) -> TemplateSet:
    """All templates of the W-mass fit from per-sample columns or chunks of them (``samples``:
    name -> columns or :class:`wmnb.engine.SkimChunks`); ``data`` is a data sample's columns
    (or chunks) or an already filled histogram of shape ``SHAPE``."""
    missing = [s for s in SIGNAL if s not in samples]
    if missing:
        raise KeyError(f"signal samples {missing} are missing: the W-mass fit needs both charges")
    # W→τν follows m_W when it is there (toy universes of the tests may lack it)
    recipe = WMassRecipe(config, signal=tuple(p for p in MASS_PROCESSES if p in samples))
    return _tf.build_templates(recipe, samples, data, corrections, mass_shifts_mev)


def smoothed_mass_variation(ts: TemplateSet, eta_merge: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """±100 MeV signal templates with the relative variation averaged over ``eta_merge`` eta bins
    (see :func:`wmnb.templatefit.templates.smoothed_mass_variation`)."""
    return _tf.smoothed_mass_variation(ts, eta_merge)


__all__ = ["BUILTIN_SOURCES", "MAX_VARIATION", "POI_LAYOUTS", "ProcessTemplate", "TemplateSet", "WMassRecipe",
           "build_templates", "smoothed_mass_variation"]
