"""Chapter 04's figures: the Z recoil of data and simulation before and after the morphing, and
the measured response and resolution against the truth."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter
import numpy as np

from ..style import cms_label
from .chapter import BinnedMoments

COLOURS = {"data": "k", "simulation": "tab:blue", "binned": "tab:orange", "bdt": "tab:green", "truth": "tab:red"}


def plot_moments(moments: Mapping[str, BinnedMoments], truth: Mapping[str, BinnedMoments] | None = None) -> Any:
    """Response and core widths (half the 16-84 % range) of u_∥ and u_⊥ versus q_T for each
    labelled set of moments (data, simulation, morphed simulation), with the truth cards'
    response and Gaussian-core widths dashed; below, each set's ratio to the data."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    quantities = (("response", r"response $-\langle u_\parallel\rangle/\langle q_T\rangle$"),
                  ("width_par", r"core width $u_\parallel$ [GeV]"), ("width_perp", r"core width $u_\perp$ [GeV]"))
    errs = {"response": "response_err", "width_par": "width_err", "width_perp": "width_err"}
    ref = moments["data"]
    for j, (q, label) in enumerate(quantities):
        top, bottom = axes[0, j], axes[1, j]
        for name, m in moments.items():
            colour = COLOURS.get(name, None)
            top.errorbar(m.qt, getattr(m, q), getattr(m, errs[q]), fmt="o" if name == "data" else "s-", ms=3,
                         color=colour, label=name, lw=1)
            bottom.plot(m.qt, getattr(m, q) / getattr(ref, q), "o-" if name == "data" else "s-", ms=3, color=colour, lw=1)
        for name, t in (truth or {}).items():
            top.plot(t.qt, getattr(t, q), "--", color=COLOURS["truth"] if name == "data" else "tab:purple",
                     label=f"truth ({name})", lw=1)
        top.set_ylabel(label)
        bottom.set_ylabel("/ data")
        bottom.set_xlabel(r"$q_T^{\mu\mu}$ [GeV]")
        bottom.set_ylim(0.8, 1.2)
        bottom.axhline(1.0, color="gray", lw=0.5)
    axes[0, 0].legend(fontsize=8)
    cms_label(axes[0, 0])
    fig.tight_layout()
    return fig


def plot_distributions(qt: Mapping[str, np.ndarray], u: Mapping[str, np.ndarray], weight: Mapping[str, np.ndarray],
                       qt_bins: Sequence[tuple[float, float]], component: int = 0) -> Any:
    """u_∥ (``component`` 0) or u_⊥ (1) in a few q_T bins, every labelled set normalised to the
    data, on a logarithmic scale (the tails are what a mean and a width do not carry)."""
    fig, axes = plt.subplots(1, len(qt_bins), figsize=(3.6 * len(qt_bins), 3.4), squeeze=False)
    name = (r"$u_\parallel$", r"$u_\perp$")[component]
    for ax, (lo, hi) in zip(axes[0], qt_bins):
        sel = {k: (v >= lo) & (v < hi) for k, v in qt.items()}
        vals = u["data"][sel["data"], component]
        if vals.size == 0:
            ax.text(0.5, 0.5, "no data events", ha="center", va="center", transform=ax.transAxes)
            continue
        centre = float(np.median(vals))
        edges = np.linspace(centre - 60, centre + 60, 61)
        n_data = weight["data"][sel["data"]].sum()
        for k in u:
            h = np.histogram(u[k][sel[k], component], edges, weights=weight[k][sel[k]])[0]
            h = h * n_data / max(h.sum(), 1e-300)
            if k == "data":
                ax.errorbar(0.5 * (edges[1:] + edges[:-1]), h, np.sqrt(h), fmt="o", ms=2, color="k", label="data")
            else:
                ax.stairs(h, edges, color=COLOURS.get(k), label=k)
        ax.set_yscale("log")
        ax.set_ylim(0.5, None)
        ax.set_title(f"{lo:g} < $q_T$ < {hi:g} GeV", fontsize=9)
        ax.set_xlabel(f"{name} [GeV]")
    axes[0, 0].legend(fontsize=7)
    cms_label(axes[0, 0])
    fig.tight_layout()
    return fig


