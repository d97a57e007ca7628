"""The fits of chapter 08 on the shared template-fit layer (:mod:`wmnb.templatefit.fitting`):
the nominal fit, the data-statistics-only fit, the injection scan, random starts, and the
chapter's own cross-checks."""
from __future__ import annotations

from typing import Any

from ..templatefit.fitting import (TemplateFit, difference, fitter_available, injection_scan, random_starts,
                                   run_fit, stat_only, warm_start)
from ..templatefit.model import make_spec
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
    """The chapter's cross-check fits (see :data:`CROSS_CHECKS`) on the observed data: POIs,
    their errors and correlations only (no nuisance covariance is kept), each started from the
    ``nominal`` fit if given (:func:`~wmnb.templatefit.fitting.warm_start`): their cost stays
    a few Newton steps each at thousands of nuisances."""
    which = list(CROSS_CHECKS) if which is None else which
    kw = {"full_cov": False, "keep_raw": False, **kw}
    out = {}
    for name in which:
        spec = make_spec(ts, **CROSS_CHECKS[name])
        start = warm_start(spec, nominal) if nominal is not None else None
        out[name] = run_fit(spec, start=start, **kw)
    return out


__all__ = ["CROSS_CHECKS", "MwFit", "cross_checks", "difference", "fitter_available", "injection_scan",
           "random_starts", "run_fit", "stat_only"]
