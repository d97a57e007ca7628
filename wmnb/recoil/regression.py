"""Chapter 04's DNN recoil on the Z: training the semi-parametric regression of
:mod:`wmnb.recoil.dnn` on the simulated Z, and its checks against the generator-level recoil.

In simulation the true recoil is known: H = −q_T(gen), the generator boson's transverse momentum
reversed.  The network learns p(ln(|H|/|u_PF|), Δφ | features) on half the simulated Z events; on
the other half

* the **PIT** of both targets (flat if the predicted densities are calibrated),
* the **sum of predicted pdfs** against the histogram of the true targets,
* the **resolution** of every recoil estimator (PF, track-only, PUPPI, the DNN's mode-of-core
  estimate) along the generator boson: response R = −⟨u_∥⟩/⟨q_T⟩ and core widths of u_∥ (about
  the response line) and u_⊥ per generator-q_T bin, compared as widths over response (a recoil
  scaled to unit response), so that an estimator is not rewarded for under-measuring.

The DNN's gain (:func:`resolution_gain`) is the PF's response-scaled resolution over the DNN's.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..engine.kinematics import project
from . import dnn
from .chapter import BinnedMoments, binned_moments, training_half
from .inputs import RecoilSample

#: the recoil estimators compared with the DNN: label -> (x, y) columns of the pipeline's Z events
ESTIMATORS: dict[str, tuple[str, str]] = {"PF": ("ut_x", "ut_y"), "track-only": ("tkmet_ut_x", "tkmet_ut_y"),
                                          "PUPPI": ("puppimet_ut_x", "puppimet_ut_y")}


@dataclass(frozen=True)
class DNNConfig:
    """Network and training settings (chapter 04 passes its max_train_events and seed)."""

    hidden: tuple[int, ...] = (64, 64, 64)
    epochs: int = 30
    batch_size: int = 1024
    learning_rate: float = 1e-3
    max_train_events: int | None = 200_000
    seed: int = 0


def true_recoil(sample: RecoilSample) -> tuple[np.ndarray, np.ndarray]:
    """H = −q_T(gen) of each simulated event (x, y); a sample without the generator boson raises."""
    missing = [c for c in ("gen_qt", "gen_phi") if c not in sample.columns]
    if missing:
        raise KeyError(f"chapter 04 DNN: sample {sample.name!r} lacks {missing}: the true recoil needs the "
                       "generator boson (simulation only)")
    qt, phi = (np.asarray(sample.columns[c], np.float64) for c in ("gen_qt", "gen_phi"))
    return -qt * np.cos(phi), -qt * np.sin(phi)


def train(sample: RecoilSample, cfg: DNNConfig) -> tuple[dnn.RecoilDNN, np.ndarray, float]:
    """The network trained on the training half of the simulated Z (at most
    ``cfg.max_train_events`` of them), the held-out mask and the training time (s)."""
    half = training_half(sample, cfg.seed)
    idx = np.flatnonzero(half)
    if cfg.max_train_events is not None and idx.size > cfg.max_train_events:
        idx = np.sort(np.random.default_rng([cfg.seed, 6]).choice(idx, cfg.max_train_events, replace=False))
    part = sample.subset(np.isin(np.arange(sample.weight.size), idx))
    hx, hy = true_recoil(part)
    t0 = time.perf_counter()
    model = dnn.RecoilDNN.fit(dnn.features(part.columns), dnn.targets(part.columns, hx, hy),
                              np.maximum(part.weight, 0.0), hidden=cfg.hidden, epochs=cfg.epochs,
                              batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=cfg.seed)
    return model, ~half, time.perf_counter() - t0


@dataclass(frozen=True)
class DNNClosure:
    """The held-out checks of the network (module docstring)."""

    pit: np.ndarray                          # (n, 2)
    targets: np.ndarray                      # (n, 2) true targets
    weight: np.ndarray
    grid: np.ndarray                         # (G, 2) target grid of the summed pdf
    summed_pdf: np.ndarray                   # (G, 2) events per unit target
    resolution: dict[str, BinnedMoments]     # estimator -> moments along the generator boson
    train_time_s: float

    def pit_chi2_ndf(self, bins: int = 20) -> tuple[float, float]:
        """χ²/ndf of each target's PIT histogram against flat (weights' effective counts)."""
        out = []
        for j in range(2):
            h, _ = np.histogram(self.pit[:, j], bins, (0.0, 1.0), weights=self.weight)
            h2, _ = np.histogram(self.pit[:, j], bins, (0.0, 1.0), weights=self.weight**2)
            flat = h.sum() / bins
            out.append(float(np.sum((h - flat) ** 2 / np.maximum(h2, 1e-300)) / (bins - 1)))
        return out[0], out[1]


def scaled_resolution(m: BinnedMoments) -> np.ndarray:
    """Per q_T bin: sqrt(width_∥² + width_⊥²) / response, the resolution at unit response."""
    return np.hypot(m.width_par, m.width_perp) / m.response


def resolution_gain(resolution: Mapping[str, BinnedMoments], reference: str = "PF", candidate: str = "DNN") -> float:
    """Mean over q_T bins of the reference's :func:`scaled_resolution` over the candidate's (> 1:
    the candidate resolves the recoil better)."""
    return float(np.nanmean(scaled_resolution(resolution[reference]) / scaled_resolution(resolution[candidate])))


def closure(model: dnn.RecoilDNN, sample: RecoilSample, held_out: np.ndarray, qt_edges: np.ndarray,
            train_time_s: float = float("nan")) -> DNNClosure:
    """:class:`DNNClosure` of ``model`` on the ``held_out`` events of the simulated Z."""
    part = sample.subset(held_out)
    hx, hy = true_recoil(part)
    y = dnn.targets(part.columns, hx, hy)
    params = model.predict(dnn.features(part.columns))
    w = part.weight
    lo, hi = np.percentile(y, [0.5, 99.5], axis=0)
    grid = np.linspace(lo, hi, 121)
    qt_gen = np.hypot(hx, hy)
    phi = np.arctan2(-hy, -hx)                        # the generator boson's direction
    estimates = {label: (np.asarray(part.columns[cx], np.float64), np.asarray(part.columns[cy], np.float64))
                 for label, (cx, cy) in ESTIMATORS.items()}
    estimates["DNN"] = dnn.corrected_recoil(part.columns, params)
    res = {}
    for label, (ux, uy) in estimates.items():
        par, perp = project(ux, uy, phi)
        res[label] = binned_moments(qt_gen, np.stack([par, perp], axis=1), w, qt_edges)
    return DNNClosure(dnn.pit(y, params), y, w, grid, dnn.summed_pdf(grid, params, w), res, train_time_s)


__all__ = ["ESTIMATORS", "DNNClosure", "DNNConfig", "closure", "resolution_gain",
           "scaled_resolution", "train", "true_recoil"]
