"""The event selections of the analysis, one definition each (PHYSICS.md, "Observable and binning").

Two layers:

1. **Skim selections** (:func:`select`) run on NanoAOD chunks and keep loose candidates, one
   row per selected event (per tag-probe pair for ``tnp``).  They fix the object choice
   (which muon, which pair) but not the cuts on calibrated quantities.
2. **Final cuts** (:func:`w_signal_mask`, :func:`abcd_region`, :func:`final_mask` ...) run on skim
   columns *after* the muon corrections, in the histogram engine.

Skim selections (all muons: |eta| < 2.4):

``w``
    single-muon trigger (``HLT_IsoMu24`` or ``HLT_IsoTkMu24``); the leading muon with medium ID,
    |dxy| < 0.05 cm, pT > 20 GeV and matched to the trigger object; any isolation and any m_T
    (the ABCD sidebands need them).  ``veto_pass``: no other loose muon with pT > 15 GeV and no
    veto-ID electron (``cutBased >= 1``) with pT > 10 GeV, |eta| < 2.5.  Simulation adds the
    generator boson (``gen_*``), the selected muon's match (``mu_gen_*``), the boson's neutrino
    (``nu_gen_pt``, ``nu_gen_phi``) and the boson's other decay lepton after FSR
    (``lep2_gen_pt``, ``_eta``, ``_phi``, ``_pdgid``: the neutrino of a W, the other muon of a Z,
    which the veto scale factor needs).
``z``
    single-muon trigger; the two leading "good" muons (as above, without the trigger match),
    opposite charge, at least one trigger-matched, 50 < m_μμ < 130 GeV.  The recoil
    u_T = -(MET + μ+ + μ-) is projected on the dimuon q_T direction.
``wlike``
    the ``z`` pair; the muon used for the template (``mu``) is the positive one in odd events
    and the negative one in even events (``parity_odd``); the other (``mu2``) is added to
    MET as if it were a neutrino, the recoil is projected on ``mu``; ``alt_*`` columns hold the
    reversed-parity choice.  Final cuts require ``mu`` to be trigger-matched.

Recoil estimators and features (``w``, ``z``, ``wlike``; :data:`ALT_MET`, :data:`SUMET`): besides
the PF MET (``met_pt``, ``met_phi``, the recoil ``ut_para``, ``ut_perp``, and ``mt``: what the
cuts use), the track-only and PUPPI METs ``tkmet_pt``, ``tkmet_phi``, ``puppimet_pt``,
``puppimet_phi`` (W-like: with ``mu2`` invisible, like ``met_*``) with their recoil on the same
axis (``tkmet_ut_para``, ``_perp``, ``puppimet_ut_para``, ``_perp``), the scalar sums
``met_sumet``, ``tkmet_sumet``, ``puppimet_sumet`` (W-like: without ``mu2``), ``npvs``
(``PV_npvs``) and ``n_charged`` (``PV_nCharged``): the inputs of the recoil calibration.
``jpsi`` / ``upsilon``
    ``HLT_Dimuon20_Jpsi`` / ``HLT_Dimuon13_Upsilon``; the two leading medium-ID muons with
    pT > 3 GeV, opposite charge, 2.6 < m < 3.6 GeV / 8 < m < 11.5 GeV.
``tnp``
    single-muon trigger; tag: tight ID, |dxy| < 0.05, pT > 25 GeV, iso < 0.15, trigger-matched;
    probe: any other reconstructed muon (tracker-only and standalone-only included) with
    pT > 15 GeV, opposite charge, 50 < m < 130 GeV; one row per (tag, probe) pair, with the probe's
    pass flags of every efficiency step (``probe_pass_sta``, ``_glb``, ``_id``, ``_trig``, ``_iso``)
    and the loose ID of the W selection's second-muon veto (``probe_pass_loose``).
    The probes and passing probes of each step are :data:`wmnb.conventions.TNP_STEPS`
    (:func:`wmnb.conventions.tnp_step_masks`, also importable from here).
    Simulation adds the probe's generator match (``probe_gen_pt``, ``_eta``, ``_phi``, NaN for a
    fake probe) and ``probe_gen_upar``, the generator boson q_T projected on that muon's
    direction (the u_par of the efficiency truth, :func:`wmnb.truth.efficiency_scale_factors`).
    ``select_tnp(..., same_sign=True)`` builds same-sign pairs instead (a background control
    sample; the skim keeps opposite-sign pairs only).

Final W selection (PHYSICS.md): 26 < pT < 56 GeV, iso < 0.15, m_T > 40 GeV, veto; ABCD regions in
(iso pass/fail) × (m_T < 20, 20-40, > 40 GeV); the secondary-vertex control region of the
nonprompt background is the same regions for muons attached to a secondary vertex
(:func:`sv_control_region`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..conventions import LHE_SCALE_NOMINAL, N_LHE_SCALE, TNP_STEPS, tnp_step_masks  # noqa: F401  (the tnp steps: re-exported)
from . import jagged
from .kinematics import delta_r2, pair, project, to_ptphi, to_xy, mt as _mt
from ..conventions import DXY_MAX, ISO_MAX  # one home, shared with the universe's truth
from .nanoaod import (GENV, JPSI_TRIGGERS, SINGLE_MUON_TRIGGERS, UPSILON_TRIGGERS, Chunk, Collection,
                      NanoAODError)

SELECTIONS = ("w", "z", "wlike", "jpsi", "upsilon", "tnp")
SINGLE_MUON_SELECTIONS = ("w", "z", "wlike", "tnp")
ONIA_SELECTIONS = ("jpsi", "upsilon")

# cut values (GeV, cm); the final ones follow PHYSICS.md
SKIM_MUON_PT = 20.0
VETO_MUON_PT = 15.0
VETO_ELECTRON_PT = 10.0
W_PT_RANGE = (26.0, 56.0)
WLIKE_PT_RANGE = (26.0, 60.0)
MT_SIGNAL = 40.0
MT_SIDEBANDS = (20.0, 40.0)
WLIKE_MT = 45.0
Z_MASS_SKIM = (50.0, 130.0)
Z_MASS_FINAL = (60.0, 120.0)
ONIA_MUON_PT = 3.0
JPSI_MASS_SKIM = (2.6, 3.6)
UPSILON_MASS_SKIM = (8.0, 11.5)
JPSI_MASS_FINAL = (2.9, 3.3)
UPSILON_MASS_FINAL = (8.5, 11.0)
TAG_PT = 25.0
PROBE_PT = 15.0
TRIGGER_MATCH_DR = 0.3

F4 = np.float32

Cutflow = dict[str, list[float]]   # cut name -> [events, sum of weights], in order


def _cut(cf: Cutflow, name: str, mask: np.ndarray, weight: np.ndarray) -> None:
    cf[name] = [int(np.count_nonzero(mask)), float(np.add.reduce(weight, where=mask))]


def merge_cutflows(parts: list[Cutflow]) -> Cutflow:
    """Sum cutflows of chunks (in the order given, so the result is reproducible)."""
    out: Cutflow = {}
    for cf in parts:
        for k, (n, w) in cf.items():
            if k in out:
                out[k] = [out[k][0] + n, out[k][1] + w]
            else:
                out[k] = [n, w]
    return out


# ---------------------------------------------------------------------------------------------
# shared object definitions

def _muons(chunk: Chunk) -> Collection:
    if "Muon" not in chunk.collections:
        raise NanoAODError(f"{chunk.path}: no Muon_* collection loaded")
    return chunk.collections["Muon"]


def _trigger(chunk: Chunk, paths: tuple[str, ...]) -> np.ndarray:
    fired = np.zeros(chunk.n, dtype=bool)
    found = False
    for p in paths:
        if chunk.has(p):
            fired |= chunk.get(p).astype(bool)
            found = True
        else:
            _note(chunk, f"trigger path {p} missing: treated as not fired")
    if not found:
        raise NanoAODError(f"{chunk.path}: none of the trigger branches {list(paths)} exists")
    return fired


def _note(chunk: Chunk, text: str) -> None:
    if text not in chunk.notes:
        chunk.notes.append(text)


def trigger_match(chunk: Chunk) -> np.ndarray:
    """Per-muon trigger match: ``Muon_triggerMatch`` if present, else ΔR < 0.3 to a ``TrigObj``
    with ``id == 13`` (real NanoAOD), else all False with a note."""
    mu = _muons(chunk)
    if "triggerMatch" in mu:
        return mu["triggerMatch"].astype(bool)
    to = chunk.collections.get("TrigObj")
    if to is None or "id" not in to:
        _note(chunk, "no Muon_triggerMatch and no TrigObj: no muon is trigger-matched")
        return np.zeros(mu["pt"].size, dtype=bool)
    _note(chunk, "Muon_triggerMatch missing: matched to TrigObj muons with dR < 0.3")
    # all (muon, trigger object) pairs within each event
    ia, ib = _pairs_between(mu.offsets, to.offsets)
    ok = (to["id"][ib] == 13) & (delta_r2(mu["eta"][ia], mu["phi"][ia], to["eta"][ib], to["phi"][ib])
                                 < TRIGGER_MATCH_DR ** 2)
    out = np.zeros(mu["pt"].size, dtype=bool)
    out[ia[ok]] = True
    return out


def _pairs_between(off_a: np.ndarray, off_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of all (a, b) object pairs in the same event of two collections."""
    cb = np.diff(off_b)
    ev_a = jagged.event_index(off_a)
    reps = cb[ev_a]                                   # partners of each a
    ia = np.repeat(np.arange(ev_a.size), reps)
    start = np.repeat(off_b[:-1][ev_a], reps)
    first = np.repeat(np.cumsum(reps) - reps, reps)
    ib = start + (np.arange(ia.size) - first)
    return ia.astype(np.int64), ib.astype(np.int64)


