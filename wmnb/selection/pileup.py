"""Pileup reweighting of the simulation to the data, by the number of reconstructed vertices.

The simulation is generated with the nominal card's pileup profile; the data have their own.
Everything that depends on pileup (isolation, the recoil resolution, the MET) then differs
between them for a reason that is not the detector.  CMS reweights the simulated number of true
interactions to the profile derived from the luminosity; without a luminosity measurement this
book reweights, as the issue allows, by the number of reconstructed vertices ``npv``
(``PV_npvsGood``), measured on the Z→μμ selection (pure, high statistics, pileup-independent
trigger): ``w(npv) = p_data(npv) / p_sim(npv)`` with both distributions normalised.

The uncertainty is the analogue of the minimum-bias cross-section variation of CMS (±4.6 %): the
data's npv distribution stretched by ±4.6 % (its cumulative distribution evaluated at
``npv / (1 ± 0.046)``), giving the nuisance ``pileup`` (group ``pileup``).

The weights are published as a ``weight`` correction (:class:`PileupReweighting`) that every
consumer of chapter 01's skims applies through the one correction pipeline.  Whether the
reweighting recovers the data's *true* interaction profile (which ``npv`` only samples) is the
closure of the chapter: the reweighted simulation's ``pu_true`` against the data card's pileup
mean, through the truth gate.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artefacts import read_json, write_json
from ..corrections import Correction, Manifest, SampleInfo, Variation, WeightSet, publish

ARTEFACT = "pileup_weights.json"
ARTEFACT_VERSION = 1
CORRECTION_NAME = "pileup_reweighting"
GROUP = "pileup"
#: relative uncertainty of the number of interactions (CMS: the minimum-bias cross section)
MINBIAS_REL_UNC = 0.046
#: simulated events needed in an npv bin; beyond the last such bin the weights are merged
MIN_SIM_EVENTS = 20.0


@dataclass(frozen=True)
class PileupWeights:
    """Weights per integer npv 0..``nmax`` (the last bin holds npv >= nmax)."""

    nominal: np.ndarray
    up: np.ndarray
    down: np.ndarray
    data_counts: np.ndarray
    sim_counts: np.ndarray

    @property
    def nmax(self) -> int:
        return int(self.nominal.size - 1)

    def index(self, npv: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(npv, dtype=np.int64), 0, self.nmax)

    def to_dict(self) -> dict[str, Any]:
        return {"artefact_version": ARTEFACT_VERSION, "binning": "integer npv 0..nmax, last bin npv >= nmax",
                "minbias_rel_unc": MINBIAS_REL_UNC, **{k: getattr(self, k).tolist() for k in
                                                       ("nominal", "up", "down", "data_counts", "sim_counts")}}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str = "pileup artefact") -> PileupWeights:
        if doc.get("artefact_version") != ARTEFACT_VERSION:
            raise ValueError(f"{where}: artefact version {doc.get('artefact_version')} is not {ARTEFACT_VERSION}; "
                             "rerun chapter 01")
        return cls(*(np.asarray(doc[k], dtype=np.float64) for k in
                     ("nominal", "up", "down", "data_counts", "sim_counts")))


def _stretched(counts: np.ndarray, factor: float) -> np.ndarray:
    """The distribution of ``npv × factor`` for integer-binned ``counts`` (linear CDF)."""
    edges = np.arange(counts.size + 1) - 0.5
    cdf = np.concatenate([[0.0], np.cumsum(counts)])
    new = np.interp(edges / factor, edges, cdf, left=0.0, right=cdf[-1])
    return np.diff(new)


def measure_pileup_weights(data_npv: np.ndarray, sim_npv: np.ndarray, sim_weight: np.ndarray,
                           min_sim_events: float = MIN_SIM_EVENTS) -> PileupWeights:
    """Data/simulation ratio of the normalised npv distributions (and its ±4.6 % variations).

    Bins are merged into the last one beyond the highest npv where the simulation has at least
    ``min_sim_events`` effective events (sum of weights squared over sum of weights), so no
    weight comes from a handful of simulated events.
    """
    data_npv = np.asarray(data_npv, dtype=np.int64)
    sim_npv = np.asarray(sim_npv, dtype=np.int64)
    sim_weight = np.asarray(sim_weight, dtype=np.float64)
    if data_npv.size == 0 or sim_npv.size == 0:
        raise ValueError(f"pileup reweighting needs events in data ({data_npv.size}) and simulation ({sim_npv.size})")
    if sim_npv.shape != sim_weight.shape:
        raise ValueError(f"simulation npv {sim_npv.shape} and weights {sim_weight.shape} differ in shape")
    if (data_npv < 0).any() or (sim_npv < 0).any():
        raise ValueError("npv must be >= 0")
    top = int(max(data_npv.max(), sim_npv.max())) + 1
    sw = np.bincount(sim_npv, sim_weight, minlength=top)
    sw2 = np.bincount(sim_npv, sim_weight**2, minlength=top)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(sw2 > 0, sw**2 / sw2, 0.0)
    enough = np.flatnonzero(n_eff >= min_sim_events)
    if enough.size == 0:
        raise ValueError(f"no npv bin has {min_sim_events} effective simulated events: the simulation is too small")
    nmax = int(enough.max())
    lo = int(enough.min())

    def folded(counts: np.ndarray) -> np.ndarray:
        out = counts[:nmax + 1].astype(np.float64).copy()
        out[nmax] += counts[nmax + 1:].sum()
        out[lo] += counts[:lo].sum()        # sparse low tail merged likewise
        out[:lo] = 0.0
        return out

    data = np.bincount(data_npv, minlength=top).astype(np.float64)
    sim = folded(sw)
    sim_density = sim / sim.sum()

    def ratio(counts: np.ndarray) -> np.ndarray:
        d = folded(counts)
        d = d / d.sum()
        w = np.where(sim_density > 0, d / np.where(sim_density > 0, sim_density, 1.0), 1.0)
        w[:lo] = w[lo]
        return w

    return PileupWeights(ratio(data), ratio(_stretched(data, 1.0 + MINBIAS_REL_UNC)),
                         ratio(_stretched(data, 1.0 - MINBIAS_REL_UNC)), folded(data), sim)


class PileupReweighting(Correction):
    """Weights simulated events by their npv (data untouched), with the ±4.6 % variation."""

    name = CORRECTION_NAME
    kinds = ("weight",)

    def __init__(self, weights: PileupWeights):
        self.pileup = weights

    def _npv(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> np.ndarray:
        if "npv" not in columns:
            raise KeyError(f"{CORRECTION_NAME}: sample {sample.name!r} (selection {sample.selection!r}) lacks the "
                           "column 'npv' (PV_npvsGood); chapter 01's skims carry it: rerun chapter 01")
        return self.pileup.index(columns["npv"])

    def nominal_factor(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> np.ndarray | None:
        if sample.is_data:
            return None
        return self.pileup.nominal[self._npv(columns, sample)]

    def iter_variations(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> Iterator[Variation]:
        if sample.is_data:
            return
        i = self._npv(columns, sample)
        nom = np.where(self.pileup.nominal > 0, self.pileup.nominal, 1.0)
        yield Variation("pileup", GROUP, (self.pileup.up / nom)[i], (self.pileup.down / nom)[i])

    def weights(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> WeightSet:
        """The eager form (a WeightSet's variations are the *full* varied factors)."""
        if sample.is_data:
            return WeightSet()
        i = self._npv(columns, sample)
        return WeightSet(self.pileup.nominal[i], {"pileupUp": self.pileup.up[i], "pileupDown": self.pileup.down[i]},
                         {"pileup": GROUP})


def write_artefact(chapter_dir: str | Path, weights: PileupWeights) -> Path:
    return write_json(Path(chapter_dir) / ARTEFACT, weights.to_dict())


def load_correction(artefact: str | Path) -> PileupReweighting:
    """Factory named in the published manifest."""
    return PileupReweighting(PileupWeights.from_dict(read_json(artefact), str(artefact)))


def publish_correction(chapter_dir: str | Path) -> Path:
    """Publish the artefact through ``wmnb.corrections`` (call after :func:`write_artefact`)."""
    return publish(chapter_dir, Manifest(
        name=CORRECTION_NAME, chapter="01_selection", kinds=("weight",),
        factory="wmnb.selection.pileup:load_correction", artefact=ARTEFACT, order=5, groups=(GROUP,),
        description="pileup reweighting of simulation to data by the number of vertices (Z->mumu), "
                    "±4.6 % minimum-bias-like variation"))
