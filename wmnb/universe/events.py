"""Assemble NanoAOD-like branches (awkward arrays) from truth + reconstruction.

Conventions (documented in chapter 00): muons sorted by decreasing pT; ``Muon_genPartIdx``
points to the post-FSR (status 1) generator muon in ``GenPart``; ``GenPart`` holds the boson,
the leptons before FSR, the leptons after FSR and the FSR photons; ``GenV_*`` give the generated
boson (or quarkonium) and its Collins-Soper angles.  Float branches are float32; the LHE weights
and the GenPart angles/masses keep 12 mantissa bits (as NanoAOD does) so they compress.
"""
from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from .processes import Truth

MUON_FLOAT = ("pt", "eta", "phi", "mass", "pfRelIso04_all", "dxy", "dz")
MUON_BOOL = ("looseId", "mediumId", "tightId", "isGlobal", "isTracker", "isStandalone",
             "triggerMatch", "svMatched")


def round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """float32 copy of ``x`` keeping ``bits`` mantissa bits (round to nearest)."""
    a = np.ascontiguousarray(x, dtype=np.float32).copy()
    drop = 23 - bits
    if drop <= 0:
        return a
    iv = a.view(np.uint32)
    iv += np.uint32(1 << (drop - 1))
    iv &= np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return a


def _jagged(fields: dict[str, np.ndarray], exists: np.ndarray, order: np.ndarray | None = None) -> ak.Array:
    """Record array of the entries where ``exists`` (n, k), in ``order`` per event."""
    if order is not None:
        exists = np.take_along_axis(exists, order, axis=1)
        fields = {k: np.take_along_axis(v, order, axis=1) for k, v in fields.items()}
    counts = exists.sum(axis=1)
    flat = {k: v[exists] for k, v in fields.items()}
    return ak.unflatten(ak.zip(flat, depth_limit=1), counts)


def compact_genparts(truth: Truth) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Drop invalid GenPart slots: returns (fields (n, N_GEN), valid mask, old slot -> new index)."""
    g = truth.gen
    valid = g["valid"]
    newidx = np.cumsum(valid, axis=1) - 1
    newidx = np.where(valid, newidx, -1).astype(np.int32)
    mother = g["genPartIdxMother"]
    mother_new = np.where(mother >= 0, np.take_along_axis(newidx, np.maximum(mother, 0), axis=1), -1)
    fields = {k: g[k] for k in ("pt", "eta", "phi", "mass", "pdgId", "status", "statusFlags")}
    fields["genPartIdxMother"] = mother_new.astype(np.int32)
    return fields, valid, newidx


def assemble(truth: Truth, reco: dict[str, Any], mask: np.ndarray | None, is_mc: bool,
             weights: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Branches of the events where ``mask``: a dict of numpy arrays (scalars) and awkward
    arrays (collections), ready for :func:`wmnb.universe.writer.write_tree`.  ``mask`` None keeps
    every event (without copying the arrays)."""
    def keep(x: np.ndarray) -> np.ndarray:
        return x if mask is None else x[mask]

    t = truth if mask is None else truth.select(mask)
    mu = {k: keep(v) for k, v in reco["muon"].items()}
    exists = keep(reco["muon_exists"])
    order = np.argsort(np.where(exists, -mu["pt"], np.inf), axis=1, kind="stable")
    out: dict[str, Any] = {}
    for k, v in reco["scalars"].items():
        v = keep(v)
        out[k] = v.astype(np.float32) if v.dtype.kind == "f" else v
    fields: dict[str, np.ndarray] = {}
    for k in MUON_FLOAT:
        fields[k] = mu[k].astype(np.float32)
    fields["charge"] = mu["charge"].astype(np.int32)
    for k in MUON_BOOL:
        fields[k] = mu[k].astype(bool)
    if is_mc:
        genparts = compact_genparts(t)
        newidx = genparts[2]
        slot = mu["genPartIdx"]
        fields["genPartIdx"] = np.where(slot >= 0, np.take_along_axis(newidx, np.maximum(slot, 0), axis=1), -1).astype(np.int32)
    out["Muon"] = _jagged(fields, exists, order)
    el = {k: keep(v) for k, v in reco["electron"].items()}
    el_exists = keep(reco["electron_exists"])
    el_order = np.argsort(np.where(el_exists, -el["pt"], np.inf), axis=1, kind="stable")
    out["Electron"] = _jagged({"pt": el["pt"].astype(np.float32), "eta": el["eta"].astype(np.float32),
                               "phi": el["phi"].astype(np.float32), "cutBased": el["cutBased"].astype(np.int32)},
                              el_exists, el_order)
    if not is_mc:
        out.pop("Pileup_nTrueInt", None)
        return out
    out["Pileup_nTrueInt"] = round_mantissa(out["Pileup_nTrueInt"], 12)
    out.update(generator_branches(t, weights, genparts))
    return out


def generator_branches(truth: Truth, weights: tuple[np.ndarray, np.ndarray | None] | None = None,
                       genparts: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """The generator-level branches of simulated events: ``genWeight``, ``LHEScaleWeight``,
    ``LHEPdfWeight`` (when ``weights`` has them), ``GenPart`` and ``GenV_*``.  The simulation files
    hold them next to the reconstructed objects; the inclusive generator-level samples
    (``mc_gen``, NanoGEN-like) hold only them.  ``genparts`` may pass :func:`compact_genparts`."""
    n = truth.n
    out: dict[str, Any] = {"genWeight": np.ones(n, dtype=np.float32)}
    scale, pdf = weights if weights is not None else (np.ones((n, 9)), None)
    out["LHEScaleWeight"] = ak.unflatten(round_mantissa(scale.ravel(), 12), np.full(n, scale.shape[1]))
    if pdf is not None:
        out["LHEPdfWeight"] = ak.unflatten(round_mantissa(pdf.ravel(), 12), np.full(n, pdf.shape[1]))
    gfields, gvalid, _ = genparts if genparts is not None else compact_genparts(truth)
    gf = {"pt": gfields["pt"].astype(np.float32),
          "eta": round_mantissa(gfields["eta"], 16), "phi": round_mantissa(gfields["phi"], 16),
          "mass": round_mantissa(gfields["mass"], 16),
          "pdgId": gfields["pdgId"].astype(np.int32), "status": gfields["status"].astype(np.int32),
          "statusFlags": gfields["statusFlags"].astype(np.int32),
          "genPartIdxMother": gfields["genPartIdxMother"].astype(np.int32)}
    out["GenPart"] = _jagged(gf, gvalid)
    for k, v in truth.genv.items():
        out[f"GenV_{k}"] = v.astype(np.int32) if k == "pdgId" else v.astype(np.float32)
    return out


def concatenate(parts: list[dict[str, Any]], perm: np.ndarray | None = None) -> dict[str, Any]:
    """Concatenate assembled chunks (same branches), optionally reordering the events."""
    out: dict[str, Any] = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        if isinstance(vals[0], ak.Array):
            v = ak.concatenate(vals)
            out[k] = v[perm] if perm is not None else v
        else:
            v = np.concatenate(vals)
            out[k] = v[perm] if perm is not None else v
    return out


def n_events(branches: dict[str, Any]) -> int:
    """Number of events in an assembled chunk."""
    return len(next(iter(branches.values())))