def plot_background_fraction(edges: np.ndarray, fraction: np.ndarray, qt_max: float) -> Any:
    """The simulated backgrounds' share of the Z selection versus q_T, with the models' range."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.stairs(100 * fraction, edges, color="tab:brown")
    ax.axvline(qt_max, color="gray", ls="--", label=f"models fitted below {qt_max:g} GeV")
    ax.set_xlabel(r"$q_T^{\mu\mu}$ [GeV]")
    ax.set_ylabel("background in the Z selection [%]")
    ax.legend(fontsize=8)
    cms_label(ax)
    fig.tight_layout()
    return fig


def plot_mt(closure: Any, edges: np.ndarray) -> Any:
    """The W's m_T in data and in the simulation (normalised to the data in the χ² range) before
    and after the recoil correction, with the ratios to the data below."""
    from .chapter import MT_CHI2_RANGE

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    c = 0.5 * (edges[1:] + edges[:-1])
    lo, hi = np.searchsorted(edges, MT_CHI2_RANGE[0]), np.searchsorted(edges, MT_CHI2_RANGE[1])
    top.errorbar(c, closure.data, np.sqrt(closure.data), fmt="o", ms=2.5, color="k", label="data")
    for key, colour, label in (("before", COLOURS["simulation"], "simulation"),
                               ("after", COLOURS["binned"], "simulation, recoil corrected")):
        m = getattr(closure, key)
        k = closure.data[lo:hi].sum() / max(m[lo:hi].sum(), 1e-300)
        top.stairs(k * m, edges, color=colour, label=f"{label} (χ²/ndf {closure.chi2_ndf(key):.1f})")
        with np.errstate(divide="ignore", invalid="ignore"):
            bottom.stairs(k * m / closure.data, edges, color=colour)
    for ax in (top, bottom):
        ax.axvspan(edges[0], MT_CHI2_RANGE[0], color="0.92", zorder=-1)
    top.set_ylabel("events / 2 GeV")
    top.legend(fontsize=8)
    bottom.axhline(1.0, color="gray", lw=0.5)
    bottom.set_ylim(0.8, 1.2)
    bottom.set_ylabel("sim. / data")
    bottom.set_xlabel(r"$m_T$ [GeV]")
    cms_label(top)
    fig.tight_layout()
    return fig


def plot_variation_moments(nominal: BinnedMoments, varied: Mapping[str, BinnedMoments], data: BinnedMoments) -> Any:
    """Each recoil nuisance's change of the morphed simulation's response and core widths versus
    q_T (varied minus nominal), against the data's statistical error (grey band): the scale the
    statistical variations should have."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), sharex=True)
    quantities = (("response", "response_err", r"$\Delta$ response"),
                  ("width_par", "width_err", r"$\Delta$ core width $u_\parallel$ [GeV]"),
                  ("width_perp", "width_err", r"$\Delta$ core width $u_\perp$ [GeV]"))
    cmap = plt.get_cmap("viridis")
    stat = [k for k in varied if k != "recoilMethod"]
    for ax, (q, e, label) in zip(axes, quantities):
        err = getattr(data, e)
        ax.fill_between(data.qt, -err, err, color="0.85", label="data stat. error", step=None)
        for i, name in enumerate(stat):
            ax.plot(nominal.qt, getattr(varied[name], q) - getattr(nominal, q), "-", lw=1,
                    color=cmap(i / max(len(stat) - 1, 1)), label=name)
        if "recoilMethod" in varied:
            ax.plot(nominal.qt, getattr(varied["recoilMethod"], q) - getattr(nominal, q), "k--", lw=1.5,
                    label="recoilMethod (BDT − binned)")
        ax.axhline(0.0, color="gray", lw=0.5)
        ax.set_xlabel(r"$q_T^{\mu\mu}$ [GeV]")
        ax.set_ylabel(label)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False)
    cms_label(axes[0])
    fig.tight_layout(rect=(0.0, 0.14, 1.0, 1.0))
    return fig


