"""The published artefact in the field's format: a correctionlib (schema v2) JSON file.

For every step ``s`` it holds

``sf_<s>``      inputs ``eta``, ``pt``, ``charge``, ``upar`` (GeV), ``variation`` (string): eta bins
                (clamped) → charge (not for the isolation) → variation → a formula, the smoothed
                polynomial in pT (and u_∥) clamped to the measured range.  Variations:
                ``nominal``; ``stat0`` … ``stat<P-1>``, the eigenvector *up* shifts of that
                eta-charge slice (down is the mirror, 2 nominal − up); ``alt_signal``,
                ``alt_background``, the smoothed scale factors of the alternative fit models.
``eff_mc_<s>``  inputs ``eta``, ``pt``, ``charge`` (not for the isolation), ``upar`` (trigger and
                isolation): the simulation's efficiency in the measurement bins (clamped), which
                the failing-probe scale factors and the event-level trigger factor of
                dimuon events need.

Anyone can read it with ``correctionlib.CorrectionSet.from_file``; :func:`load_tables` reads it
back for the published correction (:mod:`wmnb.efficiency.correction`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.polynomial import legendre

from ..artefacts import atomic_path
from .binning import STEPS
from .scalefactors import StepScaleFactors
from .smoothing import SmoothFit

ARTEFACT = "muon_efficiencies.json"
#: the formulas clip the smoothed scale factor to this range: a polynomial that runs away in a
#: corner without measurements (a sparse u_par bin) must not give negative weights; the chapter
#: reports the range before clipping (``sf_range``)
SF_CLIP = (0.5, 1.5)
ALT_MODELS = ("alt_signal", "alt_background")
SCHEMA_DESCRIPTION = "wmnb chapter 03: muon efficiency scale factors by tag and probe"


def _power_coefficients(fit: SmoothFit, coeffs: np.ndarray) -> np.ndarray:
    """Legendre coefficients of one slice → power-series coefficients A[j, i] of Y^j X^i."""
    npt, nu = fit.order_pt + 1, fit.order_upar + 1
    flat = np.asarray(coeffs, float)
    c = np.zeros((nu, npt))            # the additive form of smoothing.design in the tensor layout
    c[0] = flat[:npt]
    c[1:, 0] = flat[npt:]
    lp = np.zeros((npt, npt))
    for i in range(npt):
        p = legendre.leg2poly(np.eye(npt)[i])
        lp[i, :p.size] = p
    lu = np.zeros((nu, nu))
    for j in range(nu):
        p = legendre.leg2poly(np.eye(nu)[j])
        lu[j, :p.size] = p
    return lu.T @ c @ lp


def _expression(fit: SmoothFit) -> str:
    """TFormula text of Σ_j Y^j Σ_i [j·n_i + i] X^i in Horner form; X, Y the clamped unit maps."""
    lo, hi = fit.pt_range
    x = f"((min(max(x,{lo:.6g}),{hi:.6g})-{0.5 * (lo + hi):.6g})/{0.5 * (hi - lo):.6g})"
    npt, nu = fit.order_pt + 1, fit.order_upar + 1

    def horner(terms: list[str], var: str) -> str:
        out = terms[-1]
        for t in reversed(terms[:-1]):
            out = f"{t}+{var}*({out})"
        return out

    inner = [horner([f"[{j * npt + i}]" for i in range(npt)], x) for j in range(nu)]
    lo_sf, hi_sf = SF_CLIP
    if nu == 1:
        return f"max(min({inner[0]},{hi_sf:g}),{lo_sf:g})"
    ulo, uhi = fit.upar_range  # type: ignore[misc]
    y = f"((min(max(y,{ulo:.6g}),{uhi:.6g})-{0.5 * (ulo + uhi):.6g})/{0.5 * (uhi - ulo):.6g})"
    return f"max(min({horner([f'({t})' for t in inner], y)},{hi_sf:g}),{lo_sf:g})"


def _formula(fit: SmoothFit, coeffs: np.ndarray, two_d: bool) -> dict[str, Any]:
    return {"nodetype": "formula", "expression": _expression(fit), "parser": "TFormula",
            "variables": ["pt", "upar"] if two_d else ["pt"],
            "parameters": [float(v) for v in _power_coefficients(fit, coeffs).ravel()]}


def _sf_correction(s: StepScaleFactors) -> dict[str, Any]:
    bn, fit = s.binning, s.smooth["nominal"]
    two_d = fit.upar_range is not None and fit.order_upar > 0
    shifts = fit.eigen_shifts()
    alts = [m for m in ALT_MODELS if m in s.smooth]
    n_eta = bn.eta_edges.size - 1
    charged = len(bn.charges) == 2

    def variations(sl: int) -> dict[str, Any]:
        items = [{"key": "nominal", "value": _formula(fit, fit.coeffs[sl], two_d)}]
        items += [{"key": f"stat{k}", "value": _formula(fit, fit.coeffs[sl] + shifts[sl, k], two_d)}
                  for k in range(fit.n_params)]
        items += [{"key": m, "value": _formula(fit, s.smooth[m].coeffs[sl], two_d)} for m in alts]
        return {"nodetype": "category", "input": "variation", "content": items}

    per_eta = []
    for ie in range(n_eta):
        if charged:
            per_eta.append({"nodetype": "category", "input": "charge",
                            "content": [{"key": int(q), "value": variations(ie * 2 + iq)} for iq, q in enumerate(bn.charges)]})
        else:
            per_eta.append(variations(ie))
    return {"name": f"sf_{bn.step}", "version": 1,
            "description": f"data/simulation scale factor of the {bn.step} step, smoothed in pT"
                           + (" and u_par" if two_d else "") + f" (orders {fit.order_pt}, {fit.order_upar}); "
                           f"stat<k>: eigenvector up shifts of the eta-charge slice ({fit.n_params} each)",
            "inputs": [{"name": "eta", "type": "real", "description": "muon eta"},
                       {"name": "pt", "type": "real", "description": "muon pT (GeV)"},
                       {"name": "charge", "type": "int", "description": "muon charge (+1/-1)"},
                       {"name": "upar", "type": "real", "description": "boson q_T projected on the muon (GeV)"},
                       {"name": "variation", "type": "string", "description": "nominal, stat<k>, " + ", ".join(alts)}],
            "output": {"name": "sf", "type": "real"},
            "data": {"nodetype": "binning", "input": "eta", "edges": [float(e) for e in bn.eta_edges],
                     "content": per_eta, "flow": "clamp"}}


def _eff_mc_correction(s: StepScaleFactors) -> dict[str, Any]:
    bn = s.binning
    inputs: list[dict[str, Any]] = [{"name": "eta", "type": "real"}, {"name": "pt", "type": "real"}]
    edges: list[list[float]] = [[float(e) for e in bn.eta_edges], [float(e) for e in bn.pt_edges]]
    names = ["eta", "pt"]
    if len(bn.charges) == 2:
        inputs.append({"name": "charge", "type": "int"})
        edges.append([-2.0, 0.0, 2.0])
        names.append("charge")
    if bn.upar_edges is not None:
        inputs.append({"name": "upar", "type": "real"})
        edges.append([float(e) for e in bn.upar_edges])
        names.append("upar")
    eff = np.asarray(s.eff_mc, float).reshape(bn.shape)
    if len(bn.charges) == 2 and bn.charges != (-1, 1):
        eff = eff[:, :, ::-1]
    # a bin without simulated probes takes the mean of its eta bin (never seen by a fit bin)
    flat = eff.reshape(bn.shape[0], -1)
    fill = np.nanmean(np.where(np.isfinite(flat), flat, np.nan), axis=1, keepdims=True)
    flat = np.where(np.isfinite(flat), flat, np.nan_to_num(fill, nan=1.0))
    return {"name": f"eff_mc_{bn.step}", "version": 1,
            "description": f"simulated efficiency of the {bn.step} step (truth-matched counting) in the measurement bins",
            "inputs": inputs, "output": {"name": "eff", "type": "real"},
            "data": {"nodetype": "multibinning", "inputs": names, "edges": edges,
                     "content": [float(v) for v in flat.ravel()], "flow": "clamp"}}


def write_tables(path: str | Path, steps: Mapping[str, StepScaleFactors]) -> Path:
    """Write the correctionlib file (validated through correctionlib's schema) atomically."""
    import correctionlib.schemav2 as cs

    corrections = []
    for step in STEPS:
        if step in steps:
            corrections += [_sf_correction(steps[step]), _eff_mc_correction(steps[step])]
    doc = {"schema_version": 2, "description": SCHEMA_DESCRIPTION, "corrections": corrections}
    cset = cs.CorrectionSet.model_validate(doc)
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(cset.model_dump_json(exclude_unset=True))
    return path


@dataclass(frozen=True)
class StepTable:
    """What the correction needs to know about one step of the file."""

    step: str
    eta_edges: np.ndarray
    charged: bool
    n_stat: int
    alternatives: tuple[str, ...]
    upar: bool


class EfficiencyTables:
    """The correctionlib file read back: evaluation through correctionlib, structure from the
    JSON (eta bins, charges, number of eigen-variations per slice, alternative models)."""

    def __init__(self, path: str | Path):
        import correctionlib

        path = Path(path)
        where = f"muon-efficiency artefact {path}"
        try:
            text = path.read_text()
            raw = json.loads(text)
            self.cset = correctionlib.CorrectionSet.from_string(text)
        except (OSError, ValueError, RuntimeError) as err:
            raise ValueError(f"{where} cannot be read ({type(err).__name__}: {err}); rerun chapter 03 "
                             "(`wmnb run --only 03_efficiencies --force`)") from err
        if raw.get("description") != SCHEMA_DESCRIPTION:
            raise ValueError(f"{where} is not a chapter-03 efficiency file (description {raw.get('description')!r})")
        self.path = path
        self.steps: dict[str, StepTable] = {}
        for c in raw["corrections"]:
            if not c["name"].startswith("sf_"):
                continue
            step = c["name"][3:]
            first = c["data"]["content"][0]
            charged = first["nodetype"] == "category" and first["input"] == "charge"
            var = first["content"][0]["value"] if charged else first
            keys = [item["key"] for item in var["content"]]
            n_stat = sum(1 for k in keys if k.startswith("stat"))
            alts = tuple(k for k in keys if k in ALT_MODELS)
            self.steps[step] = StepTable(step, np.asarray(c["data"]["edges"], float), charged, n_stat, alts,
                                         _binned_in_upar(raw, step))
        missing = [s for s in STEPS if s not in self.steps]
        if missing:
            raise ValueError(f"{where} lacks the steps {missing}; rerun chapter 03")

    def sf(self, step: str, eta: np.ndarray, pt: np.ndarray, charge: np.ndarray, upar: np.ndarray,
           variation: str = "nominal") -> np.ndarray:
        """The scale factor of ``step`` for muons (arrays), through correctionlib."""
        return np.asarray(self.cset[f"sf_{step}"].evaluate(
            np.asarray(eta, float), np.asarray(pt, float), np.asarray(charge, np.int64), np.asarray(upar, float),
            variation), dtype=np.float64)

    def eff_mc(self, step: str, eta: np.ndarray, pt: np.ndarray, charge: np.ndarray, upar: np.ndarray) -> np.ndarray:
        """The simulation's efficiency of ``step`` in the measurement bins."""
        t = self.steps[step]
        args: list[np.ndarray] = [np.asarray(eta, float), np.asarray(pt, float)]
        if t.charged:
            args.append(np.asarray(charge, np.int64))
        if t.upar:
            args.append(np.asarray(upar, float))
        return np.asarray(self.cset[f"eff_mc_{step}"].evaluate(*args), dtype=np.float64)


def _binned_in_upar(raw: Mapping[str, Any], step: str) -> bool:
    """Whether the file's simulated efficiency of ``step`` is binned in u_par."""
    for c in raw["corrections"]:
        if c["name"] == f"eff_mc_{step}":
            return "upar" in c["data"]["inputs"]
    raise ValueError(f"the efficiency file lacks eff_mc_{step}")


def load_tables(path: str | Path) -> EfficiencyTables:
    return EfficiencyTables(path)


__all__ = ["ALT_MODELS", "ARTEFACT", "SF_CLIP", "EfficiencyTables", "StepTable", "load_tables", "write_tables"]
