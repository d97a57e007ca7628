"""The ABCD estimators of the nonprompt background, on arrays with the region axis first.

Regions (:data:`REGIONS`, the order of :data:`wmnb.engine.selections.ABCD_REGIONS`): isolation
fail/pass × m_T < 20, 20-40, > 40 GeV.  PHYSICS.md's letters: A = ``fail_low``, B = ``pass_low``,
A_x = ``fail_mid``, B_x = ``pass_mid``, C = ``fail_high`` and D = ``pass_high``, the signal
region.  Every estimator takes the nonprompt yields of the five sidebands (data minus prompt
simulation) and returns the prediction in the signal region:

* :func:`simple_abcd`: the pass/fail ratio is constant in m_T, measured below 40 GeV:
  D = C (B + B_x) / (A + A_x);
* :func:`extended_abcd` (the paper's): the ratio is log-linear in m_T, extrapolated forward from
  the two low-m_T bins, r(> 40) = r(20-40)² / r(< 20):  D = C (B_x / A_x)² (A / B), with
  var D / D² = var C / C² + 4 var A_x / A_x² + 4 var B_x / B_x² + var A / A² + var B / B²;
* :func:`fake_rate_prompt_rate` (the thesis's): the nonprompt isolation efficiency f measured
  below 40 GeV, the prompt one p from simulation above, solved for the nonprompt part of the
  high-m_T data: N_D = f / (p − f) [p N_fail − (1 − p) N_pass].

In log space the extended ABCD is linear, log D = Σ_r c_r log N_r with :data:`LOG_COEFFICIENTS`,
which is how the smoothed estimate combines per-region fits (:mod:`wmnb.nonprompt.smoothing`).
"""
from __future__ import annotations

import numpy as np

from ..engine.selections import ABCD_REGIONS

REGIONS: tuple[str, ...] = ABCD_REGIONS
SIGNAL = "pass_high"
SIDEBANDS: tuple[str, ...] = tuple(r for r in REGIONS if r != SIGNAL)
#: log D = Σ c_r log N_r for the extended ABCD (the sidebands in :data:`SIDEBANDS` order)
LOG_COEFFICIENTS: dict[str, float] = {"fail_low": 1.0, "pass_low": -1.0, "fail_mid": -2.0, "pass_mid": 2.0,
                                      "fail_high": 1.0}
LETTERS = {"fail_low": "A", "pass_low": "B", "fail_mid": "A_x", "pass_mid": "B_x", "fail_high": "C",
           "pass_high": "D"}


class NonpromptError(ValueError):
    """An input the nonprompt estimate cannot use (an empty region, a bad binning ...)."""


def region_index(name: str) -> int:
    """Position of region ``name`` on the region axis."""
    if name not in REGIONS:
        raise NonpromptError(f"unknown region {name!r}; regions are {list(REGIONS)}")
    return REGIONS.index(name)


def _regions(counts: np.ndarray) -> dict[str, np.ndarray]:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape[0] != len(REGIONS):
        raise NonpromptError(f"the region axis must come first with {len(REGIONS)} entries {list(REGIONS)}, "
                             f"got shape {counts.shape}")
    return {r: counts[i] for i, r in enumerate(REGIONS)}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def simple_abcd(counts: np.ndarray) -> np.ndarray:
    """D = C (B + B_x) / (A + A_x) per bin (NaN where the low-m_T fail count is 0)."""
    n = _regions(counts)
    return n["fail_high"] * _ratio(n["pass_low"] + n["pass_mid"], n["fail_low"] + n["fail_mid"])


def extended_abcd(counts: np.ndarray, variances: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """D = C (B_x / A_x)² (A / B) per bin and, given the regions' ``variances``, its variance
    (the module docstring's formula); NaN where a denominator is 0."""
    n = _regions(counts)
    d = n["fail_high"] * _ratio(n["pass_mid"], n["fail_mid"]) ** 2 * _ratio(n["fail_low"], n["pass_low"])
    if variances is None:
        return d, None
    v = _regions(variances)
    rel = sum(LOG_COEFFICIENTS[r] ** 2 * _ratio(v[r], n[r] ** 2) for r in SIDEBANDS)
    return d, d * d * rel


def fake_rate_prompt_rate(nonprompt_low: np.ndarray, data_high: np.ndarray, prompt_high: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thesis's estimate per bin: (N_D, f, p).

    ``nonprompt_low``: (fail, pass) nonprompt yields below 40 GeV (data − prompt), shape (2, ...);
    ``data_high`` and ``prompt_high``: (fail, pass) data and prompt-simulation yields above 40 GeV.
    f = pass / (pass + fail) of the nonprompt below 40 GeV, p the same ratio of the prompt
    simulation above; N_D = f / (p − f) [p N_fail − (1 − p) N_pass] of the data."""
    low, data, prompt = (np.asarray(a, np.float64) for a in (nonprompt_low, data_high, prompt_high))
    f = _ratio(low[1], low[0] + low[1])
    p = _ratio(prompt[1], prompt[0] + prompt[1])
    nd = _ratio(f, p - f) * (p * data[0] - (1.0 - p) * data[1])
    return nd, f, p


__all__ = ["LETTERS", "LOG_COEFFICIENTS", "REGIONS", "SIDEBANDS", "SIGNAL", "NonpromptError", "extended_abcd",
           "fake_rate_prompt_rate", "region_index", "simple_abcd"]
