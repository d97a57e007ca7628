"""Chapter 04 on the Z: the recoil models of data and simulation, the morphed simulation, and
its closure against the data and the truth.

Both methods morph the simulated (u_∥, u_⊥) of an event as a chain
(:class:`wmnb.recoil.morphing.ChainedMorph`: u_∥ first, then u_⊥ conditional on the corrected
u_∥), with the conditional quantiles of data and simulation from

* ``binned`` — the paper's method: weighted quantiles in q_T bins, interpolated in q_T
  (:class:`~wmnb.recoil.morphing.BinnedQuantiles`; conditions q_T only);
* ``bdt`` — the seed's: one xgboost quantile regression per variable and sample with the pinball
  loss at all levels at once, conditions (q_T, y, number of vertices) and, for u_⊥, u_∥
  (:class:`~wmnb.recoil.morphing.BDTQuantiles`).

The models are fitted on Z events with q_T below ``qt_max`` (the backgrounds' share of the Z
selection stays below 2 % there, :func:`wmnb.recoil.inputs.background_fraction`), the simulation
reweighted to the data's q_T first.  The truth is read only through
:func:`wmnb.truth.recoil_response`, for the "measured vs truth" response and resolution.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import inputs as I
from .morphing import QUANTILE_LEVELS, BDTQuantiles, BinnedQuantiles, ChainedMorph, weighted_quantiles

CHAPTER = "04_recoil"
METHODS = ("binned", "bdt")


@dataclass(frozen=True)
class RecoilConfig:
    """Sizes and choices of the chapter (profile parameters of the notebook)."""

    qt_edges: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0)
    qt_max: float = 40.0
    n_estimators: int = 40
    max_depth: int = 4
    learning_rate: float = 0.3
    subsample: float = 0.5
    max_train_events: int | None = 150_000
    #: bootstrap replicas of the binned models, and how many of their eigenvectors become the
    #: statistical nuisances of the correction (``recoilStat<k>``)
    n_bootstrap: int = 40
    n_stat_variations: int = 6
    seed: int = 0

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> RecoilConfig:
        kw: dict[str, Any] = {k: params[k] for k in ("qt_max", "n_estimators", "max_depth", "learning_rate", "subsample",
                                                         "max_train_events", "n_bootstrap", "n_stat_variations",
                                                         "seed")
                              if k in params}
        if "qt_edges" in params:
            kw["qt_edges"] = tuple(float(x) for x in params["qt_edges"])
        cfg = cls(**kw)
        if list(cfg.qt_edges) != sorted(cfg.qt_edges) or len(cfg.qt_edges) < 2:
            raise ValueError(f"qt_edges must be at least two increasing values, got {cfg.qt_edges}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def training_half(sample: I.RecoilSample, seed: int) -> np.ndarray:
    """Which events train the models (a random half, the same for a seed); the other half is
    where the closure is measured, so that it is not a closure on the events fitted."""
    return np.random.default_rng([seed, sample.weight.size]).random(sample.weight.size) < 0.5


def _training(sample: I.RecoilSample, cfg: RecoilConfig, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, conditions, weight) of the sample's training events with q_T < qt_max, at most
    ``max_train_events`` of them (a random subset, same seed -> same subset)."""
    sel = np.flatnonzero(training_half(sample, cfg.seed) & (sample.qt < cfg.qt_max))
    if cfg.max_train_events is not None and sel.size > cfg.max_train_events:
        sel = np.sort(rng.choice(sel, cfg.max_train_events, replace=False))
    return sample.recoil()[sel], sample.conditions()[sel], sample.weight[sel]


def _maker(method: str, cfg: RecoilConfig) -> Any:
    if method == "binned":
        edges = np.asarray(cfg.qt_edges, np.float64)
        return lambda x, c, w: BinnedQuantiles.fit(x, c, w, edges, QUANTILE_LEVELS)
    if method == "bdt":
        return lambda x, c, w: BDTQuantiles.fit(x, c, w, QUANTILE_LEVELS, seed=cfg.seed, n_estimators=cfg.n_estimators,
                                                max_depth=cfg.max_depth, learning_rate=cfg.learning_rate,
                                                subsample=cfg.subsample)
    raise ValueError(f"unknown recoil method {method!r}; choose one of {METHODS}")


