"""Chapter 01 helpers: control histograms, cutflow tables and headline numbers from the skims.

The notebook stays thin: it calls :func:`make_skims <wmnb.engine.skims.make_skims>`, then
:func:`control_histograms`, :func:`cutflow_table` and :func:`headline`, and draws with
:func:`wmnb.plotting.stack_ratio`.  Control plots use *uncalibrated* muons (no corrections
exist yet at this point of the book) and "N-1" cuts: every final cut except the one on the
plotted quantity.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hist
import numpy as np

from ..engine import selections as S
from ..engine.histogram import corrected_columns, fill
from ..engine.skims import list_skim_samples, read_cutflow

Cols = dict[str, np.ndarray]
LHE = ("lhe_scale", "lhe_pdf")   # not needed for control plots: skip reading them


def _w_cuts(skip: tuple[str, ...] = ()) -> Callable[[Cols], np.ndarray]:
    def mask(c: Cols) -> np.ndarray:
        m = c["veto_pass"].astype(bool)
        if "pt" not in skip:
            m &= (c["mu_pt"] > S.W_PT_RANGE[0]) & (c["mu_pt"] < S.W_PT_RANGE[1])
        if "iso" not in skip:
            m &= c["mu_iso"] < S.ISO_MAX
        if "mt" not in skip:
            m &= c["mt"] > S.MT_SIGNAL
        return m
    return mask


def _z_cuts(skip_mass: bool = False) -> Callable[[Cols], np.ndarray]:
    def mask(c: Cols) -> np.ndarray:
        lo, hi = S.WLIKE_PT_RANGE
        m = ((c["mup_pt"] > lo) & (c["mup_pt"] < hi) & (c["mum_pt"] > lo) & (c["mum_pt"] < hi)
             & (c["mup_iso"] < S.ISO_MAX) & (c["mum_iso"] < S.ISO_MAX))
        if not skip_mass:
            m &= (c["mass"] > S.Z_MASS_FINAL[0]) & (c["mass"] < S.Z_MASS_FINAL[1])
        return m
    return mask


def _all(c: Cols) -> np.ndarray:
    return np.ones(len(c["weight"]), dtype=bool)


@dataclass(frozen=True)
class ControlPlot:
    """One control distribution: ``field`` of ``selection`` after ``cuts`` on ``axis``."""

    name: str
    selection: str
    field: str
    axis: Any
    cuts: Callable[[Cols], np.ndarray]
    xlabel: str
    logy: bool = False


def control_plots() -> list[ControlPlot]:
    """The chapter's control distributions (PHYSICS.md binnings where they exist)."""
    R = hist.axis.Regular
    return [
        ControlPlot("w_mu_pt", "w", "mu_pt", R(44, 20, 64, name="x"), _w_cuts(("pt",)), r"Muon $p_T$ (GeV)"),
        ControlPlot("w_mu_eta", "w", "mu_eta", R(48, -2.4, 2.4, name="x"), _w_cuts(), r"Muon $\eta$"),
        ControlPlot("w_mu_charge", "w", "mu_charge", hist.axis.Integer(-1, 2, name="x", underflow=False, overflow=False),
                    _w_cuts(), "Muon charge"),
        ControlPlot("w_mu_iso", "w", "mu_iso", R(40, 0, 1.0, name="x"), _w_cuts(("iso",)), "Muon relative isolation",
                    logy=True),
        ControlPlot("w_mt", "w", "mt", R(40, 0, 120, name="x"), _w_cuts(("mt",)), r"$m_T$ (GeV)"),
        ControlPlot("w_met", "w", "met_pt", R(40, 0, 100, name="x"), _w_cuts(), r"$p_T^{miss}$ (GeV)"),
        ControlPlot("w_ut_para", "w", "ut_para", R(40, -60, 40, name="x"), _w_cuts(), r"$u_\parallel$ (GeV)"),
        ControlPlot("w_ut_perp", "w", "ut_perp", R(40, -50, 50, name="x"), _w_cuts(), r"$u_\perp$ (GeV)"),
        ControlPlot("z_mass", "z", "mass", R(70, 50, 130, name="x"), _z_cuts(skip_mass=True), r"$m_{\mu\mu}$ (GeV)",
                    logy=True),
        ControlPlot("z_pair_pt", "z", "pair_pt", R(40, 0, 80, name="x"), _z_cuts(), r"$p_T^{\mu\mu}$ (GeV)"),
        ControlPlot("z_ut_para", "z", "ut_para", R(40, -60, 40, name="x"), _z_cuts(),
                    r"$u_\parallel$ w.r.t. $q_T^{\mu\mu}$ (GeV)"),
        ControlPlot("jpsi_mass", "jpsi", "mass", R(50, 2.6, 3.6, name="x"), _all, r"$m_{\mu\mu}$ (GeV)"),
        ControlPlot("upsilon_mass", "upsilon", "mass", R(70, 8.0, 11.5, name="x"), _all, r"$m_{\mu\mu}$ (GeV)"),
    ]


