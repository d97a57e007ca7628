"""The systematic uncertainties of the W-mass fit and the hook for the other chapters' corrections.

They are shared with the helicity fit (chapter 09), so they live in the template-fit layer,
:mod:`wmnb.templatefit.wmass` (its docstring has the table of groups); this module keeps the
chapter's names.
"""
from __future__ import annotations

from ..templatefit.wmass import (
    MASS_PROCESSES,
    PROCESSES,
    SIGNAL,
    W_PRODUCTION,
    Z_PRODUCTION,
    MwConfig,
    builtin_variations,
    mass_factors,
)

__all__ = ["MASS_PROCESSES", "PROCESSES", "SIGNAL", "W_PRODUCTION", "Z_PRODUCTION", "MwConfig", "builtin_variations",
           "mass_factors"]
