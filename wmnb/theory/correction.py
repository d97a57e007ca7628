"""The theory correction that chapter 06 publishes: q_T reweighting, pTV, A_i, PDF variations.

Per simulated event of W or Z production (its generator boson: ``gen_pdgid``, ``gen_qt``,
``gen_y``, the Collins–Soper angles ``gen_cos_cs``, ``gen_phi_cs``, all before FSR):

* **nominal** — the q_T reweighting to the prediction, per boson (W⁺, W⁻, Z), in (|y|, q_T)
  bins (:attr:`TheoryTables.qt_edges`, 1 GeV × 0.25 by default): the prediction's fraction of a
  |y| bin's events over the simulation's (the |y| distribution itself is the PDFs' business);
* ``pTV`` — every parameter of :mod:`wmnb.theory.prediction` at ±1σ, as the ratio of the
  prediction there to the central prediction, in the same bins;
* ``angularCoeffs`` — μR and μF variations of each A_i (i = 0..4), decorrelated in the q_T bins
  of :attr:`TheoryTables.hel_qt_edges` (one nuisance per coefficient, scale and q_T bin, W⁺ and
  W⁻ together, Z apart), each the helicity weight ``1 + ΔA_i P_i / (1 + cos²θ + Σ_j A_j P_j)``
  with ΔA_i the coefficient's change under the scale weight (measured from the inclusive
  simulation's moments) and A_j the simulation's own coefficients; plus handles that scale A1 and
  A3 by ±:data:`A13_HANDLE` (O(α_s) coefficients whose scale dependence understates their
  uncertainty);
* ``EW`` — the strength of final-state photon radiation off the muons (:mod:`wmnb.theory.ew`);
* ``pdf`` — the Hessian eigenvector pairs of ``lhe_pdf``, each variation's departure from the
  central member divided by ``pdf_cl_scale`` (1.645 converts a 90 % CL set to 68 %; the
  universe's set is already at 68 %).

The correction *supersedes* chapter 08's built-in ``pdf`` and q_T-binned ``scales`` nuisances
(the manifest says so; the template builder then drops them), so nothing is counted twice.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..conventions import LHE_PDF_CENTRAL, lhe_pdf_index, lhe_pdf_pairs
from ..corrections import Correction, Manifest, SampleInfo, Variation, publish
from .ew import FSR_STRENGTH_PRIOR
from ..angular import harmonic_polynomials

CORRECTION_NAME = "theory"
ARTEFACT = "theory_corrections.h5"
CHAPTER = "06_theory"
SCHEMA_VERSION = 1
#: the boson of each generator pdgId, and the class whose angular nuisances it shares
PDGID_BOSON = {24: "wplus", -24: "wminus", 23: "z"}
BOSON_CLASS = {"wplus": "W", "wminus": "W", "z": "Z"}
#: the coefficients that get scale variations, and the scale variations (LHEScaleWeight pairs)
SCALE_COEFFICIENTS = (0, 1, 2, 3, 4)
SCALE_VARIATIONS = ("MuR", "MuF")
A13_HANDLE = 0.10
#: samples made by W or Z production (the correction acts on their events only)
PRODUCTION_SAMPLES = ("wplus_munu", "wminus_munu", "w_taunu", "z_mumu", "z_tautau")
REQUIRED_COLUMNS = ("gen_pdgid", "gen_qt", "gen_y", "gen_cos_cs", "gen_phi_cs")
#: samples whose muons come from the boson (the FSR variation acts on them)
FSR_SAMPLES = ("wplus_munu", "wminus_munu", "z_mumu")


@dataclass
class TheoryTables:
    """Everything the correction applies (written to :data:`ARTEFACT`).

    ``qt_nominal[boson]`` (n_y, n_qt): the reweighting factor; ``qt_variations[boson][name]``:
    (up, down) factors relative to the nominal; ``angular_nominal[boson]`` (n_hq, n_hy, 8): the
    simulation's A_i; ``angular_shift[boson][f"{scale}{Up|Down}"]`` (n_hq, n_hy, 8): ΔA_i under
    the scale weight."""

    qt_edges: np.ndarray
    absy_edges: np.ndarray
    hel_qt_edges: np.ndarray
    hel_absy_edges: np.ndarray
    qt_nominal: dict[str, np.ndarray]
    qt_variations: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    angular_nominal: dict[str, np.ndarray]
    angular_shift: dict[str, dict[str, np.ndarray]]
    pdf_cl_scale: float = 1.0
    provenance: dict[str, Any] = field(default_factory=dict)
    fsr_emission: dict[str, float] = field(default_factory=dict)   # boson -> fraction of its muons that radiated
    #: FSR strength of the data relative to the simulation (applied in the nominal weight once
    #: measured on the Z, :func:`wmnb.theory.chapter.fsr_strength_fit`) and its 1σ uncertainty
    fsr_strength: float = 1.0
    fsr_strength_err: float = FSR_STRENGTH_PRIOR

    def nuisance_counts(self, n_pdf: int) -> dict[str, int]:
        """Nuisances by group (``n_pdf``: Hessian eigenvectors of the simulation)."""
        ptv = {name for tabs in self.qt_variations.values() for name in tabs}
        n_hel = len(self.hel_qt_edges) - 1
        classes = {BOSON_CLASS[b] for b in self.angular_nominal}
        n_ang = len(classes) * (len(SCALE_COEFFICIENTS) * len(SCALE_VARIATIONS) * n_hel + 2)
        return {"pTV": len(ptv), "angularCoeffs": n_ang, "pdf": n_pdf, "EW": 1 if self.fsr_emission else 0}

    def save(self, path: str | Path) -> Path:
        """Write the tables to HDF5 atomically."""
        import h5py

        from ..artefacts import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as h:
                h.attrs["schema_version"] = SCHEMA_VERSION
                h.attrs["pdf_cl_scale"] = self.pdf_cl_scale
                h.attrs["provenance"] = json.dumps(self.provenance, default=str)
                h.attrs["fsr_emission"] = json.dumps(self.fsr_emission)
                h.attrs["fsr_strength"] = self.fsr_strength
                h.attrs["fsr_strength_err"] = self.fsr_strength_err
                for key in ("qt_edges", "absy_edges", "hel_qt_edges", "hel_absy_edges"):
                    h[key] = getattr(self, key)
                for b, arr in self.qt_nominal.items():
                    h[f"qt/{b}/nominal"] = arr
                    for name, (up, down) in self.qt_variations[b].items():
                        h[f"qt/{b}/{name}/up"] = up
                        h[f"qt/{b}/{name}/down"] = down
                for b, arr in self.angular_nominal.items():
                    h[f"angular/{b}/nominal"] = arr
                    for name, shift in self.angular_shift[b].items():
                        h[f"angular/{b}/{name}"] = shift
        return path

    @classmethod
    def load(cls, path: str | Path) -> TheoryTables:
        """Read tables written by :meth:`save`; a wrong file or schema fails naming the file."""
        import h5py

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: theory tables missing; rerun chapter {CHAPTER}")
        try:
            handle = h5py.File(path, "r")
        except OSError as err:
            raise ValueError(f"{path}: not a readable HDF5 file of theory tables ({err}); rerun chapter {CHAPTER}") from None
        with handle as h:
            if int(h.attrs.get("schema_version", -1)) != SCHEMA_VERSION:
                raise ValueError(f"{path}: theory tables of schema {h.attrs.get('schema_version')!r}, this wmnb reads "
                                 f"{SCHEMA_VERSION}; rerun chapter {CHAPTER}")
            qt_nom, qt_var, ang_nom, ang_shift = {}, {}, {}, {}
            for b in h["qt"]:
                g = h["qt"][b]
                qt_nom[b] = g["nominal"][()]
                qt_var[b] = {k: (g[k]["up"][()], g[k]["down"][()]) for k in g if k != "nominal"}
            for b in h["angular"]:
                g = h["angular"][b]
                ang_nom[b] = g["nominal"][()]
                ang_shift[b] = {k: g[k][()] for k in g if k != "nominal"}
            return cls(h["qt_edges"][()], h["absy_edges"][()], h["hel_qt_edges"][()], h["hel_absy_edges"][()],
                       qt_nom, qt_var, ang_nom, ang_shift, float(h.attrs["pdf_cl_scale"]),
                       json.loads(h.attrs["provenance"]), json.loads(h.attrs.get("fsr_emission", "{}")),
                       float(h.attrs.get("fsr_strength", 1.0)), float(h.attrs.get("fsr_strength_err", FSR_STRENGTH_PRIOR)))


def qt_reweighting(predicted: np.ndarray, simulated: np.ndarray, min_events: float = 1.0,
                   max_lost: float = 2e-3, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(factor, empty mask) of the q_T reweighting of one boson in (|y|, q_T) bins.

    ``predicted``: the prediction's fractions of each |y| row (rows sum to 1); ``simulated``:
    the simulation's (weighted) counts in the same bins.  The factor is the ratio of the two
    fractions, so the reweighted simulation's q_T shape in every |y| bin *is* the prediction's
    and the |y| distribution is unchanged.  Bins with fewer than ``min_events`` simulated events
    keep factor 1; if the prediction puts more than ``max_lost`` of a row there, the binning is
    too fine for the simulation and a :class:`ValueError` names the row."""
    pred = np.asarray(predicted, dtype=float)
    sim = np.asarray(simulated, dtype=float)
    if pred.shape != sim.shape:
        raise ValueError(f"q_T reweighting {what}: prediction {pred.shape} and simulation {sim.shape} differ in shape")
    empty = sim < min_events
    totals = np.where(empty, 0.0, sim).sum(axis=1, keepdims=True)
    if np.any(totals <= 0):
        rows = np.flatnonzero(totals[:, 0] <= 0).tolist()
        raise ValueError(f"q_T reweighting {what}: |y| bins {rows} have no simulated events; use coarser absy_edges "
                         "or a larger generator-level sample (gen_factor of chapter 00)")
    lost = np.where(empty, pred, 0.0).sum(axis=1)
    if np.any(lost > max_lost):
        j = int(np.argmax(lost))
        raise ValueError(f"q_T reweighting {what}: |y| bin {j} has empty q_T bins holding {lost[j]:.2%} of the "
                         "prediction; use coarser qt_edges or a larger generator-level sample")
    # the prediction's share of the populated bins, renormalised so that every row keeps its events
    kept = np.where(empty, 0.0, pred)
    kept = kept / kept.sum(axis=1, keepdims=True)
    factor = np.where(empty, 1.0, kept / np.where(empty, 1.0, sim / totals))
    return factor, empty


