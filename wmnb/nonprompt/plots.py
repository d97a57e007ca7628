"""Chapter 05's figures: the regions, the smoothing fits, the non-closure, the SV control region
and the estimate against the truth."""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import matplotlib.pyplot as plt
import numpy as np

from ..conventions import process_style
from ..style import cms_label
from ..templatefit.binning import W_ETA_EDGES, W_PT_EDGES
from .abcd import LETTERS, REGIONS, SIDEBANDS, SIGNAL

F = TypeVar("F", bound=Callable[..., Any])


def _compact(fn: F) -> F:
    """Smaller axis labels, ticks, titles and legends: these figures hold many panels and the
    book style's fonts would crowd them.  (Applied to the finished figure: a ``plt.rc_context``
    around the plotting resets the inline backend in Jupyter, which then shows no figure.)"""
    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        fig = fn(*args, **kwargs)
        for ax in fig.axes:
            ax.xaxis.label.set_size(10)
            ax.yaxis.label.set_size(10)
            ax.title.set_size(9)
            ax.tick_params(labelsize=8)
            legend = ax.get_legend()
            if legend is not None:
                for text in legend.get_texts():
                    text.set_fontsize(7)
        return fig
    return inner  # type: ignore[return-value]


MT_LABELS = {"low": r"$m_T<20$", "mid": r"$20<m_T<40$", "high": r"$m_T>40$ GeV"}


def _region_title(r: str) -> str:
    iso, mt = r.split("_")
    return f"{LETTERS[r]}: iso {'pass' if iso == 'pass' else 'fail'}, {MT_LABELS[mt]}"


def _step(ax: Any, edges: np.ndarray, values: np.ndarray, **kw: Any) -> None:
    ax.stairs(values, edges, **kw)


