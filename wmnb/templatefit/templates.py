"""Templates of a binned template fit from skims: data, every process, every variation.

What a fit needs from its chapter is a :class:`TemplateRecipe`: the selection, the observable
(:class:`~wmnb.templatefit.binning.Binning`), the signal processes, the chapter's built-in
variations and the mass reweighting of its signal, the cross-check regions, the POI layouts and
the normalisation uncertainties.  Chapters 07, 08 and 09 configure a recipe and call
:func:`build_templates` and :func:`wmnb.templatefit.model.make_spec`; nothing here knows which
boson is measured.

The seam to the events is the one correction pipeline (:func:`wmnb.engine.pipeline.run_pipeline`):
muon corrections, derived quantities, final cuts, nominal weight and lazy (possibly local)
variations.  Template corrections (kind ``template``, e.g. the data-driven nonprompt background
of chapter 05) are called as ``correction.templates(selection=..., processes=[...], shape=...)``
and return ``{process: {"nominal": array|hist, "sumw2": ..., "variations": {name: array|hist},
"groups": {base name: group}}}``; the named process is replaced as a whole.

A sample normally fills one fit process (``recipe.process_name``).  A recipe may split a sample
into several (optional ``process_parts(sample)`` and ``part_mask(cols, sample, part)``, see
:func:`process_parts`): chapter 09 puts a signal's events outside its generator bins into their
own out-of-acceptance process.  Each part is filled from all the sample's events with the
others' weights set to zero, so the parts add up to the unsplit template, variation by variation.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..corrections import Variation, WeightSet, weightset_variations
from .binning import Binning


class TemplateRecipe(Protocol):
    """What a chapter tells the template-fit layer about its fit (see the module docstring).
    Read-only members: a frozen dataclass, plain attributes or properties all qualify."""

    @property
    def selection(self) -> str: ...               # registered selection of the skims (wmnb.engine.registry)
    @property
    def binning(self) -> Binning: ...
    @property
    def signal(self) -> tuple[str, ...]: ...      # fit processes carrying the mass POI(s)
    @property
    def config(self) -> Any: ...                  # the chapter's configuration, recorded with the templates
    @property
    def mass_step_mev(self) -> float: ...         # POI theta = 1 <=> +mass_step_mev
    @property
    def required(self) -> tuple[str, ...]: ...    # skim columns every sample needs
    @property
    def poi_layouts(self) -> Mapping[str, Sequence[tuple[str, str]]]: ...   # layout -> [(POI, region)]
    @property
    def bb_scale(self) -> float: ...
    @property
    def mass_merge(self) -> tuple[str, int]: ...  # (axis, bins) over which the relative mass variation is averaged

    def process_name(self, sample: str) -> str: ...
    def builtin_variations(self, cols: Mapping[str, np.ndarray], sample: str) -> Iterator[Variation]: ...
    def mass_factors(self, cols: Mapping[str, np.ndarray], shift_mev: float, sample: str) -> np.ndarray: ...
    def builtin_sources(self) -> list[dict[str, Any]]: ...
    def region_mask(self, region: str) -> np.ndarray: ...
    def norms(self, process: str, source: str, float_norm: bool) -> list[tuple[str, float, str]]: ...

    # optional: ``final_cuts`` (a callable on the derived columns, see
    # :func:`wmnb.engine.pipeline.run_pipeline`) replaces the selection's own final cuts;
    # ``reversed_parity`` (bool) selects the W-like sample with the roles of the muons exchanged



def config_record(config: Any) -> dict[str, Any]:
    """JSON-friendly record of a chapter's fit configuration (a dataclass): sequences become
    lists with non-finite numbers as strings ("inf"), mappings plain dicts."""
    def value(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: value(x) for k, x in v.items()}
        if isinstance(v, (tuple, list)):
            return [value(x) for x in v]
        if isinstance(v, float) and not np.isfinite(v):
            return str(v)
        return v

    return {f.name: value(getattr(config, f.name)) for f in dataclasses.fields(config)}


@dataclass(frozen=True)
class Shape:
    """One shape variation of a process template, stored sparsely where it is local.

    ``bins`` (flat C-order indices into the binning, sorted) are the bins the variation changes,
    and ``up``/``down`` the varied contents *there*; every other bin is at nominal.  With
    ``bins=None`` the variation is dense: ``up``/``down`` have the binning's shape.  An
    efficiency eigenvector of one eta bin touches ~30 of the 2880 bins of the W fit, so 5000
    such variations cost megabytes instead of gigabytes.
    """

    group: str
    up: np.ndarray
    down: np.ndarray | None = None
    bins: np.ndarray | None = None

    def dense(self, nominal: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Full up and down templates (``nominal`` outside :attr:`bins`)."""
        if self.bins is None:
            return self.up, self.down

        def fill(values: np.ndarray) -> np.ndarray:
            out = nominal.copy()
            out.ravel()[self.bins] = values
            return out

        return fill(self.up), None if self.down is None else fill(self.down)

    @property
    def nbytes(self) -> int:
        """Memory held by the variation's arrays."""
        return sum(a.nbytes for a in (self.up, self.down, self.bins) if a is not None)


