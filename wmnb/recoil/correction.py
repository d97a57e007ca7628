"""The published recoil correction: the simulation's (u_∥, u_⊥) morphed to the data's.

A column-changing correction (kind ``muon`` in :mod:`wmnb.corrections`: it replaces the recoil
``ut_x``, ``ut_y`` after the muon corrections, and the pipeline then recomputes the MET, m_T and
u_∥ of every consumer).  The boson q_T an event's recoil is split along is

* W (a sample with the generator neutrino): the reconstructed muon plus the generator-level
  neutrino, as the paper does — the recoil balances the boson, and the muon is the one the
  analysis measures;
* Z and other samples with a generator boson: the reconstructed dimuon where the selection has
  one, else the generator boson;

and the conditions are that q_T, the generator boson's rapidity (the dimuon's for the Z
selection) and the number of vertices.  Samples without a boson (tt̄, dibosons, QCD) are left
alone, as is data.

The artefact (:data:`ARTEFACT`) is a JSON index of the models in their own formats: binned
quantiles as JSON arrays, BDTs as xgboost JSON files (no pickles).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..artefacts import write_json
from ..corrections import Correction, Manifest, SampleInfo, publish
from ..engine.kinematics import project, to_ptphi, to_xy
from .morphing import BDTQuantiles, BinnedQuantiles, ChainedMorph, MorphingError, QuantileModel

CHAPTER = "04_recoil"
CORRECTION_NAME = "recoil"
GROUP = "recoil"
ARTEFACT = "recoil_models.json"
MODEL_DIR = "models"
FORMAT = "wmnb-recoil-models-1"
#: the method the correction applies (the paper's); the other is stored for the comparison
NOMINAL_METHOD = "binned"


def _save_model(model: QuantileModel, directory: Path, stem: str) -> dict[str, Any]:
    if isinstance(model, BinnedQuantiles):
        return {"kind": "binned", "edges": model.edges.tolist(), "levels": model.levels.tolist(),
                "values": model.values.tolist(), "centres": np.asarray(model.centres).tolist()}
    if isinstance(model, BDTQuantiles):
        path = model.save(directory / f"{stem}.json")
        return {"kind": "bdt", "file": f"{MODEL_DIR}/{path.name}"}
    raise MorphingError(f"cannot save a quantile model of type {type(model).__name__}")


def _load_model(doc: dict[str, Any], root: Path, where: str) -> QuantileModel:
    kind = doc.get("kind")
    if kind == "binned":
        return BinnedQuantiles(np.asarray(doc["edges"]), np.asarray(doc["levels"]), np.asarray(doc["values"]),
                               np.asarray(doc["centres"]))
    if kind == "bdt":
        return BDTQuantiles.load(root / doc["file"])
    raise MorphingError(f"{where}: unknown model kind {kind!r}; rerun chapter 04")


def write_models(chapter_dir: str | Path, morphs: dict[str, ChainedMorph], qt_max: float,
                 nominal: str = NOMINAL_METHOD) -> Path:
    """Every method's chain into ``<chapter_dir>/models/`` and the index :data:`ARTEFACT`."""
    root = Path(chapter_dir)
    (root / MODEL_DIR).mkdir(parents=True, exist_ok=True)
    methods = {}
    for method, chain in morphs.items():
        methods[method] = {side: [_save_model(m, root / MODEL_DIR, f"{method}_{side}_{j}")
                                  for j, m in enumerate(getattr(chain, side))] for side in ("mc", "data")}
    if nominal not in methods:
        raise ValueError(f"the nominal recoil method {nominal!r} was not fitted (have {sorted(methods)})")
    return write_json(root / ARTEFACT, {"format": FORMAT, "nominal": nominal, "qt_max": float(qt_max),
                                        "variables": ["u_par", "u_perp"], "conditions": ["qt", "y", "npv"],
                                        "methods": methods})


