"""Plots of chapter 06 (each takes results of :mod:`wmnb.theory.chapter` and creates a figure)."""
from __future__ import annotations


import matplotlib.pyplot as plt
from matplotlib.figure import Figure
import numpy as np

from ..style import cms_label
from .chapter import AngularClosure, FsrFit, GeneratorAnalysis, QtClosure, ZFit
from .prediction import QtPrediction, nuisances_for

_BOSON_LABEL = {"wplus": r"W$^+$", "wminus": r"W$^-$", "z": "Z"}
_KIND_STYLE = {"tnp": "-", "np": "--", "matching": "-.", "threshold": ":", "fixed_order": (0, (5, 1))}


def _centres(edges: np.ndarray) -> np.ndarray:
    return 0.5 * (edges[1:] + edges[:-1])


def plot_angular_coefficients(gen: GeneratorAnalysis, boson: str = "wplus", absy_bins: tuple[int, ...] = (0, 3, 5)) -> Figure:
    """A0..A4 against q_T in a few |y| bins: the moments (points) and the simulation's card
    averaged over each bin's events (lines)."""
    m, ref = gen.moments[boson], gen.truth[boson]
    x = _centres(m.qt_edges)
    fig, axes = plt.subplots(1, 5, figsize=(30, 6.5), sharex=True)
    for i, ax in enumerate(axes):
        for k, j in enumerate(absy_bins):
            val, err = m.coefficient(f"A{i}")
            lo, hi = m.absy_edges[j], m.absy_edges[j + 1]
            ax.errorbar(x + 0.25 * (k - 1), val[:, j], yerr=err[:, j], fmt="o", ms=4, color=f"C{k}",
                        label=f"{lo:g} < |y| < {hi:g}")
            ax.plot(x, ref[:, j, i], color=f"C{k}", lw=1.5)
        ax.set_xlabel(r"$q_T$ [GeV]")
        ax.set_ylabel(f"$A_{i}$")
        ax.set_title(f"{_BOSON_LABEL[boson]}: $A_{i}$ (points: moments, lines: card)", fontsize=14)
    axes[0].legend(fontsize=11)
    fig.tight_layout()
    return fig


def plot_lam_tung(gen: GeneratorAnalysis) -> Figure:
    """A0 − A2 against q_T for each boson (|y|-bin average with errors; lines: the simulation's
    card): zero for Lam–Tung."""
    fig, ax = plt.subplots(figsize=(10, 7))
    for k, (boson, m) in enumerate(gen.moments.items()):
        d, e = m.lam_tung()
        w = np.where(np.isfinite(e) & (e > 0), 1.0 / np.where(e > 0, e, 1.0) ** 2, 0.0)
        mean = np.sum(np.nan_to_num(d) * w, axis=1) / np.maximum(w.sum(axis=1), 1e-300)
        err = 1.0 / np.sqrt(np.maximum(w.sum(axis=1), 1e-300))
        ax.errorbar(_centres(m.qt_edges) + 0.3 * (k - 1), mean, yerr=err, fmt="o", color=f"C{k}",
                    label=_BOSON_LABEL[boson])
        ref = gen.truth[boson][..., 0] - gen.truth[boson][..., 2]
        ax.plot(_centres(m.qt_edges), np.sum(ref * w, axis=1) / np.maximum(w.sum(axis=1), 1e-300), color=f"C{k}", lw=1)
    ax.axhline(0.0, color="k", lw=1)
    ax.set_xlabel(r"$q_T$ [GeV]")
    ax.set_ylabel(r"$A_0 - A_2$ (average over $|y| < 3$)")
    ax.legend()
    cms_label(ax, data=False, lumi=None)
    return fig


