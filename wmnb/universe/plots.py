"""Plots and tables of chapter 00 (the notebook only calls these)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import uproot

from ..conventions import process_label
from . import physics as ph
from .card import N_ETA, load_card
from .validation import core_gaussian, dimuon_masses

ETA_CENTRES = -2.35 + 0.1 * np.arange(N_ETA)

KNOB_TABLE = [
    ("physics.mw_mev, gw_mev", "W mass and width", "08 (m_W fit), 09 (helicity fit)"),
    ("physics.mz_mev", "Z mass", "02 (dimuon m_Z), 07 (W-like m_Z)"),
    ("physics.rapidity, physics.pdf", "boson rapidity, PDF-like eigenvectors (LHEPdfWeight)", "06 (theory), 08 (PDF nuisances)"),
    ("physics.qt.resummation.*, qt.y_slope", "perturbative Sudakov (cusp, non-cusp): the q_T shape between ~3 and 40 GeV",
     "06 (q_T^V, TNPs), 07 (Z validation)"),
    ("physics.qt.nonperturbative.*", "intrinsic kT (separate W, Z; q_T < 5 GeV), CS kernel (one value for W and Z, effect ~ ln Q^2)",
     "06 (nonperturbative parameters), 07 (Z validation)"),
    ("physics.qt.matching.*", "matching to fixed order at 0.5 m_V and the fixed-order tail (q_T > 30 GeV)", "06 (matching variations)"),
    ("physics.qt.beyond_family.*", "data only: x-dependent Gaussian kT smearing outside the simulation's q_T family",
     "none can: 06's uncertainties must cover it (its fit chi2 at large statistics shows it)"),
    ("physics.scales.*", "muR/muF (LHEScaleWeight): q_T tail and Sudakov, A0/A2, A1, A3, A4, rapidity", "06 (scale variations), 08 (scale nuisances), 09 (A_i)"),
    ("physics.angular", "A0-A4 vs q_T, y, charge", "06 (A_i), 09 (helicity cross sections)"),
    ("physics.fsr", "FSR strength (photon emission off the muons; 5 % stronger in data)", "06 (higher-order EW uncertainty)"),
    ("physics.nonprompt", "nonprompt iso-m_T correlation, SV flag", "05 (extended ABCD, 0.85 correction)"),
    ("detector.momentum_scale.A, e, M", "curvature bias per eta", "02 (J/psi calibration, Z/Upsilon closure)"),
    ("detector.resolution.a, b, c, d", "momentum resolution per eta", "02 (resolution from J/psi and Z)"),
    ("detector.efficiency.*", "reco, tracking, ID, trigger, isolation vs pT, eta, q, u_par", "03 (tag and probe)"),
    ("detector.recoil.response_*, sigma0, sigma_pu, sigma_qt, perp_qt_ratio, sigma_y",
     "PF recoil response and resolution vs q_T, boson rapidity and PV_npvs; u_par wider than u_perp", "04 (recoil calibration)"),
    ("detector.recoil.tails", "non-Gaussian recoil tails (mismeasured jets, fraction rising with q_T)", "04 (quantile morphing)"),
    ("detector.recoil.charged, puppi", "track-only and PUPPI METs: response, pileup dependence, correlated errors", "04 (recoil estimators, regression)"),
    ("detector.recoil.activity_shape, features", "hadronic activity: scalar sums, charged multiplicity (PV_nCharged)", "04 (regression features)"),
    ("detector.efficiency_pt.*", "pT shape (low-pT turn-on, slope) of every step per eta: pT-dependent scale factors",
     "03 (SFs smoothed in pT per eta bin)"),
    ("detector.fake_muons", "fake muon probes (hadrons: tracks, punch-through): the background under the Z peak",
     "03 (pass/fail m_mumu fits: background model)"),
    ("detector.pileup", "pileup profile", "01 (pileup reweighting)"),
    ("detector.prefiring", "L1 prefiring probability", "01/08 (prefiring weights)"),
]


def knob_table_markdown() -> str:
    """Markdown table: which truth-card knob each chapter measures."""
    lines = ["| card knob | what | measured in chapter |", "|---|---|---|"]
    lines += [f"| `{a}` | {b} | {c} |" for a, b, c in KNOB_TABLE]
    return "\n".join(lines)


def process_table(manifest: dict[str, Any]) -> str:
    """Markdown table of the simulated samples and data streams."""
    lines = ["| sample | card | xsec (pb) | produced | written | filter eff. | files |", "|---|---|---|---|---|---|---|"]
    for p, e in [*(("mc/" + k, v) for k, v in manifest["mc"].items()),
                 *(("mc_gen/" + k, v) for k, v in manifest["mc_gen"].items())]:
        lines.append(f"| {p} | {e['card']} | {e['xsec_pb']:.4g} | {e['n_produced']:,} | {e['n_events']:,} | "
                     f"{e['filter_eff']:.3f} | {len(e['files'])} |")
    for s in ("data", "closure"):
        for stream, e in manifest[s].items():
            prod = sum(e["n_produced"].values())
            lines.append(f"| {s}/{stream} | {e['card']} | - | {prod:,} | {e['n_events']:,} | {e['n_events'] / max(prod, 1):.3f} | {len(e['files'])} |")
    return "\n".join(lines)


def read_columns(root: Path, files: list[str], branches: list[str], max_events: int | None = None) -> dict[str, Any]:
    """Branches of a sample (awkward arrays), optionally only the first ``max_events``."""
    import awkward as ak

    parts = []
    n = 0
    for f in files:
        with uproot.open(Path(root) / f) as fh:
            stop = None if max_events is None else max_events - n
            a = fh["Events"].arrays(branches, entry_stop=stop, library="ak")
        parts.append(a)
        n += len(a)
        if max_events is not None and n >= max_events:
            break
    return ak.concatenate(parts)


def plot_truth_spectra(axes: Any, root: Path, manifest: dict[str, Any]) -> None:
    """Generator-level q_T and rapidity of W+, W- and Z (GenV branches of the inclusive
    generator-level samples ``mc_gen``)."""
    for p in ("wplus_munu", "wminus_munu", "z_mumu"):
        lab = process_label(p)
        a = read_columns(root, manifest["mc_gen"][p]["files"], ["GenV_pt", "GenV_y"], 200_000)
        axes[0].hist(np.asarray(a.GenV_pt), bins=60, range=(0, 60), histtype="step", density=True, label=lab)
        axes[1].hist(np.asarray(a.GenV_y), bins=50, range=(-5, 5), histtype="step", density=True, label=lab)
    axes[0].set_xlabel(r"generator $q_T$ (GeV)")
    axes[1].set_xlabel("generator boson rapidity y")
    for ax in axes[:2]:
        ax.set_ylabel("normalised")
        ax.legend(fontsize=12)
    axes[1].text(0.03, 0.05, "inclusive: every produced event", transform=axes[1].transAxes, fontsize=10)


def angular_moments(root: Path, files: list[str], qt_edges: np.ndarray, max_events: int = 400_000) -> dict[str, np.ndarray]:
    """A0..A4 measured from the generated Collins-Soper angles (moments of PHYSICS.md) in q_T
    bins, with statistical errors.  The standard frame (z along the boson p_z) makes A1 and A4
    even in y, so they need no folding."""
    a = read_columns(root, files, ["GenV_pt", "GenV_cosThetaCS", "GenV_phiCS"], max_events)
    qt = np.asarray(a.GenV_pt)
    c, f = np.asarray(a.GenV_cosThetaCS, dtype=float), np.asarray(a.GenV_phiCS, dtype=float)
    s = np.sqrt(np.clip(1 - c * c, 0, 1))
    obs = {"A0": (20 / 3 * 0.5 * (1 - 3 * c * c) + 2 / 3), "A1": 5 * 2 * s * c * np.cos(f),
           "A2": 20 * 0.5 * s * s * np.cos(2 * f), "A3": 4 * s * np.cos(f), "A4": 4 * c}
    out: dict[str, np.ndarray] = {"qt": 0.5 * (qt_edges[1:] + qt_edges[:-1])}
    idx = np.digitize(qt, qt_edges) - 1
    for k, v in obs.items():
        m = np.array([v[idx == i].mean() if np.any(idx == i) else np.nan for i in range(len(qt_edges) - 1)])
        e = np.array([v[idx == i].std() / np.sqrt(max(np.sum(idx == i), 1)) for i in range(len(qt_edges) - 1)])
        out[k], out[k + "_err"] = m, e
    return out


def plot_angular_coefficients(ax: Any, root: Path, manifest: dict[str, Any], process: str = "wplus_munu") -> None:
    """Measured A_i vs q_T (points, from the inclusive generator-level sample ``mc_gen``: the
    moments need the full phase space) against the card's functions averaged over y (lines)."""
    edges = np.array([0, 2, 4, 6, 8, 10, 13, 16, 20, 25, 30, 40, 50, 70, 100.0])
    files = manifest["mc_gen"][process]["files"]
    m = angular_moments(root, files, edges)
    tp = ph.theory_point(load_card("nominal")["physics"], {"wplus_munu": "wplus", "wminus_munu": "wminus"}.get(process, "z"))
    a = read_columns(root, files, ["GenV_y"], 100_000)
    ys = np.asarray(a.GenV_y)
    qq = np.linspace(0.5, 100, 100)
    for i, k in enumerate(["A0", "A1", "A2", "A3", "A4"]):
        ln = ax.errorbar(m["qt"], m[k], yerr=m[k + "_err"], fmt="o", ms=4, label=k)
        coeff = np.array([ph.angular_coefficients(np.full(ys.size, q), ys, tp)[i] for q in qq]).mean(axis=1)
        ax.plot(qq, coeff, color=ln[0].get_color(), lw=1)
    ax.set_xlabel(r"generator $q_T$ (GeV)")
    ax.set_ylabel(r"$A_i$ (Collins$-$Soper frame)")
    ax.legend(ncol=3, fontsize=12)