@_compact
def plot_regions(data: np.ndarray, prompt_by_process: Mapping[str, np.ndarray], true_nonprompt: np.ndarray | None = None
                 ) -> Any:
    """Muon pT in the six regions (summed over eta and charge): data, the stacked prompt
    simulation, and the nonprompt yield data − prompt (with the true one where known)."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 8), sharex=True)
    for r, ax in zip(("fail_low", "fail_mid", "fail_high", "pass_low", "pass_mid", "pass_high"), axes.ravel()):
        i = REGIONS.index(r)
        bottom = np.zeros(len(W_PT_EDGES) - 1)
        for name, h in prompt_by_process.items():
            v = h[i].sum(axis=(0, 2))
            label, colour = process_style(name)
            ax.stairs(bottom + v, W_PT_EDGES, baseline=bottom, fill=True, color=colour, alpha=0.8, label=label)
            bottom = bottom + v
        d = data[i].sum(axis=(0, 2))
        c = 0.5 * (W_PT_EDGES[1:] + W_PT_EDGES[:-1])
        ax.errorbar(c, d, np.sqrt(d), fmt="ko", ms=3, label="data")
        _step(ax, W_PT_EDGES, d - bottom, color="tab:purple", lw=1.5, label="data − prompt")
        if true_nonprompt is not None:
            _step(ax, W_PT_EDGES, true_nonprompt[i].sum(axis=(0, 2)), color="tab:red", ls="--", lw=1.2,
                  label="true nonprompt")
        frac = (d.sum() - bottom.sum()) / d.sum() if d.sum() > 0 else np.nan
        ax.set_title(f"{_region_title(r)}\nnonprompt {100 * frac:.0f} %", fontsize=10)
        ax.set_yscale("log")
    for ax in axes[1]:
        ax.set_xlabel(r"Muon $p_T$ [GeV]")
    axes[0, 0].set_ylabel("Events / GeV")
    axes[1, 0].set_ylabel("Events / GeV")
    axes[0, 0].legend(fontsize=7, ncol=2)
    cms_label(axes[0, 0])
    fig.tight_layout()
    return fig


@_compact
def plot_smoothing(m: Any, slices: Sequence[int]) -> Any:
    """The exp-polynomial fits of the five sidebands and the signal-region prediction for a
    few slices (rows), data − prompt with its Poisson error."""
    sm = m.smoothed
    fig, axes = plt.subplots(len(slices), 6, figsize=(16, 2.6 * len(slices)), sharex=True, squeeze=False)
    c = 0.5 * (W_PT_EDGES[1:] + W_PT_EDGES[:-1])
    for row, s in zip(axes, slices):
        for ax, r in zip(row, (*SIDEBANDS, SIGNAL)):
            if r == SIGNAL:
                ax.plot(c, m.factor * sm.prediction[s], "tab:red", label="corrected prediction")
                ax.plot(c, sm.prediction[s], "tab:red", ls=":", label="extended ABCD")
                i = REGIONS.index(r)
                y = m.sliced["data"][i, s] - m.sliced["prompt"][i, s]
                ax.errorbar(c, y, np.sqrt(m.sliced["data"][i, s] + m.sliced["prompt_sumw2"][i, s]), fmt=".",
                            color="0.5", ms=3, label="data − prompt")
            else:
                i = REGIONS.index(r)
                y = sm.nonprompt[i, s]
                err = np.sqrt(np.maximum(y + sm.offset_var[i, s], 1.0))
                ax.errorbar(c, y, err, fmt="k.", ms=3)
                ax.plot(c, sm.fits[r].values()[s], "tab:blue")
            if s == slices[0]:
                ax.set_title(_region_title(r), fontsize=8)
        row[0].set_ylabel(m.names[s], fontsize=8)
    axes[0, -1].legend(fontsize=6)
    for ax in axes[-1]:
        ax.set_xlabel(r"$p_T$ [GeV]")
    fig.tight_layout()
    return fig


@_compact
def plot_nonclosure(m: Any) -> Any:
    """The non-closure factor (direct / extended-ABCD prediction) in bins of |eta|, charge and
    pT, in the multijet simulation and in the SV control region of data, with the applied factor
    and its normalisation band."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    k, band = m.factor, m.config.norm_uncertainty
    labels = list(dict.fromkeys((r["axis"], r["bin"]) for nc in (m.nonclosure_mc, m.nonclosure_sv) for r in nc.stability))
    x = np.arange(len(labels))
    ax.axhspan(k * (1 - band), k * (1 + band), color="tab:orange", alpha=0.2, label=f"applied {k:.3f} ± {100 * band:.0f} %")
    ax.axhline(k, color="tab:orange")
    for off, nc, label, colour in ((-0.12, m.nonclosure_mc, "multijet simulation", "tab:blue"),
                                   (0.12, m.nonclosure_sv, "SV control region (data)", "k")):
        pos = [labels.index((r["axis"], r["bin"])) for r in nc.stability]
        ax.errorbar(np.array(pos) + off, [r["factor"] for r in nc.stability], [r["error"] for r in nc.stability],
                    fmt="o", color=colour, label=f"{label}: {nc.factor:.3f} ± {nc.error:.3f}")
    ax.set_xticks(x, [f"{a}\n{b}" for a, b in labels], fontsize=8)
    ax.set_ylabel("direct / extended ABCD")
    ax.axhline(0.85, color="0.5", ls=":", label="paper: 0.85")
    ax.legend(fontsize=8)
    cms_label(ax, data=False)
    fig.tight_layout()
    return fig


