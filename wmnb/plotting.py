"""Shared plots: stacked simulation vs data with a ratio panel, pulls, unrolled 3-D histograms.

All functions take ``hist.Hist`` objects (1-D unless stated; use ``h[..., "nominal"]`` to drop
a ``syst`` axis), draw on matplotlib axes and return them, and put the *Synthetic* CMS label on
data plots via :func:`wmnb.style.cms_label`.  Chapters call them instead of re-implementing
stacks and ratios.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .conventions import process_style
from .style import cms_label

# process -> (legend label, colour) lives in wmnb.conventions.PROCESS_STYLE; chapters may group
# processes with :func:`group_processes` (group names such as "wmunu" have a style there too)
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "wmunu": ("wplus_munu", "wminus_munu"),
}


def group_processes(hists: Mapping[str, Any], groups: Mapping[str, Sequence[str]] = DEFAULT_GROUPS) -> dict[str, Any]:
    """Sum histograms of processes into groups (``{"wmunu": ("wplus_munu", "wminus_munu")}``);
    processes not in any group are kept as they are.  Order: first appearance."""
    member = {p: g for g, ps in groups.items() for p in ps}
    out: dict[str, Any] = {}
    for name, h in hists.items():
        key = member.get(name, name)
        out[key] = h.copy() if key not in out else out[key] + h
    return out


def _values_variances(h: Any) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(h.values(), dtype=np.float64)
    var = h.variances()
    return v, (np.asarray(var, dtype=np.float64) if var is not None else v.copy())


def stack_ratio(mc: Mapping[str, Any], data: Any = None, *, xlabel: str = "", ylabel: str = "Events / bin",
                logy: bool = False, ratio_range: tuple[float, float] = (0.8, 1.2), fig: Any = None,
                density_per_bin_width: bool = False, order: str = "ascending", lumi: float | None = 16.8,
                data_label: str = "Data") -> tuple[Any, Any, Any]:
    """Stacked simulation (``{process: hist}``) with data points and a data/simulation ratio panel.

    The ratio panel shows data/simulation with the data statistical error and a grey band for
    the simulation's statistical uncertainty.  ``order="ascending"`` stacks the smallest process
    at the bottom.  Returns ``(fig, ax, rax)``.
    """
    import matplotlib.pyplot as plt
    import mplhep

    if not mc:
        raise ValueError("stack_ratio needs at least one simulated process")
    names = list(mc)
    if order == "ascending":
        names.sort(key=lambda n: float(np.sum(mc[n].values())))
    first = mc[names[0]]
    if first.ndim != 1:
        raise ValueError(f"stack_ratio takes 1-D histograms, got {first.ndim}-D for {names[0]!r} (project or pick syst)")
    edges = first.axes[0].edges
    widths = np.diff(edges) if density_per_bin_width else np.ones(len(edges) - 1)
    if fig is None:
        fig, (ax, rax) = plt.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1), "hspace": 0.06},
                                      figsize=(9, 9))
    else:
        ax, rax = fig.axes[:2]
    vals = [_values_variances(mc[n])[0] / widths for n in names]
    styles = [process_style(n) for n in names]
    mplhep.histplot(vals, bins=edges, stack=True, histtype="fill", label=[s[0] for s in styles],
                    color=[s[1] for s in styles], ax=ax)
    tot, tot_var = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1)
    for n in names:
        v, var = _values_variances(mc[n])
        tot += v
        tot_var += var
    if data is not None:
        dv, dvar = _values_variances(data)
        mplhep.histplot(dv / widths, bins=edges, yerr=np.sqrt(dvar) / widths, histtype="errorbar", color="black",
                        label=data_label, ax=ax)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(tot > 0, dv / tot, np.nan)
            rerr = np.where(tot > 0, np.sqrt(dvar) / tot, np.nan)
        centers = 0.5 * (edges[1:] + edges[:-1])
        rax.errorbar(centers, ratio, yerr=rerr, fmt="o", color="black", markersize=4)
    with np.errstate(divide="ignore", invalid="ignore"):
        band = np.where(tot > 0, np.sqrt(tot_var) / tot, 0.0)
    rax.stairs(1 + band, edges, baseline=1 - band, fill=True, color="grey", alpha=0.4, label="Sim. stat.")
    rax.axhline(1.0, color="black", lw=1, ls="--")
    rax.set_ylim(*ratio_range)
    rax.set_ylabel("Data / Sim.")
    rax.set_xlabel(xlabel)
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    top = max(np.max(tot / widths) if tot.size else 1,
              np.max(_values_variances(data)[0] / widths) if data is not None else 0)
    if logy:
        ax.set_yscale("log")
        bottom = max(1e-1, 0.5 * np.min(tot[tot > 0] / widths[tot > 0])) if np.any(tot > 0) else 0.1
        # leave room for the legend above the highest bin
        ax.set_ylim(bottom, (top if top > 0 else 1) * (top / bottom) ** 0.6 if top > bottom else 10 * bottom)
    else:
        ax.set_ylim(0, 1.7 * top if top > 0 else 1)
    ax.set_xlim(edges[0], edges[-1])
    ax.legend(ncol=2, fontsize="small", loc="upper right")
    cms_label(ax, data=data is not None, lumi=lumi)
    return fig, ax, rax


def pulls(values: Sequence[float], errors: Sequence[float], labels: Sequence[str], *, ax: Any = None,
          truth: Sequence[float] | None = None, xlabel: str = r"(measured $-$ truth) / $\sigma$") -> Any:
    """Horizontal pull plot: ``(values - truth) / errors`` per label with ±1σ / ±2σ bands."""
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    t = np.zeros_like(values) if truth is None else np.asarray(truth, dtype=np.float64)
    p = (values - t) / errors
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 2))
    y = np.arange(len(labels))
    ax.axvspan(-2, 2, color="yellow", alpha=0.4)
    ax.axvspan(-1, 1, color="limegreen", alpha=0.5)
    ax.errorbar(p, y, xerr=np.ones_like(p), fmt="o", color="black")
    ax.set_yticks(y, labels)
    ax.set_xlabel(xlabel)
    ax.axvline(0, color="black", lw=1)
    return ax


def unrolled(hists: Mapping[str, Any], data: Any = None, *, ax: Any = None, ylabel: str = "Events / bin",
             slice_axis: int = 1, label_fmt: str = "{:.1f}") -> Any:
    """Unroll N-D histograms (e.g. pT × eta × charge) into one long axis and plot them as a stack
    (plus data).  Vertical lines separate the slices of axis ``slice_axis``."""
    import matplotlib.pyplot as plt
    import mplhep

    names = list(hists)
    first = hists[names[0]]
    nbins = int(np.prod(first.values().shape))
    edges = np.arange(nbins + 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(16, 6))
    vals = [np.asarray(hists[n].values()).ravel(order="F") for n in names]
    styles = [process_style(n) for n in names]
    mplhep.histplot(vals, bins=edges, stack=True, histtype="fill", label=[s[0] for s in styles],
                    color=[s[1] for s in styles], ax=ax)
    if data is not None:
        dv = np.asarray(data.values()).ravel(order="F")
        mplhep.histplot(dv, bins=edges, yerr=np.sqrt(np.maximum(dv, 0)), histtype="errorbar", color="black",
                        label="Data", ax=ax)
    shape = first.values().shape
    inner = int(np.prod(shape[:slice_axis + 1])) if slice_axis < len(shape) else nbins
    for x in range(inner, nbins, inner):
        ax.axvline(x, color="grey", lw=0.5)
    ax.set_xlim(0, nbins)
    ax.set_xlabel("Unrolled bin")
    ax.set_ylabel(ylabel)
    ax.legend(ncol=3, fontsize="small")
    cms_label(ax, data=data is not None)
    return ax