def plot_mass_peaks(axes: Any, root: Path, manifest: dict[str, Any]) -> dict[str, float]:
    """Reconstructed dimuon peaks in data and simulation (Z, J/psi, Upsilon), with the fitted
    core widths; returns the numbers."""
    res: dict[str, float] = {}
    specs = [("z", "SingleMuon", "z_mumu", (70, 110), 91.19, 2.0), ("onia", "MuOnia", "jpsi", (2.8, 3.4), 3.097, 0.03),
             ("onia", "MuOnia", "upsilon", (8.8, 10.8), 9.46, 0.08)]
    for ax, (kind, stream, proc, rng, centre, width) in zip(axes, specs):
        d = dimuon_masses(root, manifest["data"][stream]["files"], kind)
        m = dimuon_masses(root, manifest["mc"][proc]["files"], kind)
        hd, e = np.histogram(d["mass"], bins=80, range=rng)
        hm, _ = np.histogram(m["mass"], bins=e)
        x = 0.5 * (e[1:] + e[:-1])
        ax.errorbar(x, hd, yerr=np.sqrt(hd), fmt="o", ms=3, color="k", label="data")
        scale = hd.sum() / max(hm.sum(), 1)
        ax.step(x, hm * scale, where="mid", label="simulation (norm.)")
        ax.set_xlabel(r"$m_{\mu\mu}$ (GeV)")
        ax.set_ylabel("events / bin")
        for label, arr in (("data", d), ("mc", m)):
            sel = (arr["mass"] > rng[0]) & (arr["mass"] < rng[1])
            if kind == "z":
                sel &= arr["max_abs_eta"] < 1.0
            mu, sg = core_gaussian(arr["mass"][sel], centre, width)
            res[f"{proc}_{label}_peak"] = mu
            res[f"{proc}_{label}_core_sigma"] = sg
        ax.legend(fontsize=11)
    return res