def control_histograms(profile: str, plots: list[ControlPlot] | None = None,
                       samples: str = "data") -> dict[str, dict[str, hist.Hist]]:
    """``{plot name: {sample: 1-D hist}}`` for every simulated sample and ``samples``
    (``"data"`` or ``"closure"``), uncorrected, with each plot's N-1 cuts."""
    plots = control_plots() if plots is None else plots
    out: dict[str, dict[str, hist.Hist]] = {p.name: {} for p in plots}
    for sel in sorted({p.selection for p in plots}):
        names = [s for s in list_skim_samples(profile, sel) if s not in ("data", "closure") or s == samples]
        for sample in names:
            cols, w, _, _ = corrected_columns(profile, sel, sample, corrections=None, final_cuts=None, exclude=LHE)
            for p in (q for q in plots if q.selection == sel):
                m = np.asarray(p.cuts(cols), dtype=bool)
                h = fill({p.field: np.asarray(cols[p.field])[m]}, [p.axis], [p.field], w[m])
                out[p.name][sample] = h[:, "nominal"]
    return out


def cutflow_table(profile: str, selection: str, samples: list[str] | None = None, weighted: bool = True) -> str:
    """A Markdown table: one row per cut (skim cuts, then final cuts), one column per sample
    with events (and, for simulation, the weighted yield in brackets)."""
    samples = list_skim_samples(profile, selection) if samples is None else samples
    flows: dict[str, dict[str, list[float]]] = {}
    for s in samples:
        cf = dict(read_cutflow(profile, selection, s)["cutflow"])
        cols, *_ = corrected_columns(profile, selection, s, corrections=None, final_cuts=None, exclude=LHE)
        fin = S.final_cutflow(selection, cols)
        fin.pop("skim")
        cf.update({f"final: {k}": v for k, v in fin.items()})
        flows[s] = cf
    cuts = list(dict.fromkeys(k for f in flows.values() for k in f))
    head = "| cut | " + " | ".join(samples) + " |"
    lines = [head, "|" + "---|" * (len(samples) + 1)]
    for c in cuts:
        cells = []
        for s in samples:
            n, w = flows[s].get(c, [0, 0.0])
            is_data = s in ("data", "closure")
            cells.append(f"{int(n):,}" if is_data or not weighted else f"{int(n):,} ({w:,.4g})")
        label = c.replace("|", "\\|")  # cut names like "|eta|<2.4" must not split the row
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline(profile: str, sample: str = "data") -> dict[str, Any]:
    """Selected data counts after the final (uncalibrated) cuts, skim sizes and the W cutflow."""
    out: dict[str, Any] = {}
    for sel, key in (("w", "n_w_data"), ("z", "n_z_data"), ("jpsi", "n_jpsi_data"), ("upsilon", "n_upsilon_data"),
                     ("wlike", "n_wlike_data"), ("tnp", "n_tnp_pairs_data")):
        try:
            cols, w, _, _ = corrected_columns(profile, sel, sample, corrections=None, final_cuts="default", exclude=LHE)
        except FileNotFoundError:
            out[key] = 0
            continue
        out[key] = int(w.size)
    cf = read_cutflow(profile, "w", sample)["cutflow"]
    cols, *_ = corrected_columns(profile, "w", sample, corrections=None, final_cuts=None, exclude=LHE)
    fin = S.final_cutflow("w", cols)
    out["cutflow_w_data"] = {**{k: int(v[0]) for k, v in cf.items()},
                             **{f"final: {k}": int(v[0]) for k, v in fin.items() if k != "skim"}}
    mc = 0.0
    for s in list_skim_samples(profile, "w"):
        if s in ("data", "closure"):
            continue
        _, w, _, _ = corrected_columns(profile, "w", s, corrections=None, final_cuts="default", exclude=LHE)
        mc += float(w.sum())
    out["w_data_over_mc"] = out["n_w_data"] / mc if mc > 0 else float("nan")
    return out