@dataclass(frozen=True)
class StatVariations:
    """The statistical uncertainty of the binned chain as eigenvariations.

    ``deltas[k]`` (shape ``(4, n_qt_bins, n_levels)``: simulation u_∥, u_⊥, data u_∥, u_⊥) is the
    k-th eigenvector of the bootstrap replicas' covariance of every quantile of both samples,
    scaled by the square root of its eigenvalue (a one-σ shift); ``variance_fraction`` how much
    of the replicas' total variance the kept eigenvectors carry.
    """

    deltas: np.ndarray
    variance_fraction: float
    n_replicas: int


def bootstrap_variations(training: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], nominal: ChainedMorph,
                         cfg: RecoilConfig) -> StatVariations:
    """:class:`StatVariations` from ``cfg.n_bootstrap`` Poisson-weighted replicas of both training
    samples (``training``: ``"mc"``/``"data"`` -> (u, conditions, weight)), each refitted with
    the binned method; the ``cfg.n_stat_variations`` leading eigenvectors are kept."""
    edges = np.asarray(cfg.qt_edges, np.float64)
    rng = np.random.default_rng([cfg.seed, 4])
    ref = np.stack([m.values for m in (*nominal.mc, *nominal.data)])   # type: ignore[attr-defined]
    replicas = np.empty((cfg.n_bootstrap, ref.size))
    for r in range(cfg.n_bootstrap):
        fitted = []
        for side in ("mc", "data"):
            x, c, w = training[side]
            wr = w * rng.poisson(1.0, w.size)
            fitted += [BinnedQuantiles.fit(x[:, j], c, wr, edges, QUANTILE_LEVELS).values for j in range(x.shape[1])]
        replicas[r] = (np.stack(fitted) - ref).ravel()
    dev = replicas - replicas.mean(axis=0)
    _, sing, vt = np.linalg.svd(dev / np.sqrt(max(cfg.n_bootstrap - 1, 1)), full_matrices=False)
    keep = min(cfg.n_stat_variations, sing.size)
    deltas = (sing[:keep, None] * vt[:keep]).reshape(keep, *ref.shape)
    total = float(np.sum(sing**2))
    return StatVariations(deltas, float(np.sum(sing[:keep] ** 2) / total) if total > 0 else 1.0, cfg.n_bootstrap)


@dataclass
class RecoilCalibration:
    """The fitted chains per method, the q_T reweighting, the training times (s) and the binned
    chain's statistical eigenvariations."""

    morphs: dict[str, ChainedMorph]
    qt_weights: I.QtReweighting
    train_time_s: dict[str, float] = field(default_factory=dict)
    stat: StatVariations | None = None
    #: the method difference as a shift of the binned chain's data tables (:func:`method_delta`)
    method_delta: np.ndarray | None = None

    def corrected(self, sample: I.RecoilSample, method: str) -> np.ndarray:
        """``(n, 2)``: the sample's (u_∥, u_⊥) morphed to the data by ``method``."""
        return self.morphs[method].apply(sample.recoil(), sample.conditions())


def method_delta(morphs: Mapping[str, ChainedMorph], x_mc: np.ndarray, c_mc: np.ndarray, w_mc: np.ndarray,
                 cfg: RecoilConfig) -> np.ndarray:
    """The BDT−binned method difference as a shift of the binned chain's tables (shape as
    :class:`StatVariations`' ``deltas[k]``): the data side's quantiles replaced by those of the
    simulation morphed by the BDT chain, in the same q_T bins.  This carries what the BDT does to
    the corrected distributions (per q_T bin, summed over rapidity and vertices) with the binned
    method's smooth monotone map: the per-event difference of the two methods moves single
    events by tens of GeV while the distributions agree, so applying the BDT chain event by event
    would need every event of every fit re-morphed by the BDTs for the same effect."""
    edges = np.asarray(cfg.qt_edges, np.float64)
    binned = morphs["binned"]
    u_bdt = morphs["bdt"].apply(x_mc, c_mc)
    delta = np.zeros((2 * len(binned.mc), *binned.data[0].values.shape))  # type: ignore[attr-defined]
    for j, model in enumerate(binned.data):
        target = BinnedQuantiles.fit(u_bdt[:, j], c_mc, w_mc, edges, QUANTILE_LEVELS)
        delta[len(binned.mc) + j] = target.values - model.values  # type: ignore[attr-defined]
    return delta