def _data_card(card: dict[str, Any] | None) -> dict[str, Any]:
    """The data card a panel shows: the universe's own (``recorded_data_card``), else the shipped one."""
    return load_card("data") if card is None else card


def plot_detector_knobs(axes: Any, data_card: dict[str, Any] | None = None) -> None:
    """A, e, M and the resolution at pT = 40 GeV per eta bin, data card (default: the shipped
    one) vs nominal card."""
    nom, dat = load_card("nominal")["detector"], _data_card(data_card)["detector"]
    for ax, knob, unit in zip(axes[:3], ("A", "e", "M"), ("", " (GeV)", r" (GeV$^{-1}$)")):
        ax.step(ETA_CENTRES, nom["momentum_scale"][knob], where="mid", label="simulation (nominal)")
        ax.step(ETA_CENTRES, dat["momentum_scale"][knob], where="mid", label="data (truth)")
        ax.set_xlabel(r"$\eta$")
        ax.set_ylabel(knob + unit)
        ax.legend(fontsize=11)
    from .detector import relative_resolution

    pt = np.full(N_ETA, 40.0)
    for lab, det in (("simulation", nom), ("data (truth)", dat)):
        axes[3].step(ETA_CENTRES, 100 * relative_resolution(det, pt, ETA_CENTRES), where="mid", label=lab)
    axes[3].set_xlabel(r"$\eta$")
    axes[3].set_ylabel(r"$\sigma_{p_T}/p_T$ at 40 GeV (%)")
    axes[3].legend(fontsize=11)


