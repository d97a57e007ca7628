"""Chapter-00 realism checks on the generated files: a minimal W selection, the selected-sample
composition, dimuon peaks and widths, and the Asimov statistical sensitivity to m_W.

The selection here is deliberately minimal (the analysis selection is chapter 01's job); it
follows PHYSICS.md: one trigger-matched medium muon with 26 < pT < 56 GeV, |eta| < 2.4,
|dxy| < 0.05 cm, relative isolation < 0.15, m_T > 40 GeV, no other loose muon with pT > 15 GeV and
no veto electron with pT > 10 GeV.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import uproot

from ..conventions import MUON_MASS, dlog_breit_wigner_dmass
from ..paths import universe_dir
from . import kinematics as kin
from .generate import read_manifest

PAPER_SELECTED_W = 117e6
PAPER_STAT_ERR_MEV = 2.4
PT_EDGES = np.linspace(26.0, 56.0, 31)
ETA_EDGES = np.linspace(-2.4, 2.4, 49)

W_BRANCHES = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_mediumId", "Muon_looseId",
              "Muon_pfRelIso04_all", "Muon_triggerMatch", "Muon_dxy", "Electron_pt", "Electron_cutBased",
              "MET_pt", "MET_phi", "HLT_IsoMu24", "HLT_IsoTkMu24"]


def _iterate(files: list[Path], branches: list[str], step: str = "200 MB"):
    for f in files:
        with uproot.open(f) as fh:
            tree = fh["Events"]
            yield from tree.iterate(branches, step_size=step, library="ak")


def w_selection(a: Any, iso_cut: float | None = 0.15, mt_cut: float | None = 40.0) -> dict[str, np.ndarray]:
    """Select W-like events in an awkward array of the W branches; returns numpy columns of the
    selected muon (pt, eta, charge, iso, mt) and the event mask ``sel``.  ``iso_cut``/``mt_cut``
    None keeps all isolation / m_T values (for sideband studies)."""
    import awkward as ak

    good = (a.Muon_mediumId & (abs(a.Muon_dxy) < 0.05) & (a.Muon_pt > 26) & (a.Muon_pt < 56)
            & (abs(a.Muon_eta) < 2.4))
    loose = a.Muon_looseId & (a.Muon_pt > 15)
    n_ele = ak.sum((a.Electron_pt > 10) & (a.Electron_cutBased >= 1), axis=1)

    def first(x: Any) -> np.ndarray:
        return ak.to_numpy(ak.fill_none(ak.firsts(x[good]), 0))

    pt, eta, phi = first(a.Muon_pt), first(a.Muon_eta), first(a.Muon_phi)
    q, iso = first(a.Muon_charge), first(a.Muon_pfRelIso04_all)
    tm = first(a.Muon_triggerMatch).astype(bool)
    met, mphi = ak.to_numpy(a.MET_pt), ak.to_numpy(a.MET_phi)
    mt = np.sqrt(2 * pt * met * (1 - np.cos(phi - mphi)))
    sel = (ak.to_numpy(a.HLT_IsoMu24 | a.HLT_IsoTkMu24) & (ak.to_numpy(ak.sum(good, axis=1)) == 1)
           & (ak.to_numpy(ak.sum(loose, axis=1)) == 1) & (ak.to_numpy(n_ele) == 0) & tm)
    if iso_cut is not None:
        sel &= iso < iso_cut
    if mt_cut is not None:
        sel &= mt > mt_cut
    return {"sel": sel, "pt": pt, "eta": eta, "charge": q, "iso": iso, "mt": mt}


def selected_w(root: Path, files: list[str], extra: list[str] | None = None, **cuts: Any) -> dict[str, np.ndarray]:
    """Concatenated selected events of ``files`` (relative to the universe ``root``)."""
    import awkward as ak

    extra = extra or []
    cols: dict[str, list[np.ndarray]] = {}
    for a in _iterate([root / f for f in files], W_BRANCHES + extra):
        s = w_selection(a, **cuts)
        m = s.pop("sel")
        for k, v in s.items():
            cols.setdefault(k, []).append(v[m])
        for k in extra:
            cols.setdefault(k, []).append(ak.to_numpy(a[k])[m])
    return {k: np.concatenate(v) for k, v in cols.items()}


def composition(profile: str, root: Path | None = None) -> dict[str, Any]:
    """Expected selected yields per simulated process (luminosity-weighted, at the universe's
    events_scale), their fractions, and ``mc_over_data_w``: selected simulated W→μν events per
    expected selected W→μν data event (the simulation's size relative to the data; the paper's
    was ~35)."""
    root = Path(root) if root is not None else universe_dir(profile)
    man = read_manifest(profile, root)
    yields, n_sim = {}, {}
    for p, e in man["mc"].items():
        if p in ("jpsi", "upsilon"):
            continue
        s = selected_w(root, e["files"])
        n_sim[p] = len(s["pt"])
        yields[p] = n_sim[p] * e["xsec_pb"] * man["lumi_pb"] / e["sumw"] * man["events_scale"]
    total = sum(yields.values())
    groups = {"w_munu": ["wplus_munu", "wminus_munu"], "z": ["z_mumu", "z_tautau"], "w_taunu": ["w_taunu"],
              "nonprompt": ["qcd"], "other": ["ttbar", "diboson"]}
    signal = groups["w_munu"]
    expected_w = sum(yields[p] for p in signal)
    return {"yields": yields, "total": total,
            "fractions": {g: sum(yields[p] for p in ps) / total for g, ps in groups.items()},
            "mc_over_data_w": sum(n_sim[p] for p in signal) / expected_w if expected_w > 0 else float("nan")}


def asimov_mw_sensitivity(profile: str, root: Path | None = None) -> dict[str, Any]:
    """Statistical-only m_W uncertainty from an Asimov chi-square fit of the 2880-bin
    (eta, pT, charge) distribution with m_W and the W normalisation free.

    Templates: the selected simulated W events (luminosity-weighted at the paper's luminosity,
    events_scale 1) and their exact mass derivative from Breit-Wigner reweighting of GenV_mass;
    the variance includes every background.  The finite simulation adds noise to the squared
    derivative; its expectation is subtracted (unbiased Fisher information).  The result is
    scaled to the paper's 117 M selected events."""
    root = Path(root) if root is not None else universe_dir(profile)
    man = read_manifest(profile, root)
    from .card import load_card

    nom = load_card("nominal")["physics"]
    mw, gw = nom["mw_mev"] / 1000, nom["gw_mev"] / 1000
    shape = (48, 30, 2)
    total = np.zeros(shape)
    w_templ = np.zeros(shape)
    d_templ = np.zeros(shape)
    d_var = np.zeros(shape)
    edges = (ETA_EDGES, PT_EDGES, np.array([-2.0, 0.0, 2.0]))
    for p, e in man["mc"].items():
        if p in ("jpsi", "upsilon"):
            continue
        is_w = p in ("wplus_munu", "wminus_munu")
        s = selected_w(root, e["files"], extra=["GenV_mass"] if is_w else None)
        wgt = e["xsec_pb"] * man["lumi_pb"] / e["sumw"]
        x = (s["eta"], s["pt"], s["charge"].astype(float))
        h, _ = np.histogramdd(x, bins=edges, weights=np.full(len(s["pt"]), wgt))
        total += h
        if is_w:
            w_templ += h
            r = dlog_breit_wigner_dmass(s["GenV_mass"].astype(float), mw, gw) * 1e-3  # per MeV
            hd, _ = np.histogramdd(x, bins=edges, weights=wgt * r)
            hv, _ = np.histogramdd(x, bins=edges, weights=(wgt * r) ** 2)
            d_templ += hd
            d_var += hv
    ok = total > 0
    n = total[ok]
    f_mm = np.sum((d_templ[ok] ** 2 - d_var[ok]) / n)
    f_mm_raw = np.sum(d_templ[ok] ** 2 / n)
    f_mn = np.sum(d_templ[ok] * w_templ[ok] / n)
    f_nn = np.sum(w_templ[ok] ** 2 / n)
    fisher = np.array([[f_mm, f_mn], [f_mn, f_nn]])
    cov = np.linalg.inv(fisher)
    sigma = float(np.sqrt(cov[0, 0]))
    n_sel = float(total.sum())
    scaled = sigma * np.sqrt(n_sel / PAPER_SELECTED_W)
    return {"stat_err_mev": sigma, "n_selected_lumi": n_sel, "stat_err_scaled_117M": scaled,
            "ratio_to_paper": scaled / PAPER_STAT_ERR_MEV,
            "noise_fraction": float(1 - f_mm / f_mm_raw), "n_bins": int(ok.sum())}