def plot_nuisance_effects(pred: QtPrediction, boson: str = "wplus", absy: float = 0.5) -> Figure:
    """Relative change of the q_T spectrum at |y| ≈ ``absy`` for every nuisance at +1σ: where
    each acts (log q_T axis)."""
    qe = np.concatenate([np.arange(0.0, 30.0, 1.0), np.arange(30.0, 100.0, 5.0), [100.0, 150.0, 200.0]])
    ye = np.array([absy - 0.125, absy + 0.125])
    central = pred.fractions(boson, qe, ye)[0]
    fig, ax = plt.subplots(figsize=(13, 8))
    for k, n in enumerate(nuisances_for(boson)):
        up = pred.fractions(boson, qe, ye, {n.name: 1.0})[0]
        ax.plot(_centres(qe), 100 * (up / central - 1.0), ls=_KIND_STYLE[n.kind], color=f"C{k % 10}", label=n.name)
    ax.set_xscale("log")
    ax.set_xlabel(r"$q_T$ [GeV]")
    ax.set_ylabel(r"change at $+1\sigma$ [%]")
    ax.set_title(f"{_BOSON_LABEL[boson]}, |y| = {absy:g}: the prediction's nuisances", fontsize=15)
    ax.legend(fontsize=9, ncol=3)
    return fig


