"""Chapter 04's inputs: the recoil of Z→μμ events in data and simulation.

The Z selection's skims (chapter 01) carry the hadronic recoil u_T projected on the dimuon q_T
(``ut_para``, ``ut_perp``: u_∥ ≈ −R q_T, since the recoil balances the boson) for the PF MET and
the other estimators (``tkmet_``, ``puppimet_``), and the conditioning variables: the dimuon q_T
(``pair_pt``), its rapidity (``pair_y``) and the number of reconstructed vertices (``npv``).
Data and simulation go through the correction pipeline with the corrections of chapters 01–03
(pileup weights, the muon momentum scale, the efficiency scale factors), so the simulated Z is
the one every other chapter sees.

Before any q_T-conditional model is fitted the simulated q_T is reweighted to the data's
(:func:`qt_reweighting`): a conditional model does not care about the q_T spectrum, but its
binned quantiles and a BDT's loss average over it, and the W application uses the Z model at the
W's q_T.  The other processes passing the Z selection (tt̄, dibosons, Z→ττ, W+jets) are a small
background under the Z peak; :func:`background_fraction` measures it per q_T bin from their
simulation so that the book can show it is negligible (or subtract it from the data's
distributions).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the chapters whose corrections the Z recoil is taken after
DEPENDS_ON = ("01_selection", "02_calibration", "03_efficiencies")
SIGNAL = "z_mumu"
#: simulated processes other than Z→μμ that pass the Z selection
BACKGROUNDS = ("ttbar", "diboson", "z_tautau", "wplus_munu", "wminus_munu", "w_taunu", "qcd")
#: the recoil estimators: column prefix ("" for the PF MET) -> label
ESTIMATORS = {"": "PF", "tkmet_": "track-only", "puppimet_": "PUPPI"}
#: conditioning variables of the recoil models, in this order
CONDITIONS = ("pair_pt", "pair_y", "npv")
REQUIRED = (*CONDITIONS, *(f"{e}ut_{c}" for e in ESTIMATORS for c in ("para", "perp")),
            "met_sumet", "tkmet_sumet", "puppimet_sumet", "n_charged")


class RecoilInputError(KeyError):
    """A skim lacks what chapter 04 needs (names the sample, columns and the chapter to rerun)."""


@dataclass(frozen=True)
class RecoilSample:
    """One sample's Z events after the pipeline: ``columns`` and the event ``weight`` (data: 1)."""

    name: str
    columns: dict[str, np.ndarray]
    weight: np.ndarray

    @property
    def qt(self) -> np.ndarray:
        return np.asarray(self.columns["pair_pt"], np.float64)

    def recoil(self, estimator: str = "") -> np.ndarray:
        """``(n, 2)``: u_∥ and u_⊥ of an estimator (:data:`ESTIMATORS`)."""
        return np.stack([np.asarray(self.columns[f"{estimator}ut_{c}"], np.float64) for c in ("para", "perp")], axis=1)

    def conditions(self) -> np.ndarray:
        """``(n, 3)``: q_T, the boson rapidity and the number of vertices (:data:`CONDITIONS`)."""
        return np.stack([np.asarray(self.columns[c], np.float64) for c in CONDITIONS], axis=1)

    def reweighted(self, factor: np.ndarray) -> RecoilSample:
        return RecoilSample(self.name, self.columns, self.weight * np.asarray(factor, np.float64))

    def subset(self, mask: np.ndarray) -> RecoilSample:
        """The events where ``mask`` holds."""
        return RecoilSample(self.name, {k: v[mask] for k, v in self.columns.items()}, self.weight[mask])


def check_columns(sample: str, cols: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`RecoilInputError` naming every column of :data:`REQUIRED` the skim lacks."""
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise RecoilInputError(f"chapter 04: the z skim of {sample!r} lacks the columns {missing}; rerun chapter 01")


def upstream_corrections(profile: str) -> list[Any]:
    """The corrections published by the chapters the recoil is taken after (:data:`DEPENDS_ON`)."""
    from ..corrections import upstream

    return upstream(profile, "04_recoil")


def load_z(profile: str, samples: tuple[str, ...] = ("data", SIGNAL, *BACKGROUNDS)) -> dict[str, RecoilSample]:
    """The Z selection's events of ``samples`` through the correction pipeline with chapters
    01–03's corrections (a background sample the profile did not generate is left out)."""
    from ..engine import read_skim
    from ..engine.pipeline import run_pipeline

    corr = upstream_corrections(profile)
    out: dict[str, RecoilSample] = {}
    for sample in samples:
        try:
            cols = read_skim(profile, "z", sample)
        except FileNotFoundError:
            if sample in BACKGROUNDS:
                continue
            raise
        check_columns(sample, cols)
        res = run_pipeline("z", sample, cols, corrections=corr)
        out[sample] = RecoilSample(sample, res.columns, res.weight)
    return out


def _hist(qt: np.ndarray, weight: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(np.clip(qt, edges[0], np.nextafter(edges[-1], edges[0])), edges, weights=weight)[0]


@dataclass(frozen=True)
class QtReweighting:
    """Data/simulation ratio of the (background-subtracted) dimuon q_T spectra in bins ``edges``
    (q_T beyond the last edge takes the last bin), applied to the simulated Z."""

    edges: np.ndarray
    ratio: np.ndarray

    def __call__(self, qt: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(self.edges, qt, side="right") - 1, 0, self.ratio.size - 1)
        return self.ratio[i]


def qt_reweighting(data: RecoilSample, signal: RecoilSample, backgrounds: Mapping[str, RecoilSample],
                   edges: np.ndarray) -> QtReweighting:
    """The q_T weights of the simulated Z: (data − simulated backgrounds) / simulated Z per bin,
    the simulation normalised to the subtracted data (a shape reweighting)."""
    edges = np.asarray(edges, np.float64)
    d = _hist(data.qt, data.weight, edges)
    b = sum((_hist(s.qt, s.weight, edges) for s in backgrounds.values()), np.zeros(edges.size - 1))
    s = _hist(signal.qt, signal.weight, edges)
    empty = np.flatnonzero(s <= 0)
    if empty.size:
        lo, hi = edges[empty[0]], edges[empty[0] + 1]
        raise ValueError(f"chapter 04: the simulated Z has no events with {lo:g} < q_T < {hi:g} GeV; "
                         "use fewer or wider q_T bins (parameter qt_edges)")
    sub = np.maximum(d - b, 0.0)
    ratio = (sub / s) * (s.sum() / max(sub.sum(), 1e-300))
    return QtReweighting(edges, ratio)


def background_fraction(signal: RecoilSample, backgrounds: Mapping[str, RecoilSample],
                        edges: np.ndarray) -> np.ndarray:
    """Per q_T bin, the simulated backgrounds' share of the Z selection."""
    edges = np.asarray(edges, np.float64)
    b = sum((_hist(s.qt, s.weight, edges) for s in backgrounds.values()), np.zeros(edges.size - 1))
    s = _hist(signal.qt, signal.weight, edges)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s + b > 0, b / (s + b), np.nan)


__all__ = ["BACKGROUNDS", "CONDITIONS", "DEPENDS_ON", "ESTIMATORS", "REQUIRED", "SIGNAL", "QtReweighting",
           "RecoilInputError", "RecoilSample", "background_fraction", "check_columns", "load_z", "qt_reweighting",
           "upstream_corrections"]