def dimuon_masses(root: Path, files: list[str], kind: str) -> dict[str, np.ndarray]:
    """Reconstructed opposite-charge dimuon masses: ``kind`` = ``z`` (two medium muons,
    pT > 25 GeV) or ``onia`` (the two leading muons of events firing a dimuon trigger).
    Returns mass and the larger |eta| of the pair."""
    import awkward as ak

    br = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_mediumId", "Muon_isTracker",
          "HLT_Dimuon20_Jpsi", "HLT_Dimuon13_Upsilon"]
    out: dict[str, list[np.ndarray]] = {"mass": [], "max_abs_eta": []}
    for a in _iterate([root / f for f in files], br):
        if kind == "z":
            good = a.Muon_mediumId & (a.Muon_pt > 25) & (abs(a.Muon_eta) < 2.4)
        else:
            good = a.Muon_isTracker & (a.Muon_pt > 3.5)
        mu = a[[k for k in a.fields if k.startswith("Muon_")]][good]
        ev = ak.num(mu.Muon_pt) >= 2
        if kind != "z":
            ev = ev & (a.HLT_Dimuon20_Jpsi | a.HLT_Dimuon13_Upsilon)
        mu = mu[ev]
        p0 = [ak.to_numpy(mu[k][:, 0]) for k in ("Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge")]
        p1 = [ak.to_numpy(mu[k][:, 1]) for k in ("Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge")]
        os_ = p0[3] != p1[3]
        v = kin.massless_p4(p0[0], p0[1], p0[2], MUON_MASS) + kin.massless_p4(p1[0], p1[1], p1[2], MUON_MASS)
        m = kin.mass(v)
        out["mass"].append(m[os_])
        out["max_abs_eta"].append(np.maximum(np.abs(p0[1]), np.abs(p1[1]))[os_])
    return {k: np.concatenate(v) for k, v in out.items()}


