"""Templates of the W-mass fit from the W skims: data, every process, every variation.

The seam to the histogram engine is :func:`select_events` (final cuts + published corrections
on one sample's columns).  Everything after it works on plain numpy columns, so the tests feed
toy columns and the chapter feeds ``wmnb.engine.read_skim`` output; when the engine's own
``histogram_skim`` lands, only :func:`select_events` changes.

Template corrections (kind ``template``, e.g. the data-driven nonprompt background of chapter
05) are called as ``correction.templates(selection="w", processes=[...], shape=SHAPE)`` and
return ``{process: {"nominal": array|hist, "sumw2": ..., "variations": {name: array|hist},
"groups": {base name: group}}}``; the named process is replaced as a whole.
"""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import binning
from .systematics import (PROCESSES, SIGNAL, MwConfig, Variation, builtin_variations,
                          correction_variations, mass_factors)


@dataclass
class ProcessTemplate:
    """Nominal template of one process (with its sumw2) and its shape variations."""

    name: str
    nominal: np.ndarray
    sumw2: np.ndarray
    shapes: dict[str, tuple[str, np.ndarray, np.ndarray | None]] = field(default_factory=dict)
    source: str = "simulation"
    dropped: list[str] = field(default_factory=list)       # variations rejected as unphysical
    #: signal only: the ±100 MeV difference filled separately from even and odd events, to
    #: measure the sensitivity free of the templates' own statistical noise
    mass_halves: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class TemplateSet:
    """Everything the fit needs, as arrays of shape :data:`binning.SHAPE`."""

    data: np.ndarray
    processes: dict[str, ProcessTemplate]
    mass_up: dict[str, np.ndarray]
    mass_down: dict[str, np.ndarray]
    config: MwConfig
    n_data: float
    #: exact BW-reweighted signal templates for injected shifts (MeV -> process -> array)
    mass_scan: dict[float, dict[str, np.ndarray]] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def signal(self) -> list[str]:
        """Names of the signal processes."""
        return [p for p in self.processes if p in SIGNAL]

    def prediction(self) -> np.ndarray:
        """Sum of the nominal templates."""
        return sum(p.nominal for p in self.processes.values())


# ---------------------------------------------------------------- the seam to the engine
class _MuonPart:
    """A correction seen by the engine as its muon part only: its weights are handled here,
    one variation at a time (the engine would hold all of them in memory at once)."""

    kinds = ("muon",)

    def __init__(self, correction: Any):
        self.correction = correction
        self.name = correction.name

    def applies_to(self, sample: Any) -> bool:
        return self.correction.applies_to(sample)

    def correct(self, columns: dict[str, np.ndarray], sample: Any) -> None:
        self.correction.correct(columns, sample)


def _weight_variations(corrections: Sequence[Any], sel: dict[str, np.ndarray], info: Any,
                       weight: np.ndarray) -> Iterator[Variation]:
    """Nominal factors of the weight corrections (applied to ``weight`` in place, eagerly) and
    their variations (lazily), through :meth:`wmnb.corrections.Correction.nominal_factor` and
    :meth:`~wmnb.corrections.Correction.iter_variations` (``(name, group, up, down)`` factors
    relative to the nominal factor)."""
    lazy = []
    for c in corrections:
        if "weight" not in c.kinds or not c.applies_to(info):
            continue
        nominal = c.nominal_factor(sel, info)
        if nominal is not None:
            weight *= np.asarray(nominal, dtype=np.float64)
        lazy.append(c)

    def generate() -> Iterator[Variation]:
        for c in lazy:
            for name, group, up, down in c.iter_variations(sel, info):
                yield Variation(name, group, np.asarray(up, dtype=np.float64),
                                None if down is None else np.asarray(down, dtype=np.float64))

    return generate()