def calibrate(samples: Mapping[str, I.RecoilSample], cfg: RecoilConfig,
              methods: tuple[str, ...] = METHODS) -> RecoilCalibration:
    """Fit the data's and the (q_T-reweighted) simulation's models of every method."""
    bkg = {k: v for k, v in samples.items() if k in I.BACKGROUNDS}
    rw = I.qt_reweighting(samples["data"], samples[I.SIGNAL], bkg, np.asarray(cfg.qt_edges + (1e9,)))
    mc = samples[I.SIGNAL].reweighted(rw(samples[I.SIGNAL].qt))
    rng = np.random.default_rng(cfg.seed)
    x_mc, c_mc, w_mc = _training(mc, cfg, rng)
    x_d, c_d, w_d = _training(samples["data"], cfg, rng)
    morphs, times = {}, {}
    for m in methods:
        t0 = time.perf_counter()
        morphs[m] = ChainedMorph.fit(x_mc, c_mc, w_mc, x_d, c_d, w_d, make=_maker(m, cfg))
        times[m] = time.perf_counter() - t0
    stat = None
    if "binned" in morphs and cfg.n_bootstrap > 1 and cfg.n_stat_variations > 0:
        t0 = time.perf_counter()
        stat = bootstrap_variations({"mc": (x_mc, c_mc, w_mc), "data": (x_d, c_d, w_d)}, morphs["binned"], cfg)
        times["bootstrap"] = time.perf_counter() - t0
    delta = method_delta(morphs, x_mc, c_mc, w_mc, cfg) if {"binned", "bdt"} <= set(morphs) else None
    return RecoilCalibration(morphs, rw, times, stat, delta)


@dataclass(frozen=True)
class BinnedMoments:
    """Per q_T bin: the mean q_T, the response r = −⟨u_∥⟩/⟨q_T⟩, the RMS of u_∥ about −r q_T and
    of u_⊥, their core widths (half the 16-84 % interquantile range: what the quantile morphing
    controls; the RMS also carries the tails beyond the outermost quantiles) and the statistical
    errors."""

    qt: np.ndarray
    response: np.ndarray
    response_err: np.ndarray
    rms_par: np.ndarray
    rms_perp: np.ndarray
    rms_err: np.ndarray
    width_par: np.ndarray
    width_perp: np.ndarray
    width_err: np.ndarray


def _weighted_quantile(x: np.ndarray, w: np.ndarray, p: np.ndarray) -> np.ndarray:
    order = np.argsort(x)
    return weighted_quantiles(x[order], w[order], p)


def binned_moments(qt: np.ndarray, u: np.ndarray, weight: np.ndarray, edges: np.ndarray) -> BinnedMoments:
    """:class:`BinnedMoments` of events (``u``: ``(n, 2)``) in q_T bins ``edges``."""
    idx = np.searchsorted(edges, qt, side="right") - 1
    nb = edges.size - 1
    out = np.full((9, nb), np.nan)
    p = np.array([0.16, 0.84])
    for b in range(nb):
        s = idx == b
        w = weight[s]
        if w.sum() <= 0:
            continue
        n_eff = w.sum() ** 2 / np.sum(w**2)
        mq = np.average(qt[s], weights=w)
        mp = np.average(u[s, 0], weights=w)
        # about the bin's response line, not its mean: the spread of q_T inside a bin is no resolution
        dpar = u[s, 0] - mp / mq * qt[s]
        rp = np.sqrt(np.average(dpar**2, weights=w))
        rq = np.sqrt(np.average(u[s, 1] ** 2, weights=w))
        wp = 0.5 * np.diff(_weighted_quantile(dpar, w, p))[0]
        wq = 0.5 * np.diff(_weighted_quantile(u[s, 1], w, p))[0]
        # the half-width's Gaussian error, 0.96 sigma / sqrt(n); the RMS's sigma / sqrt(2 n)
        out[:, b] = (mq, -mp / mq, rp / np.sqrt(n_eff) / mq, rp, rq, rq / np.sqrt(2 * n_eff), wp, wq,
                     0.96 * wq / np.sqrt(n_eff))
    return BinnedMoments(*out)


