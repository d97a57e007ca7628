"""Plots of the W-mass chapter: the shared template-fit plots (:mod:`wmnb.templatefit.plots`:
unrolled (eta, pT) distributions, pulls, correlations) and the chapter's mass-injection closure.
"""
from __future__ import annotations

import numpy as np

from ..templatefit.plots import (ETA_MERGE, parameter_vector, per_process, plot_correlations, plot_pulls,
                                 plot_unrolled, unroll)
from ..templatefit.reffit import RefModel

__all__ = ["ETA_MERGE", "RefModel", "parameter_vector", "per_process", "plot_correlations", "plot_injection",
           "plot_pulls", "plot_unrolled", "unroll"]


def plot_injection(points: list[tuple[float, float, float]],
                   reference: list[tuple[float, float, float]] | None = None):
    """Fitted minus injected mass shift for the Asimov injection closure (``reference``: a
    second scan, e.g. with unsmoothed templates, drawn for comparison)."""
    import matplotlib.pyplot as plt

    from wmnb.style import cms_label

    inj, fitted, err = (np.array(v) for v in zip(*points))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": (2, 1)})
    a1.errorbar(inj, fitted, yerr=err, fmt="ko", ms=4)
    a1.plot([-100, 100], [-100, 100], color="tab:blue", lw=0.8)
    a1.set_ylabel("fitted shift [MeV]")
    a2.plot(inj, fitted - inj, "ko", ms=4, label="default templates")
    if reference is not None:
        rinj, rfit, _ = (np.array(v) for v in zip(*reference))
        a2.plot(rinj, rfit - rinj, "s", color="tab:red", ms=4, mfc="none", label="unsmoothed templates")
    a2.axhspan(-0.1, 0.1, color="tab:green", alpha=0.2, label="±0.1 MeV (paper)")
    a2.set_xlabel("injected m_W shift [MeV]")
    a2.set_ylabel("fitted − injected [MeV]")
    a2.legend(fontsize=9, ncol=3)
    cms_label(a1, data=False)
    return fig