def core_gaussian(x: np.ndarray, center: float, width: float, n_iter: int = 8, window: float = 1.5) -> tuple[float, float]:
    """Mean and sigma of the peak core: Gaussian moments iterated in +-``window`` sigma
    (corrected for the truncation), starting from (center, width)."""
    from scipy.stats import norm

    mu, sig = center, width
    # variance of a unit Gaussian truncated to +-window
    z = window
    trunc_var = 1 - 2 * z * norm.pdf(z) / (2 * norm.cdf(z) - 1)
    for _ in range(n_iter):
        v = x[np.abs(x - mu) < window * sig]
        if v.size < 10:
            break
        mu = float(v.mean())
        sig = float(v.std() / np.sqrt(trunc_var))
    return mu, sig


RECOIL_ESTIMATORS = (("MET", "PF"), ("TkMET", "track-only"), ("PuppiMET", "PUPPI"))


def z_recoil(root: Path, files: list[str], max_events: int | None = 400_000) -> dict[str, np.ndarray]:
    """The recoil of Z -> mu mu candidates (two opposite-charge medium muons with pT > 25 GeV,
    60 < m < 120 GeV): dimuon ``qt``, ``npv`` (``PV_npvs``) and, for each estimator of
    :data:`RECOIL_ESTIMATORS`, u = -(MET + both muons) projected on the dimuon q_T
    (``<MET>_para``, ``<MET>_perp``)."""
    import awkward as ak

    br = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_mediumId", "PV_npvs"]
    br += [f"{m}_{v}" for m, _ in RECOIL_ESTIMATORS for v in ("pt", "phi")]
    out: dict[str, list[np.ndarray]] = {}
    n = 0
    for a in _iterate([root / f for f in files], br):
        good = a.Muon_mediumId & (a.Muon_pt > 25) & (abs(a.Muon_eta) < 2.4)
        ev = ak.to_numpy(ak.num(a.Muon_pt[good]) >= 2)
        mu = {k: a[k][good][ev] for k in ("Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge")}
        p = [[ak.to_numpy(mu[k][:, i]).astype(float) for k in ("Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge")]
             for i in (0, 1)]
        v = kin.massless_p4(*p[0][:3], MUON_MASS) + kin.massless_p4(*p[1][:3], MUON_MASS)
        m = kin.mass(v)
        ok = (p[0][3] != p[1][3]) & (m > 60) & (m < 120)
        qx, qy = v[:, 1], v[:, 2]
        qt = np.hypot(qx, qy)
        cols = {"qt": qt, "npv": ak.to_numpy(a.PV_npvs)[ev]}
        cx, cy = qx / np.maximum(qt, 1e-9), qy / np.maximum(qt, 1e-9)
        for name, _ in RECOIL_ESTIMATORS:
            met_pt = ak.to_numpy(a[f"{name}_pt"])[ev].astype(float)
            met_phi = ak.to_numpy(a[f"{name}_phi"])[ev].astype(float)
            ux, uy = -(met_pt * np.cos(met_phi) + qx), -(met_pt * np.sin(met_phi) + qy)
            cols[f"{name}_para"], cols[f"{name}_perp"] = ux * cx + uy * cy, -ux * cy + uy * cx
        for k, c in cols.items():
            out.setdefault(k, []).append(c[ok])
        n += int(ok.sum())
        if max_events is not None and n >= max_events:
            break
    return {k: np.concatenate(v) for k, v in out.items()}