def _per_row(ev: Mapping[str, np.ndarray], rows_of: Mapping[str, np.ndarray], tables: Mapping[str, np.ndarray]
             ) -> np.ndarray:
    """For the rows of each boson of ``tables`` in turn, that boson's table at their (q_T, |y|)
    bins of the helicity binning (in the order the rows are concatenated)."""
    return np.concatenate([tab[ev["hq"][rows_of[b]], ev["hy"][rows_of[b]]] for b, tab in tables.items()])


def _bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value (values beyond the last edge go to the last bin, below 0 to 0)."""
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, edges.size - 2)


class TheoryCorrection(Correction):
    """Applies :class:`TheoryTables` to the simulated W and Z events of any selection."""

    name = CORRECTION_NAME
    kinds = ("weight",)
    supersedes = ("pdf", "scales")

    def __init__(self, tables: TheoryTables, source: str = "theory tables"):
        self.tables = tables
        self.source = source

    def applies_to(self, sample: SampleInfo) -> bool:
        return not sample.is_data and sample.name in PRODUCTION_SAMPLES

    def _events(self, columns: Mapping[str, np.ndarray], sample: SampleInfo) -> dict[str, np.ndarray]:
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise KeyError(f"{CORRECTION_NAME}: sample {sample.name!r} (selection {sample.selection!r}) lacks the "
                           f"generator columns {missing}; chapter 01's skims carry them: rerun chapter 01")
        pdg = np.asarray(columns["gen_pdgid"]).astype(np.int64)
        qt = np.asarray(columns["gen_qt"], dtype=np.float64)
        ay = np.abs(np.asarray(columns["gen_y"], dtype=np.float64))
        ok = np.isfinite(qt) & np.isfinite(ay)
        t = self.tables
        return {"pdg": np.where(ok, pdg, 0), "iq": _bins(np.where(ok, qt, 0.0), t.qt_edges),
                "iy": _bins(np.where(ok, ay, 0.0), t.absy_edges),
                "hq": _bins(np.where(ok, qt, 0.0), t.hel_qt_edges), "hy": _bins(np.where(ok, ay, 0.0), t.hel_absy_edges),
                "cos": np.nan_to_num(np.asarray(columns["gen_cos_cs"], dtype=np.float64)),
                "phi": np.nan_to_num(np.asarray(columns["gen_phi_cs"], dtype=np.float64))}

    def nominal_factor(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> np.ndarray | None:
        if not self.applies_to(sample):
            return None
        ev = self._events(columns, sample)
        out = np.ones(ev["pdg"].size)
        for pdg, boson in PDGID_BOSON.items():
            sel = ev["pdg"] == pdg
            if boson in self.tables.qt_nominal and sel.any():
                out[sel] = self.tables.qt_nominal[boson][ev["iy"][sel], ev["iq"][sel]]
        if self.tables.fsr_strength != 1.0:
            fsr = self._fsr_factors(columns, sample, ev, (self.tables.fsr_strength - 1.0,))
            if fsr is not None:
                out *= fsr[0]
        return out

    def iter_variations(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> Iterator[Variation]:
        if not self.applies_to(sample):
            return
        ev = self._events(columns, sample)
        yield from self._qt_variations(ev)
        yield from self._angular_variations(ev)
        ew = self._ew_variation(columns, sample, ev)
        if ew is not None:
            yield ew
        if "lhe_pdf" in columns:
            yield from pdf_variations(np.asarray(columns["lhe_pdf"]), self.tables.pdf_cl_scale, sample.name)

    def _qt_variations(self, ev: dict[str, np.ndarray]) -> Iterator[Variation]:
        names = list(dict.fromkeys(n for tabs in self.tables.qt_variations.values() for n in tabs))
        present = {b: ev["pdg"] == pdg for pdg, b in PDGID_BOSON.items()}
        for name in names:
            up, down = np.ones(ev["pdg"].size), np.ones(ev["pdg"].size)
            for boson, tabs in self.tables.qt_variations.items():
                sel = present.get(boson)
                if name in tabs and sel is not None and sel.any():
                    tu, td = tabs[name]
                    up[sel] = tu[ev["iy"][sel], ev["iq"][sel]]
                    down[sel] = td[ev["iy"][sel], ev["iq"][sel]]
            yield Variation(name, "pTV", up, down)

    def _angular_variations(self, ev: dict[str, np.ndarray]) -> Iterator[Variation]:
        t = self.tables
        rows_of = {b: np.flatnonzero(ev["pdg"] == pdg) for pdg, b in PDGID_BOSON.items() if b in t.angular_nominal}
        for cls in dict.fromkeys(BOSON_CLASS[b] for b in rows_of):
            bosons = [b for b in rows_of if BOSON_CLASS[b] == cls]
            rows = np.concatenate([rows_of[b] for b in bosons])
            if rows.size == 0:
                continue
            polys = harmonic_polynomials(ev["cos"][rows], ev["phi"][rows])           # (8, m)
            a_nom = np.nan_to_num(_per_row(ev, rows_of, {b: t.angular_nominal[b] for b in bosons}))
            denom = np.maximum(1.0 + ev["cos"][rows] ** 2 + np.einsum("mi,im->m", a_nom, polys), 1e-6)
            hq = ev["hq"][rows]
            for i in SCALE_COEFFICIENTS:
                for scale in SCALE_VARIATIONS:
                    up, down = (np.nan_to_num(_per_row(ev, rows_of, {b: t.angular_shift[b][f"{scale}{d}"][..., i]
                                                                    for b in bosons})) for d in ("Up", "Down"))
                    for j in range(t.hel_qt_edges.size - 1):
                        inbin = hq == j
                        if inbin.any():
                            p = polys[i, inbin] / denom[inbin]
                            yield Variation(f"A{i}_{scale}_{cls}_qT{j}", "angularCoeffs", 1.0 + up[inbin] * p,
                                            1.0 + down[inbin] * p, rows=rows[inbin])
            for i in (1, 3):
                p = a_nom[:, i] * polys[i] / denom
                yield Variation(f"A{i}_handle_{cls}", "angularCoeffs", 1.0 + A13_HANDLE * p, 1.0 - A13_HANDLE * p,
                                rows=rows)

    def _fsr_factors(self, columns: Mapping[str, np.ndarray], sample: SampleInfo, ev: dict[str, np.ndarray],
                     deltas: tuple[float, ...]) -> list[np.ndarray] | None:
        """Per event, the product over the selection's generator-matched muons of the factors
        that scale the emission probability by ``1 + delta`` (muon decays only: W→μν, Z→μμ);
        None where the sample or the columns have no such muons."""
        if not self.tables.fsr_emission or sample.name not in FSR_SAMPLES:
            return None
        from . import ew

        prefixes = [p for p in sample.muon_prefixes if f"{p}_gen_pt" in columns]
        if not prefixes:
            return None
        p = np.zeros(ev["pdg"].size)
        for pdg, boson in PDGID_BOSON.items():
            p[ev["pdg"] == pdg] = self.tables.fsr_emission.get(boson, 0.0)
        out = [np.ones(p.size) for _ in deltas]
        for prefix in prefixes:
            emitted = ew.radiated(columns, prefix)
            for arr, d in zip(out, deltas):
                arr *= ew.fsr_factors(emitted, p, d)
        return out

    def _ew_variation(self, columns: Mapping[str, np.ndarray], sample: SampleInfo,
                      ev: dict[str, np.ndarray]) -> Variation | None:
        """The FSR-strength variation: ±``fsr_strength_err`` around the nominal strength."""
        from . import ew

        t = self.tables
        d0 = t.fsr_strength - 1.0
        f = self._fsr_factors(columns, sample, ev, (d0, d0 + t.fsr_strength_err, d0 - t.fsr_strength_err))
        if f is None:
            return None
        return Variation(ew.NUISANCE, ew.GROUP, f[1] / f[0], f[2] / f[0])


def pdf_variations(pdf: np.ndarray, cl_scale: float = 1.0, sample: str = "?") -> Iterator[Variation]:
    """Hessian eigenvector pairs of ``lhe_pdf`` ([n, 1 + 2k]) relative to its central member,
    their departures from it divided by ``cl_scale`` (group ``pdf``)."""
    if pdf.ndim != 2 or pdf.shape[1] < 3 or pdf.shape[1] % 2 == 0:
        raise ValueError(f"sample {sample!r}: lhe_pdf must be [n, 1 + 2k] (central + Hessian pairs), got {pdf.shape}")
    if not cl_scale > 0:
        raise ValueError(f"pdf_cl_scale must be positive, got {cl_scale}")
    c0 = pdf[:, LHE_PDF_CENTRAL].astype(np.float64)
    central = np.where(c0 != 0, c0, 1.0)
    for k in range(lhe_pdf_pairs(pdf.shape[1])):
        up = pdf[:, lhe_pdf_index(k, True)] / central
        down = pdf[:, lhe_pdf_index(k, False)] / central
        yield Variation(f"pdf{k + 1}", "pdf", 1.0 + (up - 1.0) / cl_scale, 1.0 + (down - 1.0) / cl_scale)


def load_correction(artefact: str | Path) -> TheoryCorrection:
    """Factory named in the published manifest."""
    return TheoryCorrection(TheoryTables.load(artefact), str(artefact))


def publish_correction(chapter_dir: str | Path) -> Path:
    """Publish the tables (written first to ``<chapter_dir>/theory_corrections.h5``)."""
    return publish(chapter_dir, Manifest(
        name=CORRECTION_NAME, chapter=CHAPTER, kinds=("weight",), factory="wmnb.theory.correction:load_correction",
        artefact=ARTEFACT, order=30, groups=("pTV", "angularCoeffs", "pdf", "EW"),
        description="q_T reweighting to the prediction with its theory nuisances (pTV), A_i scale variations in "
                    "q_T bins and A1/A3 handles (angularCoeffs), Hessian PDF eigenvectors (pdf), FSR strength (EW)",
        supersedes=("pdf", "scales")))