@_compact
def plot_truth_comparison(closure: Mapping[str, Any], rel_unc: float) -> Any:
    """Left: each estimator's signal-region yield over the truth, with the corrected estimate's
    stated uncertainty; middle/right: the corrected estimate's pT and eta spectra against the
    true nonprompt background."""
    fig = plt.figure(figsize=(15, 5.5))
    grid = fig.add_gridspec(2, 3, height_ratios=[3, 1], width_ratios=[1.3, 1, 1], hspace=0.05, wspace=0.35)
    ax = fig.add_subplot(grid[:, 0])
    est = closure["estimators_over_truth"]
    names = list(est)
    ax.barh(names, [est[n] - 1 for n in names], left=1, color=["0.6"] * (len(names) - 1) + ["tab:red"])
    ax.axvspan(1 - rel_unc, 1 + rel_unc, color="tab:red", alpha=0.15, label="stated uncertainty")
    ax.axvline(1, color="k", lw=0.8)
    ax.set_xlabel("estimate / true nonprompt (signal region)")
    ax.legend(loc="lower right")
    for col, (key, edges, xlabel) in enumerate((("pt", W_PT_EDGES, r"Muon $p_T$ [GeV]"),
                                                 ("eta", W_ETA_EDGES, r"Muon $\eta$")), start=1):
        top, bot = fig.add_subplot(grid[0, col]), fig.add_subplot(grid[1, col])
        true, est_h = closure[f"{key}_true"], closure[f"{key}_estimated"]
        top.stairs(true, edges, color="k", label="truth")
        top.stairs(est_h, edges, color="tab:red", label="corrected extended ABCD")
        top.fill_between(edges[:-1], est_h * (1 - rel_unc), est_h * (1 + rel_unc), step="post", color="tab:red",
                         alpha=0.15)
        top.set_ylabel("nonprompt events / bin")
        top.tick_params(labelbottom=False)
        top.legend()
        ratio = np.where(true > 0, est_h / np.where(true > 0, true, 1.0), np.nan)
        bot.stairs(ratio, edges, color="tab:red")
        bot.fill_between(edges[:-1], ratio * (1 - rel_unc), ratio * (1 + rel_unc), step="post", color="tab:red",
                         alpha=0.15)
        c = 0.5 * (edges[1:] + edges[:-1])
        bot.errorbar(c, np.ones_like(c), np.sqrt(np.maximum(true, 1.0)) / np.maximum(true, 1.0), fmt="none",
                     ecolor="k", lw=0.8)
        bot.axhline(1, color="k", lw=0.8)
        bot.set_ylim(0.8, 1.2)
        bot.set_xlabel(xlabel)
        bot.set_ylabel("est. / truth")
        if col == 1:
            cms_label(top)
    return fig


@_compact
def plot_sv_fit(fit: Mapping[str, Any]) -> Any:
    """The SV control region (signal-region cuts, muon on a secondary vertex): data against the
    prompt simulation plus the corrected extended-ABCD estimate, before and after the fit, in
    pT and eta projections with the ratio."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 6), sharex="col", gridspec_kw={"height_ratios": [3, 1]})
    for col, (axis, edges, xlabel) in enumerate(((1, W_PT_EDGES, r"Muon $p_T$ [GeV]"), (0, W_ETA_EDGES, r"Muon $\eta$"))):
        other = tuple(a for a in (0, 1, 2) if a != axis)
        d = fit["data"].sum(axis=other)
        pre, post, prompt = (fit[k].sum(axis=other) for k in ("prefit", "postfit", "prompt"))
        c = 0.5 * (edges[1:] + edges[:-1])
        top, bot = axes[0, col], axes[1, col]
        top.stairs(prompt, edges, fill=True, color=process_style("wmunu")[1], alpha=0.7, label="prompt")
        top.stairs(pre, edges, color="tab:purple", label="prompt + nonprompt, pre-fit")
        top.stairs(post, edges, color="tab:green", ls="--", label="post-fit")
        top.errorbar(c, d, np.sqrt(d), fmt="ko", ms=3, label="data")
        for v, colour in ((pre, "tab:purple"), (post, "tab:green")):
            bot.stairs(np.where(v > 0, d / np.where(v > 0, v, 1), np.nan), edges, color=colour)
        bot.axhline(1, color="k", lw=0.8)
        bot.set_ylim(0.8, 1.2)
        bot.set_xlabel(xlabel)
        bot.set_ylabel("data / pred.")
    axes[0, 0].legend(fontsize=8)
    axes[0, 0].set_ylabel("Events / bin")
    cms_label(axes[0, 0])
    fig.tight_layout()
    return fig


__all__ = ["plot_nonclosure", "plot_regions", "plot_smoothing", "plot_sv_fit", "plot_truth_comparison"]
