"""Figures of chapter 09: the helicity templates, the unfolded σ_UL and A_i against prior and
truth, the helicity parameters' pulls and the prior scans."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .binning import COMPONENTS
from .templates import HelicityDecomposition

_LABELS = {"UL": r"$\sigma_{UL}$", **{f"A{i}": rf"$\sigma_{i}$" for i in range(5)}}


def plot_components(dec: HelicityDecomposition, binning: Any, bin_index: int, label: str = "") -> Any:
    """The six components of one generator bin projected on the muon pT and eta, and the sum
    of every component of every bin (plus the out-of-acceptance part) over the nominal."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(20, 6))
    pt, eta = binning.axis("pt"), binning.axis("eta")
    for ic, comp in enumerate(COMPONENTS):
        t = dec.templates[bin_index, ic]
        axes[0].stairs(t.sum(axis=(0, 2)), pt.edges, label=_LABELS[comp])
        axes[1].stairs(t.sum(axis=(1, 2)), eta.edges, label=_LABELS[comp])
    for ax, xl in zip(axes[:2], (pt.label, eta.label)):
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel(xl)
        ax.set_ylabel("expected events")
        ax.legend(fontsize=12, ncol=3)
    fig.suptitle(f"{dec.sample}: the components of the generator bin {label}", fontsize=16)
    nom = dec.nominal.sum(axis=(0, 2))
    tot = dec.total().sum(axis=(0, 2))
    axes[2].stairs(np.where(nom > 0, tot / np.where(nom > 0, nom, 1.0), 1.0), pt.edges, baseline=None,
                   label="Σ components + out of acceptance")
    axes[2].set_ylim(0.99, 1.01)
    axes[2].set_xlabel(pt.label)
    axes[2].set_ylabel("sum / nominal")
    axes[2].legend(fontsize=12)
    fig.tight_layout()
    return fig


def plot_unfolded(rows: Sequence[Mapping[str, Any]], charge: str, absy_bins: Sequence[int] | None = None) -> Any:
    """σ_UL post-fit / pre-fit and A0..A4 against q_T for one charge: post-fit (points),
    the prior (band) and the universe's truth (crosses) when known; one colour per |y| bin."""
    import matplotlib.pyplot as plt

    sel = [r for r in rows if r["charge"] == charge and not r["overflow"]]
    ys = sorted({r["absy"] for r in sel})
    if absy_bins is not None:
        ys = [ys[i] for i in absy_bins if i < len(ys)]
    fig, axes = plt.subplots(2, 3, figsize=(20, 11))
    for iy, yr in enumerate(ys):
        rr = sorted((r for r in sel if r["absy"] == yr), key=lambda r: r["qt"][0])
        x = np.array([0.5 * (r["qt"][0] + r["qt"][1]) for r in rr]) + 0.25 * iy
        colour = f"C{iy}"
        lab = f"{yr[0]:g} < |y| < {yr[1]:g}"
        axes[0, 0].errorbar(x, [r["sigma_ul_ratio"] for r in rr], yerr=[r["sigma_ul_ratio_err"] for r in rr],
                            fmt="o", color=colour, label=lab)
        for i in range(5):
            ax = axes.flat[i + 1]
            pre = np.array([r[f"A{i}_prior"] for r in rr])
            perr = np.array([r[f"A{i}_prior_err"] for r in rr])
            ax.fill_between(x, pre - perr, pre + perr, color=colour, alpha=0.15, step=None)
            ax.errorbar(x, [r[f"A{i}"] for r in rr], yerr=[r[f"A{i}_err"] for r in rr], fmt="o", color=colour)
            if rr and f"A{i}_truth" in rr[0]:
                ax.plot(x, [r[f"A{i}_truth"] for r in rr], "x", color=colour, ms=9)
    axes[0, 0].axhline(1, color="grey", lw=0.8)
    axes[0, 0].set_ylabel(r"$\sigma_{UL}$ post-fit / pre-fit")
    axes[0, 0].legend(fontsize=10)
    for i in range(5):
        axes.flat[i + 1].set_ylabel(f"$A_{i}$")
    for ax in axes.flat:
        ax.set_xlabel(r"$q_T^W$ [GeV]")
    fig.suptitle(f"W{'+' if charge == 'plus' else '−'}: post-fit (points), prior (bands), data universe's truth (×)")
    fig.tight_layout()
    return fig


def plot_helicity_pulls(fit: Any, names: Sequence[str]) -> Any:
    """Post-fit helicity parameters (θ, prior units): value against its constraint, and the
    distribution of θ / constraint-free error."""
    import matplotlib.pyplot as plt

    th = np.array([fit.values[n] for n in names])
    er = np.array([fit.errors[n] for n in names])
    fig, axes = plt.subplots(1, 2, figsize=(18, 6))
    for comp_i, comp in enumerate(COMPONENTS):
        m = np.array([f"_{comp}_" in n for n in names])
        axes[0].scatter(er[m], th[m], s=12, label=_LABELS[comp], color=f"C{comp_i}")
    axes[0].set_xlabel("post-fit uncertainty (prior units)")
    axes[0].set_ylabel(r"post-fit $\theta$ (prior units)")
    axes[0].axhline(0, color="grey", lw=0.5)
    axes[0].legend(ncol=3, fontsize=11)
    axes[1].hist(th, bins=40, range=(-3, 3), histtype="step", lw=2)
    axes[1].set_xlabel(r"post-fit $\theta$ (prior units)")
    axes[1].set_ylabel("parameters")
    fig.tight_layout()
    return fig


def plot_prior_scans(scans: Sequence[Mapping[str, Any]], mw_err: float) -> Any:
    """m_W shift of each prior scan from the helicity fit, in MeV, with the fit's error band."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    y = np.arange(len(scans))
    ax.axvspan(-mw_err, mw_err, color="C0", alpha=0.12, label=r"helicity fit $\pm 1\sigma$")
    ax.plot([s["shift_mev"] for s in scans], y, "o", color="C3")
    ax.set_yticks(y, [s["scan"] for s in scans])
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(r"$\Delta m_W$ from the helicity fit [MeV]")
    ax.legend()
    fig.tight_layout()
    return fig
