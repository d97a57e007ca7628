"""Higher-order electroweak effects: the strength of final-state photon radiation (group ``EW``).

The generator radiates photons off the muons (a leading-log emission probability and spectrum).
Its strength is a theory uncertainty the fit must be free in: one nuisance ``ew_fsr_strength``
scales the probability that a muon radiated by ±:data:`FSR_STRENGTH_PRIOR`, keeping every event
count: per muon, a factor ``1 + δ`` if it radiated and ``(1 − (1 + δ) p) / (1 − p)`` if not, with
``p`` the simulation's own emission fraction (measured on the inclusive generator-level samples).

Whether a muon radiated is read off the event: the muon *before* FSR follows from the generator
boson and its Collins–Soper angles (:func:`decay_products`), and a final muon with a lower pT
than that one radiated (the skim's ``<prefix>_gen_pt`` is the final, post-FSR muon).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..conventions import MUON_MASS

#: 1σ relative size of the FSR-strength nuisance (the spread of QED shower predictions)
FSR_STRENGTH_PRIOR = 0.05
NUISANCE = "ew_fsr_strength"
GROUP = "EW"
#: a final muon lower than the pre-FSR one by more than this fraction radiated (the generator's
#: softest photon carries 0.5 % of the muon energy; float32 rounding is 1e-6)
EMITTED_THRESHOLD = 1e-4


def _boost(p: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Boost four-vectors (N, 4) by velocities (N, 3)."""
    b2 = np.minimum(np.sum(beta * beta, axis=1), 1.0 - 1e-15)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p[:, 1:], axis=1)
    k = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    return np.column_stack([gamma * (p[:, 0] + bp), p[:, 1:] + (k * bp + gamma * p[:, 0])[:, None] * beta])


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def decay_products(mass: np.ndarray, qt: np.ndarray, y: np.ndarray, phi: np.ndarray, cos_cs: np.ndarray,
                   phi_cs: np.ndarray, m1: float = MUON_MASS, m2: float = MUON_MASS) -> tuple[np.ndarray, np.ndarray]:
    """Lab four-vectors (E, px, py, pz) of the two decay products of a boson (mass, q_T, y, φ),
    the first at Collins–Soper angles (cos θ, φ_CS): the standard frame of PHYSICS.md (z along
    the boson's p_z direction, bisecting the beams in the rest frame; x along q_T)."""
    mt = np.sqrt(mass**2 + qt**2)
    boson = np.column_stack([mt * np.cosh(y), qt * np.cos(phi), qt * np.sin(phi), mt * np.sinh(y)])
    beta = boson[:, 1:] / boson[:, :1]
    n = mass.size
    r1 = _unit(_boost(np.tile([1.0, 0.0, 0.0, 1.0], (n, 1)), -beta)[:, 1:])
    r2 = _unit(_boost(np.tile([1.0, 0.0, 0.0, -1.0], (n, 1)), -beta)[:, 1:])
    z = _unit(r1 - r2)
    x = -(r1 + r2)
    x[np.linalg.norm(x, axis=1) < 1e-12] = [1.0, 0.0, 0.0]
    x = _unit(x - np.sum(x * z, axis=1, keepdims=True) * z)
    z = z * np.where(boson[:, 3] < 0, -1.0, 1.0)[:, None]
    yax = np.cross(z, x)
    st = np.sqrt(np.clip(1.0 - cos_cs**2, 0.0, 1.0))
    d = (st * np.cos(phi_cs))[:, None] * x + (st * np.sin(phi_cs))[:, None] * yax + cos_cs[:, None] * z
    p = np.sqrt(np.maximum((mass**2 - (m1 + m2) ** 2) * (mass**2 - (m1 - m2) ** 2), 0.0)) / (2.0 * mass)
    q1 = np.column_stack([np.sqrt(p**2 + m1 * m1), p[:, None] * d])
    q2 = np.column_stack([np.sqrt(p**2 + m2 * m2), -p[:, None] * d])
    return _boost(q1, beta), _boost(q2, beta)


def pre_fsr_pt(columns: Mapping[str, np.ndarray], prefix: str) -> np.ndarray:
    """pT before FSR of the skim muon ``prefix`` (NaN where the event has no generator boson):
    the Collins–Soper lepton is the W's charged lepton and the Z's μ⁻, so a μ⁺ of a Z is the
    second decay product."""
    g = {k: np.asarray(columns[k], dtype=np.float64) for k in ("gen_mass", "gen_qt", "gen_y", "gen_phi",
                                                               "gen_cos_cs", "gen_phi_cs")}
    pdg = np.asarray(columns["gen_pdgid"]).astype(np.int64)
    ok = np.all([np.isfinite(v) for v in g.values()], axis=0) & (g["gen_mass"] > 0) & (pdg != 0)
    out = np.full(pdg.size, np.nan)
    if not ok.any():
        return out
    is_w = np.abs(pdg[ok]) == 24
    first, second = decay_products(*(v[ok] for v in g.values()))
    pt1, pt2 = np.hypot(first[:, 1], first[:, 2]), np.hypot(second[:, 1], second[:, 2])
    charge = np.asarray(columns[f"{prefix}_charge"])[ok] if f"{prefix}_charge" in columns else np.full(ok.sum(), -1)
    out[ok] = np.where(is_w | (charge < 0), pt1, pt2)
    return out


def radiated(columns: Mapping[str, np.ndarray], prefix: str) -> np.ndarray:
    """Whether the skim muon ``prefix`` radiated (False where unknown: no generator match)."""
    post = np.asarray(columns[f"{prefix}_gen_pt"], dtype=np.float64)
    pre = pre_fsr_pt(columns, prefix)
    with np.errstate(invalid="ignore"):
        return np.isfinite(post) & np.isfinite(pre) & (post < (1.0 - EMITTED_THRESHOLD) * pre)


def emission_fraction(pdgid: np.ndarray, mother: np.ndarray, counts: np.ndarray) -> float:
    """Fraction of the generator muons from the boson that radiated (photons whose mother is a
    muon, per such muon), from the flattened GenPart ``pdgId`` and (per-event) mother index
    arrays of generator-level events with ``counts`` particles each."""
    pdgid = np.asarray(pdgid).astype(np.int64)
    offsets = np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    mother = np.asarray(mother).astype(np.int64)
    has = mother >= 0
    mother_pdg = np.where(has, np.abs(pdgid[np.where(has, offsets + mother, 0)]), 0)
    n_mu = int(np.sum((np.abs(pdgid) == 13) & np.isin(mother_pdg, (23, 24))))
    n_gamma = int(np.sum((pdgid == 22) & (mother_pdg == 13)))
    if n_mu == 0:
        raise ValueError("FSR emission fraction: no muons from a boson in the generator record (GenPart)")
    return n_gamma / n_mu


def fsr_factors(emitted: np.ndarray, p: float | np.ndarray, delta: float) -> np.ndarray:
    """Per-muon weight factors scaling the emission probability ``p`` (a number or one per muon)
    by ``1 + delta``: ``1 + delta`` for a muon that radiated, ``(1 − (1 + delta) p) / (1 − p)``
    for one that did not, so the expected count stays."""
    p = np.asarray(p, dtype=float)
    if np.any(p < 0.0) or np.any(p >= 1.0) or np.any((1.0 + delta) * p >= 1.0):
        raise ValueError(f"FSR emission fraction up to {np.max(p)} with a variation {delta} leaves no non-radiating muons")
    return np.where(emitted, 1.0 + delta, (1.0 - (1.0 + delta) * p) / (1.0 - p))