def plot_efficiencies(ax: Any, data_card: dict[str, Any] | None = None) -> None:
    """Efficiency plateaus per step and eta (data card, default the shipped one, vs nominal),
    positive muons."""
    nom, dat = load_card("nominal")["detector"]["efficiency"], _data_card(data_card)["detector"]["efficiency"]
    for step in ("reco", "tracking", "id", "trigger"):
        l, = ax.step(ETA_CENTRES, np.asarray(nom[step]["plateau"]) * (1 + np.asarray(nom[step]["charge_asym"])), where="mid", label=f"{step} (sim)")
        ax.step(ETA_CENTRES, np.asarray(dat[step]["plateau"]) * (1 + np.asarray(dat[step]["charge_asym"])), where="mid", ls="--", color=l.get_color(), label=f"{step} (data)")
    ax.set_xlabel(r"$\eta$")
    ax.set_ylabel(r"efficiency plateau ($\mu^+$)")
    ax.legend(ncol=2, fontsize=10)


def plot_truth_scale_factors(axes: Any, eta_bin_edges: tuple[float, float] = (0.0, 0.1),
                             data_card: dict[str, Any] | None = None) -> None:
    """The truth scale factors (data card, default the shipped one, / nominal card) of every step
    versus pT (one eta bin, mu+, u_par = 0) and of trigger and isolation versus u_par (pT = 30-31 GeV)."""
    from .efficiency import STEPS, UPAR_STEPS, binned_efficiencies

    nom, dat = load_card("nominal")["detector"], _data_card(data_card)["detector"]
    pt_edges = np.arange(24.0, 65.0 + 0.5, 1.0)
    x = 0.5 * (pt_edges[1:] + pt_edges[:-1])
    for step in STEPS:
        sf = binned_efficiencies(dat, nom, step, list(eta_bin_edges), pt_edges, charges=(1,)).sf[0, :, 0]
        axes[0].plot(x, sf, label=step)
    axes[0].set_xlabel(r"muon $p_T$ (GeV)")
    axes[0].set_ylabel(r"truth SF = $\varepsilon_{data}/\varepsilon_{sim}$")
    axes[0].text(0.22, 0.05, rf"${eta_bin_edges[0]:g} < \eta < {eta_bin_edges[1]:g}$, $\mu^+$, $u_\parallel = 0$",
                 transform=axes[0].transAxes, fontsize=12)
    axes[0].legend(fontsize=11, ncol=2)
    u_edges = np.arange(-40.0, 40.0 + 0.5, 2.0)
    xu = 0.5 * (u_edges[1:] + u_edges[:-1])
    for step in UPAR_STEPS:
        b = binned_efficiencies(dat, nom, step, list(eta_bin_edges), [30.0, 31.0], charges=(1,), upar_edges=u_edges)
        ln, = axes[1].plot(xu, b.eff_mc[0, 0, 0], label=f"{step} (sim)")
        axes[1].plot(xu, b.eff_data[0, 0, 0], ls="--", color=ln.get_color(), label=f"{step} (data)")
    axes[1].set_xlabel(r"$u_\parallel = \vec q_T\cdot\hat p_\mu$ (GeV)")
    axes[1].set_ylabel(r"truth efficiency ($p_T$ = 30 GeV)")
    axes[1].legend(fontsize=11)


