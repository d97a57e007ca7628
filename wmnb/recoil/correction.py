"""The published recoil correction: the simulation's (u_∥, u_⊥) morphed to the data's.

A column-changing correction (kind ``muon`` in :mod:`wmnb.corrections`: it replaces the recoil
``ut_x``, ``ut_y`` after the muon corrections, and the pipeline then recomputes the MET, m_T and
u_∥ of every consumer).  The boson q_T an event's recoil is split along is

* W (a sample with the generator neutrino): the reconstructed muon plus the generator-level
  neutrino, as the paper does — the recoil balances the boson, and the muon is the one the
  analysis measures;
* Z and other samples with a generator boson: the reconstructed dimuon where the selection has
  one (the dimuon and W-like selections, whose recoil is the same hadronic recoil against both
  muons that chapter 04 calibrated on), else the generator boson;

and the conditions are that q_T, the generator boson's rapidity (the dimuon's for the Z
selection) and the number of vertices.  Samples without a boson (tt̄, dibosons, QCD) are left
alone, as is data.

Its nuisances (group ``recoil``) are column variations
(:meth:`RecoilCorrection.column_variations`): the simulated recoil morphed again by another
chain — the binned chain moved by each statistical eigenvariation up and down
(``recoilStat<k>``), and by the method difference (``recoilMethod``, one-sided: its data tables
replaced by the quantiles of the BDT-corrected simulation, :func:`wmnb.recoil.chapter.method_delta`).
The pipeline reruns the m_T, the MET and the cuts of the events they move.  Only the m_T cuts
of a selection depend on the recoil, so only events within :data:`MT_WINDOW_GEV` of one of
them (:data:`MT_THRESHOLDS`) are morphed again (5 % of the W sample within 5 GeV; the statistical
variations settle at ±20 GeV, 16 % of the selected events).  Each variation
checks that it moves at most a share :data:`FAR_MOVED_TOLERANCE` of those events' m_T by more
than half the window, so that about as few outside it could have crossed, and otherwise doubles
the window (up to :data:`MT_WINDOW_MAX_GEV`; :attr:`RecoilCorrection.mt_shift_stats` records
what it used).

The artefact (:data:`ARTEFACT`) is a JSON index of the models in their own formats: binned
quantiles as JSON arrays, BDTs as xgboost JSON files (no pickles), and the statistical
eigenvariations as tables of quantile shifts.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..artefacts import write_json
from ..corrections import ColumnVariation, Correction, Manifest, SampleInfo, publish
from ..engine.kinematics import mt as transverse_mass
from ..engine.kinematics import project, to_ptphi, to_xy
from ..engine.selections import MT_SIDEBANDS, MT_SIGNAL, WLIKE_MT
from .morphing import BDTQuantiles, BinnedQuantiles, ChainedMorph, MorphingError, QuantileModel

CHAPTER = "04_recoil"
CORRECTION_NAME = "recoil"
GROUP = "recoil"
ARTEFACT = "recoil_models.json"
MODEL_DIR = "models"
FORMAT = "wmnb-recoil-models-1"
#: the method the correction applies (the paper's); the other is stored for the comparison
NOMINAL_METHOD = "binned"
#: per selection, the m_T values where its cuts or regions change (the W's signal cut and the
#: nonprompt sidebands, the W-like's 45 GeV cut); the recoil variations act on events near them only
MT_THRESHOLDS: dict[str, tuple[float, ...]] = {"w": tuple(sorted({*MT_SIDEBANDS, MT_SIGNAL})), "wlike": (WLIKE_MT,)}
#: selections whose samples the correction morphs, and those among them with a reconstructed dimuon
SELECTIONS = ("w", "z", "wlike")
DIMUON_SELECTIONS = ("z", "wlike")
MT_WINDOW_GEV = 5.0
MT_WINDOW_MAX_GEV = 80.0
#: the share of a window's events a variation may move by more than half the window before the
#: window is widened (the far tails' linear map amplifies small changes of the tail scales)
FAR_MOVED_TOLERANCE = 1e-3
#: the columns where :meth:`RecoilCorrection.correct` keeps the simulated (uncorrected) recoil
SIMULATED_RECOIL = ("ut_x_simulated", "ut_y_simulated")


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
                 nominal: str = NOMINAL_METHOD, stat_deltas: np.ndarray | None = None,
                 method_delta: np.ndarray | None = None) -> Path:
    """Every method's chain into ``<chapter_dir>/models/`` and the index :data:`ARTEFACT`, with
    the binned chain's statistical eigenvariations ``stat_deltas`` (``(K, 4, n_bins, n_levels)``,
    :class:`wmnb.recoil.chapter.StatVariations`) and the method difference as a shift of its
    tables, ``method_delta`` (``(4, n_bins, n_levels)``, :func:`wmnb.recoil.chapter.method_delta`)."""
    root = Path(chapter_dir)
    (root / MODEL_DIR).mkdir(parents=True, exist_ok=True)
    methods = {}
    for method, chain in morphs.items():
        methods[method] = {side: [_save_model(m, root / MODEL_DIR, f"{method}_{side}_{j}")
                                  for j, m in enumerate(getattr(chain, side))] for side in ("mc", "data")}
    if nominal not in methods:
        raise ValueError(f"the nominal recoil method {nominal!r} was not fitted (have {sorted(methods)})")
    stat = [] if stat_deltas is None else np.asarray(stat_deltas, np.float64).tolist()
    method = None if method_delta is None else np.asarray(method_delta, np.float64).tolist()
    return write_json(root / ARTEFACT, {"format": FORMAT, "nominal": nominal, "qt_max": float(qt_max),
                                        "variables": ["u_par", "u_perp"], "conditions": ["qt", "y", "npv"],
                                        "methods": methods, "stat_variations": stat, "method_variation": method})


def _read_index(artefact: str | Path) -> tuple[Path, dict[str, Any]]:
    path = Path(artefact)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MorphingError(f"recoil models {path}: cannot be read ({err}); rerun chapter 04") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MorphingError(f"recoil models {path}: not a {FORMAT} index; rerun chapter 04")
    return path, doc


def load_models(artefact: str | Path) -> tuple[dict[str, ChainedMorph], str, float]:
    """The chains of :func:`write_models` (method -> chain), the nominal method and q_T range;
    a missing or corrupt index raises :class:`MorphingError` naming the file."""
    path, doc = _read_index(artefact)
    return _chains(path, doc), str(doc["nominal"]), float(doc["qt_max"])


def _chains(path: Path, doc: dict[str, Any]) -> dict[str, ChainedMorph]:
    return {m: ChainedMorph([_load_model(d, path.parent, str(path)) for d in sides["mc"]],
                            [_load_model(d, path.parent, str(path)) for d in sides["data"]])
            for m, sides in doc["methods"].items()}


class RecoilCorrection(Correction):
    """The chained quantile morphing of the simulated recoil (module docstring)."""

    name = CORRECTION_NAME
    kinds = ("muon",)

    def __init__(self, morph: ChainedMorph, method: str,
                 variations: dict[str, tuple[ChainedMorph, ChainedMorph | None]] | None = None) -> None:
        self.morph = morph
        self.method = method
        #: nuisance -> (up chain, down chain or None for a one-sided variation)
        self.variations = dict(variations or {})
        #: nuisance -> (widest m_T window used in GeV, events moved by more than half of it, events
        #: in the window), over the samples and chunks seen so far
        self.mt_shift_stats: dict[str, tuple[float, int, int]] = {}

    def applies_to(self, sample: SampleInfo) -> bool:
        return not sample.is_data and sample.selection in SELECTIONS

    def boson(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> tuple[np.ndarray, ...] | None:
        """(q_T, its azimuth, rapidity) of each event, or None for a sample without a boson."""
        if sample.selection in DIMUON_SELECTIONS and "pair_pt" in columns:
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

    def _morphed(self, chain: ChainedMorph, ux: np.ndarray, uy: np.ndarray, qt: np.ndarray, phi: np.ndarray,
                 y: np.ndarray, npv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ut_x, ut_y) morphed by ``chain`` along the boson (events with a non-finite input kept)."""
        par, perp = project(ux, uy, phi)
        cond = np.stack([qt, y, np.asarray(npv, np.float64)], axis=1)
        ok = np.isfinite(cond).all(axis=1) & np.isfinite(par) & np.isfinite(perp)
        new = np.stack([par, perp], axis=1)
        if ok.any():
            new[ok] = chain.apply(new[ok], cond[ok])
        # back from the boson's frame: rotate (u_par, u_perp) by the boson's azimuth
        nx, ny = project(new[:, 0], new[:, 1], -phi)
        return np.where(ok, nx, ux), np.where(ok, ny, uy)

    def correct(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> None:
        """Replace ``ut_x``, ``ut_y`` by the morphed recoil (events without a boson: unchanged),
        keeping the simulated one in :data:`SIMULATED_RECOIL` for the variations."""
        b = self.boson(columns, sample)
        if b is None or "ut_x" not in columns:
            return
        ux, uy = np.asarray(columns["ut_x"], np.float64), np.asarray(columns["ut_y"], np.float64)
        columns[SIMULATED_RECOIL[0]], columns[SIMULATED_RECOIL[1]] = ux, uy
        columns["ut_x"], columns["ut_y"] = self._morphed(self.morph, ux, uy, *b, columns["npv"])

    def column_variations(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> Iterator[ColumnVariation]:
        """The recoil nuisances (module docstring) on the events near the selection's m_T
        thresholds (an adaptive window, :meth:`column_variation`); none for a selection without
        m_T cuts."""
        thresholds = MT_THRESHOLDS.get(sample.selection)
        if not thresholds or not self.variations:
            return
        boson = self.boson(columns, sample) if SIMULATED_RECOIL[0] in columns and "mt" in columns else None
        for nuisance, chains in self.variations.items():
            yield self.column_variation(nuisance, chains, columns, boson, thresholds)

    def column_variation(self, nuisance: str, chains: tuple[ChainedMorph, ChainedMorph | None],
                         columns: dict[str, np.ndarray], boson: tuple[np.ndarray, ...] | None,
                         thresholds: tuple[float, ...]) -> ColumnVariation:
        """One nuisance: the recoil re-morphed by its chains on the events within a window of the
        m_T ``thresholds``.  The window starts at :data:`MT_WINDOW_GEV` and doubles, up to
        :data:`MT_WINDOW_MAX_GEV`, while more than :data:`FAR_MOVED_TOLERANCE` of its events move
        by more than half of it (then about as few outside could cross a cut); a variation that
        still does at the largest window warns.  :attr:`mt_shift_stats` records the window used."""
        if boson is None:
            empty = {"ut_x": np.zeros(0), "ut_y": np.zeros(0)}
            return ColumnVariation(nuisance, GROUP, np.zeros(0, np.int64), empty,
                                   None if chains[1] is None else dict(empty))
        mt = np.asarray(columns["mt"], np.float64)
        window = MT_WINDOW_GEV
        while True:
            rows = np.flatnonzero(np.any([np.abs(mt - t) < window for t in thresholds], axis=0))
            sub = {k: np.asarray(columns[k])[rows] for k in (*SIMULATED_RECOIL, "npv", "mu_pt", "mu_phi")}
            cond = tuple(np.asarray(a)[rows] for a in boson)
            mx, my = to_xy(sub["mu_pt"], sub["mu_phi"])
            values, far = [], 0
            for chain in (c for c in chains if c is not None):
                ux, uy = self._morphed(chain, sub[SIMULATED_RECOIL[0]], sub[SIMULATED_RECOIL[1]], *cond, sub["npv"])
                met, met_phi = to_ptphi(-(ux + mx), -(uy + my))
                shift = np.abs(transverse_mass(sub["mu_pt"], sub["mu_phi"], met, met_phi) - mt[rows])
                far = max(far, int(np.count_nonzero(shift > 0.5 * window)))
                values.append({"ut_x": ux, "ut_y": uy})
            if far <= FAR_MOVED_TOLERANCE * rows.size or window >= MT_WINDOW_MAX_GEV:
                break
            window *= 2.0
        seen = self.mt_shift_stats.get(nuisance, (0.0, 0, 0))
        self.mt_shift_stats[nuisance] = (max(seen[0], window), seen[1] + far, seen[2] + rows.size)
        if far > FAR_MOVED_TOLERANCE * rows.size:
            warnings.warn(f"recoil variation {nuisance!r} moves {far} of {rows.size} events ({far / rows.size:.2%}) by "
                          f"more than half the {window:g} GeV m_T window it is evaluated in: as many outside it may "
                          "cross a cut too; raise wmnb.recoil.correction.MT_WINDOW_MAX_GEV", stacklevel=3)
        return ColumnVariation(nuisance, GROUP, rows, values[0], values[1] if len(values) > 1 else None)


def recoil_variations(morphs: dict[str, ChainedMorph], nominal: str, stat_deltas: np.ndarray,
                      method_delta: np.ndarray | None = None) -> dict[str, tuple[ChainedMorph, ChainedMorph | None]]:
    """The nuisances of the correction: ``recoilStat<k>`` (the nominal binned chain moved by
    eigenvariation k, up and down) and ``recoilMethod`` (one-sided: the binned chain moved by
    ``method_delta``, the BDT's corrected distributions, when given)."""
    out: dict[str, tuple[ChainedMorph, ChainedMorph | None]] = {}
    base = morphs[nominal]
    for k, delta in enumerate(np.asarray(stat_deltas)):
        out[f"recoilStat{k}"] = (base.shifted(delta), base.shifted(-delta))
    if method_delta is not None:
        out["recoilMethod"] = (base.shifted(method_delta), None)
    return out


def load_correction(artefact: str | Path) -> RecoilCorrection:
    """Factory named in the published manifest: the nominal method's chain, with the nuisances
    of :func:`recoil_variations` (the statistical eigenvariations and the method difference
    stored by :func:`write_models`)."""
    path, doc = _read_index(artefact)
    morphs, nominal = _chains(path, doc), str(doc["nominal"])
    method = doc.get("method_variation")
    variations = recoil_variations(morphs, nominal, np.asarray(doc.get("stat_variations", []), np.float64),
                                   None if method is None else np.asarray(method, np.float64))
    return RecoilCorrection(morphs[nominal], nominal, variations)


def publish_correction(chapter_dir: str | Path) -> Path:
    """Publish the models written by :func:`write_models`."""
    return publish(chapter_dir, Manifest(
        name=CORRECTION_NAME, chapter=CHAPTER, kinds=("muon",), factory="wmnb.recoil.correction:load_correction",
        artefact=ARTEFACT, order=30, groups=(GROUP,),
        description="hadronic recoil of the simulated W and Z morphed to the data's (chained conditional quantiles)"))


__all__ = ["ARTEFACT", "CORRECTION_NAME", "GROUP", "MT_THRESHOLDS", "MT_WINDOW_GEV", "MT_WINDOW_MAX_GEV", "NOMINAL_METHOD", "SIMULATED_RECOIL",
           "RecoilCorrection", "load_correction", "load_models", "publish_correction",
           "recoil_variations", "write_models"]