def data_lumi_fb(profile: str) -> float:
    """Integrated luminosity (fb^-1) the profile's generated data correspond to."""
    from ..engine.skims import skim_index

    return float(skim_index(profile)["lumi_pb"]) / 1000.0


# ---------------------------------------------------------------- pileup reweighting
#: simulation whose Z→μμ events measure the simulated npv distribution
PILEUP_SIM_SAMPLE = "z_mumu"


def _z_npv(profile: str, sample: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    cols, w, _, _ = corrected_columns(profile, "z", sample, corrections=None, final_cuts="default", exclude=LHE)
    return cols, w


def measure_pileup(profile: str) -> Any:
    """Pileup weights (:class:`wmnb.selection.pileup.PileupWeights`) from the npv distributions
    of the final Z→μμ selection in data and in the Z simulation."""
    from .pileup import measure_pileup_weights

    data, _ = _z_npv(profile, "data")
    sim, w = _z_npv(profile, PILEUP_SIM_SAMPLE)
    return measure_pileup_weights(data["npv"], sim["npv"], w)


def pileup_closure(profile: str, weights: Any) -> dict[str, float]:
    """The closure of the reweighting: the mean number of true interactions of the Z simulation
    before and after the npv reweighting, against the data card's (through the truth gate).
    The npv only samples the true interactions, so the reweighted mean is expected to move most
    of the way, not all of it (the simulation's prior pulls the estimate towards its own mean)."""
    from .. import truth

    sim, w = _z_npv(profile, PILEUP_SIM_SAMPLE)
    if "pu_true" not in sim:
        raise KeyError("the Z simulation skim has no 'pu_true' (Pileup_nTrueInt): rerun chapter 01")
    rw = w * weights.nominal[weights.index(sim["npv"])]
    pu = np.asarray(sim["pu_true"], np.float64)
    return {"pu_true_mean_sim": float(np.average(pu, weights=w)),
            "pu_true_mean_reweighted": float(np.average(pu, weights=rw)),
            "pu_true_mean_data_truth": float(truth.compare("data", "detector.pileup.mean",
                                                           purpose="chapter 01: pileup reweighting closure")),
            "pu_true_mean_sim_truth": float(truth.simulation("detector.pileup.mean"))}


def plot_pileup(weights: Any, closure: dict[str, float] | None = None, lumi_fb: float | None = None) -> Any:
    """npv of data and simulation before and after the reweighting, and the weights."""
    import matplotlib.pyplot as plt

    from ..style import cms_label

    n = np.arange(weights.nmax + 1)
    data = weights.data_counts / weights.data_counts.sum()
    sim = weights.sim_counts / weights.sim_counts.sum()
    fig, (ax, rax) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    ax.stairs(sim, np.append(n, n[-1] + 1) - 0.5, label="simulation", color="tab:blue")
    ax.stairs(sim * weights.nominal, np.append(n, n[-1] + 1) - 0.5, label="simulation, reweighted",
              color="tab:orange", ls="--")
    ax.errorbar(n, data, yerr=np.sqrt(weights.data_counts) / weights.data_counts.sum(), fmt="k.", label="data")
    ax.set_ylabel("fraction of Z→μμ events")
    ax.legend(title="last bin: overflow", fontsize=11, title_fontsize=10, loc="upper right")
    if closure:
        ax.text(0.02, 0.97, f"mean true interactions\nsimulation {closure['pu_true_mean_sim']:.2f}\n"
                f"reweighted {closure['pu_true_mean_reweighted']:.2f}\n"
                f"data truth {closure['pu_true_mean_data_truth']:.2f}", transform=ax.transAxes, va="top", fontsize=11)
    cms_label(ax, **({} if lumi_fb is None else {"lumi": lumi_fb}))
    rax.plot(n, weights.nominal, "k-", label="weight")
    rax.fill_between(n, weights.down, weights.up, color="grey", alpha=0.4, label="±4.6 %")
    rax.set_xlabel("number of reconstructed vertices")
    rax.set_ylabel("data / sim.")
    rax.set_ylim(0, 3)
    rax.legend(fontsize=9)
    fig.tight_layout()
    return fig