def truth_moments(sample: I.RecoilSample, edges: np.ndarray, source: str, purpose: str) -> BinnedMoments:
    """The same moments as the truth card of ``source`` predicts them for the sample's events:
    the response R(q_T, y) averaged as −⟨u_∥⟩/⟨q_T⟩ is, the RMS of the core plus the tails
    (σ² = σ_core² + f_tail σ_tail² per component) and the core widths, averaged in quadrature
    over each bin's events (errors zero)."""
    from .. import truth

    c = sample.conditions()
    t = truth.recoil_response(source, c[:, 0], c[:, 1], c[:, 2], purpose=purpose)  # type: ignore[arg-type]
    idx = np.searchsorted(edges, c[:, 0], side="right") - 1
    nb = edges.size - 1
    w = sample.weight
    out = np.full((9, nb), np.nan)
    for b in range(nb):
        s = idx == b
        if w[s].sum() <= 0:
            continue
        mq = np.average(c[s, 0], weights=w[s])
        resp = np.average(t["response"][s] * c[s, 0], weights=w[s]) / mq
        tail = t["tail_fraction"][s] * t["tail_width"][s] ** 2
        core_p, core_q = (np.average(t[k][s] ** 2, weights=w[s]) for k in ("sigma_par", "sigma_perp"))
        rp = np.sqrt(core_p + np.average(tail, weights=w[s]))
        rq = np.sqrt(core_q + np.average(tail, weights=w[s]))
        out[:, b] = (mq, resp, 0.0, rp, rq, 0.0, np.sqrt(core_p), np.sqrt(core_q), 0.0)
    return BinnedMoments(*out)


def moment_chi2(a: BinnedMoments, b: BinnedMoments) -> float:
    """χ²/ndf between two sets of moments (response and both core widths, every q_T bin; errors
    of both in quadrature): how well a (morphed) simulation matches the data."""
    chi2, n = 0.0, 0
    for q, e in (("response", "response_err"), ("width_par", "width_err"), ("width_perp", "width_err")):
        d = getattr(a, q) - getattr(b, q)
        v = getattr(a, e) ** 2 + getattr(b, e) ** 2
        ok = np.isfinite(d) & (v > 0)
        chi2 += float(np.sum(d[ok] ** 2 / v[ok]))
        n += int(ok.sum())
    return chi2 / max(n, 1)


@dataclass(frozen=True)
class TruthClosure:
    """The morphed simulation against the data universe's truth card, per q_T bin: response pulls
    (with the data's statistical error of the response) and the RMS double ratios."""

    response_pulls: np.ndarray
    rms_par_ratio: np.ndarray
    rms_perp_ratio: np.ndarray

    @property
    def response_pull_mean(self) -> float:
        return float(np.nanmean(self.response_pulls))

    @property
    def resolution_ratio(self) -> float:
        return float(np.nanmean(np.concatenate([self.rms_par_ratio, self.rms_perp_ratio])))