def select_events(cols: Mapping[str, np.ndarray], sample: str, is_data: bool,
                  corrections: Sequence[Any] = ()) -> tuple[dict[str, np.ndarray], np.ndarray, Iterator[Variation]]:
    """The histogram engine's standard chain on one sample's skim columns.

    ``wmnb.engine.process_columns`` applies the muon corrections, recomputes MET / m_T / u_∥
    and applies the final W cuts; the weight corrections are applied here (nominal factors
    eagerly, variations lazily as weight-factor pairs relative to nominal, so hundreds of them
    never sit in memory together).  Data get unit weights and no variations.
    """
    from wmnb.engine import process_columns
    from wmnb.engine.histogram import sample_info

    need = ("mu_pt", "mu_eta", "mu_phi", "mu_charge", "mu_iso", "met_pt", "met_phi", "veto_pass")
    missing = [c for c in need + (() if is_data else ("weight",)) if c not in cols]
    if missing:
        raise KeyError(f"sample {sample!r}: skim column(s) {missing} missing (W skim of chapter 01 expected)")
    # corrections may modify muon columns in place: work on copies so the caller's skim
    # columns can be reused (e.g. for the uncorrected closure templates)
    cols = {k: (np.array(v, copy=True) if k.startswith("mu_") else v) for k, v in cols.items()}
    if is_data:
        cols["weight"] = np.ones(len(cols["mu_pt"]))
    name = "data" if is_data else sample
    muon_parts = [_MuonPart(c) for c in corrections if "muon" in c.kinds]
    sel, weight, _, _ = process_columns("w", name, cols, corrections=muon_parts)
    if is_data:
        return sel, np.ones(len(weight)), iter(())
    variations = _weight_variations(corrections, sel, sample_info("w", name, sel), weight)
    return sel, weight, variations


def _as_array(x: Any) -> np.ndarray:
    """Accept a ``hist`` (values) or an array of shape SHAPE."""
    vals = x.values() if hasattr(x, "values") and callable(x.values) else np.asarray(x, dtype=np.float64)
    vals = np.asarray(vals, dtype=np.float64)
    if vals.size != binning.NBINS:
        raise ValueError(f"template has {vals.size} bins, the W fit needs {binning.NBINS} {binning.SHAPE}")
    return vals.reshape(binning.SHAPE)


# ---------------------------------------------------------------- building the templates
#: largest factor by which a variation may change a populated bin before it is rejected
MAX_VARIATION = 100.0


def _sane(nominal: np.ndarray, varied: np.ndarray) -> bool:
    """Finite, non-negative, and within ×/÷ MAX_VARIATION of the nominal where it is populated."""
    if not np.all(np.isfinite(varied)) or np.any(varied < 0):
        return False
    pop = nominal > 0
    ratio = varied[pop] / nominal[pop]
    return bool(np.all((ratio <= MAX_VARIATION) & (ratio >= 1.0 / MAX_VARIATION)))


def process_template(cols: Mapping[str, np.ndarray], sample: str, config: MwConfig,
                     corrections: Sequence[Any] = (), mass_shifts_mev: Iterable[float] = ()
                     ) -> tuple[ProcessTemplate, dict[float, np.ndarray]]:
    """Template (nominal + variations) of one simulated sample, plus mass-shifted nominals.

    For signal samples the ±``config.mass_step_mev`` variations and any ``mass_shifts_mev``
    (exact BW reweighting, used by the injection closure) are filled as well; for other samples
    the second return value is empty.
    """
    sel, weight, corr_vars = select_events(cols, sample, is_data=False, corrections=corrections)
    idx = binning.bin_index(sel["mu_eta"], sel["mu_pt"], sel["mu_charge"])
    nominal, sumw2 = binning.fill(idx, weight)
    tmpl = ProcessTemplate(PROCESSES.get(sample, sample), nominal, sumw2)
    # lazily, one variation at a time: materialising them all costs GBs on large samples
    for var in itertools.chain(builtin_variations(sel, sample, config), corr_vars):
        up = binning.fill_values(idx, weight * var.up)
        down = None if var.down is None else binning.fill_values(idx, weight * var.down)
        if not (_sane(nominal, up) and (down is None or _sane(nominal, down))):
            # a variation changing a populated bin by more than ×/÷ MAX_VARIATION is a bug of its
            # producer; it would wreck the fit, so it is left out, warned about once by
            # build_templates and listed by the chapter
            tmpl.dropped.append(var.nuisance)
            continue
        tmpl.shapes[var.nuisance] = (var.group, up, down)
    shifted: dict[float, np.ndarray] = {}
    if sample in SIGNAL:
        for s in {config.mass_step_mev, -config.mass_step_mev, *map(float, mass_shifts_mev)}:
            shifted[float(s)] = binning.fill_values(idx, weight * mass_factors(sel, config, s, sample))
        even = (np.asarray(sel["event"]) % 2 == 0) if "event" in sel else (np.arange(idx.size) % 2 == 0)
        half_diff = weight * (mass_factors(sel, config, config.mass_step_mev, sample)
                              - mass_factors(sel, config, -config.mass_step_mev, sample))   # = 2 × ½(up − down)
        tmpl.mass_halves = (binning.fill_values(np.where(even, idx, -1), half_diff),
                            binning.fill_values(np.where(even, -1, idx), half_diff))
    return tmpl, shifted


