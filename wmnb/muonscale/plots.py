"""Plots of chapter 02 (each takes the ``run`` output and an axis or creates a figure)."""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from ..conventions import process_colour
from ..style import cms_label
from .scale_model import ScaleParams

_UNITS = {"A": ("A", 1e4, r"$\times 10^{-4}$"), "e": (r"$\epsilon$", 1e4, r"GeV $\times 10^{-4}$"),
          "M": ("M", 1e5, r"GeV$^{-1}$ $\times 10^{-5}$")}


def _centres(edges: np.ndarray) -> np.ndarray:
    return 0.5 * (edges[1:] + edges[:-1])


def plot_parameters(out: dict[str, Any]):
    """A, e, M per eta bin (fit with errors) against the truth-card difference, plus pulls."""
    pf = out["jpsi"].params
    err = pf.errors()
    truth: ScaleParams | None = out.get("truth")
    fig, axes = plt.subplots(2, 2, figsize=(18, 13))
    axes = axes.ravel()
    x = _centres(pf.params.edges)
    for ax, nm in zip(axes[:3], ("A", "e", "M")):
        label, f, unit = _UNITS[nm]
        ax.errorbar(x, getattr(pf.params, nm) * f, yerr=getattr(err, nm) * f, fmt="o", ms=3, label="J/$\\psi$ fit")
        if truth is not None:
            ax.step(truth.edges, np.r_[getattr(truth, nm), getattr(truth, nm)[-1]] * f, where="post",
                    color="C3", label="truth (data $-$ sim.)")
        ax.set_xlabel(r"$\eta^\mu$")
        ax.set_ylabel(f"{label} [{unit}]")
        ax.legend(fontsize=12)
        cms_label(ax)
    ax = axes[3]
    if "pulls" in out:
        pu = out["pulls"]
        ax.hist(pu, bins=np.linspace(-4, 4, 25), histtype="step", lw=2, label=f"mean {np.mean(pu):.2f}, width {np.std(pu, ddof=1):.2f}")
        xx = np.linspace(-4, 4, 200)
        ax.plot(xx, len(pu) * (8 / 24) * np.exp(-xx ** 2 / 2) / np.sqrt(2 * np.pi), "C3--", label="N(0, 1)")
        ax.set_xlabel("pull (fit $-$ truth)/error")
        ax.legend(fontsize=12)
        cms_label(ax)
    fig.tight_layout()
    return fig


def plot_bin_fits(out: dict[str, Any]):
    """Distribution of the 4-D bin scale fits: s, its error, chi2/ndf."""
    fits = out["jpsi"].fits
    ok = fits.ok
    fig, axes = plt.subplots(1, 3, figsize=(18, 6))
    axes[0].hist(fits.s[ok] * 1e4, bins=40, histtype="step", lw=2)
    axes[0].set_xlabel(r"4-D bin scale $s$ [$10^{-4}$]")
    axes[1].hist(np.log10(fits.s_err[ok]), bins=40, histtype="step", lw=2)
    axes[1].set_xlabel(r"$\log_{10}\sigma_s$")
    axes[2].hist(fits.chi2[ok] / fits.ndf[ok], bins=np.linspace(0, 3, 31), histtype="step", lw=2)
    axes[2].set_xlabel(r"$\chi^2$/ndf of the bin fits")
    for ax in axes:
        ax.set_ylabel("4-D bins")
        cms_label(ax)
    fig.tight_layout()
    return fig


def plot_closure(out: dict[str, Any]):
    """Residual A' and M' after correction in J/psi, Upsilon(1S) and Z with the calibration band."""
    fig, axes = plt.subplots(1, 2, figsize=(18, 6))
    pf = out["jpsi"].params
    sf = out["scale_factor"]
    # colours of the processes the resonances come from; labels name the peak (Upsilon: 1S only)
    for key, proc, lab in (("jpsi", "jpsi", "J/$\\psi$"), ("upsilon", "upsilon", r"$\Upsilon$(1S)"), ("z", "z_mumu", "Z")):
        colour = process_colour(proc)
        c = out["closure"].get(key)
        if c is None:
            continue
        p, e = c.params.params, c.params.errors()
        x = _centres(p.edges) + {"jpsi": -0.02, "upsilon": 0.0, "z": 0.02}[key]
        for ax, nm, f in ((axes[0], "A", 1e4), (axes[1], "M", 1e5)):
            ax.errorbar(x, getattr(p, nm) * f, yerr=getattr(e, nm) * f, fmt="o", ms=4, color=colour, label=lab)
    # calibration statistical band (unscaled and scaled), propagated into the Z closure bins
    cz = out["closure"].get("z")
    if cz is not None and cz.params.propagator is not None:
        L = np.nan_to_num(cz.params.propagator)
        C = L @ np.nan_to_num(pf.cov) @ L.T
        ce = cz.params.params.edges
        band = np.sqrt(np.maximum(np.diag(C), 0)).reshape(-1, 2)
        for ax, i, f in ((axes[0], 0, 1e4), (axes[1], 1, 1e5)):
            hi = np.r_[band[:, i], band[-1, i]] * f
            ax.fill_between(ce, hi * sf, -hi * sf, step="post", color="0.8", label=f"calib. stat. $\\times$ {sf:.2f}")
            ax.fill_between(ce, hi, -hi, step="post", color="gold", alpha=0.7, label="calib. stat.")
    axes[0].set_ylabel(r"$A'$ [$10^{-4}$]")
    axes[1].set_ylabel(r"$M'$ [GeV$^{-1}$ $10^{-5}$]")
    for ax, nm in zip(axes, ("A", "M")):
        ax.axhline(0, color="k", lw=1)
        ax.set_xlabel(r"$\eta^\mu$")
        ax.legend(fontsize=12, ncol=2, title_fontsize=13,
                  title=f"Z closure $\\chi^2$/ndf = {out.get(f'closure_chi2_ndf_z_{nm}', np.nan):.2f}")
        cms_label(ax)
    fig.tight_layout()
    return fig


