"""The fits of chapter 08 on the shared template-fit layer (:mod:`wmnb.templatefit.fitting`):
the nominal fit, the data-statistics-only fit, the injection scan, random starts, and the
chapter's own cross-checks."""
from __future__ import annotations

from typing import Any

from ..templatefit.fitting import (TemplateFit, cross_check_fits, difference, fitter_available, gof_toys, injection_scan,
                                   random_starts, run_fit, stat_only)
from ..templatefit.templates import TemplateSet

#: The fit result the chapter works with (the shared layer's).
MwFit = TemplateFit

CROSS_CHECKS: dict[str, dict[str, Any]] = {
    "charge": {"pois": "charge"},
    "etasign": {"pois": "etasign"},
    "centralforward": {"pois": "centralforward"},
    "pt27-55": {"region": "pt27-55"},
    "pt28-54": {"region": "pt28-54"},
    "pt30-56": {"region": "pt30-56"},
    "pt26-50": {"region": "pt26-50"},
    "norm_floating": {"float_norm": True},
}


def cross_checks(ts: TemplateSet, which: list[str] | None = None, nominal: TemplateFit | None = None,
                 **kw: Any) -> dict[str, TemplateFit]:
    """The chapter's cross-check fits (:data:`CROSS_CHECKS`), see
    :func:`wmnb.templatefit.fitting.cross_check_fits`."""
    return cross_check_fits(ts, CROSS_CHECKS, which, nominal, **kw)


__all__ = ["CROSS_CHECKS", "MwFit", "cross_checks", "difference", "fitter_available", "gof_toys", "injection_scan",
           "random_starts", "run_fit", "stat_only"]
