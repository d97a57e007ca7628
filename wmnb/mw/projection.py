"""The m_W fit against the paper's: nuisance counts by group, the fit at the paper's size, coverage.

**Counts.** :func:`nuisance_counts` groups the model's nuisances as the paper's Methods count
them (PHYSICS.md: 4859 in all).  The even parts (``<name>SymDiff``) of the split asymmetric
variations are counted apart: the paper's fit has them too, but its counts do not list them.

**Projection to the paper's statistics** (:func:`paper_projection`), an Asimov fit of the same
model with these scaling rules, s = 117 M / (selected data events here):

* every expected yield (data and every process) × s; the mass POI's templates too;
* the simulation's statistical variance (sumw2) × s × r / r_paper, so that each process's
  relative MC uncertainty is the paper's: r = this universe's simulation-to-data ratio of the W
  sample, r_paper = :data:`PAPER_MC_RATIO` (4 × 10⁹ simulated W against the ≈ 3.4 × 10⁸
  W → μν the 16.8 fb⁻¹ hold, both before the same selection);
* the priors of the statistics-driven nuisances (:data:`STATISTICS_DRIVEN`: momentum-scale
  calibration and Z-closure statistics, efficiency statistics, recoil-calibration statistics,
  nonprompt smoothing statistics) × 1/√s, as their control samples grow with the luminosity;
* every other prior (theory, systematic alternatives, luminosity, normalisations) unchanged.

**Coverage** (:func:`coverage_toys`): pseudo-experiments of the model itself (Poisson data,
global observables drawn around the truth), each fitted; the m_W pulls must have mean 0 and
width 1.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..templatefit.model import EVEN_SUFFIX, ModelSpec, SpecShape

#: the paper's nuisance counts by group (PHYSICS.md); "scales": its μR/μF scale variations
PAPER_COUNTS: dict[str, int] = {
    "muonEfficiency": 3658, "nonprompt": 387, "muonScale": 338, "angularCoeffs": 353, "scales": 176, "pdf": 60,
    "pTV": 32, "prefire": 14, "EW": 7, "lumi": 1, "width": 1,
}
PAPER_TOTAL = 4859
#: selected W events of the paper
PAPER_N_W = 117e6
#: simulated W over the W → μν in the data before selection (4e9 / 3.4e8)
PAPER_MC_RATIO = 4e9 / 3.4e8
#: nuisances whose prior is the statistics of a control sample (their base names)
STATISTICS_DRIVEN = re.compile(r"^(muonScaleStat|muonScaleZClosure|eff_stat_|recoilStat|nonpromptStat)")


def _base(name: str) -> str:
    return name[: -len(EVEN_SUFFIX)] if name.endswith(EVEN_SUFFIX) else name


def nuisance_counts(spec: ModelSpec) -> list[dict[str, Any]]:
    """Rows (group, nuisances here, of which even parts, the paper's count) of the model's
    constrained nuisances, the paper's groups first, then a total row."""
    groups = spec.groups()
    here: dict[str, int] = {}
    even: dict[str, int] = {}
    for name, group in groups.items():
        if name.endswith(EVEN_SUFFIX):
            even[group] = even.get(group, 0) + 1
        else:
            here[group] = here.get(group, 0) + 1
    names = list(PAPER_COUNTS) + sorted((set(here) | set(even)) - set(PAPER_COUNTS))
    rows = [{"group": g, "this book": here.get(g, 0), "even parts": even.get(g, 0), "paper": PAPER_COUNTS.get(g)}
            for g in names]
    rows.append({"group": "total", "this book": sum(here.values()), "even parts": sum(even.values()),
                 "paper": PAPER_TOTAL})
    return rows


def counts_by_group(spec: ModelSpec) -> dict[str, int]:
    """Group -> number of nuisances (even parts included), for summary.json."""
    out: dict[str, int] = {}
    for group in spec.groups().values():
        out[group] = out.get(group, 0) + 1
    return dict(sorted(out.items()))


def _scaled_shape(s: SpecShape, nom: np.ndarray, scale: float, prior: float) -> SpecShape:
    base = nom if s.bins is None else nom[s.bins]

    def one(v: np.ndarray) -> np.ndarray:
        if prior == 1.0:
            return v * scale
        ok = (base > 0) & (v > 0)
        ratio = np.where(ok, v, 1.0) / np.where(ok, base, 1.0)
        return scale * np.where(ok, base * ratio**prior, v)

    return dataclasses.replace(s, up=one(s.up), down=None if s.down is None else one(s.down))


def paper_projection(spec: ModelSpec, n_data: float, mc_ratio: float, *, n_paper: float = PAPER_N_W,
                     mc_ratio_paper: float = PAPER_MC_RATIO) -> tuple[ModelSpec, dict[str, Any]]:
    """The model at the paper's size (module docstring) with Asimov data, and the rules applied."""
    if n_data <= 0 or mc_ratio <= 0:
        raise ValueError(f"paper_projection needs n_data > 0 and mc_ratio > 0, got {n_data}, {mc_ratio}")
    s = n_paper / n_data
    prior = 1.0 / np.sqrt(s)
    shapes, n_stat = [], 0
    for sh in spec.shapes:
        stat = bool(STATISTICS_DRIVEN.match(_base(sh.name)))
        n_stat += stat
        shapes.append(_scaled_shape(sh, spec.nominal[spec.processes.index(sh.process)], s, prior if stat else 1.0))
    pois = {poi: {p: (up * s, down * s) for p, (up, down) in per.items()} for poi, per in spec.pois.items()}
    nominal = spec.nominal * s
    out = dataclasses.replace(spec, data=nominal.sum(0), nominal=nominal, sumw2=spec.sumw2 * s * mc_ratio / mc_ratio_paper,
                              shapes=shapes, pois=pois)
    out._fit_model = None
    rules = {"yield_scale": s, "mc_stat_variance_scale": s * mc_ratio / mc_ratio_paper,
             "statistics_prior_scale": prior, "n_statistics_driven_shapes": n_stat, "mc_ratio_here": mc_ratio,
             "mc_ratio_paper": mc_ratio_paper, "n_paper": n_paper}
    return out, rules


def coverage_toys(spec: ModelSpec, n_toys: int, seed: int, truth: Mapping[str, float] | None = None) -> dict[str, Any]:
    """m_W pulls of ``n_toys`` pseudo-experiments of ``spec`` (:func:`wmnb.fit.toys`: Poisson
    data and randomised global observables around ``truth``, default nominal)."""
    from wmnb.fit.fitter import toys

    from ..templatefit.fitting import _built

    if n_toys < 2:
        raise ValueError(f"coverage needs at least 2 toys, got {n_toys}")
    res = toys(_built(spec), n_toys, seed, poi="mass", truth=truth)
    pulls = res["pulls"][res["converged"]]
    return {"n_toys": n_toys, "n_converged": int(res["converged"].sum()), "pull_mean": float(np.mean(pulls)),
            "pull_width": float(np.std(pulls, ddof=1)), "pull_mean_err": float(np.std(pulls, ddof=1) / np.sqrt(pulls.size)),
            "pulls": pulls.tolist()}