def plot_qt_closure(closure: QtClosure, boson: str = "wplus", absy_bins: tuple[int, ...] | None = None) -> Figure:
    """Data universe's true q_T spectrum and the simulation over the central prediction, with the
    prediction's 1σ band, in a few |y| bins (default: the first, a middle and the last)."""
    n_y = closure.absy_edges.size - 1
    if absy_bins is None:
        absy_bins = tuple(dict.fromkeys((0, n_y // 2, n_y - 1)))
    qe = closure.qt_edges[:-1]
    x = _centres(qe)
    fig, axes = plt.subplots(1, len(absy_bins), figsize=(8 * len(absy_bins), 6.5), sharey=True)
    for ax, j in zip(np.atleast_1d(axes), absy_bins):
        c = closure.central[boson][j, : x.size]
        b = closure.band[boson][j, : x.size]
        ax.fill_between(x, 1 - b / c, 1 + b / c, step="mid", color="C0", alpha=0.3, label=r"prediction $\pm 1\sigma$")
        ax.step(x, closure.truth[boson][j, : x.size] / c, where="mid", color="C3", label="data universe (truth)")
        ax.step(x, closure.simulation[boson][j, : x.size] / c, where="mid", color="k", alpha=0.6, lw=1,
                label="simulation (before reweighting)")
        ax.axhline(1.0, color="C0")
        lo, hi = closure.absy_edges[j], closure.absy_edges[j + 1]
        ax.set_title(f"{_BOSON_LABEL[boson]}, {lo:g} < |y| < {hi:g}", fontsize=15)
        ax.set_xlabel(r"$q_T$ [GeV]")
        ax.set_ylim(0.75, 1.25)
    np.atleast_1d(axes)[0].set_ylabel("ratio to the central prediction")
    np.atleast_1d(axes)[0].legend(fontsize=12)
    fig.tight_layout()
    return fig


def plot_z_fit(zfit: ZFit, closure: QtClosure | None = None) -> Figure:
    """The Z validation fit: unrolled (|y|, q_T) data with pre- and post-fit predictions, and the
    theory nuisances' post-fit values (against those that reproduce the truth, if given)."""
    fig, (ax0, ax1, ax2) = plt.subplots(3, 1, figsize=(16, 17), gridspec_kw={"height_ratios": [3, 1.3, 3]})
    n = np.arange(zfit.data.size)
    ax0.step(n, zfit.prefit, where="mid", color="C0", label="pre-fit")
    ax0.step(n, zfit.postfit, where="mid", color="C1", label="post-fit")
    ax0.errorbar(n, zfit.data, yerr=np.sqrt(zfit.data), fmt="o", ms=2.5, color="k", label="data")
    ax0.set_yscale("log")
    ax0.set_ylabel("Events / bin")
    ax0.legend()
    nq = zfit.qt_edges.size - 1
    for k in range(1, zfit.absy_edges.size - 1):
        for a in (ax0, ax1):
            a.axvline(k * nq - 0.5, color="gray", lw=0.6)
    safe = np.where(zfit.data > 0, np.sqrt(zfit.data), 1.0)
    ax1.plot(n, (zfit.data - zfit.prefit) / safe, "o", ms=2.5, color="C0", label="pre-fit")
    ax1.plot(n, (zfit.data - zfit.postfit) / safe, "o", ms=2.5, color="C1", label="post-fit")
    ax1.axhline(0, color="k", lw=0.8)
    ax1.set_ylabel("(data − pred.)/σ")
    ax1.set_xlabel(r"bin (|y| blocks of $q_T$ bins)")
    names = [k for k in zfit.pulls]
    vals = np.array([zfit.pulls[k][0] for k in names])
    errs = np.array([zfit.pulls[k][1] for k in names])
    y = np.arange(len(names))
    ax2.errorbar(vals, y, xerr=errs, fmt="o", color="C1", label="Z fit (post-fit)")
    if closure is not None and "z" in closure.theta_truth:
        tt = closure.theta_truth["z"]
        ax2.plot([tt[k][0] if k in tt else np.nan for k in names], y, "x", color="C3", ms=9,
                 label="values reproducing the truth")
    ax2.set_yticks(y, names, fontsize=10)
    ax2.axvline(0, color="k", lw=0.8)
    ax2.fill_betweenx([-0.5, len(names) - 0.5], -1, 1, color="gray", alpha=0.15)
    ax2.set_xlabel(r"$\theta$ (prior: unit Gaussian)")
    ax2.legend(fontsize=12)
    chi2, ndf, p = zfit.gof
    ax0.set_title(f"Z validation: saturated GoF {chi2:.1f} / {ndf}, p = {p:.2f}", fontsize=15)
    fig.tight_layout()
    return fig




def plot_angular_closure(closure: AngularClosure, boson: str = "wplus", absy_bin: int = 3) -> Figure:
    """A_i of the data universe minus the simulation's (truth, bin averages) against the 1σ band
    of the angular (and, if given to the closure, PDF) nuisances, in one |y| bin."""
    qe = closure.qt_edges.copy()
    qe[-1] = min(qe[-1], 2 * qe[-2] - qe[-3])             # a drawable last bin
    x = _centres(qe)
    fig, axes = plt.subplots(1, 5, figsize=(30, 6))
    for i, ax in enumerate(axes):
        b = closure.band[boson][:, absy_bin, i]
        ax.fill_between(x, -b, b, step="mid", color="C0", alpha=0.3, label=r"angular + PDF nuisances $\pm 1\sigma$")
        ax.step(x, closure.difference[boson][:, absy_bin, i], where="mid", color="C3", label="data universe − simulation")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xlabel(r"$q_T$ [GeV]")
        ax.set_ylabel(rf"$\Delta A_{i}$")
    lo, hi = closure.absy_edges[absy_bin], closure.absy_edges[absy_bin + 1]
    axes[0].set_title(f"{_BOSON_LABEL[boson]}, {lo:g} < |y| < {hi:g}", fontsize=15)
    axes[0].legend(fontsize=11)
    fig.tight_layout()
    return fig


def plot_fsr_fit(fsr: FsrFit, truth_ratio: float | None = None) -> Figure:
    """The dimuon mass line shape of the FSR-strength fit: data over the pre- and post-fit
    simulation (the radiative tail is below the peak)."""
    x = _centres(fsr.edges)
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(11, 10), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    ax0.errorbar(x, fsr.data, yerr=np.sqrt(fsr.data), fmt="o", ms=3, color="k", label="data")
    ax0.step(x, fsr.prefit, where="mid", color="C0", label="simulation (pre-fit)")
    ax0.step(x, fsr.postfit, where="mid", color="C1", label="post-fit")
    ax0.set_yscale("log")
    ax0.set_ylabel("Events / 0.5 GeV")
    text = f"FSR strength data/sim. = {fsr.strength_ratio:.3f} ± {fsr.error:.3f}"
    if truth_ratio is not None:
        text += f" (truth {truth_ratio:.3f})"
    ax0.set_title(text, fontsize=15)
    ax0.legend()
    for ref, c in ((fsr.prefit, "C0"), (fsr.postfit, "C1")):
        ax1.plot(x, fsr.data / np.where(ref > 0, ref, 1.0), "o", ms=3, color=c)
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set_ylim(0.85, 1.15)
    ax1.set_ylabel("data / pred.")
    ax1.set_xlabel(r"$m_{\mu\mu}$ [GeV]")
    fig.tight_layout()
    return fig
