"""Small random NanoAOD-like files for tests and benchmarks of the engine.

:func:`write_toy_nanoaod` writes an ``Events`` tree with the branch names and types of
DEVELOPING.md ("The samples"), a ``Runs`` tree and a provenance string, with random but
physically shaped content: a fraction of events hold a resonance decaying to two muons (Z, J/psi
or a W-like muon + neutrino), the rest random muons, so every selection finds candidates.  It is
*not* the chapter-00 generator; it only exercises the engine's code paths.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from ..conventions import JPSI_MASS, UPSILON_1S_MASS
from .kinematics import MUON_MASS


def _tree(f: object, name: str, arrays: dict) -> None:
    """Write ``arrays`` as a TTree (uproot's default for dicts would be an RNTuple)."""
    f.mktree(name, {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in arrays.items()})
    if len(next(iter(arrays.values()))):
        f[name].extend(arrays)


def _split(values: np.ndarray, counts: np.ndarray) -> ak.Array:
    return ak.unflatten(values, counts)


def _decay(rng: np.random.Generator, mass: np.ndarray, qt: np.ndarray, y: np.ndarray,
           phi: np.ndarray) -> tuple[np.ndarray, ...]:
    """Two massless-ish daughters of a boson: (pt1, eta1, phi1, pt2, eta2, phi2) in the lab."""
    n = mass.size
    cos_t = rng.uniform(-1, 1, n)
    sin_t = np.sqrt(1 - cos_t ** 2)
    ph = rng.uniform(-np.pi, np.pi, n)
    p = mass / 2
    # daughters in the rest frame
    d = np.stack([p * sin_t * np.cos(ph), p * sin_t * np.sin(ph), p * cos_t], axis=1)
    e = np.full(n, p)
    # boost: boson four-momentum
    mt_ = np.sqrt(mass ** 2 + qt ** 2)
    bE, bz = mt_ * np.cosh(y), mt_ * np.sinh(y)
    bx, by = qt * np.cos(phi), qt * np.sin(phi)
    bvec = np.stack([bx, by, bz], axis=1) / bE[:, None]
    b2 = np.sum(bvec ** 2, axis=1)
    gamma = 1 / np.sqrt(1 - b2)
    out = []
    for sign in (1, -1):
        v = sign * d
        bp = np.sum(bvec * v, axis=1)
        g2 = np.where(b2 > 0, (gamma - 1) / np.where(b2 > 0, b2, 1), 0.0)
        lab = v + (g2 * bp + gamma * e)[:, None] * bvec
        pt = np.hypot(lab[:, 0], lab[:, 1])
        eta = np.arcsinh(lab[:, 2] / pt)
        out += [pt, eta, np.arctan2(lab[:, 1], lab[:, 0])]
    return tuple(out)


def write_toy_nanoaod(path: str | os.PathLike, n: int, seed: int = 1, *, mc: bool = True,
                      n_pdf: int = 11, kind: str = "mix", compression: str = "zlib") -> Path:
    """Write ``n`` toy events to ``path``.  ``kind``: ``"mix"`` (W-like, Z and random muons,
    single-muon triggers), ``"onia"`` (J/psi and Upsilon dimuons, dimuon triggers)."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # resonance per event: 0 none, 1 W (one muon + neutrino), 2 Z (two muons)
    if kind == "onia":
        res = rng.choice([0, 3, 4], size=n, p=[0.3, 0.5, 0.2])       # 3 J/psi, 4 Upsilon
        masses = np.where(res == 3, JPSI_MASS, UPSILON_1S_MASS) + rng.normal(0, 0.03, n)
        qt = rng.gamma(3.0, 6.0, n) + 10
    else:
        res = rng.choice([0, 1, 2], size=n, p=[0.3, 0.5, 0.2])
        masses = np.where(res == 1, 80.36, 91.19) + 2.0 * rng.standard_cauchy(n).clip(-10, 10)
        qt = rng.gamma(1.5, 5.0, n)
    y = rng.normal(0, 1.5, n)
    bphi = rng.uniform(-np.pi, np.pi, n)
    pt1, eta1, phi1, pt2, eta2, phi2 = _decay(rng, masses, qt, y, bphi)
    # reco muons: daughters (smeared) + random extra muons
    n_extra = rng.poisson(np.where(res == 0, 1.2, 0.3))
    n_dau = np.where(res == 0, 0, np.where(res == 1, 1, 2))
    counts = n_dau + n_extra
    tot = int(counts.sum())
    ev_of = np.repeat(np.arange(n), counts)
    local = np.arange(tot) - np.repeat(np.cumsum(counts) - counts, counts)
    is_dau1 = (local == 0) & (n_dau[ev_of] >= 1)
    is_dau2 = (local == 1) & (n_dau[ev_of] == 2)
    smear = 1 + rng.normal(0, 0.015, tot)
    pt = np.where(is_dau1, pt1[ev_of], np.where(is_dau2, pt2[ev_of], rng.exponential(12.0, tot) + 3)) * smear
    eta = np.where(is_dau1, eta1[ev_of], np.where(is_dau2, eta2[ev_of], rng.uniform(-2.6, 2.6, tot)))
    phi = np.where(is_dau1, phi1[ev_of], np.where(is_dau2, phi2[ev_of], rng.uniform(-np.pi, np.pi, tot)))
    q1 = rng.choice([-1, 1], n)
    charge = np.where(is_dau1, q1[ev_of], np.where(is_dau2, -q1[ev_of], rng.choice([-1, 1], tot))).astype(np.int32)
    prompt = is_dau1 | is_dau2
    iso = np.where(prompt, rng.exponential(0.05, tot), rng.exponential(0.4, tot)).astype(np.float32)
    # sort muons by pT within each event, as NanoAOD does
    order = np.lexsort((-pt, ev_of))
    pt, eta, phi, charge, iso, prompt = pt[order], eta[order], phi[order], charge[order], iso[order], prompt[order]
    is_dau1, is_dau2 = is_dau1[order], is_dau2[order]
    medium = rng.random(tot) < np.where(prompt, 0.97, 0.7)
    loose = medium | (rng.random(tot) < 0.5)
    tight = medium & (rng.random(tot) < 0.95)
    glb = rng.random(tot) < 0.95
    sta = glb | (rng.random(tot) < 0.5)
    trk = rng.random(tot) < 0.98
    trig_match = rng.random(tot) < np.where(prompt, 0.9, 0.3)
    dxy = rng.normal(0, np.where(prompt, 0.01, 0.06), tot).astype(np.float32)
    dz = rng.normal(0, 0.05, tot).astype(np.float32)
    sv = rng.random(tot) < np.where(prompt, 0.01, 0.2)
    # recoil: u = -qt vector + noise; MET = -(u + visible muons)
    ux = -qt * np.cos(bphi) * 0.8 + rng.normal(0, 8, n)
    uy = -qt * np.sin(bphi) * 0.8 + rng.normal(0, 8, n)
    vis_x = np.bincount(ev_of[order], weights=pt * np.cos(phi), minlength=n) if tot else np.zeros(n)
    vis_y = np.bincount(ev_of[order], weights=pt * np.sin(phi), minlength=n) if tot else np.zeros(n)
    mex, mey = -(ux + vis_x), -(uy + vis_y)
    n_ele = rng.poisson(0.15, n)
    ne = int(n_ele.sum())
    ev = {
        "run": np.full(n, 1, np.uint32), "luminosityBlock": (np.arange(n) // 1000 + 1).astype(np.uint32),
        "event": (np.arange(n) + 1 + 1000 * seed).astype(np.uint64),
        "Muon": ak.zip({
            "pt": _split(pt.astype(np.float32), counts), "eta": _split(eta.astype(np.float32), counts),
            "phi": _split(phi.astype(np.float32), counts),
            "mass": _split(np.full(tot, MUON_MASS, np.float32), counts),
            "charge": _split(charge, counts), "pfRelIso04_all": _split(iso, counts),
            "dxy": _split(dxy, counts), "dz": _split(dz, counts),
            "looseId": _split(loose, counts), "mediumId": _split(medium, counts), "tightId": _split(tight, counts),
            "isGlobal": _split(glb, counts), "isTracker": _split(trk, counts), "isStandalone": _split(sta, counts),
            "triggerMatch": _split(trig_match, counts), "svMatched": _split(sv, counts),
        }),
        "Electron": ak.zip({
            "pt": _split(rng.exponential(15, ne).astype(np.float32), n_ele),
            "eta": _split(rng.uniform(-2.5, 2.5, ne).astype(np.float32), n_ele),
            "phi": _split(rng.uniform(-np.pi, np.pi, ne).astype(np.float32), n_ele),
            "cutBased": _split(rng.integers(0, 5, ne).astype(np.int32), n_ele),
        }),
        "MET_pt": np.hypot(mex, mey).astype(np.float32), "MET_phi": np.arctan2(mey, mex).astype(np.float32),
        "PV_npvs": rng.poisson(25, n).astype(np.int32),
    }
    ev["PV_npvsGood"] = (ev["PV_npvs"] - rng.integers(0, 3, n)).clip(0).astype(np.int32)
    if kind == "onia":
        ev["HLT_Dimuon20_Jpsi"] = (res == 3) & (rng.random(n) < 0.9) | (rng.random(n) < 0.05)
        ev["HLT_Dimuon13_Upsilon"] = (res == 4) & (rng.random(n) < 0.9) | (rng.random(n) < 0.05)
        ev["HLT_IsoMu24"] = np.zeros(n, bool)
        ev["HLT_IsoTkMu24"] = np.zeros(n, bool)
    else:
        has_hi = np.bincount(ev_of[order][pt > 24], minlength=n) > 0 if tot else np.zeros(n, bool)
        ev["HLT_IsoMu24"] = has_hi & (rng.random(n) < 0.9)
        ev["HLT_IsoTkMu24"] = has_hi & (rng.random(n) < 0.5)
        ev["HLT_Dimuon20_Jpsi"] = np.zeros(n, bool)
        ev["HLT_Dimuon13_Upsilon"] = np.zeros(n, bool)
    pf = 1 - np.abs(rng.normal(0, 0.01, n))
    ev["L1PreFiringWeight_Nom"] = pf.astype(np.float32)
    ev["L1PreFiringWeight_Up"] = (pf - 0.003).astype(np.float32)
    ev["L1PreFiringWeight_Dn"] = np.minimum(pf + 0.003, 1).astype(np.float32)
    if mc:
        ev["genWeight"] = np.where(rng.random(n) < 0.1, -1.0, 1.0).astype(np.float32) * 1.5
        ev["Pileup_nTrueInt"] = rng.normal(25, 5, n).astype(np.float32)
        scale = 1 + rng.normal(0, 0.05, (n, 9))
        scale[:, 4] = 1
        pdf = 1 + rng.normal(0, 0.02, (n, n_pdf))
        pdf[:, 0] = 1
        ev["LHEScaleWeight"] = _split(scale.astype(np.float32).ravel(), np.full(n, 9))
        ev["LHEPdfWeight"] = _split(pdf.astype(np.float32).ravel(), np.full(n, n_pdf))
        vpdg = np.where(res == 1, 24 * q1, np.where(res == 2, 23, np.where(res == 3, 443, np.where(res == 4, 553, 0))))
        ev.update({"GenV_mass": np.where(res > 0, masses, 0).astype(np.float32),
                   "GenV_pt": np.where(res > 0, qt, 0).astype(np.float32),
                   "GenV_y": np.where(res > 0, y, 0).astype(np.float32),
                   "GenV_phi": np.where(res > 0, bphi, 0).astype(np.float32),
                   "GenV_pdgId": vpdg.astype(np.int32),
                   "GenV_cosThetaCS": np.where(res > 0, rng.uniform(-1, 1, n), 0).astype(np.float32),
                   "GenV_phiCS": np.where(res > 0, rng.uniform(0, 2 * np.pi, n), 0).astype(np.float32)})
        # GenPart: [boson, lepton1, lepton2, lepton1 after FSR, lepton2 after FSR] for resonances
        ng = np.where(res > 0, 5, 0)
        g_pdg = np.zeros((n, 5), np.int32)
        l1 = -13 * q1                              # pdgId of daughter 1 (charge q1)
        l2 = np.where(res == 1, 14 * q1, 13 * q1)  # W: neutrino, else the opposite muon
        g_pdg[:, 0], g_pdg[:, 1], g_pdg[:, 2], g_pdg[:, 3], g_pdg[:, 4] = vpdg, l1, l2, l1, l2
        g_pt = np.stack([qt, pt1, pt2, pt1 * 0.99, pt2], axis=1)
        g_eta = np.stack([np.zeros(n), eta1, eta2, eta1, eta2], axis=1)
        g_phi = np.stack([bphi, phi1, phi2, phi1, phi2], axis=1)
        g_m = np.stack([masses, np.full(n, MUON_MASS), np.zeros(n), np.full(n, MUON_MASS), np.zeros(n)], axis=1)
        g_m[:, 2] = np.where(res == 1, 0.0, MUON_MASS)
        g_m[:, 4] = g_m[:, 2]
        g_mother = np.tile(np.array([-1, 0, 0, 1, 2], np.int32), (n, 1))
        g_status = np.tile(np.array([62, 23, 23, 1, 1], np.int32), (n, 1))
        sel = np.repeat(ng > 0, 5).reshape(n, 5)
        ev["GenPart"] = ak.zip({
            "pt": _split(g_pt[sel].astype(np.float32), ng), "eta": _split(g_eta[sel].astype(np.float32), ng),
            "phi": _split(g_phi[sel].astype(np.float32), ng), "mass": _split(g_m[sel].astype(np.float32), ng),
            "pdgId": _split(g_pdg[sel], ng), "status": _split(g_status[sel], ng),
            "statusFlags": _split(np.zeros(int(ng.sum()), np.int32), ng),
            "genPartIdxMother": _split(g_mother[sel], ng),
        })
        # reco-gen match: daughters -> post-FSR leptons (index 3 / 4), others unmatched
        gidx = np.where(is_dau1, 3, np.where(is_dau2, 4, -1)).astype(np.int32)
        ev["Muon"] = ak.with_field(ev["Muon"], _split(gidx, counts), "genPartIdx")
    comp = {"zlib": uproot.ZLIB(1), "lz4": uproot.LZ4(1), "zstd": uproot.ZSTD(1), "none": None}[compression]
    with uproot.recreate(path, compression=comp) as f:
        _tree(f, "Events", ev)
        if mc:
            _tree(f, "Runs", {"run": np.array([1], np.uint32), "genEventCount": np.array([n], np.int64),
                              "genEventSumw": np.array([float(np.sum(ev["genWeight"]))])})
        f["wmnb_provenance"] = json.dumps({"process": "toy", "seed": seed, "kind": kind})
    return path


def rewrite_nanoaod(src: str | os.PathLike, dst: str | os.PathLike, *, branches: Sequence[str] | None = None,
                    drop: Sequence[str] = (), rename: Mapping[str, str] | None = None,
                    cast: Mapping[str, Any] | None = None,
                    modify: Callable[[dict[str, ak.Array]], None] | None = None,
                    runs: Mapping[str, np.ndarray] | None = None) -> Path:
    """Copy the ``Events`` tree of ``src`` (only ``branches`` if given, without ``drop``) to ``dst``
    with branches renamed (``{old: new}``), retyped (``{name: dtype}``, e.g. the narrower integers
    of newer NanoAOD) or changed in place by ``modify(arrays)``; the flat branches of ``Runs``
    are copied too, unless ``runs`` gives that tree's arrays (``{}``: no ``Runs``).  For tests
    of NanoAOD version differences and of bad input.

    Collections are written back grouped by their ``<Name>_`` prefix (one counter ``n<Name>``),
    so the result has the layout of a NanoAOD file."""
    t = uproot.open(src)["Events"]
    names = [k for k in (t.keys() if branches is None else branches) if k not in set(drop)]
    jagged_prefixes = {k.partition("_")[0] for k in t.keys()
                       if isinstance(t[k].interpretation, uproot.interpretation.jagged.AsJagged)}
    # counters are re-made by the writer
    names = [k for k in names if not (k.startswith("n") and k[1:] in jagged_prefixes)]
    arrays: dict[str, ak.Array] = {}
    for k in names:
        arr = t[k].array()
        if cast and k in cast:
            arr = ak.values_astype(arr, cast[k])
        arrays[(rename or {}).get(k, k)] = arr
    if modify is not None:
        modify(arrays)
    out: dict[str, Any] = {}
    groups: dict[str, dict[str, ak.Array]] = {}
    for k, v in arrays.items():
        prefix, _, fld = k.partition("_")
        if v.ndim > 1 and fld:
            groups.setdefault(prefix, {})[fld] = v
        else:
            out[k] = v if v.ndim > 1 else ak.to_numpy(v)
    for prefix, fields in groups.items():
        out[prefix] = ak.zip(fields)
    f_src = uproot.open(src)
    if runs is None and "Runs" in f_src:
        r = f_src["Runs"]
        runs = {k: r[k].array(library="np") for k in r.keys()
                if isinstance(r[k].interpretation, uproot.interpretation.numerical.AsDtype)}
    with uproot.recreate(dst) as f:
        _tree(f, "Events", out)
        if runs:
            _tree(f, "Runs", runs)
    return Path(dst)


def load_toy_scale(path: str | os.PathLike) -> "object":
    """Correction factory for tests: a muon pT scale ``1 + a`` on simulation (``{"a": ...}`` in
    ``path``) and a weight factor 2 with variations ``toyUp`` (3) / ``toyDown`` (1)."""
    from ..corrections import Correction, WeightSet

    a = float(json.loads(Path(path).read_text())["a"])

    class _Toy(Correction):
        name = "toyscale"
        kinds = ("muon", "weight")

        def applies_to(self, sample):  # type: ignore[override]
            return not sample.is_data

        def correct(self, columns, sample):  # type: ignore[override]
            for p in sample.muon_prefixes:
                columns[f"{p}_pt"] = columns[f"{p}_pt"] * (1 + a)

        def weights(self, columns, sample):  # type: ignore[override]
            n = len(columns["weight"])
            return WeightSet(nominal=np.full(n, 2.0), variations={"toyUp": np.full(n, 3.0), "toyDown": np.ones(n)},
                             groups={"toy": "muonEfficiency"})

    return _Toy()
