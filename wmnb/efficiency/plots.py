"""Figures of chapter 03."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from ..style import cms_label
from . import tnpfit
from .chapter import EfficiencyMeasurement, StepClosure
from .measure import MODELS
from .scalefactors import slice_of


def _zoom(ax: Any, values: np.ndarray, errors: np.ndarray) -> None:
    """y range around the points that carry information (not the bins with huge errors)."""
    v, e = np.asarray(values, float), np.asarray(errors, float)
    ok = np.isfinite(v) & np.isfinite(e)
    if ok.sum() < 2:
        return
    med = float(np.median(e[ok]))
    good = ok & (e < 3 * med)
    lo, hi = float(np.min(v[good] - e[good])), float(np.max(v[good] + e[good]))
    pad = 0.15 * max(hi - lo, 1e-3)
    ax.set_ylim(lo - pad, hi + pad)


def plot_sf_vs_pt(meas: EfficiencyMeasurement, step: str, closure: StepClosure, eta_bins: Sequence[int],
                  charge: int = 1, upar_bin: int | None = None) -> Any:
    """Efficiencies (data, simulation) and the SF with its smoothing band and the truth, vs pT,
    for a few eta bins."""
    s = meas.scale_factors[step]
    bn = s.binning
    shape = bn.shape
    iq = bn.charges.index(charge) if len(bn.charges) == 2 else 0
    iu = (shape[3] // 2 if upar_bin is None else upar_bin) if len(shape) == 4 else None
    c = bn.centres()
    fig, axes = plt.subplots(2, len(eta_bins), figsize=(4.2 * len(eta_bins), 6.4), sharex=True,
                             gridspec_kw={"height_ratios": [1, 1]}, squeeze=False)
    fit = s.smooth["nominal"]
    pt_fine = np.linspace(bn.pt_edges[0], bn.pt_edges[-1], 200)
    for j, ie in enumerate(eta_bins):
        def pick(a: np.ndarray, ie: int = ie) -> np.ndarray:
            a = np.asarray(a).reshape(shape)[ie, :, iq]
            return a[:, iu] if iu is not None else a
        ax, bx = axes[0, j], axes[1, j]
        ax.errorbar(c["pt"], pick(s.eff_data["nominal"]), pick(s.eff_data_err["nominal"]), fmt="o", ms=3, color="k", label="data (fit)")
        ax.errorbar(c["pt"], pick(s.eff_mc), pick(s.eff_mc_err), fmt="s", ms=3, color="tab:blue", label="simulation")
        ax.plot(c["pt"], pick(closure.eff_true_data), "--", color="tab:red", label="truth (data)")
        ax.text(0.97, 0.05, f"{step}: {bn.eta_edges[ie]:.2f} < η < {bn.eta_edges[ie + 1]:.2f}"
                + (f", q = {charge:+d}" if len(bn.charges) == 2 else "")
                + (rf", $u_\parallel$ bin {iu}" if iu is not None else ""), fontsize=8, ha="right",
                transform=ax.transAxes)
        ax.set_ylabel("efficiency")
        _zoom(ax, pick(s.eff_data["nominal"]), pick(s.eff_data_err["nominal"]))
        sl = int(slice_of(bn, np.array([c["eta"][ie]]), np.array([charge]))[0])
        up = np.full(pt_fine.size, c["upar"][iu]) if iu is not None else None
        nom = fit.evaluate(np.full(pt_fine.size, sl), pt_fine, up)
        band = fit.band(np.full(pt_fine.size, sl), pt_fine, up)
        bx.errorbar(c["pt"], pick(s.sf["nominal"]), pick(s.sf_err["nominal"]), fmt="o", ms=3, color="k", label="measured SF")
        bx.fill_between(pt_fine, nom - band, nom + band, color="tab:orange", alpha=0.35, lw=0)
        bx.plot(pt_fine, nom, color="tab:orange", label=f"smoothed (order {fit.order_pt})")
        bx.plot(c["pt"], pick(closure.sf_true), "--", color="tab:red", label="truth SF")
        bx.set_xlabel(r"probe $p_T$ [GeV]")
        bx.set_ylabel("data / simulation")
        _zoom(bx, pick(s.sf["nominal"]), pick(s.sf_err["nominal"]))
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=8)
    cms_label(axes[0, 0])
    fig.tight_layout()
    return fig


def plot_sf_maps(meas: EfficiencyMeasurement, charge: int = 1) -> Any:
    """Smoothed SF in (eta, pT) for every step (u_∥ bin in the middle for trigger, isolation)."""
    steps = list(meas.scale_factors)
    fig, axes = plt.subplots(1, len(steps), figsize=(3.6 * len(steps), 3.4), squeeze=False)
    for ax, step in zip(axes[0], steps):
        s = meas.scale_factors[step]
        bn = s.binning
        sm = s.smoothed().reshape(bn.shape)
        iq = bn.charges.index(charge) if len(bn.charges) == 2 else 0
        a = sm[:, :, iq]
        if a.ndim == 3:
            a = a[:, :, a.shape[2] // 2]
        m = ax.pcolormesh(bn.eta_edges, bn.pt_edges, a.T, cmap="RdBu_r", vmin=0.9, vmax=1.1, shading="flat")
        ax.text(0.03, 0.95, step, fontsize=10, va="top", transform=ax.transAxes)
        ax.set_xlabel(r"$\eta$")
        if ax is axes[0, 0]:
            ax.set_ylabel(r"$p_T$ [GeV]")
    fig.colorbar(m, ax=axes[0].tolist(), label="smoothed SF", shrink=0.9)
    return fig


def _yield_average(v: np.ndarray, e: np.ndarray | None, n: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Average over every axis but the last (u_par) with weights ``n`` (the bins' signal yields)."""
    axes = tuple(range(n.ndim - 1))
    raw = np.asarray(v, float).reshape(n.shape)
    n = np.where(np.isfinite(raw), n, 0.0)           # bins without a value do not count
    vv = np.nan_to_num(raw)
    tot = n.sum(axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = (n * vv).sum(axes) / tot
        if e is None:
            return m, None
        ee = np.nan_to_num(np.asarray(e, float).reshape(n.shape))
        return m, np.sqrt((n**2 * ee**2).sum(axes)) / tot


def plot_upar(meas: EfficiencyMeasurement, closures: Mapping[tuple[str, str], StepClosure]) -> Any:
    """Trigger and isolation efficiency versus u_∥: every (eta, pT, charge) bin's fitted ε
    averaged with its fitted signal yield as weight (data), the simulation's counting with the
    same weights, and the truth."""
    steps = [s for s in ("trigger", "isolation", "isolation_notrig")
             if s in meas.scale_factors and meas.scale_factors[s].binning.upar_edges is not None]
    fig, axes = plt.subplots(1, max(len(steps), 1), figsize=(5.2 * max(len(steps), 1), 3.8), squeeze=False)
    for ax, step in zip(axes[0], steps):
        s = meas.scale_factors[step]
        bn = s.binning
        ue = np.asarray(bn.upar_edges)
        uc = 0.5 * (ue[1:] + ue[:-1])
        res = meas.data[step].results["nominal"]
        n = np.where(res.status <= 2, res.values[:, 0], 0.0).reshape(bn.shape)
        cl = closures[(step, "data")]
        for lab, v, e, col, mk in (("data (fits)", s.eff_data["nominal"], s.eff_data_err["nominal"], "k", "o"),
                                   ("simulation", s.eff_mc, s.eff_mc_err, "tab:blue", "s")):
            m, err = _yield_average(v, e, n)
            ax.errorbar(uc, m, err, xerr=0.5 * np.diff(ue), fmt=mk, ms=4, color=col, label=lab)
        m, _ = _yield_average(cl.eff_true_data, None, n)
        ax.plot(uc, m, "--", marker="_", color="tab:red", label="truth (data)")
        ax.set_xlabel(r"$u_\parallel$ [GeV]")
        ax.set_ylabel(f"{step} efficiency")
        ax.legend(fontsize=8)
        cms_label(ax)
    fig.tight_layout()
    return fig


def plot_fits(meas: EfficiencyMeasurement, step: str, bins: Sequence[int]) -> Any:
    """Pass and fail spectra of a few bins with the fitted signal + background."""
    m = meas.data[step]
    inp, res = m.inputs["nominal"], m.results["nominal"]
    fig, axes = plt.subplots(2, len(bins), figsize=(4.0 * len(bins), 6.0), squeeze=False)
    c = inp.centres
    bn = meas.binnings[step]
    for j, b in enumerate(bins):
        rows = np.array([b])
        sp, bp, sf, bf = tnpfit.components(inp.subset(rows), res.values[rows], MODELS["nominal"][1])
        eps = res.eff[b]
        idx = np.unravel_index(b, bn.shape)
        for i, (obs, sig, bkg, lab) in enumerate(((inp.n_pass[b], sp[0], bp[0], "pass"),
                                                  (inp.n_fail[b], sf[0], bf[0], "fail"))):
            ax = axes[i, j]
            ax.errorbar(c, obs, np.sqrt(obs), fmt="o", ms=2.5, color="k", label="data")
            ax.stairs(sig + bkg, inp.mass_edges, color="tab:orange", label="signal + background")
            ax.stairs(bkg, inp.mass_edges, color="tab:gray", ls="--", label="background")
            ax.text(0.97, 0.95, f"{step} {lab}\nη bin {idx[0]}, $p_T$ {bn.pt_edges[idx[1]]:g}-{bn.pt_edges[idx[1] + 1]:g}",
                    fontsize=8, ha="right", va="top", transform=ax.transAxes)
            ax.set_xlabel(r"$m_{\mu\mu}$ [GeV]")
        axes[0, j].text(0.03, 0.92, f"ε = {eps:.4f} ± {res.eff_err[b]:.4f}\n{tnpfit.STATUS[int(res.status[b])]}",
                        transform=axes[0, j].transAxes, fontsize=8, va="top")
    axes[1, 0].legend(fontsize=7, loc="upper left")
    cms_label(axes[0, 0])
    fig.tight_layout()
    return fig


def plot_failing_sums(meas: EfficiencyMeasurement, step: str) -> Any:
    """Per pT bin, the failing probes summed over the other bins with the sum of the fitted
    signal and background (and, in the title, the failing background's turn-on if it took one):
    where the per-bin fits' background shape is wrong the sums show it."""
    m = meas.data[step]
    inp, res = m.inputs["nominal"], m.results["nominal"]
    bn = meas.binnings[step]
    turn = m.turn_on.get("nominal")
    _, _, sf, bf = tnpfit.components(inp, res.values, MODELS["nominal"][1])
    fitted = res.status <= 2
    pt_bin = np.unravel_index(np.arange(bn.n_bins), bn.shape)[1]
    k = bn.pt_edges.size - 1
    ncol = min(k, 4)
    fig, axes = plt.subplots(-(-k // ncol), ncol, figsize=(3.6 * ncol, 2.9 * -(-k // ncol)), squeeze=False)
    for j, ax in enumerate(axes.ravel()):
        if j >= k:
            ax.set_axis_off()
            continue
        rows = fitted & (pt_bin == j)
        obs = inp.n_fail[rows].sum(0)
        sig, bkg = np.nan_to_num(sf[rows]).sum(0), np.nan_to_num(bf[rows]).sum(0)
        ax.errorbar(inp.centres, obs, np.sqrt(obs), fmt="o", ms=2, color="k", label="failing probes")
        ax.stairs(sig + bkg, inp.mass_edges, color="tab:orange", label="signal + background")
        ax.stairs(bkg, inp.mass_edges, color="tab:gray", ls="--", label="background")
        note = ""
        if turn is not None and np.isfinite(turn.position[j]):
            note = f"\nturn-on α {turn.position[j]:g}, β {turn.width[j]:g} GeV"
        ax.set_title(f"{step}: $p_T$ {bn.pt_edges[j]:g}-{bn.pt_edges[j + 1]:g} GeV{note}", fontsize=8)
        ax.set_xlabel(r"$m_{\mu\mu}$ [GeV]", fontsize=8)
        # logarithmic: the background's shape under a peak a hundred times higher
        ax.set_yscale("log")
        ax.set_ylim(0.5, max(float(obs.max()), 1.0) * 3.0)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_pulls(closures: Mapping[tuple[str, str], StepClosure], universe: str = "data") -> Any:
    """SF pull distributions per step against the truth, with a unit Gaussian."""
    steps = [s for s, u in closures if u == universe and np.isfinite(closures[(s, u)].pulls).any()]
    if not steps:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.text(0.5, 0.5, f"no bin of the {universe} expects enough failing probes for a pull", ha="center", va="center")
        ax.set_axis_off()
        return fig
    fig, axes = plt.subplots(1, len(steps), figsize=(3.3 * len(steps), 3.2), squeeze=False, sharey=False)
    x = np.linspace(-4, 4, 200)
    for ax, step in zip(axes[0], steps):
        cl = closures[(step, universe)]
        p = cl.pulls[np.isfinite(cl.pulls)]
        ax.hist(np.clip(p, -4.99, 4.99), bins=np.linspace(-5, 5, 41), histtype="stepfilled", alpha=0.6, color="tab:blue")
        ax.plot(x, p.size * 0.25 * np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi), color="k", lw=1)
        ax.text(0.03, 0.95, f"{step}\nmean {cl.mean:+.2f}\nwidth {cl.width:.2f}", fontsize=8, va="top",
                transform=ax.transAxes)
        ax.set_xlabel("(SF − truth) / σ")
    cms_label(axes[0, 0])
    fig.tight_layout()
    return fig


__all__ = ["plot_failing_sums", "plot_fits", "plot_pulls", "plot_sf_maps", "plot_sf_vs_pt", "plot_upar"]
