"""Fake muon candidates: the combinatorial background of the tag and probe.

Real tag-and-probe samples are not pure: a tag muon pairs with anything that looks like a probe.
For the reconstruction step the probes are inner tracks, most of which are hadrons; for the
tracking step they are standalone muons, some of which are hadrons punching through the
calorimeters or decaying in flight without a matching track.  These candidates come from the
hadronic activity of every event (the jets recoiling against a W or Z, the jets of multijet
events, the underlying event and pileup), so the W+jets and multijet events that give an isolated
tag contribute pairs whose mass falls with m_mumu and whose charge is unrelated to the tag's
(same-sign pairs as often as opposite-sign ones).

Per event the number of candidates with pT > :data:`PT_MIN` is Poisson with mean
``rate * (1 + |u_T| / recoil_scale)`` (u_T: the true hadronic recoil, a proxy of the jet
activity), capped at :data:`K_FAKE` = 1.  A fraction ``jet_fraction`` follows the recoil direction
(phi spread 0.4, eta ~ N(0, 1.4)), the rest is isotropic (random tracks).  pT ~ pT^-pt_power above
10 GeV.  Each candidate is a tracker-only muon (a track with a spurious segment match: a failing
probe of the reco step), a standalone-only muon (punch-through or a decay in flight without a
matched track: a failing probe of the tracking step) or a global muon (passing both), with the
relative rates ``type_weights``; a global fake passes the medium ID with ``medium_prob``.  Fakes
are not isolated (relative isolation ~ Exp(iso_mean)), never trigger-matched, have no
generator match (``Muon_genPartIdx = -1``) and are looseId only when medium.  They are hadrons
of the recoil, so they take no part in the MET (already in the recoil), in prefiring or in the
dimuon triggers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..conventions import MUON_MASS

K_FAKE = 1        # fake-candidate slots per event (at a few per cent per event, two are negligible)
PT_MIN = 10.0     # candidates below this pT are not stored (they never make a probe)
PT_MAX = 300.0


def fake_muons(had: np.ndarray, fk: dict[str, Any], det: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fake muon candidates of ``n`` events with true hadronic recoil ``had`` (n, 2), drawn from
    the card section ``fk`` (``detector.fake_muons``) and ``det`` (the detector section, for the
    resolutions and vertexing).  Returns the NanoAOD-like muon fields and ``exists`` of the
    candidates and ``rows``, the events they belong to (one candidate at most per event, see
    :data:`K_FAKE`): only the few events with a candidate draw its properties."""
    n = had.shape[0]
    recoil = np.hypot(had[:, 0], had[:, 1])
    lam = fk["rate"] * (1.0 + recoil / fk["recoil_scale"])
    rows = np.flatnonzero(rng.random(n) < -np.expm1(-lam))          # P(Poisson(lam) >= 1)
    m = rows.size
    # pT: Pareto above PT_MIN
    pt = np.minimum(PT_MIN * rng.random(m) ** (-1.0 / (fk["pt_power"] - 1.0)), PT_MAX)
    in_jet = rng.random(m) < fk["jet_fraction"]
    phi_jet = np.arctan2(had[rows, 1], had[rows, 0]) + 0.4 * rng.standard_normal(m)
    phi = np.where(in_jet, phi_jet, rng.uniform(-np.pi, np.pi, m))
    phi = np.mod(phi + np.pi, 2 * np.pi) - np.pi
    eta = np.where(in_jet, 1.4 * rng.standard_normal(m), rng.uniform(-2.4, 2.4, m))
    w = np.asarray(fk["type_weights"], dtype=np.float64)
    kind = rng.choice(3, size=m, p=w / w.sum())           # 0 tracker-only, 1 standalone-only, 2 global
    is_glb = kind == 2
    medium = is_glb & (rng.random(m) < fk["medium_prob"])
    # a standalone-only candidate carries the standalone (punch-through) momentum
    sa_res = 2.0 * det["resolution"]["standalone"]
    pt = np.where(kind != 1, pt, pt * np.abs(1.0 + sa_res * rng.standard_normal(m)))
    vx = det["vertexing"]
    # prompt-like tracks, 30 % of them displaced (decays in flight)
    dxy = 3.0 * vx["dxy_sigma_cm"] * rng.standard_normal(m) + 0.02 * rng.standard_normal(m) * (rng.random(m) < 0.3)
    fields = {
        "pt": pt, "eta": eta, "phi": phi, "mass": np.full(m, MUON_MASS),
        "charge": np.where(rng.random(m) < 0.5, 1, -1), "pfRelIso04_all": rng.exponential(fk["iso_mean"], m),
        "dxy": dxy, "dz": 2.0 * vx["dz_sigma_cm"] * rng.standard_normal(m),
        "looseId": medium, "mediumId": medium, "tightId": np.zeros(m, bool),
        "isGlobal": is_glb, "isTracker": kind != 1, "isStandalone": kind != 0,
        "genPartIdx": np.full(m, -1), "triggerMatch": np.zeros(m, bool), "svMatched": np.zeros(m, bool),
        "exists": np.abs(eta) < 2.4,
    }
    fields["rows"] = rows
    return fields


def append_fakes(muon: dict[str, np.ndarray], exists: np.ndarray, fakes: dict[str, np.ndarray]
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The muon fields (n, k) and ``exists`` mask with :data:`K_FAKE` slots appended, holding the
    candidates of :func:`fake_muons` in their events (empty slots elsewhere)."""
    missing = set(muon) - set(fakes)
    if missing:
        raise KeyError(f"fake muon candidates lack the muon fields {sorted(missing)}")
    n, k = exists.shape
    rows = fakes["rows"]
    out = {}
    for name, v in list(muon.items()) + [("exists", exists)]:
        full = np.empty((n, k + K_FAKE), dtype=v.dtype)
        full[:, :k] = v
        full[:, k:] = 0
        full[rows, k] = fakes[name]
        out[name] = full
    return out, out.pop("exists")
