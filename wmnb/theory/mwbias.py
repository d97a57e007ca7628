"""The m_W bias from theory at generator level, and whether the theory nuisances remove it.

Generator-level muon (p_T, charge) templates of the inclusive W simulation (the final muon,
26 < p_T < 56 GeV, |η| < 2.4, η integrated: see :data:`ETA_EDGES`) with the mass as a POI (Breit–Wigner reweighting by ±100 MeV,
Γ ∝ M³, shape only) are fitted to Asimov pseudo-data: the *same* events reweighted to the data
universe's true theory — its q_T spectrum in (q_T, |y|) bins and its angular coefficients, event
by event, through the truth gate — and normalised to the expected data.  The simulation's noise
cancels (same events), so the fitted mass shift is the bias the theory differences would cause:
once with the theory nuisances of chapter 06 (``pTV``, ``angularCoeffs``) fixed at zero, once
free within their priors.  The injected mass is the simulation's: a good theory model gives
zero within the fit's uncertainty.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..conventions import breit_wigner, width_for_mass
from ..corrections import SampleInfo
from .correction import TheoryCorrection

#: one |η| < 2.4 bin: at generator level the mass lives in the muon pT; finer η bins make the
#: ±100 MeV templates so noisy (per-event weights of a few % on few events) that they dilute a
#: fitted shift towards zero (measured: 9, 48, 94 MeV from 24 k, 200 k, 2.6 M events in 24 η
#: bins against 93, 109, 106 MeV in one)
ETA_EDGES = np.array([-2.4, 2.4])
PT_EDGES = np.linspace(26.0, 56.0, 31)
MASS_STEP = 0.1       # GeV


@dataclass(frozen=True)
class MwBias:
    """Fitted m_W shifts (MeV) of the pseudo-data from the data universe's theory."""

    fixed: float            # theory nuisances fixed at zero
    free: float             # theory nuisances free within their priors
    error: float            # the fit's uncertainty with them free (data statistics + theory)
    stat_error: float       # with them fixed (data statistics only)
    n_events: float         # expected selected data events in the acceptance
    pulls: dict[str, tuple[float, float]]
    mc_error: float | None = None   # the simulation's statistical error of ``fixed`` (from two halves)


def final_muons(files: Sequence[str | Path], max_events: int | None = None) -> dict[str, np.ndarray]:
    """pT, η and charge of the final (status 1) muon of each generator-level W event."""
    import awkward as ak
    import uproot

    parts: dict[str, list[np.ndarray]] = {"pt": [], "eta": [], "charge": []}
    n = 0
    for path in files:
        if max_events is not None and n >= max_events:
            break
        with uproot.open(path) as fh:
            a = fh["Events"].arrays(["GenPart_pt", "GenPart_eta", "GenPart_pdgId", "GenPart_status"],
                                    entry_stop=None if max_events is None else max_events - n)
        sel = (abs(a.GenPart_pdgId) == 13) & (a.GenPart_status == 1)
        first = {k: ak.firsts(a[f"GenPart_{k}"][sel]) for k in ("pt", "eta", "pdgId")}
        ok = ak.to_numpy(~ak.is_none(first["pt"]))
        parts["pt"].append(np.where(ok, ak.to_numpy(ak.fill_none(first["pt"], 0.0)).astype(float), 0.0))
        parts["eta"].append(np.where(ok, ak.to_numpy(ak.fill_none(first["eta"], 99.0)).astype(float), 99.0))
        parts["charge"].append(np.where(ak.to_numpy(ak.fill_none(first["pdgId"], 0)) < 0, 1, -1) * ok)
        n += len(ok)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _hist(muons: Mapping[str, np.ndarray], weight: np.ndarray) -> np.ndarray:
    h, _, _ = np.histogram2d(muons["eta"], muons["pt"], bins=(ETA_EDGES, PT_EDGES), weights=weight)
    return h.ravel()


def in_acceptance(muons: Mapping[str, np.ndarray]) -> np.ndarray:
    """Final muons inside the template range (26 < p_T < 56 GeV, |η| < 2.4)."""
    return (muons["pt"] > PT_EDGES[0]) & (muons["pt"] < PT_EDGES[-1]) & (np.abs(muons["eta"]) < ETA_EDGES[-1])


