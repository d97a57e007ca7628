"""Chapter-00 realism checks on the generated files: a minimal W selection, the selected-sample
composition, dimuon peaks and widths, and the Asimov statistical sensitivity to m_W.

The selection here is deliberately minimal (the analysis selection is chapter 01's job); it
follows PHYSICS.md: one trigger-matched medium muon with 26 < pT < 56 GeV, |eta| < 2.4,
|dxy| < 0.05 cm, relative isolation < 0.15, m_T > 40 GeV, no other loose muon with pT > 15 GeV and
no veto electron with pT > 10 GeV.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import uproot

from ..conventions import MUON_MASS, TNP_STEPS, dlog_breit_wigner_dmass, tnp_step_masks
from ..paths import universe_dir
from . import kinematics as kin
from .generate import read_manifest

PAPER_SELECTED_W = 117e6
PAPER_STAT_ERR_MEV = 2.4
PT_EDGES = np.linspace(26.0, 56.0, 31)
ETA_EDGES = np.linspace(-2.4, 2.4, 49)

W_BRANCHES = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_mediumId", "Muon_looseId",
              "Muon_pfRelIso04_all", "Muon_triggerMatch", "Muon_dxy", "Electron_pt", "Electron_cutBased",
              "MET_pt", "MET_phi", "HLT_IsoMu24", "HLT_IsoTkMu24", "Muon_svMatched"]


def _iterate(files: list[Path], branches: list[str], step: str = "200 MB"):
    for f in files:
        with uproot.open(f) as fh:
            tree = fh["Events"]
            yield from tree.iterate(branches, step_size=step, library="ak")


def w_selection(a: Any, iso_cut: float | None = 0.15, mt_cut: float | None = 40.0) -> dict[str, np.ndarray]:
    """Select W-like events in an awkward array of the W branches; returns numpy columns of the
    selected muon (pt, eta, charge, iso, mt, sv: attached to a secondary vertex) and the event
    mask ``sel``.  ``iso_cut``/``mt_cut``
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
    sv = first(a.Muon_svMatched).astype(bool)
    met, mphi = ak.to_numpy(a.MET_pt), ak.to_numpy(a.MET_phi)
    mt = np.sqrt(2 * pt * met * (1 - np.cos(phi - mphi)))
    sel = (ak.to_numpy(a.HLT_IsoMu24 | a.HLT_IsoTkMu24) & (ak.to_numpy(ak.sum(good, axis=1)) == 1)
           & (ak.to_numpy(ak.sum(loose, axis=1)) == 1) & (ak.to_numpy(n_ele) == 0) & tm)
    if iso_cut is not None:
        sel &= iso < iso_cut
    if mt_cut is not None:
        sel &= mt > mt_cut
    return {"sel": sel, "pt": pt, "eta": eta, "charge": q, "iso": iso, "mt": mt, "sv": sv}


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
    was ~35), and ``sv_prompt_fraction``: the prompt share of the selected events whose muon is
    attached to a secondary vertex (the signal-like part of the nonprompt SV control region, where
    prompt contamination is largest; paper < 2 %)."""
    root = Path(root) if root is not None else universe_dir(profile)
    man = read_manifest(profile, root)
    yields, n_sim, sv_yields = {}, {}, {}
    for p, e in man["mc"].items():
        if p in ("jpsi", "upsilon"):
            continue
        s = selected_w(root, e["files"])
        n_sim[p] = len(s["pt"])
        norm = e["xsec_pb"] * man["lumi_pb"] / e["sumw"] * man["events_scale"]
        yields[p] = n_sim[p] * norm
        sv_yields[p] = float(np.count_nonzero(s["sv"])) * norm
    total = sum(yields.values())
    groups = {"w_munu": ["wplus_munu", "wminus_munu"], "z": ["z_mumu", "z_tautau"], "w_taunu": ["w_taunu"],
              "nonprompt": ["qcd"], "other": ["ttbar", "diboson"]}
    signal = groups["w_munu"]
    expected_w = sum(yields[p] for p in signal)
    sv_total = sum(sv_yields.values())
    sv_prompt = sv_total - sum(sv_yields[p] for p in groups["nonprompt"])
    return {"yields": yields, "total": total, "sv_yields": sv_yields,
            "sv_prompt_fraction": sv_prompt / sv_total if sv_total > 0 else float("nan"),
            "fractions": {g: sum(yields[p] for p in ps) / total for g, ps in groups.items()},
            "mc_over_data_w": sum(n_sim[p] for p in signal) / expected_w if expected_w > 0 else float("nan")}


def asimov_mw_sensitivity(profile: str, root: Path | None = None) -> dict[str, Any]:
    """Statistical-only m_W uncertainty from an Asimov chi-square fit of the 2880-bin
    (eta, pT, charge) distribution with m_W and the W normalisation free.

    Templates: the selected simulated W events (luminosity-weighted at the paper's luminosity,
    events_scale 1) and their exact mass derivative from Breit-Wigner reweighting of GenV_mass;
    the variance includes every background.  The finite simulation adds noise to the squared
    derivative; its expectation is subtracted and the denominator loses one event's weight
    (unbiased Fisher information).  The result is
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
    w_sq = np.zeros(shape)
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
            w_sq += h * wgt
            r = dlog_breit_wigner_dmass(s["GenV_mass"].astype(float), mw, gw) * 1e-3  # per MeV
            hd, _ = np.histogramdd(x, bins=edges, weights=wgt * r)
            hv, _ = np.histogramdd(x, bins=edges, weights=(wgt * r) ** 2)
            d_templ += hd
            d_var += hv
    ok = total > 0
    n = total[ok]
    # d^2 - var keeps only the products of different events, so the signal in the denominator
    # loses one event's weight (as in wmnb.universe.sensitivity.fisher_information)
    den = total - np.divide(w_sq, w_templ, out=np.zeros(shape), where=w_templ > 0)
    good = ok & (den > 0)
    f_mm = np.sum((d_templ[good] ** 2 - d_var[good]) / den[good])
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