def observed(cols: Mapping[str, np.ndarray], corrections: Sequence[Any] = ()) -> np.ndarray:
    """The data histogram (counts, shape SHAPE) of one data sample's skim columns."""
    sel, w, _ = select_events(cols, "data", is_data=True, corrections=corrections)
    counts, _ = binning.fill(binning.bin_index(sel["mu_eta"], sel["mu_pt"], sel["mu_charge"]), w)
    return counts


def build_templates(samples: Mapping[str, Mapping[str, np.ndarray]], data: Mapping[str, np.ndarray] | np.ndarray,
                    config: MwConfig, corrections: Sequence[Any] = (),
                    mass_shifts_mev: Iterable[float] = ()) -> TemplateSet:
    """All templates of the fit from per-sample columns (``samples``: name -> columns).

    ``data`` is a data sample's columns or an already filled histogram of shape SHAPE.
    """
    missing = [s for s in SIGNAL if s not in samples]
    if missing:
        raise KeyError(f"signal samples {missing} are missing: the W-mass fit needs both charges")
    shifts = tuple(float(s) for s in mass_shifts_mev)
    data_vals = _as_array(data) if isinstance(data, np.ndarray) else observed(data, corrections)
    processes: dict[str, ProcessTemplate] = {}
    up: dict[str, np.ndarray] = {}
    down: dict[str, np.ndarray] = {}
    scan: dict[float, dict[str, np.ndarray]] = {s: {} for s in shifts}
    for sample, cols in samples.items():
        tmpl, shifted = process_template(cols, sample, config, corrections, shifts)
        processes[tmpl.name] = tmpl
        if shifted:
            up[tmpl.name] = shifted[config.mass_step_mev]
            down[tmpl.name] = shifted[-config.mass_step_mev]
            for s in shifts:
                scan[s][tmpl.name] = shifted[s]
    ts = TemplateSet(data_vals, processes, up, down, config, float(data_vals.sum()), scan)
    ts.sources = active_sources(samples, corrections)
    dropped = sorted({(v, p) for p, t in processes.items() for v in t.dropped})
    if dropped:
        warnings.warn(f"{len(dropped)} variations change a populated bin by more than a factor "
                      f"{MAX_VARIATION:g} or are not finite and are left out of the fit: "
                      f"{', '.join(f'{v!r} ({p})' for v, p in dropped[:6])}{' ...' if len(dropped) > 6 else ''}",
                      stacklevel=2)
        ts.sources.append({"source": "rejected variations", "kind": "dropped", "group": "",
                           "detail": ", ".join(f"{v} ({p})" for v, p in dropped)})
    _apply_template_corrections(ts, corrections)
    return ts