def _mass_factor(m: np.ndarray, m0: float, g0: float, shift: float) -> np.ndarray:
    """Event weights moving the line shape from (M0, Γ0) to M0 + shift (Γ ∝ M³)."""
    m1 = m0 + shift
    return breit_wigner(m, m1, width_for_mass(m1, m0, g0)) / breit_wigner(m, m0, g0)


def generator_mw_bias(events: Mapping[str, Mapping[str, np.ndarray]], muons: Mapping[str, Mapping[str, np.ndarray]],
                      target_weights: Mapping[str, np.ndarray], correction: TheoryCorrection,
                      expected_events: Mapping[str, float], mass: float, width: float,
                      groups: Sequence[str] = ("pTV", "angularCoeffs")) -> MwBias:
    """The fitted m_W shift of pseudo-data = the W events reweighted by ``target_weights`` (per
    boson, per event: the data universe's theory over the simulation's), with the theory nuisances
    of ``groups`` fixed and free; ``expected_events`` scales each boson's templates to the data."""
    from ..fit import ModelBuilder, fit

    nominal: list[np.ndarray] = []
    data: list[np.ndarray] = []
    up: list[np.ndarray] = []
    down: list[np.ndarray] = []
    shapes: dict[str, dict[str, Any]] = {}
    for boson in ("wplus", "wminus"):
        ev, mu = events[boson], muons[boson]
        acc = in_acceptance(mu)
        cols = {"gen_pdgid": np.full(acc.sum(), 24 if boson == "wplus" else -24), "gen_qt": ev["GenV_pt"][acc],
                "gen_y": ev["GenV_y"][acc], "gen_cos_cs": ev["GenV_cosThetaCS"][acc], "gen_phi_cs": ev["GenV_phiCS"][acc]}
        m = {k: v[acc] for k, v in mu.items()}
        info = SampleInfo(f"{boson}_munu", False, "gen")
        w = np.asarray(ev["genWeight"], float)[acc] * correction.nominal_factor(cols, info)
        w = w * (expected_events[boson] / w.sum())           # every accepted event lands in the histogram
        nominal.append(_hist(m, w))
        target = _hist(m, w * np.asarray(target_weights[boson], float)[acc])
        data.append(target * (nominal[-1].sum() / max(target.sum(), 1e-300)))
        gm = np.asarray(ev["GenV_mass"], float)[acc]
        for out, shift in ((up, MASS_STEP), (down, -MASS_STEP)):
            h = _hist(m, w * _mass_factor(gm, mass, width, shift))
            out.append(h * nominal[-1].sum() / h.sum())
        for var in correction.iter_variations(cols, info):
            if var.group not in groups:
                continue
            fu, fd = var.full(w.size)
            hu = _hist(m, w * fu)
            hd = _hist(m, w * fd) if fd is not None else None
            shapes.setdefault(var.nuisance, {"group": var.group, "up": {}, "down": {}})
            shapes[var.nuisance]["up"][boson] = hu
            shapes[var.nuisance]["down"][boson] = hd
    nom = np.concatenate(nominal)
    keep = nom > 0
    b = ModelBuilder(np.concatenate(data)[keep])
    b.add_process("W", nom[keep], signal=True)
    b.add_poi_shape("mass", "W", up=np.concatenate(up)[keep], down=np.concatenate(down)[keep], scale=MASS_STEP * 1e3)
    b.add_norm_poi("norm_W", "W")
    names = []
    for name, s in shapes.items():
        hu = np.concatenate([s["up"].get(bo, nominal[i]) for i, bo in enumerate(("wplus", "wminus"))])[keep]
        if np.all(np.abs(hu / nom[keep] - 1.0) < 1e-9):
            continue
        downs = [s["down"].get(bo, nominal[i]) for i, bo in enumerate(("wplus", "wminus"))]
        hd = None if any(d is None for d in downs) else np.concatenate(downs)[keep]
        b.add_shape_systematic(name, "W", up=np.maximum(hu, 1e-12), down=None if hd is None else np.maximum(hd, 1e-12),
                               group=s["group"])
        names.append(name)
    model = b.build()
    free = fit(model, impacts=False, global_impacts=False)
    fixed = fit(model, impacts=False, global_impacts=False, fixed=names, full_cov=False)
    step = MASS_STEP * 1e3
    return MwBias(fixed.value("mass") * step, free.value("mass") * step, free.error("mass") * step,
                  fixed.error("mass") * step, float(nom.sum()),
                  {k: v for k, v in free.pulls.items() if k in names})
