"""The correction pipeline: the one chain every consumer runs on a sample's skim columns.

1. the hadronic recoil ``ut_x``, ``ut_y`` from the uncorrected skim (the selection's
   ``recoil``, :mod:`wmnb.engine.registry`), and that of the other MET estimators
   (``tkmet_ut_x`` ..., the selection's ``recoil_estimators``);
2. ``muon`` corrections in their published order (they replace ``<prefix>_pt`` ... of the
   selection's muon prefixes; a recoil calibration may replace ``ut_x``, ``ut_y``);
3. derived quantities recomputed when a muon moved (MET, m_T, u_∥, dimuon mass, ABCD region ...);
4. final cuts (the selection's default, a callable ``cols -> mask``, or None);
5. the nominal weight: the skim's ``weight`` times every ``weight`` correction's
   :meth:`~wmnb.corrections.Correction.nominal_factor` (data: 1, never reweighted);
6. the variations, **lazily**: :meth:`PipelineResult.variations` yields one
   :class:`~wmnb.corrections.Variation` at a time (factors relative to the nominal weight,
   optionally on a subset of rows), so thousands of nuisances never sit in memory together and a
   variation that touches few events costs in proportion to them;
7. then the column variations of the ``muon`` corrections
   (:meth:`~wmnb.corrections.Correction.column_variations`, e.g. the recoil model's): for each,
   steps 3-5 are rerun on the rows it changes and the result is a Variation that removes those
   rows from the selection and adds them back as the varied columns select them
   (:class:`~wmnb.corrections.AddedEvents`), so events cross cuts as they would in a rerun.

The histogram engine (:func:`wmnb.engine.histogram_skim`), the template builders of the fits
and every chapter that needs corrected columns call :func:`run_pipeline`; the contract test
(``tests/test_pipeline_contract.py``) runs toy corrections of every kind through each of them
and checks identical results.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..corrections import AddedEvents, ColumnVariation, Correction, SampleInfo, Variation, as_variation
from .registry import get_selection

FinalCuts = str | Callable[[dict[str, np.ndarray]], np.ndarray] | None


def sample_info(selection: str, sample: str, columns: Mapping[str, np.ndarray]) -> SampleInfo:
    """The :class:`~wmnb.corrections.SampleInfo` of a skim: its selection's muon prefixes that
    the columns hold."""
    spec = get_selection(selection)
    prefixes = tuple(p for p in spec.muon_prefixes if f"{p}_pt" in columns)
    return SampleInfo(name=sample, is_data=sample in ("data", "closure"), selection=selection,
                      muon_prefixes=prefixes)


@dataclass
class PipelineResult:
    """One sample after the pipeline: columns after the final cuts, the nominal weight, and the
    weight corrections whose variations :meth:`variations` yields on demand."""

    columns: dict[str, np.ndarray]
    weight: np.ndarray
    info: SampleInfo
    applied: list[str] = field(default_factory=list)
    weight_corrections: list[Correction] = field(default_factory=list)
    #: the ``muon`` corrections that declare column variations, and what rerunning steps 3-5 on
    #: their rows needs: the columns before the final cuts, the cuts' mask and the cuts
    column_corrections: list[Correction] = field(default_factory=list)
    precut: dict[str, np.ndarray] = field(default_factory=dict)
    mask: np.ndarray | None = None
    selection: str = ""
    final_cuts: FinalCuts = "default"

    def variations(self) -> Iterator[Variation]:
        """Every correction's variations, one at a time, as factors relative to the nominal
        weight (simulation only), then the column variations as removed and added events;
        names are unique across corrections."""
        seen: dict[str, str] = {}

        def unique(var: Variation, source: str) -> Variation:
            if var.nuisance in seen:
                raise ValueError(f"variation {var.nuisance!r} is declared by both {seen[var.nuisance]!r} "
                                 f"and {source!r}; nuisance names must be unique")
            seen[var.nuisance] = source
            return var

        for c in self.weight_corrections:
            for item in c.iter_variations(self.columns, self.info):
                yield unique(as_variation(item, c.name), c.name)
        for c in self.column_corrections:
            for cv in c.column_variations(self.precut, self.info):
                yield unique(self.column_variation(cv, c.name), c.name)

    @cached_property
    def _position_after_cuts(self) -> np.ndarray:
        """Row before the cuts -> row after them (for the selected rows), computed once for all
        column variations of the sample."""
        return np.cumsum(np.ones(_n_rows(self.precut), bool) if self.mask is None else self.mask) - 1

    def column_variation(self, cv: ColumnVariation, source: str) -> Variation:
        """One column variation as a :class:`Variation`: factor 0 on the selected rows it touches,
        and those rows re-derived, re-cut and re-weighted with the varied columns as added events."""
        n_pre = _n_rows(self.precut)
        rows = np.asarray(cv.rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= n_pre)):
            raise ValueError(f"correction {source!r}: column variation {cv.nuisance!r} has rows outside the "
                             f"sample's {n_pre} events")
        selected = np.ones(n_pre, bool) if self.mask is None else self.mask
        removed = self._position_after_cuts[rows[selected[rows]]]
        sub = {k: (v[rows] if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n_pre else v)
               for k, v in self.precut.items()}
        spec = get_selection(self.selection)

        def rerun(values: Mapping[str, np.ndarray], direction: str) -> AddedEvents:
            cols = dict(sub)
            for k, v in values.items():
                v = np.asarray(v)
                if k not in cols or v.shape != (rows.size,):
                    raise ValueError(f"correction {source!r}: column variation {cv.nuisance!r} ({direction}) "
                                     f"gives column {k!r} with shape {v.shape}; it must be an existing column "
                                     f"with one value per row ({rows.size})")
                cols[k] = v
            spec.derive(cols)
            mask = final_cut_mask(self.selection, cols, self.final_cuts)
            if mask is not None:
                cols = _apply_mask(cols, mask)
            weight = _nominal_weight(cols, self.info, self.weight_corrections)
            return AddedEvents(cols, weight)

        zeros = np.zeros(removed.size)
        return Variation(cv.nuisance, cv.group, zeros, None if cv.down is None else zeros.copy(), rows=removed,
                         added_up=rerun(cv.up, "up"), added_down=None if cv.down is None else rerun(cv.down, "down"))


def _apply_mask(cols: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    n = mask.size
    return {k: (v[mask] if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n else v)
            for k, v in cols.items()}


def _n_rows(cols: Mapping[str, Any]) -> int:
    for v in cols.values():
        if isinstance(v, np.ndarray) and v.ndim >= 1:
            return int(v.shape[0])
    return 0


def final_cut_mask(selection: str, cols: dict[str, np.ndarray], final_cuts: FinalCuts) -> np.ndarray | None:
    """The mask of ``final_cuts`` ("default": the selection's own; a callable; None: no cut)."""
    if isinstance(final_cuts, str):
        if final_cuts != "default":
            raise ValueError(f"final_cuts must be 'default', None or a callable, got {final_cuts!r}")
        return np.asarray(get_selection(selection).final_cuts(cols), dtype=bool)
    if final_cuts is None:
        return None
    if callable(final_cuts):
        return np.asarray(final_cuts(cols), dtype=bool)
    raise ValueError(f"final_cuts must be 'default', None or a callable, got {final_cuts!r}")


def run_pipeline(selection: str, sample: str, columns: Mapping[str, np.ndarray], *,
                 corrections: Sequence[Correction] = (), final_cuts: FinalCuts = "default",
                 wlike_reversed: bool = False) -> PipelineResult:
    """Run the chain (module docstring) on one sample's skim columns; the caller's arrays are
    never modified.  ``sample`` ``"data"``/``"closure"`` marks data (unit weights)."""
    spec = get_selection(selection)
    cols: dict[str, Any] = dict(columns)
    info = sample_info(selection, sample, cols)
    if spec.recoil is not None:          # before the swap: u_T excludes both muons anyway
        recoil = spec.recoil(cols)
        if recoil is not None:
            cols["ut_x"], cols["ut_y"] = recoil
    if spec.recoil_estimators is not None:
        cols.update(spec.recoil_estimators(cols))
    if wlike_reversed:
        if spec.parity_swap is None:
            raise ValueError(f"wlike_reversed applies only to W-like selections, not {selection!r}")
        spec.parity_swap(cols)
    applied: list[str] = []
    movers = [c for c in corrections if "muon" in c.kinds and c.applies_to(info)]
    if movers:
        # a correction may modify muon columns in place: never the caller's arrays
        for k in [k for k in cols if k.startswith(tuple(f"{p}_" for p in info.muon_prefixes))]:
            if isinstance(cols[k], np.ndarray):
                cols[k] = cols[k].copy()
    for c in movers:
        c.correct(cols, info)
        applied.append(c.name)
    if applied or wlike_reversed:
        spec.derive(cols)
    elif spec.extras is not None:
        # nothing moved the muons: the stored derived columns are exact, only add the extras
        spec.extras(cols)
    mask = final_cut_mask(selection, cols, final_cuts)
    precut = cols
    if mask is not None:
        cols = _apply_mask(cols, mask)
    if info.is_data:
        return PipelineResult(cols, np.ones(_n_rows(cols)), info, applied, [])
    if "weight" not in cols:
        raise KeyError(f"sample {sample!r} (selection {selection!r}): the skim has no 'weight' column")
    lazy = [c for c in corrections if "weight" in c.kinds and c.applies_to(info)]
    weight = _nominal_weight(cols, info, lazy)
    applied += [c.name for c in lazy if c.name not in applied]
    # a correction declares column variations by overriding Correction.column_variations
    movable = [c for c in movers if type(c).column_variations is not Correction.column_variations]
    return PipelineResult(cols, weight, info, applied, lazy, movable, precut if movable else {}, mask,
                          selection, final_cuts)


def _nominal_weight(cols: dict[str, Any], info: SampleInfo, weight_corrections: Sequence[Correction]) -> np.ndarray:
    """Step 5: the skim's weight times every weight correction's nominal factor."""
    weight = np.asarray(cols["weight"], np.float64).copy()
    for c in weight_corrections:
        nominal = c.nominal_factor(cols, info)
        if nominal is not None:
            weight *= np.asarray(nominal, dtype=np.float64)
    return weight