def smoothed_mass_variation(ts: TemplateSet, eta_merge: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """±100 MeV signal templates with the *relative* variation averaged over blocks of
    ``eta_merge`` adjacent eta bins (same pT bin and charge); 1 returns them unchanged.

    The BW-reweighted difference is the sum of large per-event weight changes of both signs, so
    on a simulation only a few times the data its statistical noise is comparable to the effect
    itself and biases the fitted mass towards the simulation's (regression dilution).  The mass
    effect varies slowly with eta, so averaging the relative variation over a few eta bins
    removes most of the noise at the price of a small, measured non-closure.
    """
    if eta_merge == 1:
        return ts.mass_up, ts.mass_down
    n_eta = binning.SHAPE[0]
    if eta_merge < 1 or n_eta % eta_merge:
        raise ValueError(f"eta_merge must divide {n_eta}, got {eta_merge}")

    def block_sum(a: np.ndarray) -> np.ndarray:
        s = a.reshape(n_eta // eta_merge, eta_merge, *binning.SHAPE[1:]).sum(1)
        return np.repeat(s, eta_merge, axis=0)

    up, down = {}, {}
    for p in ts.signal:
        nom = ts.processes[p].nominal
        total = block_sum(nom)
        safe = np.where(total > 0, total, 1.0)
        up[p] = np.where(total > 0, nom * block_sum(ts.mass_up[p]) / safe, nom)
        down[p] = np.where(total > 0, nom * block_sum(ts.mass_down[p]) / safe, nom)
    return up, down


def _apply_template_corrections(ts: TemplateSet, corrections: Sequence[Any]) -> None:
    for c in corrections:
        if "template" not in c.kinds:
            continue
        repl = c.templates(selection="w", processes=list(ts.processes), shape=binning.SHAPE)
        for proc, doc in repl.items():
            if proc in ts.signal:
                raise ValueError(f"correction {c.name!r} tries to replace the signal {proc!r}; not allowed")
            nominal = _as_array(doc["nominal"])
            sumw2 = _as_array(doc["sumw2"]) if doc.get("sumw2") is not None else np.zeros(binning.SHAPE)
            tmpl = ProcessTemplate(proc, nominal, sumw2, source=c.name)
            variations = {k: _as_array(v) / np.where(nominal != 0, nominal, 1.0)
                          for k, v in (doc.get("variations") or {}).items()}
            from wmnb.corrections import WeightSet

            for var in correction_variations(WeightSet(None, variations, doc.get("groups", {})), c.name):
                tmpl.shapes[var.nuisance] = (var.group, nominal * var.up,
                                             None if var.down is None else nominal * var.down)
            ts.processes[proc] = tmpl


def active_sources(samples: Iterable[str], corrections: Sequence[Any]) -> list[dict[str, Any]]:
    """The table of uncertainty and correction sources in force (for the chapter to show)."""
    rows = [
        {"source": "mass (POI)", "kind": "builtin", "group": "massW", "detail": "BW reweighting, ±100 MeV, Γ∝M³"},
        {"source": "W width", "kind": "builtin", "group": "width", "detail": "Γ_W ± width_unc_mev"},
        {"source": "PDF", "kind": "builtin", "group": "pdf", "detail": "Hessian pairs of lhe_pdf"},
        {"source": "μR/μF scales", "kind": "builtin", "group": "scales", "detail": "per q_T bin (W production)"},
        {"source": "luminosity", "kind": "builtin", "group": "lumi", "detail": "1.2 % log-normal"},
        {"source": "process normalisations", "kind": "builtin", "group": "normalisation",
         "detail": "Z, top, diboson, nonprompt"},
        {"source": "MC statistics", "kind": "builtin", "group": "binByBinStat", "detail": "BB-lite × 1.25"},
    ]
    for c in corrections:
        rows.append({"source": c.name, "kind": "+".join(c.kinds), "group": "from correction",
                     "detail": type(c).__module__})
    rows.append({"source": "samples", "kind": "input", "group": "", "detail": ", ".join(samples)})
    return rows