def plot_dnn_calibration(closure: Any, bins: int = 20) -> Any:
    """The DNN's calibration on held-out simulated Z events: the PIT of both targets (flat when
    calibrated) and the sum of the predicted densities against the histogram of the true targets."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    names = (r"$\ln(|H|/|u_{PF}|)$", r"$\Delta\phi(H, u_{PF})$")
    w = closure.weight
    for j in range(2):
        ax = axes[j]
        h, e = np.histogram(closure.pit[:, j], bins, (0.0, 1.0), weights=w)
        h2, _ = np.histogram(closure.pit[:, j], bins, (0.0, 1.0), weights=w**2)
        norm = bins / h.sum()
        ax.errorbar(0.5 * (e[1:] + e[:-1]), h * norm, np.sqrt(h2) * norm, fmt="o", ms=3, color="k")
        ax.axhline(1.0, color="tab:red", lw=1)
        ax.set_ylim(0.5, 1.5)
        ax.set_xlabel(f"PIT of {names[j]}")
        ax.set_ylabel("density")
        ax = axes[2 + j]
        grid = closure.grid[:, j]
        edges = np.linspace(grid[0], grid[-1], 61)
        h, _ = np.histogram(closure.targets[:, j], edges, weights=w)
        ax.stairs(h, edges, color="k", label="true targets")
        width = edges[1] - edges[0]
        ax.plot(grid, closure.summed_pdf[:, j] * width, color="tab:green", label=r"$\sum_i f_i$ (DNN)")
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(names[j])
        ax.set_ylabel("events / bin")
        ax.legend(fontsize=8)
    cms_label(axes[0])
    fig.tight_layout()
    return fig


def plot_estimator_resolution(resolution: Mapping[str, BinnedMoments]) -> Any:
    """Response and response-scaled resolution, sqrt(width_∥² + width_⊥²) / response, of each
    recoil estimator along the generator boson, per generator q_T bin."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    colours = {"PF": "tab:blue", "track-only": "tab:orange", "PUPPI": "tab:purple", "DNN": "tab:green"}
    for name, m in resolution.items():
        axes[0].plot(m.qt, m.response, "o-", ms=3, lw=1, color=colours.get(name), label=name)
        axes[1].plot(m.qt, np.hypot(m.width_par, m.width_perp) / m.response, "o-", ms=3, lw=1, color=colours.get(name))
    axes[0].axhline(1.0, color="gray", lw=0.5)
    axes[0].set_ylabel(r"response $-\langle u_\parallel\rangle/\langle q_T\rangle$")
    axes[1].set_ylabel(r"$(\sigma_\parallel^2+\sigma_\perp^2)^{1/2}$ / response [GeV]", fontsize=11)
    for ax in axes:
        ax.set_xlabel(r"$q_T^{gen}$ [GeV]")
    axes[0].legend(fontsize=8)
    cms_label(axes[0])
    fig.tight_layout()
    return fig


def plot_mt_templates(sets: Mapping[str, Any]) -> Any:
    """The m_T of the cross-check fits: data against the summed simulation (normalised to the
    data) for each recoil definition, and their ratio.  The DNN's m_T is a different variable
    (in data and simulation alike), so each set has its own data."""
    fig, axes = plt.subplots(2, len(sets), figsize=(4.6 * len(sets), 5.2), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.2]})
    for j, (label, ts) in enumerate(sets.items()):
        edges = ts.binning.axes[0].edges
        centres = 0.5 * (edges[1:] + edges[:-1])
        pred = ts.prediction()
        k = ts.data.sum() / max(pred.sum(), 1e-300)
        top, bottom = axes[0, j], axes[1, j]
        top.stairs(k * pred, edges, color="tab:blue", label="simulation")
        top.errorbar(centres, ts.data, np.sqrt(ts.data), fmt="o", ms=2.5, color="k", label="data")
        top.text(0.97, 0.72, label, ha="right", transform=top.transAxes, fontsize=10)
        top.set_ylabel("events / 2 GeV")
        with np.errstate(divide="ignore", invalid="ignore"):
            bottom.errorbar(centres, ts.data / (k * pred), np.sqrt(ts.data) / (k * pred), fmt="o", ms=2.5, color="k")
        bottom.axhline(1.0, color="gray", lw=0.5)
        bottom.set_ylim(0.9, 1.1)
        bottom.set_xlabel(r"$m_T$ [GeV]")
        bottom.set_ylabel("data / sim.")
    axes[0, 0].legend(fontsize=8)
    cms_label(axes[0, 0])
    fig.tight_layout()
    return fig


__all__ = ["plot_background_fraction", "plot_distributions", "plot_dnn_calibration", "plot_estimator_resolution",
           "plot_moments", "plot_mt", "plot_mt_templates", "plot_variation_moments"]