def plot_tnp_background(ax: Any, result: dict[str, dict[str, Any]], step: str = "reco") -> None:
    """m_mumu of the failing probes of ``step`` in the simulation (a
    :func:`~wmnb.universe.validation.tnp_background` result): real-muon Z pairs and background."""
    from .validation import TNP_MASS_EDGES, TNP_PEAK

    r = result[step]
    x = 0.5 * (TNP_MASS_EDGES[1:] + TNP_MASS_EDGES[:-1])
    width = np.diff(TNP_MASS_EDGES)
    ax.bar(x, r["fail_hist_bkg"], width=width, color="tab:orange", label="background (fake probes, other processes)")
    ax.bar(x, r["fail_hist_sig"], width=width, bottom=r["fail_hist_bkg"], color="tab:blue", alpha=0.7,
           label=f"{process_label('z_mumu')}, real probe")
    for edge in TNP_PEAK:
        ax.axvline(edge, color="k", ls=":", lw=1)
    ax.set_xlabel(r"$m_{\mu\mu}$ (GeV)")
    ax.set_ylabel("failing probes / 2 GeV")
    ax.text(0.03, 0.92, f"simulation, {step} step: {100 * r['fail_bkg_fraction']:.0f} % background in 60-120 GeV",
            transform=ax.transAxes, fontsize=12)
    ax.legend(fontsize=11, loc="upper left", bbox_to_anchor=(0.0, 0.9))
    ax.set_ylim(0, 1.35 * max(float(np.max(r["fail_hist_bkg"] + r["fail_hist_sig"])), 1e-9))


def plot_w_observables(axes: Any, sel: dict[str, np.ndarray]) -> None:
    """Selected-W muon pT (Jacobian peak), eta per charge and charge asymmetry."""
    axes[0].hist(sel["pt"], bins=30, range=(26, 56), histtype="step", color="k")
    axes[0].set_xlabel(r"muon $p_T$ (GeV)")
    axes[0].set_ylabel("events / GeV")
    e = np.linspace(-2.4, 2.4, 25)
    hp, _ = np.histogram(sel["eta"][sel["charge"] > 0], bins=e)
    hm, _ = np.histogram(sel["eta"][sel["charge"] < 0], bins=e)
    x = 0.5 * (e[1:] + e[:-1])
    axes[1].step(x, hp, where="mid", label=r"$\mu^+$")
    axes[1].step(x, hm, where="mid", label=r"$\mu^-$")
    axes[1].set_xlabel(r"muon $\eta$")
    axes[1].set_ylabel("events")
    axes[1].legend(fontsize=12)
    tot = np.maximum(hp + hm, 1)
    axes[2].errorbar(x, (hp - hm) / tot, yerr=np.sqrt(4 * hp * hm / tot**3), fmt="o", color="k")
    axes[2].set_xlabel(r"muon $\eta$")
    axes[2].set_ylabel("charge asymmetry")


def _robust_width(x: np.ndarray) -> float:
    lo, hi = np.percentile(x, [15.865, 84.135]) if x.size else (np.nan, np.nan)
    return 0.5 * float(hi - lo)


