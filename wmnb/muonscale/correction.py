"""The published momentum calibration: artefact I/O and the ``wmnb.corrections`` hook.

``MomentumCalibration`` (kinds ``muon`` and ``weight``):

* ``correct`` on data: every muon prefix's pT is corrected with the fitted data-minus-simulation
  (A, e, M) (``scale_model.correct_pt``); on simulation: pT is smeared by the measured
  data-minus-simulation resolution difference where positive (deterministic: one normal per
  muon from a hash of the correction's seed, the sample, the run and event number and the
  muon's charge, so chunking or the selection a muon is read in does not change its smearing).
  A dimuon ``mass`` column is recomputed when ``mup``/``mum`` change.
* ``weights`` on simulation: the scale uncertainty as smooth per-event weight ratios.  Each
  variation shifts the mean of the muon's curvature response ``x = k_reco/k_gen`` (Gaussian of
  width sigma(pT_gen, eta) from the measured resolution) by ``D = dA - de k_gen + q dM / k_gen``:
  ``w = N(x; 1 + D, sigma) / N(x; 1, sigma)``, so no event changes bin (PHYSICS.md, "Scale
  variations enter the fit as smooth weight-based templates").  Muons without a generator match
  keep weight 1.
"""
from __future__ import annotations

import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..artefacts import read_json, write_json
from ..corrections import Correction, Manifest, SampleInfo, WeightSet, publish
from .kinematics import dimuon_mass
from .resolution import DataResolution
from .scale_model import ScaleParams, correct_pt, eta_index
from .uncertainty import Variation

ARTEFACT = "momentum_calibration.json"
ARTEFACT_VERSION = 2   # 2: data resolution as fitted (a, b, c, d) with covariance
CORRECTION_NAME = "muon_momentum_scale"
GROUP = "muonScale"


def write_artefact(chapter_dir: str | Path, params: ScaleParams, cov: np.ndarray,
                   variations: list[Variation], resolution: DataResolution | None,
                   scale_factor: float, seed: int, extra: dict[str, Any] | None = None) -> Path:
    """Write the calibration artefact (JSON: parameter tables, covariance, variations)."""
    doc = {
        "artefact_version": ARTEFACT_VERSION,
        "model": "dk/k = A - e*k + q*M/k (data minus simulation), k = 1/pT [1/GeV]",
        "eta_edges": params.edges.tolist(), "A": params.A.tolist(), "e": params.e.tolist(),
        "M": params.M.tolist(), "cov": np.asarray(cov).tolist(), "scale_factor": float(scale_factor),
        "variations": [v.to_dict() for v in variations],
        "resolution": resolution.to_dict() if resolution is not None else None,
        "seed": int(seed), **(extra or {}),
    }
    return write_json(Path(chapter_dir) / ARTEFACT, doc)