def _good_muon(mu: Collection, pt_min: float) -> np.ndarray:
    return (mu["mediumId"].astype(bool) & (np.abs(mu["eta"]) < 2.4) & (mu["pt"] > pt_min)
            & (np.abs(mu["dxy"]) < DXY_MAX))


def _weights(chunk: Chunk, norm: float) -> dict[str, np.ndarray]:
    """Event weight (genWeight × norm × prefiring for MC, 1 for data) and prefiring ratios."""
    n = chunk.n
    if not chunk.is_mc:
        return {"weight": np.ones(n), "prefire_up": np.ones(n, F4), "prefire_dn": np.ones(n, F4)}
    nom = chunk.get("L1PreFiringWeight_Nom", 1.0, np.float64)
    if not chunk.has("L1PreFiringWeight_Nom"):
        _note(chunk, "L1PreFiringWeight_* missing: prefiring weight 1")
    up = chunk.get("L1PreFiringWeight_Up", 1.0, np.float64)
    dn = chunk.get("L1PreFiringWeight_Dn", 1.0, np.float64)
    w = chunk.get("genWeight", None, np.float64) * float(norm) * nom
    if chunk.valid is not None:
        w = np.where(chunk.valid, w, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r_up = np.where(nom > 0, up / nom, 1.0).astype(F4)
        r_dn = np.where(nom > 0, dn / nom, 1.0).astype(F4)
    return {"weight": w, "prefire_up": r_up, "prefire_dn": r_dn}


def _ids(chunk: Chunk, sel: np.ndarray) -> dict[str, np.ndarray]:
    # event / run are required branches of the skims; lean histogram reads may omit them (0)
    n = int(np.count_nonzero(sel))
    out = {}
    for key, branch, dtype in (("event", "event", np.uint64), ("run", "run", np.uint32),
                               ("npv", "PV_npvsGood", np.int32)):
        if branch == "PV_npvsGood" and not chunk.has(branch):
            branch = "PV_npvs"
        out[key] = chunk.get(branch)[sel].astype(dtype) if chunk.has(branch) else np.zeros(n, dtype)
    if chunk.has("Pileup_nTrueInt"):      # simulation: the true interactions, for the pileup closure
        out["pu_true"] = chunk.get("Pileup_nTrueInt")[sel].astype(np.float32)
    return out


#: the recoil estimators besides the PF MET: skim prefix -> NanoAOD branch prefix.  The PF MET
#: keeps its version-1 columns (``met_pt``, ``met_phi``, ``ut_para``, ``ut_perp``, ``mt``); each
#: other estimator ``e`` gives ``e_pt``, ``e_phi`` (the MET, for W-like with the second muon
#: invisible) and ``e_ut_para``, ``e_ut_perp`` (its recoil on the selection's axis).
ALT_MET = (("tkmet", "TkMET"), ("puppimet", "PuppiMET"))
#: scalar sums of the three estimators: skim column -> NanoAOD branch
SUMET = (("met_sumet", "MET_sumEt"), ("tkmet_sumet", "TkMET_sumEt"), ("puppimet_sumet", "PuppiMET_sumEt"))
#: the NanoAOD branches of the recoil features (all optional: NaN, or -1 for counts, where absent)
RECOIL_FEATURE_BRANCHES = tuple(f"{b}_{v}" for _, b in ALT_MET for v in ("pt", "phi")) + tuple(
    b for _, b in SUMET) + ("PV_nCharged",)


def _recoil_features(chunk: Chunk, sel: np.ndarray) -> dict[str, np.ndarray]:
    """The other MET estimators (``tkmet_pt`` ...), the scalar sums (``met_sumet`` ...), all
    vertices ``npvs`` (``PV_npvs``; ``npv`` is ``PV_npvsGood``) and the charged multiplicity of
    the primary vertex ``n_charged`` (``PV_nCharged``, non-NanoAOD) of the selected events.
    Absent branches (real NanoAOD has no ``PV_nCharged``; lean reads load none of them) give NaN
    and -1: they are features for the recoil calibration, never used by a cut."""
    n = int(np.count_nonzero(sel))
    out: dict[str, np.ndarray] = {}
    for col, branch in [(f"{e}_{v}", f"{b}_{v}") for e, b in ALT_MET for v in ("pt", "phi")] + list(SUMET):
        out[col] = chunk.get(branch)[sel].astype(F4) if chunk.has(branch) else np.full(n, np.nan, F4)
    for col, branch in (("npvs", "PV_npvs"), ("n_charged", "PV_nCharged")):
        out[col] = chunk.get(branch)[sel].astype(np.int32) if chunk.has(branch) else np.full(n, -1, np.int32)
    return out


def alt_recoil_vectors(cols: dict[str, np.ndarray], prefixes: Sequence[str]) -> dict[str, np.ndarray]:
    """``e_ut_x``, ``e_ut_y``: the recoil of every other estimator ``e`` (:data:`ALT_MET`) whose
    MET the columns hold, u = -(MET + the muons of ``prefixes``) (float64).  It excludes the
    muons, so a muon correction does not move it."""
    out: dict[str, np.ndarray] = {}
    mx = my = 0.0
    for p in prefixes:
        x, y = to_xy(cols[f"{p}_pt"], cols[f"{p}_phi"])
        mx, my = mx + x, my + y
    for e, _ in ALT_MET:
        if f"{e}_pt" in cols:
            ex, ey = to_xy(cols[f"{e}_pt"], cols[f"{e}_phi"])
            out[f"{e}_ut_x"], out[f"{e}_ut_y"] = -(ex + mx), -(ey + my)
    return out


def alt_met_derived(cols: dict[str, np.ndarray], prefixes: Sequence[str], axis_phi: np.ndarray) -> dict[str, np.ndarray]:
    """From the recoil vectors ``e_ut_x``, ``e_ut_y`` (:func:`alt_recoil_vectors`): each
    estimator's MET with the muons of ``prefixes`` visible (``e_pt``, ``e_phi``) and its recoil
    projected on the direction ``axis_phi`` (``e_ut_para``, ``e_ut_perp``)."""
    out: dict[str, np.ndarray] = {}
    mx = my = 0.0
    for p in prefixes:
        x, y = to_xy(cols[f"{p}_pt"], cols[f"{p}_phi"])
        mx, my = mx + x, my + y
    axis = np.asarray(axis_phi, np.float64)
    for e, _ in ALT_MET:
        if f"{e}_ut_x" not in cols:
            continue
        ux, uy = np.asarray(cols[f"{e}_ut_x"], np.float64), np.asarray(cols[f"{e}_ut_y"], np.float64)
        out[f"{e}_pt"], out[f"{e}_phi"] = to_ptphi(-(ux + mx), -(uy + my))
        out[f"{e}_ut_para"], out[f"{e}_ut_perp"] = project(ux, uy, axis)
    return out


def _with_alt_met(cols: dict[str, np.ndarray], prefixes: Sequence[str], axis_phi: np.ndarray) -> None:
    """Add the other estimators' recoil projections to skim columns (float32), in place."""
    vec = alt_recoil_vectors(cols, prefixes)
    derived = alt_met_derived({**cols, **vec}, prefixes, axis_phi)
    for e, _ in ALT_MET:
        if f"{e}_ut_para" in derived:
            cols[f"{e}_ut_para"] = derived[f"{e}_ut_para"].astype(F4)
            cols[f"{e}_ut_perp"] = derived[f"{e}_ut_perp"].astype(F4)


def _start(chunk: Chunk, norm: float) -> tuple[Cutflow, dict[str, np.ndarray], np.ndarray]:
    cf: Cutflow = {}
    wts = _weights(chunk, norm)
    alive = np.ones(chunk.n, dtype=bool)
    _cut(cf, "all events", alive, wts["weight"])
    if chunk.valid is not None:
        alive &= chunk.valid
        _cut(cf, "finite inputs", alive, wts["weight"])
    return cf, wts, alive


def _triggered(chunk: Chunk, norm: float, paths: Sequence[str], name: str
               ) -> tuple[Cutflow, dict[str, np.ndarray], np.ndarray, Collection, np.ndarray]:
    """Common start of every skim: weights, the "all events" row, the muons and the trigger cut.

    Returns (cutflow, weights, nominal weight, muons, alive mask)."""
    cf, wts, alive = _start(chunk, norm)
    w = wts["weight"]
    alive = alive & _trigger(chunk, paths)
    _cut(cf, name, alive, w)
    return cf, wts, w, _muons(chunk), alive


def _muon_columns(prefix: str, mu: Collection, idx: np.ndarray, match: np.ndarray) -> dict[str, np.ndarray]:
    cols = {
        f"{prefix}_pt": jagged.take(mu["pt"], idx).astype(F4),
        f"{prefix}_eta": jagged.take(mu["eta"], idx).astype(F4),
        f"{prefix}_phi": jagged.take(mu["phi"], idx).astype(F4),
        f"{prefix}_charge": jagged.take(mu["charge"], idx).astype(np.int32),
        f"{prefix}_iso": jagged.take(mu["pfRelIso04_all"], idx).astype(F4),
        f"{prefix}_trig": jagged.take(match, idx, False).astype(bool),
    }
    sv = mu.fields.get("svMatched")
    cols[f"{prefix}_sv"] = (jagged.take(sv, idx, False) if sv is not None else np.zeros(idx.size, bool)).astype(bool)
    return cols


def _veto(chunk: Chunk, mu: Collection, selected: list[np.ndarray]) -> np.ndarray:
    """True for events without extra loose muons (pT > 15) and veto electrons (pT > 10)."""
    loose = mu["looseId"].astype(bool) & (mu["pt"] > VETO_MUON_PT) & (np.abs(mu["eta"]) < 2.4)
    n_extra = jagged.count(loose, mu.offsets)
    for idx in selected:
        n_extra = n_extra - jagged.take(loose, idx, False).astype(np.int64)
    ok = n_extra == 0
    ele = chunk.collections.get("Electron")
    if ele is not None and "cutBased" in ele:
        veto_e = (ele["pt"] > VETO_ELECTRON_PT) & (np.abs(ele["eta"]) < 2.5) & (ele["cutBased"] >= 1)
        ok &= jagged.count(veto_e, ele.offsets) == 0
    else:
        _note(chunk, "Electron_* missing: no electron veto")
    return ok


# ---------------------------------------------------------------------------------------------
# generator-level information (MC)

def _genpart(chunk: Chunk) -> Collection | None:
    gp = chunk.collections.get("GenPart")
    if gp is None or "pdgId" not in gp:
        return None
    return gp


def _gen_of_muons(chunk: Chunk, prefix: str, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Kinematics of the generator particle matched to each selected muon (NaN if none)."""
    mu = _muons(chunk)
    gp = _genpart(chunk)
    n = idx.size
    nan = np.full(n, np.nan, dtype=F4)
    if gp is None or "genPartIdx" not in mu:
        return {f"{prefix}_gen_pt": nan, f"{prefix}_gen_eta": nan.copy(), f"{prefix}_gen_phi": nan.copy()}
    local = jagged.take(mu["genPartIdx"], idx, -1).astype(np.int64)
    ev = jagged.take(jagged.event_index(mu.offsets), idx, 0)   # the events the muons belong to
    ok = (idx >= 0) & (local >= 0) & (local < np.diff(gp.offsets)[ev])
    flat = np.where(ok, gp.offsets[:-1][ev] + local, -1)
    return {f"{prefix}_gen_{f}": np.where(ok, jagged.take(gp[f], flat, 0), np.nan).astype(F4)
            for f in ("pt", "eta", "phi")}


def _boson_daughters(gp: Collection) -> np.ndarray:
    """Mask of leptons whose mother is a vector boson (the leptons before FSR)."""
    mother = gp["genPartIdxMother"].astype(np.int64)
    ev = jagged.event_index(gp.offsets)
    ok = mother >= 0
    mflat = np.where(ok, gp.offsets[:-1][ev] + mother, 0)
    mpdg = np.abs(gp["pdgId"][mflat]) if gp["pdgId"].size else np.zeros(0, int)
    apdg = np.abs(gp["pdgId"])
    return ok & np.isin(mpdg, (23, 24)) & (apdg >= 11) & (apdg <= 16)


def _gen_boson(chunk: Chunk, sel: np.ndarray) -> dict[str, np.ndarray]:
    """gen_mass, gen_qt, gen_y, gen_phi, gen_pdgid, gen_cos_cs, gen_phi_cs of selected events."""
    n = int(sel.sum())
    if all(chunk.has(b) for b in GENV):
        g = {k: chunk.get(b)[sel] for k, b in zip(
            ("gen_mass", "gen_qt", "gen_y", "gen_phi", "gen_pdgid", "gen_cos_cs", "gen_phi_cs"), GENV)}
        return {k: (v.astype(np.int32) if k == "gen_pdgid" else v.astype(F4)) for k, v in g.items()}
    _note(chunk, "GenV_* missing: boson from GenPart, Collins-Soper angles NaN")
    out = {k: np.full(n, np.nan, F4) for k in ("gen_mass", "gen_qt", "gen_y", "gen_phi", "gen_cos_cs", "gen_phi_cs")}
    out["gen_pdgid"] = np.zeros(n, np.int32)
    gp = _genpart(chunk)
    if gp is None:
        return out
    is_v = np.isin(np.abs(gp["pdgId"]), (23, 24))
    # the last copy of the boson = the one with the highest index in the event
    idx = jagged.argmax_masked(np.arange(gp["pdgId"].size, dtype=np.float64), is_v, gp.offsets)[sel]
    from .kinematics import rapidity
    ok = idx >= 0
    out["gen_mass"] = np.where(ok, jagged.take(gp["mass"], idx), np.nan).astype(F4)
    out["gen_qt"] = np.where(ok, jagged.take(gp["pt"], idx), np.nan).astype(F4)
    out["gen_phi"] = np.where(ok, jagged.take(gp["phi"], idx), np.nan).astype(F4)
    out["gen_y"] = np.where(ok, rapidity(jagged.take(gp["pt"], idx), jagged.take(gp["eta"], idx),
                                         jagged.take(gp["phi"], idx), jagged.take(gp["mass"], idx)),
                            np.nan).astype(F4)
    out["gen_pdgid"] = jagged.take(gp["pdgId"], idx, 0).astype(np.int32)
    return out


def _gen_other_lepton(chunk: Chunk, sel: np.ndarray, charge: np.ndarray) -> dict[str, np.ndarray]:
    """The boson's other decay lepton (the neutrino of a W, the other muon of a Z)."""
    n = int(sel.sum())
    gp = _genpart(chunk)
    if gp is None or "genPartIdxMother" not in gp:
        return {"nu_gen_pt": np.full(n, np.nan, F4), "nu_gen_phi": np.full(n, np.nan, F4)}
    dau = _boson_daughters(gp)
    ev = jagged.event_index(gp.offsets)
    mu_pdg = np.zeros(chunk.n, np.int64)
    mu_pdg[sel] = -13 * charge.astype(np.int64)      # pdgId of the selected muon
    apdg = np.abs(gp["pdgId"])
    cand = dau & (gp["pdgId"] != mu_pdg[ev])
    score = np.where(apdg % 2 == 0, 2.0, 1.0)        # prefer a neutrino
    idx = jagged.argmax_masked(score, cand, gp.offsets)[sel]
    ok = idx >= 0
    return {"nu_gen_pt": np.where(ok, jagged.take(gp["pt"], idx), np.nan).astype(F4),
            "nu_gen_phi": np.where(ok, jagged.take(gp["phi"], idx), np.nan).astype(F4)}


#: generator chains are short (boson -> lepton -> its FSR copies): a bound on the walks below
_MAX_GEN_STEPS = 32
LEP2_COLUMNS = ("lep2_gen_pt", "lep2_gen_eta", "lep2_gen_phi", "lep2_gen_pdgid")


def _mother_flat(gp: Collection) -> np.ndarray:
    """Flat index of every generator particle's mother (-1 if none or out of range)."""
    ev = jagged.event_index(gp.offsets)
    mother = gp["genPartIdxMother"].astype(np.int64)
    ok = (mother >= 0) & (mother < np.diff(gp.offsets)[ev])
    return np.where(ok, gp.offsets[:-1][ev] + mother, -1)


def _last_copy(gp: Collection, idx: np.ndarray) -> np.ndarray:
    """Follow each flat index ``idx`` (-1 kept) down its same-pdgId daughters (the copies after
    FSR) to the last one: the particle the detector sees."""
    mflat = _mother_flat(gp)
    pdg = gp["pdgId"]
    same = np.flatnonzero((mflat >= 0) & (pdg == pdg[np.maximum(mflat, 0)]))
    child = np.full(pdg.size, -1, np.int64)
    np.maximum.at(child, mflat[same], same)
    cur = idx.copy()
    for _ in range(_MAX_GEN_STEPS):
        nxt = np.where(cur >= 0, child[np.maximum(cur, 0)], -1)
        if not np.any(nxt >= 0):
            break
        cur = np.where(nxt >= 0, nxt, cur)
    return cur


def _gen_second_lepton(chunk: Chunk, sel: np.ndarray, mu_idx: np.ndarray, charge: np.ndarray) -> dict[str, np.ndarray]:
    """``lep2_gen_{pt,eta,phi,pdgid}``: the boson's *other* decay lepton at generator level, for
    each selected event (NaN / 0 where there is none): the neutrino of W -> mu nu, the other muon
    of Z -> mu mu (which the veto scale factor is a function of), the other tau of Z -> tau tau.

    It is the boson daughter that is not the ancestor of the selected muon's generator match
    (``mu_idx``: the muons' flat indices; an unmatched muon falls back to "not the muon's
    pdgId"), taken at its last copy: after FSR for a charged lepton, where the detector sees it
    (``nu_gen_*`` keep the boson daughter itself)."""
    n = int(sel.sum())
    out = {k: np.full(n, np.nan, F4) for k in LEP2_COLUMNS[:3]}
    out["lep2_gen_pdgid"] = np.zeros(n, np.int32)
    mu, gp = _muons(chunk), _genpart(chunk)
    if gp is None or "genPartIdxMother" not in gp or "genPartIdx" not in mu or gp["pdgId"].size == 0:
        return out
    dau = _boson_daughters(gp)
    mflat = _mother_flat(gp)
    gev = jagged.event_index(gp.offsets)
    # the selected muon's generator match, walked up to the boson daughter it comes from
    ev = jagged.take(jagged.event_index(mu.offsets), mu_idx, 0)
    local = jagged.take(mu["genPartIdx"], mu_idx, -1).astype(np.int64)
    ok = (mu_idx >= 0) & (local >= 0) & (local < np.diff(gp.offsets)[ev])
    anc = np.where(ok, gp.offsets[:-1][ev] + local, -1)
    for _ in range(_MAX_GEN_STEPS):
        up = (anc >= 0) & ~dau[np.maximum(anc, 0)]
        if not up.any():
            break
        anc = np.where(up, mflat[np.maximum(anc, 0)], anc)
    anc_ev = np.full(chunk.n, -1, np.int64)
    anc_ev[sel] = np.where((anc >= 0) & dau[np.maximum(anc, 0)], anc, -1)
    mu_pdg = np.zeros(chunk.n, np.int64)
    mu_pdg[sel] = -13 * charge.astype(np.int64)
    flat = np.arange(gp["pdgId"].size)
    a = anc_ev[gev]
    cand = dau & np.where(a >= 0, flat != a, gp["pdgId"] != mu_pdg[gev])
    idx = _last_copy(gp, jagged.argmax_masked(flat.astype(np.float64), cand, gp.offsets)[sel])
    has = idx >= 0
    for f in ("pt", "eta", "phi"):
        out[f"lep2_gen_{f}"] = np.where(has, jagged.take(gp[f], idx, 0), np.nan).astype(F4)
    out["lep2_gen_pdgid"] = jagged.take(gp["pdgId"], idx, 0).astype(np.int32)
    return out


def _lhe(chunk: Chunk, sel: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for branch, key, size in (("LHEScaleWeight", "lhe_scale", N_LHE_SCALE), ("LHEPdfWeight", "lhe_pdf", None)):
        c = chunk.collections.get(branch)
        if c is None:
            continue
        counts = np.diff(c.offsets)
        w = c["w"]
        if counts.size == 0:
            width = size or 0
            out[key] = np.zeros((0, width), F4)
            continue
        if not np.all(counts == counts[0]):
            _note(chunk, f"{branch} has a varying number of entries: not stored")
            continue
        k = int(counts[0])
        mat = w.reshape(-1, k).astype(F4) if k else np.zeros((chunk.n, 0), F4)
        if key == "lhe_scale" and k == N_LHE_SCALE - 1:
            # some NanoAOD versions drop the nominal (muR = muF = 1) entry: put it back
            mat = np.insert(mat, LHE_SCALE_NOMINAL, 1.0, axis=1)
            _note(chunk, f"LHEScaleWeight has {k} entries: nominal inserted at index {LHE_SCALE_NOMINAL}")
        elif key == "lhe_scale" and k != N_LHE_SCALE:
            _note(chunk, f"LHEScaleWeight has {k} entries (expected {N_LHE_SCALE}): not stored")
            continue
        out[key] = mat[sel]
    return out


# ---------------------------------------------------------------------------------------------
# skim selections

def select_w(chunk: Chunk, norm: float = 1.0, gen: bool = True) -> tuple[dict[str, np.ndarray], Cutflow]:
    """The loose W skim (see module docstring)."""
    cf, wts, w, mu, alive = _triggered(chunk, norm, SINGLE_MUON_TRIGGERS, "single-muon trigger")
    good = _good_muon(mu, SKIM_MUON_PT)
    alive = alive & (jagged.count(good, mu.offsets) > 0)
    _cut(cf, "medium muon pT>20 |eta|<2.4 |dxy|<0.05", alive, w)
    match = trigger_match(chunk)
    idx = jagged.argmax_masked(mu["pt"], good & match, mu.offsets)
    alive = alive & (idx >= 0)
    _cut(cf, "trigger-matched", alive, w)
    veto = _veto(chunk, mu, [idx])
    _cut(cf, "(veto pass)", alive & veto, w)
    idx_s = idx[alive]
    cols = _muon_columns("mu", mu, idx_s, match)
    cols.pop("mu_trig")
    met_pt = chunk.get("MET_pt")[alive].astype(F4)
    met_phi = chunk.get("MET_phi")[alive].astype(F4)
    cols.update(w_recoil(cols["mu_pt"], cols["mu_phi"], met_pt, met_phi))
    cols["met_pt"], cols["met_phi"] = met_pt, met_phi
    cols.update(_recoil_features(chunk, alive))
    _with_alt_met(cols, ("mu",), cols["mu_phi"])
    cols["veto_pass"] = veto[alive]
    cols["weight"] = w[alive]
    cols["prefire_up"], cols["prefire_dn"] = wts["prefire_up"][alive], wts["prefire_dn"][alive]
    cols.update(_ids(chunk, alive))
    if chunk.is_mc:
        if gen:
            cols.update(_gen_boson(chunk, alive))
            cols.update(_gen_of_muons(chunk, "mu", idx_s))
            cols.update(_gen_other_lepton(chunk, alive, cols["mu_charge"]))
            cols.update(_gen_second_lepton(chunk, alive, idx_s, cols["mu_charge"]))
        cols.update(_lhe(chunk, alive))   # present when the LHE branches were loaded
    return cols, cf


def w_recoil(mu_pt, mu_phi, met_pt, met_phi) -> dict[str, np.ndarray]:
    """m_T and the recoil projections on the muon for a W candidate (float32 columns, computed
    in float32 like the inputs: the skim stores float32 and the engine recomputes in float64
    whenever a correction changes the muons)."""
    mu_pt, mu_phi = np.asarray(mu_pt, F4), np.asarray(mu_phi, F4)
    met_pt, met_phi = np.asarray(met_pt, F4), np.asarray(met_phi, F4)
    dphi = mu_phi - met_phi
    cd, sd = np.cos(dphi), np.sin(dphi)
    # u = -(MET + mu); projections on the muon direction via the angle between MET and muon
    para = -(met_pt * cd + mu_pt)
    perp = met_pt * sd
    mt = np.sqrt(np.maximum(2 * mu_pt * met_pt * (1 - cd), 0))
    return {"mt": mt.astype(F4), "ut_para": para.astype(F4), "ut_perp": perp.astype(F4)}


def _leading_pair(mu: Collection, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i1 = jagged.argmax_masked(mu["pt"], good, mu.offsets)
    not_first = good.copy()
    not_first[i1[i1 >= 0]] = False
    i2 = jagged.argmax_masked(mu["pt"], not_first, mu.offsets)
    return i1, i2


def _dimuon(chunk: Chunk, norm: float, kind: str) -> tuple[dict[str, np.ndarray], Cutflow, dict[str, Any]]:
    """Common part of the z / wlike / jpsi / upsilon selections: an opposite-charge pair."""
    if kind == "z":
        trig_paths, pt_min, window = SINGLE_MUON_TRIGGERS, SKIM_MUON_PT, Z_MASS_SKIM
        trig_name = "single-muon trigger"
    elif kind == "jpsi":
        trig_paths, pt_min, window, trig_name = JPSI_TRIGGERS, ONIA_MUON_PT, JPSI_MASS_SKIM, "dimuon J/psi trigger"
    else:
        trig_paths, pt_min, window, trig_name = UPSILON_TRIGGERS, ONIA_MUON_PT, UPSILON_MASS_SKIM, "dimuon Upsilon trigger"
    cf, wts, w, mu, alive = _triggered(chunk, norm, trig_paths, trig_name)
    if kind == "z":
        good = _good_muon(mu, pt_min)
        label = "2 medium muons pT>20 |eta|<2.4 |dxy|<0.05"
    else:
        good = mu["mediumId"].astype(bool) & (np.abs(mu["eta"]) < 2.4) & (mu["pt"] > pt_min)
        label = f"2 medium muons pT>{pt_min:g} |eta|<2.4"
    i1, i2 = _leading_pair(mu, good)
    alive = alive & (i2 >= 0)
    _cut(cf, label, alive, w)
    q1, q2 = jagged.take(mu["charge"], i1), jagged.take(mu["charge"], i2)
    alive = alive & (q1 * q2 < 0)
    _cut(cf, "opposite charge", alive, w)
    match = trigger_match(chunk) if kind == "z" else np.zeros(mu["pt"].size, bool)
    if kind == "z":
        alive = alive & (jagged.take(match, i1, False) | jagged.take(match, i2, False))
        _cut(cf, ">=1 trigger-matched", alive, w)
    ip = np.where(q1 > 0, i1, i2)
    im = np.where(q1 > 0, i2, i1)
    p = pair(jagged.take(mu["pt"], ip), jagged.take(mu["eta"], ip), jagged.take(mu["phi"], ip),
             jagged.take(mu["pt"], im), jagged.take(mu["eta"], im), jagged.take(mu["phi"], im))
    alive = alive & (p["mass"] > window[0]) & (p["mass"] < window[1])
    _cut(cf, f"{window[0]:g}<m<{window[1]:g}", alive, w)
    extra = {"wts": wts, "ip": ip[alive], "im": im[alive], "match": match, "pair": {k: v[alive] for k, v in p.items()}}
    return {}, cf, {"alive": alive, **extra}


def _dimuon_columns(chunk: Chunk, info: dict[str, Any], with_recoil: bool, gen: bool = True) -> dict[str, np.ndarray]:
    mu = _muons(chunk)
    alive = info["alive"]
    cols = {}
    cols.update(_muon_columns("mup", mu, info["ip"], info["match"]))
    cols.update(_muon_columns("mum", mu, info["im"], info["match"]))
    p = info["pair"]
    cols["mass"], cols["pair_pt"], cols["pair_y"] = p["mass"].astype(F4), p["pt"].astype(F4), p["y"].astype(F4)
    cols["pair_phi"] = p["phi"].astype(F4)
    if with_recoil:
        met_pt = chunk.get("MET_pt").astype(np.float64)[alive]
        met_phi = chunk.get("MET_phi").astype(np.float64)[alive]
        cols["met_pt"], cols["met_phi"] = met_pt.astype(F4), met_phi.astype(F4)
        cols.update(z_recoil(cols, met_pt, met_phi))
        cols.update(_recoil_features(chunk, alive))
        _with_alt_met(cols, ("mup", "mum"), cols["pair_phi"])
        cols["veto_pass"] = _veto_pair(chunk, mu, info)
    wts = info["wts"]
    cols["weight"] = wts["weight"][alive]
    cols["prefire_up"], cols["prefire_dn"] = wts["prefire_up"][alive], wts["prefire_dn"][alive]
    cols.update(_ids(chunk, alive))
    if chunk.is_mc:
        if gen:
            cols.update(_gen_boson(chunk, alive))
            cols.update(_gen_of_muons(chunk, "mup", info["ip"]))
            cols.update(_gen_of_muons(chunk, "mum", info["im"]))
        if with_recoil:
            cols.update(_lhe(chunk, alive))
    return cols


def _veto_pair(chunk: Chunk, mu: Collection, info: dict[str, Any]) -> np.ndarray:
    alive = info["alive"]
    full_p = np.full(chunk.n, -1, np.int64)
    full_m = np.full(chunk.n, -1, np.int64)
    full_p[alive], full_m[alive] = info["ip"], info["im"]
    return _veto(chunk, mu, [full_p, full_m])[alive]


def z_recoil(cols: dict[str, np.ndarray], met_pt, met_phi) -> dict[str, np.ndarray]:
    """Recoil u_T = -(MET + μ+ + μ-) projected on the dimuon q_T direction (float32)."""
    px, py = to_xy(cols["mup_pt"], cols["mup_phi"])
    mx, my = to_xy(cols["mum_pt"], cols["mum_phi"])
    ex, ey = to_xy(met_pt, met_phi)
    ux, uy = -(ex + px + mx), -(ey + py + my)
    para, perp = project(ux, uy, np.arctan2(py + my, px + mx))
    return {"ut_para": para.astype(F4), "ut_perp": perp.astype(F4)}


def select_z(chunk: Chunk, norm: float = 1.0, gen: bool = True) -> tuple[dict[str, np.ndarray], Cutflow]:
    """The loose dimuon Z skim."""
    _, cf, info = _dimuon(chunk, norm, "z")
    return _dimuon_columns(chunk, info, with_recoil=True, gen=gen), cf


def wlike_from_z(zcols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """W-like columns from ``z`` skim columns: parity choice, the other muon added to MET."""
    odd = (zcols["event"] % 2 == 1)
    cols: dict[str, np.ndarray] = {"parity_odd": odd}
    names = [k[4:] for k in zcols if k.startswith("mup_")]
    for f in names:
        cols[f"mu_{f}"] = np.where(odd, zcols[f"mup_{f}"], zcols[f"mum_{f}"])
        cols[f"mu2_{f}"] = np.where(odd, zcols[f"mum_{f}"], zcols[f"mup_{f}"])
    for k in ("mass", "pair_pt", "pair_y", "pair_phi", "npv", "npvs", "n_charged", "pu_true", "veto_pass",
              "weight", "prefire_up", "prefire_dn", "event", "run", "lhe_scale", "lhe_pdf") + tuple(
              k for k in zcols if k.startswith("gen_")):
        if k in zcols:
            cols[k] = zcols[k]
    # the scalar sums without the invisible muon (the W's neutrino is in no sum)
    for k, _ in SUMET:
        if k in zcols:
            cols[k] = (zcols[k] - cols["mu2_pt"]).astype(F4)
    # the other estimators: their recoil excludes both muons, the MET adds mu2 to it
    alt = alt_recoil_vectors(zcols, ("mup", "mum"))
    if alt:
        for k, v in alt_met_derived({**cols, **alt}, ("mu",), np.asarray(cols["mu_phi"], np.float64)).items():
            cols[k] = v.astype(F4)
    # u excluding both muons, from the z columns
    px, py = to_xy(zcols["mup_pt"], zcols["mup_phi"])
    mx, my = to_xy(zcols["mum_pt"], zcols["mum_phi"])
    ex, ey = to_xy(zcols["met_pt"], zcols["met_phi"])
    cols["ut_x"], cols["ut_y"] = -(ex + px + mx), -(ey + py + my)
    cols.update(wlike_derived(cols))
    del cols["ut_x"], cols["ut_y"]
    return cols


def wlike_derived(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """MET with ``mu2`` added, m_T and recoil projections of the W-like choice and of the
    reversed one (``alt_*``), from ``mu_*``, ``mu2_*`` and the recoil ``ut_x``, ``ut_y``."""
    ux, uy = np.asarray(cols["ut_x"], np.float64), np.asarray(cols["ut_y"], np.float64)
    out = {}
    for tag, a, _ in (("", "mu", "mu2"), ("alt_", "mu2", "mu")):
        ax_, ay_ = to_xy(cols[f"{a}_pt"], cols[f"{a}_phi"])
        mex, mey = -(ux + ax_), -(uy + ay_)           # MET with the other muon invisible
        met_pt, met_phi = to_ptphi(mex, mey)
        para, perp = project(ux, uy, np.asarray(cols[f"{a}_phi"], np.float64))
        out[f"{tag}met_pt"], out[f"{tag}met_phi"] = met_pt.astype(F4), met_phi.astype(F4)
        out[f"{tag}mt"] = _mt(cols[f"{a}_pt"], cols[f"{a}_phi"], met_pt, met_phi).astype(F4)
        out[f"{tag}ut_para"], out[f"{tag}ut_perp"] = para.astype(F4), perp.astype(F4)
    return out


def select_onia(chunk: Chunk, norm: float = 1.0, kind: str = "jpsi",
                gen: bool = True) -> tuple[dict[str, np.ndarray], Cutflow]:
    """The J/psi or Upsilon dimuon skim."""
    _, cf, info = _dimuon(chunk, norm, kind)
    return _dimuon_columns(chunk, info, with_recoil=False, gen=gen), cf


def select_tnp(chunk: Chunk, norm: float = 1.0, gen: bool = True,
               same_sign: bool = False) -> tuple[dict[str, np.ndarray], Cutflow]:
    """Tag-and-probe pairs on Z→μμ (one row per pair); ``same_sign=True``: same-sign pairs
    instead of opposite-sign ones (a control sample of the combinatorial background)."""
    cf, wts, w, mu, alive = _triggered(chunk, norm, SINGLE_MUON_TRIGGERS, "single-muon trigger")
    match = trigger_match(chunk)
    tag = (mu["tightId"].astype(bool) if "tightId" in mu else mu["mediumId"].astype(bool)) \
        & (np.abs(mu["eta"]) < 2.4) & (mu["pt"] > TAG_PT) & (np.abs(mu["dxy"]) < DXY_MAX) \
        & (mu["pfRelIso04_all"] < ISO_MAX) & match
    if "tightId" not in mu:
        _note(chunk, "Muon_tightId missing: tags use the medium ID")
    probe = (np.abs(mu["eta"]) < 2.4) & (mu["pt"] > PROBE_PT)
    ev_alive = alive[jagged.event_index(mu.offsets)] if mu["pt"].size else np.zeros(0, bool)
    alive = alive & (jagged.count(tag & ev_alive, mu.offsets) > 0)
    _cut(cf, ">=1 tag", alive, w)
    ia, ib = _pairs_between(mu.offsets, mu.offsets)
    ev = jagged.event_index(mu.offsets)[ia] if ia.size else np.zeros(0, np.int64)
    qq = mu["charge"][ia] * mu["charge"][ib] if ia.size else np.zeros(0, np.int64)
    ok = (ia != ib) & tag[ia] & probe[ib] & ((qq > 0) if same_sign else (qq < 0)) & alive[ev] \
        if ia.size else np.zeros(0, bool)
    ia, ib, ev = ia[ok], ib[ok], ev[ok]
    p = pair(mu["pt"][ia], mu["eta"][ia], mu["phi"][ia], mu["pt"][ib], mu["eta"][ib], mu["phi"][ib])
    inwin = (p["mass"] > Z_MASS_SKIM[0]) & (p["mass"] < Z_MASS_SKIM[1])
    ia, ib, ev = ia[inwin], ib[inwin], ev[inwin]
    has = np.zeros(chunk.n, bool)
    has[ev] = True
    _cut(cf, f"{'SS' if same_sign else 'OS'} probe, {Z_MASS_SKIM[0]:g}<m<{Z_MASS_SKIM[1]:g}", alive & has, w)
    cf["(pairs)"] = [int(ia.size), float(np.sum(w[ev]))]
    cols: dict[str, np.ndarray] = {}
    for pre, idx in (("tag", ia), ("probe", ib)):
        cols[f"{pre}_pt"] = mu["pt"][idx].astype(F4)
        cols[f"{pre}_eta"] = mu["eta"][idx].astype(F4)
        cols[f"{pre}_phi"] = mu["phi"][idx].astype(F4)
        cols[f"{pre}_charge"] = mu["charge"][idx].astype(np.int32)
    cols["probe_iso"] = mu["pfRelIso04_all"][ib].astype(F4)
    flag = lambda name, default: (mu[name][ib].astype(bool) if name in mu else np.full(ib.size, default))  # noqa: E731
    cols["probe_pass_sta"] = flag("isStandalone", True)
    cols["probe_pass_glb"] = flag("isGlobal", True)
    cols["probe_pass_trk"] = flag("isTracker", True)
    cols["probe_pass_id"] = mu["mediumId"][ib].astype(bool) & (np.abs(mu["dxy"][ib]) < DXY_MAX)
    cols["probe_pass_trig"] = match[ib]
    cols["probe_pass_iso"] = mu["pfRelIso04_all"][ib] < ISO_MAX
    cols["probe_pass_loose"] = flag("looseId", True)
    sel_p = p["mass"][inwin]
    cols["mass"] = sel_p.astype(F4)
    cols["pair_pt"] = p["pt"][inwin].astype(F4)
    met_pt = chunk.get("MET_pt").astype(np.float64)[ev]
    met_phi = chunk.get("MET_phi").astype(np.float64)[ev]
    tx, ty = to_xy(cols["tag_pt"], cols["tag_phi"])
    qx, qy = to_xy(cols["probe_pt"], cols["probe_phi"])
    ex, ey = to_xy(met_pt, met_phi)
    para, perp = project(-(ex + tx + qx), -(ey + ty + qy), cols["probe_phi"].astype(np.float64))
    cols["probe_ut_para"] = para.astype(F4)
    cols["weight"] = w[ev]
    for k, v in _ids(chunk, np.ones(chunk.n, bool)).items():
        cols[k] = v[ev]
    if chunk.is_mc and gen:
        gp = _gen_of_muons_flat(chunk, ib)
        cols.update({f"probe_gen_{k}": v for k, v in gp.items()})
        boson = _gen_boson(chunk, np.ones(chunk.n, bool))
        qt, phi = boson["gen_qt"][ev].astype(np.float64), boson["gen_phi"][ev].astype(np.float64)
        # u_par of the efficiency truth: the boson q_T projected on the (generator) probe muon;
        # 0 where there is no boson (multijet), NaN for a probe without generator match
        upar = np.nan_to_num(qt) * np.cos(np.nan_to_num(phi) - gp["phi"].astype(np.float64))
        cols["probe_gen_upar"] = upar.astype(F4)
    return cols, cf


def _gen_of_muons_flat(chunk: Chunk, flat_idx: np.ndarray) -> dict[str, np.ndarray]:
    mu = _muons(chunk)
    gp = _genpart(chunk)
    n = flat_idx.size
    if gp is None or "genPartIdx" not in mu:
        return {f: np.full(n, np.nan, F4) for f in ("pt", "eta", "phi")}
    ev = jagged.event_index(mu.offsets)[flat_idx]
    local = mu["genPartIdx"][flat_idx].astype(np.int64)
    ok = (local >= 0) & (local < np.diff(gp.offsets)[ev])
    flat = np.where(ok, gp.offsets[:-1][ev] + local, -1)
    return {f: np.where(ok, jagged.take(gp[f], flat, 0), np.nan).astype(F4) for f in ("pt", "eta", "phi")}


def select(chunk: Chunk, selection: str, norm: float = 1.0, gen: bool = True) -> tuple[dict[str, np.ndarray], Cutflow]:
    """Run skim ``selection`` on ``chunk``; returns (columns, cutflow).  ``norm`` multiplies
    ``genWeight`` (xsec × lumi / sumw for simulation); ``gen=False`` skips the generator-level
    and LHE columns of simulation (faster when only reconstructed quantities are histogrammed)."""
    from .registry import get_selection

    return get_selection(selection).run_skim(chunk, norm, gen)


def wlike_from_z_cutflow(zcols: dict[str, np.ndarray], zcf: Cutflow) -> tuple[dict[str, np.ndarray], Cutflow]:
    """The W-like skim from the Z skim of the same chunk (one pair finding for both)."""
    wl = wlike_from_z(zcols)
    cf = dict(zcf)
    _cut(cf, "(W-like muon trigger-matched)", np.asarray(wl["mu_trig"]), wl["weight"])
    return wl, cf


# ---------------------------------------------------------------------------------------------
# final cuts on (corrected) skim columns

def w_signal_mask(cols: dict[str, np.ndarray], pt_range: tuple[float, float] = W_PT_RANGE) -> np.ndarray:
    """Final W selection: 26 < pT < 56 GeV, iso < 0.15, m_T > 40 GeV, lepton vetoes passed."""
    pt = cols["mu_pt"]
    return ((pt > pt_range[0]) & (pt < pt_range[1]) & (cols["mu_iso"] < ISO_MAX) & (cols["mt"] > MT_SIGNAL)
            & cols["veto_pass"].astype(bool))


ABCD_REGIONS = ("fail_low", "pass_low", "fail_mid", "pass_mid", "fail_high", "pass_high")
"""Extended-ABCD regions: isolation fail/pass × m_T < 20, 20-40, > 40 GeV. In PHYSICS.md's
letters: A = fail_low, B = pass_low, A_x = fail_mid, B_x = pass_mid, C = fail_high,
D (signal) = pass_high."""


def abcd_region(cols: dict[str, np.ndarray], pt_range: tuple[float, float] = W_PT_RANGE) -> np.ndarray:
    """Index into :data:`ABCD_REGIONS` per event, -1 outside the pT window or failing the veto."""
    iso_pass = (cols["mu_iso"] < ISO_MAX).astype(np.int64)
    mt = cols["mt"]
    mt_bin = np.where(mt < MT_SIDEBANDS[0], 0, np.where(mt < MT_SIDEBANDS[1], 1, 2))
    region = 2 * mt_bin + iso_pass
    pt = cols["mu_pt"]
    ok = (pt > pt_range[0]) & (pt < pt_range[1]) & cols["veto_pass"].astype(bool)
    return np.where(ok, region, -1)


def sv_control_region(cols: dict[str, np.ndarray], pt_range: tuple[float, float] = W_PT_RANGE) -> np.ndarray:
    """The secondary-vertex control region of the nonprompt background: the extended-ABCD region
    index (:data:`ABCD_REGIONS`) of events whose muon is attached to a secondary vertex
    (``mu_sv``), -1 otherwise.

    The paper validates the extended ABCD method on "nonprompt muons matched to secondary
    vertices", with the other cuts as in the signal region and a prompt contamination below 2 %;
    ``pass_high`` (isolated, m_T > 40 GeV) is where that contamination is largest."""
    return np.where(np.asarray(cols["mu_sv"], bool), abcd_region(cols, pt_range), -1)


def wlike_mask(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Final W-like selection: both muons 26 < pT < 60 GeV and isolated, the template muon
    trigger-matched, m_T > 45 GeV, 60 < m_μμ < 120 GeV, vetoes passed."""
    lo, hi = WLIKE_PT_RANGE
    return ((cols["mu_pt"] > lo) & (cols["mu_pt"] < hi) & (cols["mu2_pt"] > lo) & (cols["mu2_pt"] < hi)
            & (cols["mu_iso"] < ISO_MAX) & (cols["mu2_iso"] < ISO_MAX) & cols["mu_trig"].astype(bool)
            & (cols["mt"] > WLIKE_MT) & (cols["mass"] > Z_MASS_FINAL[0]) & (cols["mass"] < Z_MASS_FINAL[1])
            & cols["veto_pass"].astype(bool))


def z_mask(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Final dimuon Z selection: both muons 26 < pT < 60 GeV and isolated, 60 < m < 120 GeV."""
    lo, hi = WLIKE_PT_RANGE
    return ((cols["mup_pt"] > lo) & (cols["mup_pt"] < hi) & (cols["mum_pt"] > lo) & (cols["mum_pt"] < hi)
            & (cols["mup_iso"] < ISO_MAX) & (cols["mum_iso"] < ISO_MAX)
            & (cols["mass"] > Z_MASS_FINAL[0]) & (cols["mass"] < Z_MASS_FINAL[1]))


def onia_mask(cols: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """Final J/psi / Upsilon mass window (2.9-3.3 / 8.5-11 GeV)."""
    lo, hi = JPSI_MASS_FINAL if kind == "jpsi" else UPSILON_MASS_FINAL
    return (cols["mass"] > lo) & (cols["mass"] < hi)


FINAL_CUTS: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
    "w": w_signal_mask,
    "wlike": wlike_mask,
    "z": z_mask,
    "jpsi": lambda c: onia_mask(c, "jpsi"),
    "upsilon": lambda c: onia_mask(c, "upsilon"),
    "tnp": lambda c: np.ones(len(c["weight"]), bool),
}


def final_mask(selection: str, cols: dict[str, np.ndarray]) -> np.ndarray:
    """The default final cuts of ``selection`` (see :data:`FINAL_CUTS`)."""
    if selection not in FINAL_CUTS:
        raise ValueError(f"unknown selection {selection!r}; choose one of {SELECTIONS}")
    return FINAL_CUTS[selection](cols)


#: the W selection's final cuts one by one, for its cutflow table
W_CUTFLOW_STEPS: tuple[tuple[str, Callable[[dict[str, np.ndarray]], np.ndarray]], ...] = (
    ("26<pT<56", lambda c: (c["mu_pt"] > W_PT_RANGE[0]) & (c["mu_pt"] < W_PT_RANGE[1])),
    ("veto", lambda c: c["veto_pass"].astype(bool)),
    ("iso<0.15", lambda c: c["mu_iso"] < ISO_MAX),
    ("mT>40", lambda c: c["mt"] > MT_SIGNAL),
)


def final_cutflow(selection: str, cols: dict[str, np.ndarray]) -> Cutflow:
    """Step-by-step final cuts on skim columns (events and weighted yields), for the cutflow tables."""
    w = np.asarray(cols["weight"], np.float64)
    alive = np.ones(w.size, bool)
    cf: Cutflow = {}
    _cut(cf, "skim", alive, w)
    from .registry import get_selection

    spec = get_selection(selection)
    steps = spec.cutflow_steps or (("final", spec.final_cuts),)
    for name, fn in steps:
        alive &= np.asarray(fn(cols), bool)
        _cut(cf, name, alive, w)
    return cf