def plot_recoil(axes: Any, root: Path, manifest: dict[str, Any]) -> dict[str, float]:
    """Z -> mu mu recoil: (0) PF u_perp in data and simulation against a Gaussian of the same
    core width (the tails), (1) the response -<u_par>/q_T of the three estimators, (2) the
    u_perp width versus PV_npvs.  Returns headline numbers (simulation's PF tail fraction beyond
    3 core widths at 10 < q_T < 40 GeV, data's, and the TkMET/PF response ratio)."""
    from scipy.special import ndtr

    from .validation import RECOIL_ESTIMATORS, z_recoil

    sim = z_recoil(root, manifest["mc"]["z_mumu"]["files"])
    dat = z_recoil(root, manifest["data"]["SingleMuon"]["files"])
    res: dict[str, float] = {}
    edges = np.linspace(-60, 60, 61)
    x = 0.5 * (edges[1:] + edges[:-1])
    n_data = 1
    for lab, d, style in (("data", dat, "o"), ("simulation (norm.)", sim, "-")):
        m = (d["qt"] > 10) & (d["qt"] < 40)
        u = d["MET_perp"][m]
        w = _robust_width(u)
        h, _ = np.histogram(u, bins=edges)
        if style == "o":
            n_data = max(int(h.sum()), 1)
            axes[0].errorbar(x, h, yerr=np.sqrt(h), fmt="o", ms=3, color="k", label=lab)
        else:
            scale = n_data / max(h.sum(), 1)
            axes[0].step(x, h * scale, where="mid", label=lab)
            axes[0].plot(x, n_data * np.diff(edges)[0] * np.exp(-0.5 * (x / w) ** 2) / (np.sqrt(2 * np.pi) * w),
                         ls="--", color="gray", label="Gaussian, same core")
        res[f"recoil_tail3_{'data' if lab == 'data' else 'mc'}"] = float(np.mean(np.abs(u) > 3 * w)) if u.size else np.nan
    res["recoil_tail3_gauss"] = float(2 * ndtr(-3.0))
    axes[0].set_yscale("log")
    axes[0].set_ylim(0.5, None)
    axes[0].set_xlabel(r"PF $u_\perp$ (GeV), $10 < q_T < 40$ GeV")
    axes[0].set_ylabel("events / 2 GeV")
    axes[0].legend(fontsize=11)
    qe = np.array([0, 3, 6, 10, 15, 20, 30, 40, 60, 100.0])
    qc = 0.5 * (qe[1:] + qe[:-1])
    iq = np.digitize(sim["qt"], qe) - 1
    npe = np.array([1, 8, 12, 16, 20, 24, 30, 45])
    ip = np.digitize(sim["npv"], npe) - 1
    low = sim["qt"] < 15
    for name, lab in RECOIL_ESTIMATORS:
        r = [-np.mean(sim[f"{name}_para"][iq == i]) / np.mean(sim["qt"][iq == i]) if np.any(iq == i) else np.nan
             for i in range(qc.size)]
        axes[1].plot(qc, r, "o-", label=lab)
        wid = [_robust_width(sim[f"{name}_perp"][low & (ip == i)]) if np.count_nonzero(low & (ip == i)) > 20 else np.nan
               for i in range(npe.size - 1)]
        axes[2].plot(0.5 * (npe[1:] + npe[:-1]), wid, "o-", label=lab)
    hi = sim["qt"] > 20
    res["tkmet_over_pf_response"] = float(np.mean(sim["TkMET_para"][hi]) / np.mean(sim["MET_para"][hi])) if hi.any() else np.nan
    axes[1].set_xlabel(r"dimuon $q_T$ (GeV)")
    axes[1].set_ylabel(r"response $-\langle u_\parallel\rangle / q_T$ (simulation)")
    axes[1].set_ylim(0, 1.1)
    axes[1].legend(fontsize=11)
    axes[2].set_xlabel("PV_npvs")
    axes[2].set_ylabel(r"$u_\perp$ width (GeV), $q_T < 15$ GeV")
    axes[2].legend(fontsize=11)
    return res