@dataclass
class ProcessTemplate:
    """Nominal template of one process (with its sumw2) and its shape variations."""

    name: str
    nominal: np.ndarray
    sumw2: np.ndarray
    shapes: dict[str, Shape] = field(default_factory=dict)
    source: str = "simulation"
    dropped: list[str] = field(default_factory=list)       # variations rejected as unphysical
    #: the rejected variations themselves: kept out of every fit, but a consumer that needs the
    #: change of the yields rather than a log-normal shape (chapter 05's prompt subtraction,
    #: where an event leaving a single-event sideband bin is physics, not a bug) can use them
    rejected: dict[str, Shape] = field(default_factory=dict)
    #: signal only: the ±100 MeV difference filled separately from even and odd events, to
    #: measure the sensitivity free of the templates' own statistical noise
    mass_halves: tuple[np.ndarray, np.ndarray] | None = None

    def varied(self, nuisance: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Full up and down templates of one shape variation (see :meth:`Shape.dense`)."""
        return self.shapes[nuisance].dense(self.nominal)


@dataclass
class TemplateSet:
    """Everything the fit needs, as arrays of shape ``recipe.binning.shape``."""

    data: np.ndarray
    processes: dict[str, ProcessTemplate]
    mass_up: dict[str, np.ndarray]
    mass_down: dict[str, np.ndarray]
    recipe: TemplateRecipe
    n_data: float
    #: exact BW-reweighted signal templates for injected shifts (MeV -> process -> array)
    mass_scan: dict[float, dict[str, np.ndarray]] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def config(self) -> Any:
        """The chapter's configuration the templates were built with."""
        return self.recipe.config

    @property
    def binning(self) -> Binning:
        return self.recipe.binning

    def with_config(self, config: Any) -> TemplateSet:
        """The same templates under another chapter configuration (e.g. another smoothing of the
        mass variation); the recipe must be a dataclass with a ``config`` field."""
        recipe: Any = self.recipe      # a dataclass, which the Protocol cannot say
        return dataclasses.replace(self, recipe=dataclasses.replace(recipe, config=config))

    @property
    def signal(self) -> list[str]:
        """Names of the signal processes."""
        return [p for p in self.processes if p in self.recipe.signal]

    def prediction(self) -> np.ndarray:
        """Sum of the nominal templates."""
        return sum((p.nominal for p in self.processes.values()), start=np.zeros(self.binning.shape))


# ---------------------------------------------------------------- the seam to the pipeline
def select_events(recipe: TemplateRecipe, cols: Mapping[str, np.ndarray], sample: str, is_data: bool,
                  corrections: Sequence[Any] = ()) -> tuple[dict[str, np.ndarray], np.ndarray, Iterator[Variation]]:
    """The correction pipeline on one sample's skim columns: the columns after the final cuts,
    the nominal weight and the variations lazily (factors relative to nominal, one at a time).
    Data get unit weights and no variations."""
    from wmnb.engine.pipeline import run_pipeline

    missing = [c for c in recipe.required + (() if is_data else ("weight",)) if c not in cols]
    if missing:
        raise KeyError(f"sample {sample!r}: skim column(s) {missing} missing "
                       f"({recipe.selection!r} skim of chapter 01 expected)")
    # a recipe may replace the selection's final cuts (chapter 05: every extended-ABCD region)
    final_cuts = getattr(recipe, "final_cuts", "default")
    result = run_pipeline(recipe.selection, "data" if is_data else sample, cols, corrections=corrections,
                          final_cuts=final_cuts, wlike_reversed=bool(getattr(recipe, "reversed_parity", False)))
    return result.columns, result.weight, result.variations()


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


def _varied(binning: Binning, idx_ext: np.ndarray, weight: np.ndarray, nominal: np.ndarray, var: Variation
            ) -> Shape:
    """The :class:`Shape` of one variation (without its group).  A local variation
    (``var.rows``) costs in proportion to its rows and is stored on the bins its events fill:
    the nominal there plus the change of the events it touches (and the events a column
    variation adds, :attr:`Variation.added_up`)."""
    added = {d: None if a is None else (binning.extended_index(binning.bin_index(a.columns)), a.weight)
             for d, a in (("up", var.added_up), ("down", var.added_down))}

    def with_added(h: np.ndarray, direction: str) -> np.ndarray:
        extra = added[direction]
        return h if extra is None else h + binning.fill_extended(*extra)

    if var.rows is None:
        return Shape(var.group, with_added(binning.fill_extended(idx_ext, weight * var.up), "up"),
                     None if var.down is None else
                     with_added(binning.fill_extended(idx_ext, weight * var.down), "down"))
    i, w = idx_ext[var.rows], weight[var.rows]
    bins = np.unique(np.concatenate([i] + [a[0] for a in added.values() if a is not None]))
    bins = bins[bins < binning.nbins]          # the extra bin collects events outside the binning
    nom = nominal.ravel()[bins]

    def at_bins(factor: np.ndarray, direction: str) -> np.ndarray:
        return nom + with_added(binning.fill_extended(i, w * (factor - 1.0)), direction).ravel()[bins]

    return Shape(var.group, at_bins(var.up, "up"), None if var.down is None else at_bins(var.down, "down"), bins)


#: one sample's skim columns, or chunks of them (e.g. :class:`wmnb.engine.skims.SkimChunks`)
Columns = Mapping[str, np.ndarray]
SampleInput = Columns | Iterable[Columns]


def _chunks(cols: SampleInput) -> Iterable[Columns]:
    return [cols] if isinstance(cols, Mapping) else cols


def process_parts(recipe: TemplateRecipe, sample: str) -> tuple[str | None, ...]:
    """The fit processes one sample's events go to: ``(None,)`` for the one process of
    ``recipe.process_name(sample)``, else the names a recipe splits the sample into by its
    optional ``process_parts(sample)`` (chapter 09: inside and outside the generator-level
    acceptance of the helicity fit), each event selected by ``recipe.part_mask(cols, sample, part)``."""
    split = getattr(recipe, "process_parts", None)
    parts = tuple(split(sample)) if split is not None else ()
    return parts if len(parts) > 1 else (None,)


def process_names(recipe: TemplateRecipe, samples: Iterable[str]) -> list[str]:
    """Every fit process the samples fill, in order (see :func:`process_parts`)."""
    return [recipe.process_name(s) if p is None else p for s in samples for p in process_parts(recipe, s)]


def process_template(recipe: TemplateRecipe, cols: SampleInput, sample: str,
                     corrections: Sequence[Any] = (), mass_shifts_mev: Iterable[float] = (),
                     part: str | None = None) -> tuple[ProcessTemplate, dict[float, np.ndarray]]:
    """Template (nominal + variations) of one simulated sample, plus mass-shifted nominals.

    ``cols`` is the sample's columns or an iterable of chunks of them: the template is then
    filled chunk by chunk and summed, so a skim never needs to be in memory whole (the sum of
    the chunks equals the one-pass template up to the rounding of the additions).  For signal
    samples the ±``recipe.mass_step_mev`` variations and any ``mass_shifts_mev`` (exact
    reweighting, used by the injection closure) are filled as well; for other samples the
    second return value is empty.  ``part``: only the events of that process of a split sample
    (:func:`process_parts`); the others keep their rows with weight zero, so every part sees
    the same events, variations and even/odd split and the parts add up to the whole sample.
    """
    shifts = tuple(mass_shifts_mev)
    parts = (_chunk_template(recipe, chunk, sample, corrections, shifts, part) for chunk in _chunks(cols))
    return _checked(_reduced(parts, sample))


#: one chunk's partial template: (template, mass-shifted nominals, selected rows, whether its
#: even/odd split is by row number, i.e. depends on the rows of the chunks before it)
ChunkTemplate = tuple[ProcessTemplate, dict[float, np.ndarray], int, bool]


def _reduced(parts: Iterable[ChunkTemplate], sample: str) -> tuple[ProcessTemplate, dict[float, np.ndarray]]:
    """The chunks' partial templates summed in their order (how every executor reduces them)."""
    total: tuple[ProcessTemplate, dict[float, np.ndarray]] | None = None
    selected = 0           # selected rows so far: the even/odd split by row continues across chunks
    for tmpl_c, shifted_c, n, by_row in parts:
        if by_row and selected % 2 and tmpl_c.mass_halves is not None:
            # the chunk was split by its own row parity: after an odd number of rows the
            # sample's even rows are the chunk's odd ones
            tmpl_c.mass_halves = (tmpl_c.mass_halves[1], tmpl_c.mass_halves[0])
        selected += n
        total = (tmpl_c, shifted_c) if total is None else _added(total, (tmpl_c, shifted_c))
    if total is None:
        raise ValueError(f"sample {sample!r}: no chunk of columns to fill a template from")
    return total


def _checked(total: tuple[ProcessTemplate, dict[float, np.ndarray]]) -> tuple[ProcessTemplate, dict[float, np.ndarray]]:
    """A sample's summed template with its unphysical variations moved to ``rejected``."""
    tmpl, shifted = total
    for nuis, shape in list(tmpl.shapes.items()):
        # a local variation leaves the other bins at nominal: only its own bins need checking
        nom_c = tmpl.nominal if shape.bins is None else tmpl.nominal.ravel()[shape.bins]
        if not (_sane(nom_c, shape.up) and (shape.down is None or _sane(nom_c, shape.down))):
            # a variation changing a populated bin by more than ×/÷ MAX_VARIATION is a bug of its
            # producer; it would wreck the fit, so it is left out, warned about once by
            # build_templates and listed by the chapter
            tmpl.dropped.append(nuis)
            tmpl.rejected[nuis] = tmpl.shapes.pop(nuis)
    return tmpl, shifted


def _chunk_template(recipe: TemplateRecipe, cols: Columns, sample: str, corrections: Sequence[Any],
                    mass_shifts_mev: tuple[float, ...], part: str | None = None) -> ChunkTemplate:
    """:func:`process_template` of one chunk, before the sanity check of the variations (see
    :data:`ChunkTemplate`): it depends on this chunk alone, so chunks can be filled anywhere."""
    binning = recipe.binning
    sel, weight, corr_vars = select_events(recipe, cols, sample, is_data=False, corrections=corrections)
    if part is not None:
        keep = np.asarray(recipe.part_mask(sel, sample, part), dtype=np.bool_)  # type: ignore[attr-defined]
        weight = np.where(keep, weight, 0.0)
    idx = binning.bin_index(sel)
    nominal, sumw2 = binning.fill(idx, weight)
    name = recipe.process_name(sample) if part is None else part
    tmpl = ProcessTemplate(name, nominal, sumw2)
    replaced = superseded_groups(corrections)
    builtin = (v for v in recipe.builtin_variations(sel, sample) if v.group not in replaced)
    idx_ext = binning.extended_index(idx)
    # lazily, one variation at a time: materialising them all costs GBs on large samples
    for var in itertools.chain(builtin, corr_vars):
        tmpl.shapes[var.nuisance] = _varied(binning, idx_ext, weight, nominal, var)
    shifted: dict[float, np.ndarray] = {}
    by_row = "event" not in sel
    if name in recipe.signal:
        step = recipe.mass_step_mev
        for s in {step, -step, *map(float, mass_shifts_mev)}:
            shifted[float(s)] = binning.fill_values(idx, weight * recipe.mass_factors(sel, s, sample))
        even = (np.arange(idx.size) % 2 == 0) if by_row else (np.asarray(sel["event"]) % 2 == 0)
        half_diff = weight * (recipe.mass_factors(sel, step, sample)
                              - recipe.mass_factors(sel, -step, sample))   # = 2 × ½(up − down)
        tmpl.mass_halves = (binning.fill_values(np.where(even, idx, -1), half_diff),
                            binning.fill_values(np.where(even, -1, idx), half_diff))
    return tmpl, shifted, int(idx.size), by_row


def _added(a: tuple[ProcessTemplate, dict[float, np.ndarray]], b: tuple[ProcessTemplate, dict[float, np.ndarray]]
           ) -> tuple[ProcessTemplate, dict[float, np.ndarray]]:
    """The template of two chunks of one sample (every variation present in both)."""
    (ta, sa), (tb, sb) = a, b
    nominal = ta.nominal + tb.nominal
    out = ProcessTemplate(ta.name, nominal, ta.sumw2 + tb.sumw2)
    if ta.shapes.keys() != tb.shapes.keys():
        odd = sorted(ta.shapes.keys() ^ tb.shapes.keys())
        raise ValueError(f"sample {ta.name!r}: variations {odd[:5]} are produced for some chunks of the "
                         "sample only; a correction must yield the same variations for every chunk")
    for nuis, x in ta.shapes.items():
        out.shapes[nuis] = _added_shape(x, tb.shapes[nuis], ta.nominal, tb.nominal, nominal)
    if ta.mass_halves is not None and tb.mass_halves is not None:
        out.mass_halves = (ta.mass_halves[0] + tb.mass_halves[0], ta.mass_halves[1] + tb.mass_halves[1])
    return out, {k: v + sb[k] for k, v in sa.items()}


def _added_shape(x: Shape, y: Shape, nom_x: np.ndarray, nom_y: np.ndarray, nominal: np.ndarray) -> Shape:
    """One variation summed over two chunks: dense if either is, else on the union of their bins."""
    if x.bins is None or y.bins is None:
        (ux, dx), (uy, dy) = x.dense(nom_x), y.dense(nom_y)
        return Shape(x.group, ux + uy, None if dx is None or dy is None else dx + dy)
    bx, by = x.bins, y.bins
    bins = np.union1d(bx, by)
    base = nominal.ravel()[bins]
    at_x, at_y = np.searchsorted(bins, bx), np.searchsorted(bins, by)

    def summed(vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
        out = base.copy()
        out[at_x] += vx - nom_x.ravel()[bx]
        out[at_y] += vy - nom_y.ravel()[by]
        return out

    down = None if x.down is None or y.down is None else summed(x.down, y.down)
    return Shape(x.group, summed(x.up, y.up), down, bins)


def superseded_groups(corrections: Sequence[Any]) -> set[str]:
    """Built-in nuisance groups that published corrections replace (``Correction.supersedes``)."""
    return {g for c in corrections for g in getattr(c, "supersedes", ())}


def observed(recipe: TemplateRecipe, cols: SampleInput, corrections: Sequence[Any] = ()) -> np.ndarray:
    """The data histogram (counts, shaped like the binning) of one data sample's skim columns
    (or chunks of them)."""
    return _summed_counts(recipe, (_observed_chunk(recipe, chunk, corrections) for chunk in _chunks(cols)))


def _observed_chunk(recipe: TemplateRecipe, cols: Columns, corrections: Sequence[Any]) -> np.ndarray:
    sel, w, _ = select_events(recipe, cols, "data", is_data=True, corrections=corrections)
    return recipe.binning.fill(recipe.binning.bin_index(sel), w)[0]


def _summed_counts(recipe: TemplateRecipe, parts: Iterable[np.ndarray]) -> np.ndarray:
    counts = np.zeros(recipe.binning.shape)
    for h in parts:         # in chunk order, whichever executor filled them
        counts += h
    return counts


def build_templates(recipe: TemplateRecipe, samples: Mapping[str, SampleInput],
                    data: SampleInput | np.ndarray, corrections: Sequence[Any] = (),
                    mass_shifts_mev: Iterable[float] = (), *, executor: str | None = None,
                    scheduler: str | None = None, client: Any = None) -> TemplateSet:
    """All templates of the fit from per-sample columns (``samples``: name -> columns, or
    chunks of them such as :class:`wmnb.engine.skims.SkimChunks`, read as they are filled).

    ``data`` is a data sample's columns (or chunks) or an already filled histogram of the
    binning's shape.  ``executor`` (None: the process's, :func:`wmnb.execution.active`) says
    where the chunks are filled: ``local`` one after the other here; ``dask`` one task per chunk
    (a :class:`~wmnb.engine.skims.SkimChunks` chunk is read by the worker, whose files must
    therefore be visible there), the recipe and corrections scattered once, the partial templates
    summed here in chunk order -- the very additions of the local executor, so the templates are
    bit-identical.
    """
    from ..execution import resolve

    missing = [s for s in recipe.signal if s not in set(process_names(recipe, samples))]
    if missing:
        raise KeyError(f"signal samples {missing} are missing: the fit needs every signal process")
    shifts = tuple(float(s) for s in mass_shifts_mev)
    if resolve(executor, scheduler).executor == "local":
        data_vals = (recipe.binning.as_array(data) if isinstance(data, np.ndarray)
                     else observed(recipe, data, corrections))
        filled = ((sample, process_template(recipe, cols, sample, corrections, shifts, part))
                  for sample, cols in samples.items() for part in process_parts(recipe, sample))
        return _assembled(recipe, samples, data_vals, filled, corrections, shifts, stacklevel=3)
    return _built_on_tasks(recipe, samples, data, corrections, shifts, executor, scheduler, client)


def _assembled(recipe: TemplateRecipe, samples: Mapping[str, SampleInput], data_vals: np.ndarray,
               filled: Iterable[tuple[str, tuple[ProcessTemplate, dict[float, np.ndarray]]]],
               corrections: Sequence[Any], shifts: tuple[float, ...], stacklevel: int) -> TemplateSet:
    """The :class:`TemplateSet` of the samples' finished templates (``filled``, in sample order);
    ``stacklevel`` puts the warning about rejected variations at build_templates' caller."""
    processes: dict[str, ProcessTemplate] = {}
    up: dict[str, np.ndarray] = {}
    down: dict[str, np.ndarray] = {}
    scan: dict[float, dict[str, np.ndarray]] = {s: {} for s in shifts}
    for _, (tmpl, shifted) in filled:
        processes[tmpl.name] = tmpl
        if shifted:
            up[tmpl.name] = shifted[recipe.mass_step_mev]
            down[tmpl.name] = shifted[-recipe.mass_step_mev]
            for s in shifts:
                scan[s][tmpl.name] = shifted[s]
    ts = TemplateSet(data_vals, processes, up, down, recipe, float(data_vals.sum()), scan)
    ts.sources = active_sources(recipe, samples, corrections)
    dropped = sorted({(v, p) for p, t in processes.items() for v in t.dropped})
    if dropped:
        warnings.warn(f"{len(dropped)} variations change a populated bin by more than a factor "
                      f"{MAX_VARIATION:g} or are not finite and are left out of the fit: "
                      f"{', '.join(f'{v!r} ({p})' for v, p in dropped[:6])}{' ...' if len(dropped) > 6 else ''}",
                      stacklevel=stacklevel)
        ts.sources.append({"source": "rejected variations", "kind": "dropped", "group": "",
                           "detail": ", ".join(f"{v} ({p})" for v, p in dropped)})
    _apply_template_corrections(ts, corrections)
    return ts


# ---------------------------------------------------------------- filling on an executor's tasks
def _chunk_sources(cols: SampleInput) -> list[Any]:
    """What each task of one sample receives: ``(SkimChunks, start, stop)`` per chunk of a skim
    (read on the worker), else the columns themselves (in-memory columns: one task; another
    iterable of chunks: one task per chunk, every chunk read here first and shipped)."""
    from ..engine.skims import SkimChunks

    if isinstance(cols, SkimChunks):
        return [(cols, start, stop) for start, stop in cols.ranges()]
    return [c for c in _chunks(cols)]


def _fill_task(task: tuple[str, bool, Any, str | None],
               shared: tuple[TemplateRecipe, Sequence[Any], tuple[float, ...]]) -> np.ndarray | ChunkTemplate:
    """One chunk of one sample (a task of :func:`build_templates` on the dask executor): the
    data counts of a data chunk, the :data:`ChunkTemplate` of a simulated one (of one part
    of a split sample, :func:`process_parts`)."""
    recipe, corrections, shifts = shared
    sample, is_data, source, part = task
    cols = source[0].read(source[1], source[2]) if isinstance(source, tuple) else source
    if is_data:
        return _observed_chunk(recipe, cols, corrections)
    return _chunk_template(recipe, cols, sample, corrections, shifts, part)


def _built_on_tasks(recipe: TemplateRecipe, samples: Mapping[str, SampleInput], data: SampleInput | np.ndarray,
                    corrections: Sequence[Any], shifts: tuple[float, ...], executor: str | None,
                    scheduler: str | None, client: Any) -> TemplateSet:
    """:func:`build_templates` with every chunk a task of :func:`wmnb.engine.executors.run_tasks`."""
    from ..engine.executors import run_tasks

    tasks: list[tuple[str, bool, Any, str | None]] = []
    if not isinstance(data, np.ndarray):
        tasks += [("data", True, src, None) for src in _chunk_sources(data)]
    n_data = len(tasks)
    n_chunks: dict[str, int] = {}
    for sample, cols in samples.items():
        sources = _chunk_sources(cols)
        if not sources:
            raise ValueError(f"sample {sample!r}: no chunk of columns to fill a template from")
        for part in process_parts(recipe, sample):
            tasks += [(sample, False, src, part) for src in sources]
        n_chunks[sample] = len(sources)
    shared = (recipe, tuple(corrections), shifts)
    # closing: a step that stops early cancels the rest; one that ends releases the scattered recipe
    with contextlib.closing(run_tasks(_fill_task, tasks, executor=executor, scheduler=scheduler, client=client,
                                      progress=False, desc="templates", shared=shared)) as results:
        data_vals = (recipe.binning.as_array(data) if isinstance(data, np.ndarray)
                     else _summed_counts(recipe, (next(results) for _ in range(n_data))))

        def per_sample() -> Iterator[tuple[str, tuple[ProcessTemplate, dict[float, np.ndarray]]]]:
            for sample in samples:      # the tasks are in sample order, each sample's in chunk order
                for _part in process_parts(recipe, sample):
                    yield sample, _checked(_reduced((next(results) for _ in range(n_chunks[sample])), sample))

        return _assembled(recipe, samples, data_vals, per_sample(), corrections, shifts, stacklevel=4)


def smoothed_mass_variation(ts: TemplateSet, merge: int | None = None
                            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """±step signal templates with the *relative* variation averaged over blocks of ``merge``
    adjacent bins of the recipe's ``mass_merge`` axis (same other bins); 1 returns them unchanged.

    The reweighted difference is the sum of large per-event weight changes of both signs, so on
    a simulation only a few times the data its statistical noise is comparable to the effect
    itself and biases the fitted mass towards the simulation's (regression dilution).  The mass
    effect varies slowly along that axis, so averaging the relative variation over a few bins
    removes most of the noise at the price of a small, measured non-closure.
    """
    axis_name, default = ts.recipe.mass_merge
    merge = default if merge is None else merge
    if merge == 1:
        return ts.mass_up, ts.mass_down
    shape = ts.binning.shape
    pos = [a.name for a in ts.binning.axes].index(axis_name)
    n = shape[pos]
    if merge < 1 or n % merge:
        raise ValueError(f"the {axis_name} merge must divide {n}, got {merge}")

    def block_sum(a: np.ndarray) -> np.ndarray:
        blocks = a.reshape(*shape[:pos], n // merge, merge, *shape[pos + 1:]).sum(pos + 1)
        return np.repeat(blocks, merge, axis=pos)

    up, down = {}, {}
    for p in ts.signal:
        nom = ts.processes[p].nominal
        total = block_sum(nom)
        safe = np.where(total > 0, total, 1.0)
        up[p] = np.where(total > 0, nom * block_sum(ts.mass_up[p]) / safe, nom)
        down[p] = np.where(total > 0, nom * block_sum(ts.mass_down[p]) / safe, nom)
    return up, down


def _apply_template_corrections(ts: TemplateSet, corrections: Sequence[Any]) -> None:
    binning = ts.binning
    for c in corrections:
        if "template" not in c.kinds:
            continue
        repl = c.templates(selection=ts.recipe.selection, processes=list(ts.processes), shape=binning.shape)
        for proc, doc in repl.items():
            if proc in ts.signal:
                raise ValueError(f"correction {c.name!r} tries to replace the signal {proc!r}; not allowed")
            nominal = binning.as_array(doc["nominal"])
            sumw2 = binning.as_array(doc["sumw2"]) if doc.get("sumw2") is not None else np.zeros(binning.shape)
            tmpl = ProcessTemplate(proc, nominal, sumw2, source=c.name)
            variations = {k: binning.as_array(v) / np.where(nominal != 0, nominal, 1.0)
                          for k, v in (doc.get("variations") or {}).items()}
            for var in weightset_variations(WeightSet(None, variations, doc.get("groups", {})), c.name):
                tmpl.shapes[var.nuisance] = Shape(var.group, nominal * var.up,
                                                  None if var.down is None else nominal * var.down)
            ts.processes[proc] = tmpl


def active_sources(recipe: TemplateRecipe, samples: Iterable[str], corrections: Sequence[Any]) -> list[dict[str, Any]]:
    """The table of uncertainty and correction sources in force (for the chapter to show)."""
    replaced = superseded_groups(corrections)
    rows = [dict(r, kind="superseded", detail=f"{r['detail']} (replaced by a published correction)")
            if r.get("group") in replaced else r for r in recipe.builtin_sources()]
    for c in corrections:
        rows.append({"source": c.name, "kind": "+".join(c.kinds), "group": "from correction",
                     "detail": type(c).__module__})
    rows.append({"source": "samples", "kind": "input", "group": "", "detail": ", ".join(samples)})
    return rows


def reference_shifted(ts: TemplateSet, shift_mev: float) -> TemplateSet:
    """The templates as if the simulation had been generated at its mass + ``shift_mev``: each
    signal's nominal and ±step templates are replaced by the exactly reweighted ones of
    ``ts.mass_scan`` (which must hold ``shift_mev`` and ``shift_mev ± step``), its sumw2 and
    shape variations carried over in proportion.  Fitting data generated at the simulation's own
    mass then has to return ``−shift_mev``: a closure test that a fit returning the simulation's
    reference would fail."""
    step = ts.recipe.mass_step_mev
    wanted = [float(shift_mev + d) for d in (-step, 0.0, step)]
    have = {0.0: {p: ts.processes[p].nominal for p in ts.signal}, step: ts.mass_up, -step: ts.mass_down,
            **ts.mass_scan}
    missing = [s for s in wanted if s not in have]
    if missing:
        raise KeyError(f"reference_shifted({shift_mev:g}) needs exact templates at {missing} MeV; build the "
                       f"templates with mass_shifts_mev including them (have {sorted(have)})")
    processes = dict(ts.processes)
    for p in ts.signal:
        old = ts.processes[p]
        new = have[wanted[1]][p]
        ratio = np.where(old.nominal > 0, new / np.where(old.nominal > 0, old.nominal, 1.0), 1.0)
        shapes = {}
        for nuis, s in old.shapes.items():
            r = ratio if s.bins is None else ratio.ravel()[s.bins]
            shapes[nuis] = Shape(s.group, s.up * r, None if s.down is None else s.down * r, s.bins)
        processes[p] = dataclasses.replace(old, nominal=new, sumw2=old.sumw2 * ratio**2, shapes=shapes,
                                           mass_halves=None)
    up = {p: have[wanted[2]][p] for p in ts.signal}
    down = {p: have[wanted[0]][p] for p in ts.signal}
    return dataclasses.replace(ts, processes=processes, mass_up=up, mass_down=down, mass_scan={})
