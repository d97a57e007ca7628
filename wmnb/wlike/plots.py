"""Figures of chapter 07: the m_Z templates' mass variation and the cross-check splits."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def plot_mass_variation(ts: Any, step_mev: float | None = None) -> Any:
    """±step m_Z templates over nominal in the template muon's pT, per charge."""
    import matplotlib.pyplot as plt

    from wmnb.style import cms_label

    step = step_mev or ts.recipe.mass_step_mev
    edges = ts.binning.axis("pt").edges
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    for iq, (ax, name) in enumerate(zip(axes, ("negative", "positive"))):
        for p in ts.signal:
            nom = ts.processes[p].nominal[..., iq].sum(axis=0)
            safe = np.where(nom > 0, nom, 1.0)
            for tmpl, lab in ((ts.mass_up, f"+{step:g} MeV"), (ts.mass_down, f"−{step:g} MeV")):
                ax.stairs(tmpl[p][..., iq].sum(axis=0) / safe, edges, baseline=None, label=f"$m_Z$ {lab}")
        ax.axhline(1, color="grey", lw=0.5)
        ax.set_xlabel(r"template muon $p_T$ [GeV]")
        ax.legend(title=f"{name} template muon", loc="upper left")
        cms_label(ax, data=False)
    axes[0].set_ylabel("variation / nominal")
    fig.tight_layout()
    return fig


def plot_splits(rows: Sequence[Mapping[str, Any]], reference: Mapping[str, tuple[float, float]] | None = None) -> Any:
    """The cross-checks as differences (MeV) with their errors, next to the paper's where given
    (``reference``: check name -> (value, error))."""
    import matplotlib.pyplot as plt

    reference = reference or {}
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.5))
    y = np.arange(len(rows))
    ax.errorbar([r["value"] for r in rows], y, xerr=[r["error"] for r in rows], fmt="ko", ms=4, label="this book")
    shown = [(i, *reference[r["check"]]) for i, r in enumerate(rows) if r["check"] in reference]
    for k, (i, v, e) in enumerate(shown):
        ax.errorbar(v, i + 0.2, xerr=e, fmt="s", color="tab:red", ms=4, label="paper" if k == 0 else None)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, [f"{r['check']}: {r['quantity']}" for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("difference [MeV]")
    if reference:
        ax.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    return fig