# ------------------------------------------------------------------ tag-and-probe background

#: the Z-peak window in which the tag-and-probe background fraction is quoted (GeV)
TNP_PEAK = (60.0, 120.0)
#: m_mumu bins of the tag-and-probe histograms (the skim's window)
TNP_MASS_EDGES = np.arange(50.0, 130.0 + 1e-9, 2.0)
#: the simulated processes of the single-muon stream (the tag-and-probe sample's sources)
TNP_PROCESSES = ("wplus_munu", "wminus_munu", "z_mumu", "w_taunu", "z_tautau", "ttbar", "diboson", "qcd")


TNP_BRANCHES = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_tightId", "Muon_mediumId", "Muon_dxy",
                "Muon_pfRelIso04_all", "Muon_triggerMatch", "Muon_isGlobal", "Muon_isTracker", "Muon_isStandalone",
                "Muon_looseId",
                "HLT_IsoMu24", "HLT_IsoTkMu24", "event"]
TNP_MC_BRANCHES = ["Muon_genPartIdx", "GenPart_pt", "genWeight", "L1PreFiringWeight_Nom"]
#: the cuts of chapter 01's tnp skim (PHYSICS.md; wmnb.engine.selections): tag pT, probe pT, |dxy|, isolation
TNP_TAG_PT, TNP_PROBE_PT, TNP_DXY, TNP_ISO = 25.0, 15.0, 0.05, 0.15
TNP_MASS_WINDOW = (50.0, 130.0)