def plot_resolution(out: dict[str, Any]):
    """Relative pT resolution per eta at J/psi-like (5 GeV) and W-like (40 GeV) pT: simulation
    (fitted to gen-matched muons), data (fitted to the extra mass variance, with its error band)
    and the truth cards; right: the data/simulation ratio of the four parameters."""
    dr = out["data_resolution"]
    mc, dm = dr.mc, dr.data
    x = _centres(mc.edges)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(18, 7))
    tr = out.get("truth_resolution")
    for pt, ls in ((5.0, "-"), (40.0, "--")):
        ax.plot(x, np.sqrt(mc.rel2(np.full_like(x, pt), x)) * 100, "C0" + ls, label=f"simulation, $p_T$={pt:g} GeV")
        sig, err = dr.data_rel_sigma(pt, x)
        ax.errorbar(x, sig * 100, yerr=err * 100, fmt="o" if pt < 10 else "s", color="C1", ms=4,
                    label=f"data, $p_T$={pt:g} GeV")
        if tr:
            xf = np.linspace(-2.35, 2.35, 95)
            ax.plot(xf, np.sqrt(tr["data"].rel2(np.full_like(xf, pt), xf)) * 100, color="C3", ls=":", lw=1.5,
                    label="truth (data)" if pt < 10 else None)
    ax.set_xlabel(r"$\eta^\mu$")
    ax.set_ylabel(r"$\sigma_{p_T}/p_T$ [%]")
    ax.set_ylim(0, None)
    ax.legend(fontsize=11, ncol=2)
    cms_label(ax)
    err = np.sqrt(np.abs(np.diag(dr.cov))).reshape(-1, 4)
    for j, (nm, mk) in enumerate(zip("abcd", "os^v")):
        ratio = getattr(dm, nm) / getattr(mc, nm)
        ax2.errorbar(x + (j - 1.5) * 0.02, ratio, yerr=err[:, j] / getattr(mc, nm), fmt=mk, ms=4, label=f"${nm}$")
        if tr:
            ax2.step(tr["data"].edges, np.r_[getattr(tr["data"], nm) / getattr(tr["simulation"], nm),
                                             (getattr(tr["data"], nm) / getattr(tr["simulation"], nm))[-1]],
                     where="post", color=f"C{j}", lw=1, alpha=0.6)
    ax2.axhline(1, color="k", lw=1)
    ax2.set_ylim(0.4, 1.8)
    ax2.set_xlabel(r"$\eta^\mu$")
    ax2.set_ylabel("data / simulation (lines: truth cards)")
    ax2.legend(fontsize=11, ncol=4, title=f"prior width {dr.prior_width:.0%}", title_fontsize=11)
    cms_label(ax2)
    fig.tight_layout()
    return fig


def plot_mz(out: dict[str, Any]):
    """Dimuon mass (summed over the 14 eta bins): data, pre- and post-fit simulation."""
    from .mz import ETA_EDGES, MASS_EDGES
    mz = out["mz"]
    n_eta, n_m = len(ETA_EDGES) - 1, len(MASS_EDGES) - 1
    fig, ax = plt.subplots(figsize=(9, 7))
    # the fit may drop empty bins; project only when the full grid was kept
    if mz.data.size == n_eta * n_m:
        d = mz.data.reshape(n_eta, n_m).sum(0)
        pre = mz.prefit.reshape(n_eta, n_m).sum(0)
        post = mz.postfit.reshape(n_eta, n_m).sum(0)
        c = _centres(MASS_EDGES)
        ax.errorbar(c, d, yerr=np.sqrt(d), fmt="ko", label="data (corrected)")
        ax.step(MASS_EDGES, np.r_[pre, pre[-1]], where="post", label="simulation, pre-fit")
        ax.step(MASS_EDGES, np.r_[post, post[-1]], where="post", label="simulation, post-fit")
    ax.set_xlabel(r"$m_{\mu\mu}$ [GeV]")
    ax.set_ylabel("events / bin")
    ax.legend(fontsize=12, title_fontsize=13,
              title=f"$m_Z - m_Z^{{truth}}$ = {out['mz_minus_truth']:.1f} $\\pm$ {out['mz_err']:.1f} MeV")
    cms_label(ax)
    return fig