class MomentumCalibration(Correction):
    """Muon momentum scale correction, resolution smearing and scale weight variations."""

    name = CORRECTION_NAME
    kinds = ("muon", "weight")

    def __init__(self, params: ScaleParams, variations: list[Variation],
                 resolution: DataResolution | None, seed: int = 0, smear: bool = True):
        # undetermined parameters (NaN) mean "no correction measured": use zero
        self.params = ScaleParams(params.edges, np.nan_to_num(params.A), np.nan_to_num(params.e),
                                  np.nan_to_num(params.M))
        self.variations = variations
        self.resolution = resolution
        self.seed = int(seed)
        self.smear = smear and resolution is not None

    @staticmethod
    def _charge(columns: dict[str, np.ndarray], p: str, n: int) -> np.ndarray:
        if f"{p}_charge" in columns:
            return np.asarray(columns[f"{p}_charge"], dtype=np.float64)
        if p == "mup":
            return np.ones(n)
        if p == "mum":
            return -np.ones(n)
        raise KeyError(f"{CORRECTION_NAME}: muon prefix {p!r} needs a column {p}_charge "
                       "(only mup/mum imply their charge)")

    @staticmethod
    def _need(columns: dict[str, np.ndarray], key: str, sample: SampleInfo) -> np.ndarray:
        if key not in columns:
            raise KeyError(f"{CORRECTION_NAME}: sample {sample.name!r} (selection {sample.selection!r}) "
                           f"lacks column {key!r}; its muon_prefixes are {sample.muon_prefixes}")
        return np.asarray(columns[key], dtype=np.float64)

    def correct(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> None:
        """Correct data pT / smear simulation pT in place for every muon prefix."""
        for p in sample.muon_prefixes:
            pt = self._need(columns, f"{p}_pt", sample)
            eta = self._need(columns, f"{p}_eta", sample)
            ok = np.isfinite(pt) & (pt > 0)
            new = pt.copy()
            if sample.is_data:
                q = self._charge(columns, p, len(pt))
                new[ok] = correct_pt(pt[ok], eta[ok], q[ok], self.params)
            elif self.smear:
                extra = np.maximum(self.resolution.extra_rel2(np.where(ok, pt, 1.0), eta), 0.0)
                z = self._smearing_normals(columns, sample, p, pt)
                new[ok] = pt[ok] / np.abs(1.0 + np.sqrt(extra[ok]) * z[ok])
            else:
                continue
            columns[f"{p}_pt"] = new.astype(np.asarray(columns[f"{p}_pt"]).dtype, copy=False)
        if {"mup", "mum"} <= set(sample.muon_prefixes) and "mass" in columns \
                and "mup_phi" in columns and "mum_phi" in columns:
            m = dimuon_mass(columns["mup_pt"], columns["mup_eta"], columns["mup_phi"],
                            columns["mum_pt"], columns["mum_eta"], columns["mum_phi"])
            columns["mass"] = m.astype(np.asarray(columns["mass"]).dtype, copy=False)

    def _smearing_normals(self, columns: dict[str, np.ndarray], sample: SampleInfo, p: str,
                          pt: np.ndarray) -> np.ndarray:
        """One standard normal per muon, a function of the event (run, event number), the
        sample and the muon's charge only: the same muon is smeared alike whichever selection,
        chunk or subset of events it is read in (a W-like muon as in the Z skim it comes from).
        Skims without event ids (toys) fall back to a stream keyed by the pT values."""
        if "event" not in columns:
            key = zlib.crc32(np.ascontiguousarray(pt).tobytes()) ^ zlib.crc32(f"{sample.name}/{p}".encode())
            return np.random.default_rng([self.seed, key]).standard_normal(len(pt))
        event = np.asarray(columns["event"]).astype(np.uint64)
        run = np.asarray(columns.get("run", np.zeros(len(pt)))).astype(np.uint64)
        q = (self._charge(columns, p, len(pt)) > 0).astype(np.uint64)
        salt = np.uint64(zlib.crc32(sample.name.encode())) << np.uint64(32) | np.uint64(self.seed & 0xFFFFFFFF)
        x = event ^ (run << np.uint64(40)) ^ (q << np.uint64(63)) ^ salt
        u1 = (_splitmix64(x) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        u2 = (_splitmix64(x ^ np.uint64(0xD1B54A32D192ED03)) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)       # Box-Muller; 1 - u1 > 0

    def response_sigma2(self, gen_pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Variance of the curvature response of (smeared) simulation at generator pT."""
        if self.resolution is None:
            raise RuntimeError(f"{CORRECTION_NAME}: no resolution model in the artefact; cannot build weights")
        s2 = self.resolution.mc.rel2(gen_pt, eta)
        if self.smear:
            s2 = s2 + np.maximum(self.resolution.extra_rel2(gen_pt, eta), 0.0)
        return s2

    def nominal_factor(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> None:
        """The momentum calibration changes pT, not the nominal weight."""
        return None

    def iter_variations(self, columns: dict[str, np.ndarray], sample: SampleInfo):
        """Yield ``(name, group, up, down)`` weight factors one variation at a time (simulation
        only), so callers can histogram hundreds of variations without holding them all."""
        if sample.is_data or not self.variations:
            return
        n = len(np.asarray(columns[f"{sample.muon_prefixes[0]}_pt"]))
        missing = [p for p in sample.muon_prefixes if f"{p}_gen_pt" not in columns]
        if len(missing) == len(sample.muon_prefixes):
            raise KeyError(f"{CORRECTION_NAME}: simulation sample {sample.name!r} (selection {sample.selection!r}) "
                           f"has no generator pT for any muon ({[p + '_gen_pt' for p in missing]}); "
                           "weight-based scale variations need it: chapter 01 must keep gen-matched pT")
        if missing:
            # e.g. a tag muon without generator columns: its response is not varied (recorded)
            warnings.warn(f"{CORRECTION_NAME}: {sample.name}/{sample.selection}: no generator pT for "
                          f"{missing}; their scale is not varied", stacklevel=2)
        per_muon = []
        for p in sample.muon_prefixes:
            if f"{p}_gen_pt" not in columns:
                continue
            gpt = np.asarray(columns[f"{p}_gen_pt"], dtype=np.float64)
            pt = self._need(columns, f"{p}_pt", sample)
            eta = self._need(columns, f"{p}_eta", sample)
            q = self._charge(columns, p, n)
            ok = np.isfinite(gpt) & (gpt > 0) & np.isfinite(pt) & (pt > 0)
            gsafe = np.where(ok, gpt, 1.0)
            x = np.where(ok, gsafe / np.where(ok, pt, 1.0), 1.0)      # k_reco / k_gen
            inv_s2 = np.where(ok, 1.0 / self.response_sigma2(gsafe, eta), 0.0)
            per_muon.append((x, inv_s2, 1.0 / gsafe, q, eta_index(eta, self.params.edges)))
        for v in self.variations:
            log_up = np.zeros(n)
            log_dn = np.zeros(n)
            for x, inv_s2, k, q, i in per_muon:
                D = v.dA[i] - v.de[i] * k + q * v.dM[i] / k
                lin = D * (x - 1.0) * inv_s2
                quad = 0.5 * D * D * inv_s2
                log_up += lin - quad
                log_dn += -lin - quad
            yield v.name, v.group, np.exp(log_up), np.exp(log_dn)

    def weights(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> WeightSet:
        """Per-event weight ratios of every scale variation (simulation only)."""
        ws = WeightSet()
        for name, group, up, down in self.iter_variations(columns, sample):
            ws.variations[f"{name}Up"] = up
            ws.variations[f"{name}Down"] = down
            ws.groups[name] = group
        return ws


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (Steele, Lea & Flood 2014): a bijective mixing of 64-bit integers
    whose outputs pass as independent uniform bits, vectorised (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def load_correction(artefact: str | Path) -> MomentumCalibration:
    """Factory named in the published manifest: rebuild the correction from its artefact."""
    doc = read_json(artefact)
    if doc.get("artefact_version") != ARTEFACT_VERSION:
        raise ValueError(f"{artefact}: calibration artefact version {doc.get('artefact_version')} is not "
                         f"{ARTEFACT_VERSION}; rerun chapter 02")
    params = ScaleParams(np.asarray(doc["eta_edges"]), *(np.asarray(doc[k], dtype=np.float64)
                                                          for k in ("A", "e", "M")))
    variations = [Variation.from_dict(v) for v in doc["variations"]]
    res = DataResolution.from_dict(doc["resolution"]) if doc.get("resolution") else None
    return MomentumCalibration(params, variations, res, seed=doc.get("seed", 0))


def publish_correction(chapter_dir: str | Path) -> Path:
    """Publish the artefact through ``wmnb.corrections`` (call after :func:`write_artefact`)."""
    return publish(chapter_dir, Manifest(
        name=CORRECTION_NAME, chapter="02_calibration", kinds=("muon", "weight"),
        factory="wmnb.muonscale.correction:load_correction", artefact=ARTEFACT, order=10, groups=(GROUP,),
        description="J/psi muon momentum scale (A, e, M per eta), resolution smearing of simulation, "
                    "weight-based scale variations"))