def tnp_pairs(files: Sequence[str | Path], norm: float = 1.0, same_sign: bool = False,
              max_events: int | None = None) -> dict[str, np.ndarray]:
    """Tag-and-probe pairs of NanoAOD-like ``files``, a minimal copy of chapter 01's ``tnp`` skim
    (``wmnb.engine.selections.select_tnp``; a test checks they agree pair by pair), as
    :func:`w_selection` is of the W selection, so that chapter 00 runs without the engine: single-
    muon trigger; tag: tight ID, |eta| < 2.4, pT > 25 GeV, |dxy| < 0.05 cm, isolation < 0.15,
    trigger-matched; probe: any other muon with |eta| < 2.4, pT > 15 GeV, opposite charge (or, with
    ``same_sign``, the same), 50 < m < 130 GeV.  Columns as the skim's: ``mass``, ``weight``
    (``genWeight * norm * L1PreFiringWeight_Nom`` in simulation), ``event``, ``tag_pt``, ``probe_pt``,
    ``probe_eta``, ``probe_charge``, the probe pass flags, ``probe_gen_pt`` (NaN if the probe has
    no generator match).  At most ``max_events`` events are read."""
    import awkward as ak

    parts: dict[str, list[np.ndarray]] = {}
    left = max_events
    for f in files:
        with uproot.open(f) as fh:
            tree = fh["Events"]
            is_mc = "genWeight" in tree.keys()
            stop = None if left is None else min(left, tree.num_entries)
            a = tree.arrays(TNP_BRANCHES + (TNP_MC_BRANCHES if is_mc else []), entry_stop=stop, library="ak")
        if left is not None:
            left -= len(a)
        idx = ak.local_index(a.Muon_pt)
        t, p = ak.unzip(ak.argcartesian([idx, idx], nested=False))
        tag = (a.Muon_tightId & (abs(a.Muon_eta) < 2.4) & (a.Muon_pt > TNP_TAG_PT) & (abs(a.Muon_dxy) < TNP_DXY)
               & (a.Muon_pfRelIso04_all < TNP_ISO) & a.Muon_triggerMatch)
        probe = (abs(a.Muon_eta) < 2.4) & (a.Muon_pt > TNP_PROBE_PT)
        qq = a.Muon_charge[t] * a.Muon_charge[p]
        ok = (t != p) & tag[t] & probe[p] & ((qq > 0) if same_sign else (qq < 0)) & (a.HLT_IsoMu24 | a.HLT_IsoTkMu24)
        t, p = t[ok], p[ok]
        ev = ak.to_numpy(ak.flatten(ak.broadcast_arrays(ak.local_index(a.event, axis=0), t)[0]))

        def flat(x: Any, i: Any) -> np.ndarray:
            return ak.to_numpy(ak.flatten(x[i]))
        kin_ = {f"{w}_{k}": flat(a[f"Muon_{k}"], i).astype(np.float64) for w, i in (("tag", t), ("probe", p))
                for k in ("pt", "eta", "phi")}
        v = (kin.massless_p4(kin_["tag_pt"], kin_["tag_eta"], kin_["tag_phi"], MUON_MASS)
             + kin.massless_p4(kin_["probe_pt"], kin_["probe_eta"], kin_["probe_phi"], MUON_MASS))
        mass = kin.mass(v)
        win = (mass > TNP_MASS_WINDOW[0]) & (mass < TNP_MASS_WINDOW[1])
        cols = {"mass": mass, "event": ak.to_numpy(a.event)[ev], "tag_pt": kin_["tag_pt"],
                "probe_pt": kin_["probe_pt"], "probe_eta": kin_["probe_eta"],
                "probe_charge": flat(a.Muon_charge, p),
                "probe_pass_sta": flat(a.Muon_isStandalone, p), "probe_pass_glb": flat(a.Muon_isGlobal, p),
                "probe_pass_trk": flat(a.Muon_isTracker, p),
                "probe_pass_id": flat(a.Muon_mediumId, p) & (np.abs(flat(a.Muon_dxy, p)) < TNP_DXY),
                "probe_pass_trig": flat(a.Muon_triggerMatch, p),
                "probe_pass_iso": flat(a.Muon_pfRelIso04_all, p) < TNP_ISO,
                "probe_pass_loose": flat(a.Muon_looseId, p)}
        if is_mc:
            w = ak.to_numpy(a.genWeight * a.L1PreFiringWeight_Nom).astype(np.float64) * norm
            gidx = a.Muon_genPartIdx[p]
            matched = ak.mask(gidx, (gidx >= 0) & (gidx < ak.num(a.GenPart_pt)))
            gpt = ak.to_numpy(ak.flatten(ak.fill_none(a.GenPart_pt[matched], np.nan)))
            cols.update({"weight": w[ev], "probe_gen_pt": gpt.astype(np.float64)})
        else:
            cols.update({"weight": np.ones(ev.size), "probe_gen_pt": np.full(ev.size, np.nan)})
        for k, col in cols.items():
            parts.setdefault(k, []).append(np.asarray(col)[win])
        if left is not None and left <= 0:
            break
    if not parts:
        raise ValueError(f"no events to pair in {list(files)!r}")
    return {k: np.concatenate(v) for k, v in parts.items()}


PairFunction = Callable[[Sequence[Any], float, bool, "int | None"], dict[str, np.ndarray]]


