"""Chapter 08 end to end: inputs, templates, the fits and the headline numbers.

Inputs are the W skims of chapter 01 (``wmnb.engine`` ``read_skim(profile, "w", sample)``) and
every correction published under ``results/<profile>/*/corrections`` (see
:mod:`wmnb.mw.systematics` for how each kind enters).  The simulation's line shape (M0, Γ0) is
read from the *simulation's* truth card (``nominal``); the data's card is never read here.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..templatefit.wmass import simulation_config
from .systematics import PROCESSES, MwConfig
from .templates import TemplateSet, build_templates

CHAPTER = "08_mw_fit"
#: Injected shifts (MeV) of the Asimov mass-injection closure: 10 points in ±100 MeV (every
#: point is an exact-Hessian check at thousands of nuisances, twice: smoothed and exact templates)
INJECTION_SHIFTS = tuple(float(x) for x in np.arange(-90.0, 91.0, 20.0))
#: Paper numbers for the sensitivity table (PHYSICS.md).
PAPER = {"n_w_data": 117e6, "stat_err": 2.4, "total_err": 9.9, "mw": 80360.2}




def _read_skim(profile: str, sample: str) -> dict[str, np.ndarray]:
    try:
        from wmnb.engine import read_skim
    except ImportError:
        from wmnb.engine.skims import read_skim
    return read_skim(profile, "w", sample)


def mc_lumi_scale(profile: str) -> float:
    """Factor taking the W skims' MC weights to the data luminosity (:func:`wmnb.engine.skims.mc_lumi_scale`)."""
    from wmnb.engine.skims import mc_lumi_scale as scale

    return scale(profile, "w")