def truth_closure(morphed: BinnedMoments, simulated: BinnedMoments, data: BinnedMoments, truth_data: BinnedMoments,
                  truth_simulation: BinnedMoments) -> TruthClosure:
    """:class:`TruthClosure` of the ``morphed`` simulation: its response against the data
    universe's true response, in units of the ``data``'s statistical error (the precision the
    calibration was fitted with), and how much it widened the simulation (morphed / simulated
    RMS) against how much wider the data's card is (truth data / truth simulation RMS).  The
    ratio of ratios, because the card's core-plus-tail RMS leaves out terms the two universes
    share (the dimuon q_T's own resolution, photons, jet mismeasurement): it falls 2-3 % short of
    the simulation's measured RMS."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return TruthClosure((morphed.response - truth_data.response) / data.response_err,
                            (morphed.rms_par / simulated.rms_par) / (truth_data.rms_par / truth_simulation.rms_par),
                            (morphed.rms_perp / simulated.rms_perp) / (truth_data.rms_perp / truth_simulation.rms_perp))


#: the W's m_T histogram of the closure (GeV), and the range of its χ²
MT_EDGES = np.arange(0.0, 122.0, 2.0)
MT_CHI2_RANGE = (40.0, 120.0)


@dataclass(frozen=True)
class MtClosure:
    """The W selection's m_T (isolated muon, pT window, no m_T cut) in data and in the summed
    simulation before and after the recoil correction, on :data:`MT_EDGES`; ``*_var`` are the
    simulation's sums of squared weights."""

    data: np.ndarray
    before: np.ndarray
    after: np.ndarray
    before_var: np.ndarray
    after_var: np.ndarray

    def chi2_ndf(self, which: str) -> float:
        """χ²/ndf of the data against the simulation (normalised to the data) in
        :data:`MT_CHI2_RANGE`: the shape, which the recoil moves."""
        lo = np.searchsorted(MT_EDGES, MT_CHI2_RANGE[0])
        hi = np.searchsorted(MT_EDGES, MT_CHI2_RANGE[1])
        d = self.data[lo:hi]
        m, v = getattr(self, which)[lo:hi], getattr(self, f"{which}_var")[lo:hi]
        k = d.sum() / max(m.sum(), 1e-300)
        var = d + k * k * v
        ok = var > 0
        return float(np.sum((d - k * m)[ok] ** 2 / var[ok]) / max(int(ok.sum()) - 1, 1))


def w_mt_closure(profile: str, recoil: Any) -> MtClosure:
    """:class:`MtClosure` of a profile: every W skim through the pipeline with chapters 01–03's
    corrections, the simulation once more with the ``recoil`` correction after them (the
    isolated region in the muon's pT window, the veto passed; m_T not cut)."""
    from ..engine import read_skim
    from ..engine.pipeline import run_pipeline
    from ..engine.selections import ISO_MAX, W_PT_RANGE
    from ..engine.skims import list_skim_samples, mc_lumi_scale

    corr = I.upstream_corrections(profile)

    def cuts(c: dict[str, np.ndarray]) -> np.ndarray:
        return (np.asarray(c["veto_pass"], bool) & (c["mu_pt"] > W_PT_RANGE[0]) & (c["mu_pt"] < W_PT_RANGE[1])
                & (c["mu_iso"] < ISO_MAX))

    scale = mc_lumi_scale(profile, "w")
    h = {k: np.zeros(MT_EDGES.size - 1) for k in ("data", "before", "after", "before_var", "after_var")}
    for sample in list_skim_samples(profile, "w"):
        if sample == "closure":
            continue
        cols = read_skim(profile, "w", sample, exclude=("lhe_pdf", "lhe_scale"))
        runs = (("data", corr),) if sample == "data" else (("before", corr), ("after", [*corr, recoil]))
        for key, corrections in runs:
            res = run_pipeline("w", sample, cols, corrections=corrections, final_cuts=cuts)
            w = res.weight * (1.0 if sample == "data" else scale)
            h[key] += np.histogram(res.columns["mt"], MT_EDGES, weights=w)[0]
            if sample != "data":
                h[f"{key}_var"] += np.histogram(res.columns["mt"], MT_EDGES, weights=w**2)[0]
    return MtClosure(**h)


__all__ = ["CHAPTER", "METHODS", "MT_CHI2_RANGE", "MT_EDGES", "BinnedMoments", "MtClosure", "RecoilCalibration",
           "RecoilConfig", "StatVariations", "TruthClosure", "binned_moments", "bootstrap_variations", "calibrate",
           "method_delta", "moment_chi2", "training_half", "truth_closure", "truth_moments", "w_mt_closure"]
