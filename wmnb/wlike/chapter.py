"""Chapter 07 end to end: inputs, templates, the purity and parity checks, the headline tables.

Inputs are the ``wlike`` skims of chapter 01 and the corrections of the chapters 07 depends on
(02 momentum scale, 03 efficiencies with the non-triggering steps for the second muon, 04 recoil,
06 theory with the Z's own nonperturbative parameters); chapter 05's nonprompt template is for
the W selection only and does not apply.  The simulation's line shape (M0, Γ0 of the Z) is read
from the simulation's card; the data's card only through the truth gate, after the fit.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .recipe import FIT_PROCESSES, NEGLIGIBLE_SAMPLES, SIGNAL, WLikeConfig, WLikeRecipe

CHAPTER = "07_wlike"
SELECTION = "wlike"
#: the paper's W-like m_Z impacts (MeV, PHYSICS.md; one number per group) and total
PAPER_IMPACTS: dict[str, tuple[float, float | None]] = {
    "muonScale": (5.6, None), "muonEfficiency": (3.8, None), "angularCoeffs": (4.9, None),
    "EW": (2.2, None), "pTV": (1.7, None), "pdf": (2.4, None), "lumi": (0.3, None),
    "binByBinStat": (2.5, None), "stat": (6.9, None), "total": (13.5, None),
}
#: the paper's W-like results (MeV)
PAPER = {"mz_minus_pdg": -6.0, "mz_err": 14.0, "total_err": 13.5, "central_minus_forward": 22.8,
         "central_minus_forward_err": 21.1, "n_wlike_data": 7.4e6}
#: the purity the paper quotes for the dimuon samples
MIN_PURITY = 0.995


def simulation_config(**overrides: Any) -> WLikeConfig:
    """:class:`WLikeConfig` with the Z mass and width the simulation was generated with."""
    from wmnb import truth

    phys = truth.simulation("physics")
    return WLikeConfig(ref_mass_gev=phys["mz_mev"] * 1e-3, ref_width_gev=phys["gz_mev"] * 1e-3, **overrides)


def load_skims(profile: str, chunk_rows: int = 500_000, samples: Sequence[str] = tuple(FIT_PROCESSES)
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """W-like skims (read lazily, ``chunk_rows`` rows at a time) of the simulated ``samples``
    (weights scaled to the data luminosity) and of the two data samples ``data`` and ``closure``."""
    from wmnb.engine import skim_chunks
    from wmnb.engine.skims import mc_lumi_scale

    scale = mc_lumi_scale(profile, SELECTION)
    sim = {s: skim_chunks(profile, SELECTION, s, chunk_rows, weight_scale=scale) for s in samples}
    return sim, {d: skim_chunks(profile, SELECTION, d, chunk_rows) for d in ("data", "closure")}


def corrections_for(profile: str, data_sample: str) -> list[Any]:
    """The published corrections the W-like templates take: those of the chapters 07 depends
    on for the data universe, none for the closure universe (the simulation's own detector)."""
    from wmnb.corrections import upstream

    if data_sample not in ("data", "closure"):
        raise ValueError(f"data_sample must be 'data' or 'closure', got {data_sample!r}")
    return upstream(profile, CHAPTER) if data_sample == "data" else []


def build(profile: str, data_sample: str = "data", config: WLikeConfig | None = None, *,
          skims: tuple[dict, dict] | None = None, reversed_parity: bool = False,
          corrections: Sequence[Any] | None = None, mass_shifts_mev: Sequence[float] = ()) -> Any:
    """The templates of the W-like fit (:class:`wmnb.templatefit.TemplateSet`) with the observed
    histogram of ``data_sample``; ``reversed_parity``: the alternative sample (negative muons
    in odd events)."""
    from wmnb.templatefit import build_templates

    config = config or simulation_config()
    corrections = corrections_for(profile, data_sample) if corrections is None else corrections
    sim, data = skims if skims is not None else load_skims(profile)
    recipe = WLikeRecipe(config, reversed_parity=reversed_parity)
    return build_templates(recipe, sim, data[data_sample], corrections, mass_shifts_mev)


def purity_table(profile: str, config: WLikeConfig | None = None, corrections: Sequence[Any] | None = None,
                 chunk_rows: int = 500_000, skims: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Expected selected events of every simulated sample (fitted or not) with the corrections
    applied, and each one's share: the Z→μμ purity the paper quotes (> 99.5 %) and the
    negligible W and nonprompt contributions that the fit leaves out.  ``skims``: simulated
    samples already opened by :func:`load_skims` (the others are opened here)."""
    from wmnb.templatefit.templates import select_events

    config = config or simulation_config()
    corrections = corrections_for(profile, "data") if corrections is None else corrections
    recipe = WLikeRecipe(config)
    skims = dict(skims or {})
    wanted = [s for s in (*FIT_PROCESSES, *NEGLIGIBLE_SAMPLES) if s not in skims]
    sim = {**skims, **load_skims(profile, chunk_rows, tuple(wanted))[0]} if wanted else skims
    yields: dict[str, float] = {}
    for sample, chunks in sim.items():
        total = 0.0
        for chunk in chunks:
            _, weight, _ = select_events(recipe, chunk, sample, is_data=False, corrections=corrections)
            total += float(weight.sum())
        yields[sample] = total
    n = sum(yields.values())
    return [{"sample": s, "fitted": s in FIT_PROCESSES, "expected events": y, "share": y / n if n else None}
            for s, y in yields.items()]


def signal_purity(rows: Sequence[Mapping[str, Any]]) -> float:
    """Share of Z→μμ among the expected selected events of :func:`purity_table`."""
    return float(sum(r["share"] for r in rows if r["sample"] in SIGNAL))


def parity_counts(columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Each event's role in the nominal and the reversed W-like samples of one skim: how many
    events, how many appear more than once, and the template muon's charge against the event
    parity (nominal: positive in odd events; reversed: the other muon)."""
    from wmnb.engine.pipeline import run_pipeline

    out: dict[str, Any] = {}
    for name, reversed_ in (("nominal", False), ("reversed", True)):
        res = run_pipeline(SELECTION, "data", columns, wlike_reversed=reversed_)
        ev = np.asarray(res.columns["event"], np.int64)
        q = np.asarray(res.columns["mu_charge"])
        odd = ev % 2 == 1
        out[name] = {"events": int(ev.size), "repeated": int(ev.size - np.unique(ev).size),
                     "odd_positive": bool(np.all(q[odd] > 0)), "even_negative": bool(np.all(q[~odd] < 0))}
    return out


def dimuon_mz(profile: str) -> tuple[float, float] | None:
    """Chapter 02's dimuon m_Z − m_Z(truth) and its error (MeV), if chapter 02 recorded them."""
    from wmnb.artefacts import read_summary
    from wmnb.paths import chapter_dir

    try:
        head = read_summary(chapter_dir(profile, "02_calibration"))["headline"]
    except (FileNotFoundError, KeyError):
        return None
    if head.get("mz_minus_truth") is None or head.get("mz_err") is None:
        return None
    return float(head["mz_minus_truth"]), float(head["mz_err"])


def impact_table(nominal: Mapping[str, float] | None, global_: Mapping[str, float] | None) -> str:
    """Markdown table of group impacts on m_Z (MeV) next to the paper's W-like table."""
    from ..templatefit.tables import impact_table as table

    return table(nominal, global_, PAPER_IMPACTS)


def cross_check_rows(results: Mapping[str, Any], nominal: Any) -> list[dict[str, Any]]:
    """Rows (check, quantity, value, error in MeV) of the cross-check fits."""
    from ..templatefit.tables import cross_check_rows as rows

    return rows(results, nominal, poi="mass", norm="norm_z", poi_label="m_Z")


#: cross-check fits of the nominal sample: POI layouts of :data:`wmnb.wlike.recipe.POI_LAYOUTS`
CROSS_CHECKS: dict[str, dict[str, Any]] = {
    "charge": {"pois": "charge"},
    "centralforward": {"pois": "centralforward"},
    "etasign": {"pois": "etasign"},
}


def cross_checks(ts: Any, nominal: Any, which: Sequence[str] | None = None) -> dict[str, Any]:
    """The cross-check fits (:data:`CROSS_CHECKS`), each started from the ``nominal`` fit."""
    from ..templatefit.fitting import cross_check_fits

    return cross_check_fits(ts, CROSS_CHECKS, None if which is None else list(which), nominal)


def _data_events(ts: Any, chunks: Any, corrections: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(event key, flat bin index) of every selected data event of the templates' recipe."""
    from wmnb.templatefit.templates import select_events

    keys, bins = [], []
    for chunk in chunks:
        sel, _, _ = select_events(ts.recipe, chunk, "data", is_data=True, corrections=corrections)
        ev = np.asarray(sel["event"], np.int64)
        run = np.asarray(sel["run"], np.int64) if "run" in sel else np.zeros_like(ev)
        keys.append(run * (1 << 40) + ev)
        bins.append(ts.binning.bin_index(sel))
    return np.concatenate(keys), np.concatenate(bins)


def parity_bootstrap(ts_nominal: Any, ts_reversed: Any, data_chunks: Any, corrections: Sequence[Any],
                     n_replicas: int, seed: int) -> dict[str, float]:
    """Data-statistical spread of m_Z(reversed) − m_Z(nominal) (MeV) from Poisson bootstrap
    replicas of the data: each *event* gets one weight for both samples, so the overlap of the
    two samples (an event whose other muon also passes is in both) is correlated as it is in the
    data.  Each replica is fitted with data statistics only (the systematic nuisances are common
    to both samples and largely cancel in the difference)."""
    from ..templatefit.fitting import run_fit
    from ..templatefit.model import make_spec

    if n_replicas < 2:
        raise ValueError(f"parity_bootstrap needs at least 2 replicas, got {n_replicas}")
    per_sample = [(_data_events(ts, data_chunks, corrections), make_spec(ts, systematics=False, mc_stat=False), ts)
                  for ts in (ts_nominal, ts_reversed)]
    keys = np.unique(np.concatenate([k for (k, _), _, _ in per_sample]))
    rng = np.random.default_rng([int(seed), 0x0707])
    shifts = []
    for _ in range(n_replicas):
        weight = rng.poisson(1.0, keys.size).astype(np.float64)
        masses = []
        for (k, idx), spec, ts in per_sample:
            w = weight[np.searchsorted(keys, k)]
            h = ts.binning.fill_values(idx, w)
            masses.append(run_fit(spec, data=h[spec.mask], full_cov=False, keep_raw=False).values["mass"])
        shifts.append(masses[1] - masses[0])
    s = np.asarray(shifts)
    n_overlap = int(np.intersect1d(per_sample[0][0][0], per_sample[1][0][0]).size)
    return {"spread_mev": float(s.std(ddof=1)), "mean_mev": float(s.mean()), "n_replicas": n_replicas,
            "n_nominal": int(per_sample[0][0][0].size), "n_reversed": int(per_sample[1][0][0].size),
            "n_overlap": n_overlap}