def load_skims(profile: str, chunk_rows: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """W skims of every simulated sample (weights scaled to the data luminosity, see
    :func:`mc_lumi_scale`) and of the two data samples ``data`` and ``closure``.

    With ``chunk_rows`` nothing is read here: each sample is a :class:`wmnb.engine.SkimChunks`
    that the template builder reads ``chunk_rows`` rows at a time (memory per sample bounded,
    files read once per template build); without, whole columns are read into memory.
    """
    lumi_scale = mc_lumi_scale(profile)
    if chunk_rows is not None:
        from wmnb.engine import skim_chunks

        samples = {s: skim_chunks(profile, "w", s, chunk_rows, weight_scale=lumi_scale) for s in PROCESSES}
        return samples, {d: skim_chunks(profile, "w", d, chunk_rows) for d in ("data", "closure")}
    samples = {}
    for s in PROCESSES:
        cols = _read_skim(profile, s)
        cols["weight"] = cols["weight"] * lumi_scale
        samples[s] = cols
    return samples, {d: _read_skim(profile, d) for d in ("data", "closure")}


def load_templates(profile: str, data_sample: str = "data", config: MwConfig | None = None,
                   corrections: Sequence[Any] | None = None,
                   mass_shifts_mev: Sequence[float] = INJECTION_SHIFTS,
                   skims: tuple[dict, dict] | None = None) -> TemplateSet:
    """Templates of the fit for ``profile`` with the observed histogram of ``data_sample``.

    ``"data"`` (the default universe) gets every published correction; ``"closure"`` (the
    simulation's physics and detector with an m_W of its own: a pure-detector closure) gets none
    unless ``corrections`` says otherwise, since calibrations measured on the data universe do not
    apply to it.  ``skims`` (from
    :func:`load_skims`) avoids reading the files again.
    """
    from wmnb.corrections import discover

    if data_sample not in ("data", "closure"):
        raise ValueError(f"data_sample must be 'data' or 'closure', got {data_sample!r}")
    config = config or simulation_config()
    if corrections is None:
        from wmnb.chapters import get_chapter

        # only what the chapters that 08 declares it depends on may correct its templates
        corrections = (discover(profile, exclude_chapters=(CHAPTER,), from_chapters=get_chapter(CHAPTER).depends_on)
                       if data_sample == "data" else [])
    samples, data = skims if skims is not None else load_skims(profile)
    return build_templates(samples, data[data_sample], config, corrections, mass_shifts_mev)


def save_templates(path: Any, ts: TemplateSet, attrs: dict | None = None):
    """Write the data, the nominal templates and the ±100 MeV signal templates to HDF5."""
    from wmnb.histio import save_hists

    from .binning import to_hist

    hists = {"data": to_hist(ts.data, ts.data)}
    for name, p in ts.processes.items():
        hists[name] = to_hist(p.nominal, p.sumw2)
    for name in ts.signal:
        hists[f"{name}_massUp"] = to_hist(ts.mass_up[name])
        hists[f"{name}_massDown"] = to_hist(ts.mass_down[name])
    return save_hists(path, hists, attrs=attrs or {})


def fisher_mass_error(ts: TemplateSet) -> tuple[float, float]:
    """Data-statistics m_W uncertainty (MeV) from the Fisher information Σ (∂n/∂m)² / n.

    Returns (as fitted, noise-free): the first squares the ±100 MeV template difference used in
    the fit (after the eta smoothing of ``config.mass_eta_merge``), whose own statistical noise
    (few simulated events per bin) adds spurious information; the second multiplies the
    unsmoothed differences filled from even and from odd events, whose noise is independent, so
    the product is unbiased.  A first value well below the second means the simulation is too
    small for the mass templates (the fitted shift is then diluted towards the simulation's).
    """
    from .templates import smoothed_mass_variation

    n = ts.prediction()
    ok = n > 0
    step = ts.config.mass_step_mev
    up, down = smoothed_mass_variation(ts, ts.config.mass_eta_merge)
    d = sum(0.5 * (up[p] - down[p]) for p in ts.signal)
    naive = float(np.sum(d[ok] ** 2 / n[ok]))
    # each half-difference estimates the full-sample ½(up − down) (2 × ½ of the events)
    a = sum(ts.processes[p].mass_halves[0] for p in ts.signal)
    b = sum(ts.processes[p].mass_halves[1] for p in ts.signal)
    cross = float(np.sum(a[ok] * b[ok] / n[ok]))
    return step / np.sqrt(naive), (step / np.sqrt(cross) if cross > 0 else float("inf"))


def sensitivity_table(stat_err: float, n_data: float, expected_total: float,
                      observed_total: float, noise_free_stat: float | None = None) -> list[dict[str, Any]]:
    """This universe's sensitivity next to the paper's (MeV)."""
    scale = np.sqrt(n_data / PAPER["n_w_data"])
    rows = [
        {"quantity": "selected W data events", "this book": n_data, "paper": PAPER["n_w_data"]},
        {"quantity": "data-statistics uncertainty", "this book": stat_err, "paper": None},
        {"quantity": "data-statistics uncertainty scaled to 117 M", "this book": stat_err * scale,
         "paper": PAPER["stat_err"]},
    ]
    if noise_free_stat is not None:
        rows.append({"quantity": "… free of template noise (Fisher), scaled to 117 M",
                     "this book": noise_free_stat * scale, "paper": PAPER["stat_err"]})
    rows += [
        {"quantity": "expected total uncertainty (Asimov)", "this book": expected_total, "paper": None},
        {"quantity": "observed total uncertainty", "this book": observed_total, "paper": PAPER["total_err"]},
    ]
    return rows


#: Paper impacts (nominal, global) in MeV by group (PHYSICS.md), for the tables.
PAPER_IMPACTS = {
    "muonScale": (4.8, 4.4), "muonEfficiency": (3.0, 2.3), "angularCoeffs": (3.3, 3.0), "EW": (2.0, 1.9),
    "pTV": (2.0, 0.8), "pdf": (4.4, 2.8), "nonprompt": (3.2, 1.7), "lumi": (0.1, 0.1),
    "binByBinStat": (1.5, 3.8), "stat": (2.4, 6.0), "total": (9.9, 9.9),
}


def impact_table(nominal: dict[str, float] | None, global_: dict[str, float] | None) -> str:
    """Markdown table of group impacts on m_W (MeV) next to the paper's."""
    from ..templatefit.tables import impact_table as table

    return table(nominal, global_, PAPER_IMPACTS)


def cross_check_rows(results: dict[str, Any], nominal: Any) -> list[dict[str, Any]]:
    """Rows (name, quantity, value, error in MeV; μ for the normalisation) of the cross-checks."""
    from ..templatefit.tables import cross_check_rows as rows

    return rows(results, nominal, poi="mass", norm="norm_w", poi_label="m_W", norm_label="W normalisation μ")
