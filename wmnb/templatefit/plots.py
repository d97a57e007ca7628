"""Plots of any template fit on an (eta, pT, charge) observable: unrolled distributions, pulls,
correlations; shared by the W-mass (08), W-like (07) and helicity (09) chapters.

Post-fit predictions are evaluated with the model arithmetic of :mod:`wmnb.templatefit.reffit` at the
fitted parameter values (Barlow–Beeston factors not applied), whichever fitter produced them.
"""
from __future__ import annotations

from collections.abc import Mapping

from typing import Any

import numpy as np

from ..conventions import process_style
from .fitting import TemplateFit
from .model import ModelSpec
from .reffit import RefModel

#: eta bins merged for the unrolled display (48 -> 6 slices of 0.8)
ETA_MERGE = 8


def parameter_vector(model: RefModel, spec: ModelSpec, fit: TemplateFit | None = None,
                     overrides: Mapping[str, float] | None = None) -> np.ndarray:
    """Parameter vector of ``model`` at the fit's values (POIs in MeV converted to θ) with
    ``overrides`` (nuisances in σ, mass POIs in MeV, normalisation POIs as μ)."""
    x = model.start()
    values: dict[str, float] = {}
    if fit is not None:
        values.update(fit.values)
        values.update({n: v[0] for n, v in fit.nuisances.items()})
    values.update(overrides or {})
    for i, name in enumerate(model.names):
        if name in values:
            x[i] = values[name] / spec.mass_step_mev if name in spec.pois else values[name]
    return x


def per_process(spec: ModelSpec, x: np.ndarray, model: RefModel | None = None) -> np.ndarray:
    """Yields [P, B] of ``spec`` at parameter vector ``x``."""
    model = model or RefModel(spec)
    return model.yields(x)


def unroll(flat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked flat bins of an (eta, pT, charge) binning -> (charge, eta slice, pT) unrolled,
    eta merged by :data:`ETA_MERGE` (or by the largest divisor of the eta bins below it)."""
    shape = mask.shape
    full = np.zeros(mask.size)
    full[mask.ravel()] = flat
    merge = _eta_merge(shape[0])
    merged = full.reshape(shape).reshape(shape[0] // merge, merge, *shape[1:]).sum(1)
    return np.concatenate([merged[..., q].ravel() for q in range(shape[2])])


def _eta_merge(n_eta: int) -> int:
    return max(k for k in range(1, ETA_MERGE + 1) if n_eta % k == 0)


def plot_unrolled(spec: ModelSpec, yields: np.ndarray, data: np.ndarray, mass_err_mev: float | None = None,
                  x: np.ndarray | None = None, title: str = "", model: RefModel | None = None,
                  pt_range: tuple[float, float] = (26.0, 56.0), mass_label: str = "m_W") -> Any:
    """Stacked prediction vs data, unrolled in (charge, eta slice, pT), with a ratio panel.

    With ``mass_err_mev`` and ``x`` the ratio panel also shows the effect of ±1σ of the mass
    (``mass_label``); ``pt_range`` labels the pT axis.
    """
    import matplotlib.pyplot as plt

    from wmnb.style import cms_label

    fig, (ax, rax) = plt.subplots(2, 1, figsize=(16, 7), sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    n_eta, n_pt, n_q = spec.mask.shape
    nslice = n_eta // _eta_merge(n_eta)
    edges = np.arange(n_q * n_pt * nslice + 1)
    bottom = np.zeros(edges.size - 1)
    order = np.argsort([y.sum() for y in yields])
    for ip in order:
        u = unroll(yields[ip], spec.mask)
        label, colour = process_style(spec.processes[ip])
        ax.stairs(bottom + u, edges, baseline=bottom, fill=True, color=colour, label=label)
        bottom = bottom + u
    d = unroll(data, spec.mask)
    centres = 0.5 * (edges[1:] + edges[:-1])
    ax.errorbar(centres, d, yerr=np.sqrt(d), fmt="k.", ms=2, lw=0.5, label="Data")
    ax.set_ylabel("Events / bin")
    ax.legend(ncol=5, fontsize=10, loc="upper right")
    ax.text(0.01, 0.95, title, transform=ax.transAxes, va="top", fontsize=14)
    with np.errstate(divide="ignore", invalid="ignore"):
        rax.errorbar(centres, d / bottom, yerr=np.sqrt(d) / bottom, fmt="k.", ms=2, lw=0.5)
        if mass_err_mev and x is not None:
            model = model or RefModel(spec)
            i = model.names.index("mass")
            for sign, ls in ((1, "-"), (-1, "--")):
                xs = x.copy()
                xs[i] += sign * mass_err_mev / spec.mass_step_mev
                alt = unroll(per_process(spec, xs, model).sum(0), spec.mask)
                rax.stairs(alt / bottom, edges, color="tab:blue", ls=ls,
                           label=f"{mass_label} {'+' if sign > 0 else '−'}1σ ({mass_err_mev:.0f} MeV)")
            rax.legend(fontsize=9, ncol=2, loc="lower right")
    rax.axhline(1, color="grey", lw=0.5)
    rax.set_ylim(0.9, 1.1)
    rax.set_ylabel("Data / pred.")
    for k in range(1, n_q * nslice):
        for a in (ax, rax):
            a.axvline(k * n_pt, color="grey", lw=0.4 if k % nslice else 1.2)
    rax.set_xlabel(f"bin: charge (−, +) × {nslice} η slices × {n_pt} p_T bins "
                   f"({pt_range[0]:g}–{pt_range[1]:g} GeV)")
    cms_label(ax)
    return fig


def plot_pulls(fit: TemplateFit, n: int = 40) -> Any:
    """Pulls and constraints of the ``n`` nuisances with the largest |pull| + (1 − constraint)."""
    import matplotlib.pyplot as plt

    items = sorted(fit.nuisances.items(), key=lambda kv: -(abs(kv[1][0]) + (1 - kv[1][1])))[:n]
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(items) + 1.5))
    y = np.arange(len(items))
    ax.errorbar([v[0] for _, v in items], y, xerr=[v[1] for _, v in items], fmt="ko", ms=3)
    ax.axvspan(-1, 1, color="tab:green", alpha=0.15)
    ax.set_yticks(y, [k for k, _ in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(r"$(\hat\theta - \theta_0)/\Delta\theta$")
    ax.set_xlim(-3, 3)
    fig.tight_layout()
    return fig


def plot_correlations(fit: TemplateFit, poi: str = "mass", n: int = 15) -> Any:
    """Correlation matrix of ``poi`` and the ``n − 1`` parameters most correlated with it."""
    import matplotlib.pyplot as plt

    names = sorted(fit.nuisances, key=lambda k: -abs(fit.corr(poi, k)))[: n - 1]
    names = [poi] + names
    mat = np.array([[1.0 if a == b else fit.corr(a, b) for b in names] for a in names])
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    fig.colorbar(im, ax=ax, label="correlation")
    fig.tight_layout()
    return fig