def tnp_background(samples: Mapping[str, tuple[Sequence[str | Path], float]], same_sign: bool = False,
                   max_events: int | None = None, pairs: PairFunction | None = None) -> dict[str, dict[str, Any]]:
    """Per tag-and-probe step (:data:`wmnb.conventions.TNP_STEPS`): the background in the
    failing and passing probes under the Z peak (:data:`TNP_PEAK`) of simulated ``samples``
    (process -> (files, luminosity weight per event)).  Signal is a real-muon Z pair: a
    ``z_mumu`` event whose probe is generator-matched; everything else (fake probes, other
    processes) is background.  Returns ``{step: {"fail_bkg_fraction", "pass_bkg_fraction",
    "fail", "pass", "fail_bkg", "pass_bkg", "n_fail_bkg", "n_pass_bkg", "fail_hist_sig",
    "fail_hist_bkg"}}``: weighted yields, raw background counts, and the failing probes' m_mumu
    histograms (:data:`TNP_MASS_EDGES`) of signal and background.  ``max_events`` per process:
    the weight is scaled up to the sample's size.  ``pairs(files, norm, same_sign, max_events)``
    builds the pairs (default :func:`tnp_pairs`; the tests pass chapter 01's skim selection)."""
    pairs = pairs or tnp_pairs

    nb = TNP_MASS_EDGES.size - 1
    tot: dict[str, dict[str, Any]] = {
        s: {**{k: 0.0 for k in ("fail", "pass", "fail_bkg", "pass_bkg", "n_fail_bkg", "n_pass_bkg")},
            "fail_hist_sig": np.zeros(nb), "fail_hist_bkg": np.zeros(nb)} for s in TNP_STEPS}
    for process, (files, weight) in samples.items():
        n_all = sum(_num_entries(f) for f in files)
        n_read = n_all if max_events is None else min(n_all, max_events)
        if n_read == 0:
            continue
        cols = pairs(files, weight * n_all / n_read, same_sign, max_events)
        peak = (cols["mass"] > TNP_PEAK[0]) & (cols["mass"] < TNP_PEAK[1])
        signal = np.isfinite(cols["probe_gen_pt"]) if process == "z_mumu" else np.zeros(peak.size, bool)
        w = cols["weight"]
        for step in TNP_STEPS:
            probe, passed = tnp_step_masks(cols, step)
            t = tot[step]
            for key, sel in (("fail", probe & ~passed & peak), ("pass", passed & peak)):
                t[key] += float(w[sel].sum())
                t[f"{key}_bkg"] += float(w[sel & ~signal].sum())
                t[f"n_{key}_bkg"] += float(np.count_nonzero(sel & ~signal))
            fail = probe & ~passed
            for key, sel in (("fail_hist_sig", fail & signal), ("fail_hist_bkg", fail & ~signal)):
                t[key] += np.histogram(cols["mass"][sel], bins=TNP_MASS_EDGES, weights=w[sel])[0]
    for t in tot.values():
        for key in ("fail", "pass"):
            t[f"{key}_bkg_fraction"] = t[f"{key}_bkg"] / t[key] if t[key] > 0 else float("nan")
    return tot


def _num_entries(path: str | Path) -> int:
    with uproot.open(path) as fh:
        return int(fh["Events"].num_entries)


def tnp_universe_background(profile: str, root: Path | None = None, max_events: int | None = 500_000
                            ) -> dict[str, dict[str, Any]]:
    """:func:`tnp_background` of a generated universe's simulation: the luminosity-weighted
    single-muon processes (truth known there), at most ``max_events`` read per process."""
    root = Path(root) if root is not None else universe_dir(profile)
    man = read_manifest(profile, root)
    samples = {p: ([root / f for f in man["mc"][p]["files"]], man["mc"][p]["xsec_pb"] * man["lumi_pb"] / man["mc"][p]["sumw"])
               for p in TNP_PROCESSES if p in man["mc"]}
    return tnp_background(samples, max_events=max_events)


def fail_bkg_fractions(result: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Chapter 00's headline ``tnp_fail_bkg_fraction`` from a :func:`tnp_background` result: per
    step, the fraction of the failing probes under the Z peak (60-120 GeV) that are not a
    real-muon Z pair."""
    return {step: round(float(v["fail_bkg_fraction"]), 4) for step, v in result.items()}


def tnp_fail_bkg_fraction(profile: str, root: Path | None = None, max_events: int | None = 500_000
                          ) -> dict[str, float]:
    """``tnp_fail_bkg_fraction`` of a generated universe (see :func:`fail_bkg_fractions`)."""
    return fail_bkg_fractions(tnp_universe_background(profile, root, max_events))


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