def load_models(artefact: str | Path) -> tuple[dict[str, ChainedMorph], str, float]:
    """The chains of :func:`write_models` (method -> chain), the nominal method and q_T range;
    a missing or corrupt index raises :class:`MorphingError` naming the file."""
    path = Path(artefact)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MorphingError(f"recoil models {path}: cannot be read ({err}); rerun chapter 04") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MorphingError(f"recoil models {path}: not a {FORMAT} index; rerun chapter 04")
    morphs = {m: ChainedMorph([_load_model(d, path.parent, str(path)) for d in sides["mc"]],
                              [_load_model(d, path.parent, str(path)) for d in sides["data"]])
              for m, sides in doc["methods"].items()}
    return morphs, str(doc["nominal"]), float(doc["qt_max"])


class RecoilCorrection(Correction):
    """The chained quantile morphing of the simulated recoil (module docstring)."""

    name = CORRECTION_NAME
    kinds = ("muon",)

    def __init__(self, morph: ChainedMorph, method: str) -> None:
        self.morph = morph
        self.method = method

    def applies_to(self, sample: SampleInfo) -> bool:
        return not sample.is_data and sample.selection in ("w", "z")

    def boson(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> tuple[np.ndarray, ...] | None:
        """(q_T, its azimuth, rapidity) of each event, or None for a sample without a boson."""
        if sample.selection == "z" and "pair_pt" in columns:
            return tuple(np.asarray(columns[k], np.float64) for k in ("pair_pt", "pair_phi", "pair_y"))
        if not {"gen_qt", "gen_phi", "gen_y"} <= set(columns):
            return None
        y = np.asarray(columns["gen_y"], np.float64)
        if "nu_gen_pt" in columns and "mu_pt" in columns:
            nx, ny = to_xy(np.nan_to_num(columns["nu_gen_pt"]), np.nan_to_num(columns["nu_gen_phi"]))
            mx, my = to_xy(columns["mu_pt"], columns["mu_phi"])
            qt, phi = to_ptphi(mx + nx, my + ny)
            return qt, phi, y
        return np.asarray(columns["gen_qt"], np.float64), np.asarray(columns["gen_phi"], np.float64), y

    def correct(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> None:
        """Replace ``ut_x``, ``ut_y`` by the morphed recoil (events without a boson: unchanged)."""
        b = self.boson(columns, sample)
        if b is None or "ut_x" not in columns:
            return
        qt, phi, y = b
        ux, uy = np.asarray(columns["ut_x"], np.float64), np.asarray(columns["ut_y"], np.float64)
        par, perp = project(ux, uy, phi)
        cond = np.stack([qt, y, np.asarray(columns["npv"], np.float64)], axis=1)
        ok = np.isfinite(cond).all(axis=1) & np.isfinite(par) & np.isfinite(perp)
        new = np.stack([par, perp], axis=1)
        if ok.any():
            new[ok] = self.morph.apply(new[ok], cond[ok])
        # back from the boson's frame: rotate (u_par, u_perp) by the boson's azimuth
        nx, ny = project(new[:, 0], new[:, 1], -phi)
        columns["ut_x"] = np.where(ok, nx, ux)
        columns["ut_y"] = np.where(ok, ny, uy)


def load_correction(artefact: str | Path) -> RecoilCorrection:
    """Factory named in the published manifest: the nominal method's chain."""
    morphs, nominal, _ = load_models(artefact)
    return RecoilCorrection(morphs[nominal], nominal)


def publish_correction(chapter_dir: str | Path) -> Path:
    """Publish the models written by :func:`write_models`."""
    return publish(chapter_dir, Manifest(
        name=CORRECTION_NAME, chapter=CHAPTER, kinds=("muon",), factory="wmnb.recoil.correction:load_correction",
        artefact=ARTEFACT, order=30, groups=(GROUP,),
        description="hadronic recoil of the simulated W and Z morphed to the data's (chained conditional quantiles)"))


__all__ = ["ARTEFACT", "CORRECTION_NAME", "GROUP", "NOMINAL_METHOD", "RecoilCorrection", "load_correction",
           "load_models", "publish_correction", "write_models"]
