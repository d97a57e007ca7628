"""The histogram engine: analysis axes plus a systematic axis, all weight variations in one pass.

Two entry points:

``fill(columns, axes, fields, weight=None, variations=None, *, storage="weight") -> hist.Hist``
    Histogram ``columns[fields[i]]`` on ``axes[i]`` and append a ``syst`` StrCategory axis whose
    first entry is ``nominal`` (weights ``weight``) followed by one entry per variation
    (``variations[name]`` is the *full* per-event weight of that variation).  The bin index of
    every event is computed once and each variation costs one ``np.bincount``; the result equals
    filling ``hist`` once per variation, bin by bin (flow bins and variances included).

``histogram_skim(profile, selection, sample, axes, fields, *, corrections="discover",
final_cuts="default", variations=None, wlike_reversed=False, exclude_chapters=(), storage="weight")``
    Load a chapter-01 skim and run the standard chain on it:

    1. the hadronic recoil vector ``ut_x``, ``ut_y`` is computed from the skim (it does not
       depend on the muon calibration);
    2. ``muon`` corrections from :func:`wmnb.corrections.discover` are applied in their order
       (they modify ``<prefix>_pt`` ... for the prefixes in ``SampleInfo.muon_prefixes``; a recoil
       calibration may modify ``ut_x``, ``ut_y``);
    3. derived quantities are recomputed (:func:`derive`): MET = -(u + muons), m_T, u_∥, u_⊥,
       dimuon mass / pT / y, the ABCD region and ``iso_pass``;
    4. final cuts (``"default"``: :func:`wmnb.engine.selections.final_mask`; a callable
       ``cols -> mask``; or None);
    5. ``weight`` corrections multiply the nominal weight; their variations (full factors that
       replace the correction's nominal factor) become ``syst`` entries;
    6. user ``variations``: a list of presets (``"prefire"``, ``"lhe_scale"``, ``"lhe_pdf"``) or a
       callable ``(cols, weight) -> {name: full weight}``;
    7. :func:`fill`.

    The histogram's ``metadata`` records selection, sample, corrections applied, the nuisance
    group of every variation and the number of events filled.

:func:`corrected_columns` runs steps 1-6 without histogramming (for chapters that need
corrected columns, e.g. recoil or background models).  :func:`histogram_files` runs the
selection + histogramming directly on NanoAOD chunks with either executor.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import hist
import numpy as np

from ..conventions import LHE_PDF_CENTRAL, LHE_SCALE_NAMES, LHE_SCALE_NOMINAL, lhe_pdf_index, lhe_pdf_pairs
from ..corrections import AddedEvents, Correction, discover
from .pipeline import PipelineResult, run_pipeline, sample_info
from .registry import get_selection

__all__ = ["corrected_columns", "derive", "fill", "histogram_files", "histogram_skim", "preset_variations",
           "process_columns", "sample_info", "variation_weights"]
SYST_AXIS = "syst"
PRESETS = ("prefire", "lhe_scale", "lhe_pdf")


# ---------------------------------------------------------------------------------------------
# fill

def _axis_indices(ax: Any, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index into the axis' flow-including view, valid mask) — the bin ``fill`` would use."""
    traits = ax.traits
    if isinstance(ax, (hist.axis.IntCategory, hist.axis.StrCategory)):
        # categories: unknown values go to the overflow bin (if any), like fill does
        cats = np.asarray(list(ax))
        order = np.argsort(cats, kind="stable")
        sorted_cats = cats[order]
        vals = np.asarray(values).astype(cats.dtype) if isinstance(ax, hist.axis.StrCategory) else np.asarray(values)
        pos = np.clip(np.searchsorted(sorted_cats, vals), 0, max(len(cats) - 1, 0))
        found = (sorted_cats[pos] == vals) if len(cats) else np.zeros(vals.shape, bool)
        idx = np.where(found, order[pos], ax.size).astype(np.int64)
    else:
        idx = np.asarray(ax.index(values), dtype=np.int64)
    size = ax.size
    valid = np.ones(idx.shape, dtype=bool)
    if not traits.underflow:
        valid &= idx >= 0
    if not traits.overflow:
        valid &= idx < size
    shift = 1 if traits.underflow else 0
    return idx + shift, valid


def bin_index(columns: Mapping[str, np.ndarray], axes: Sequence[Any], fields: Sequence[str]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Flat index into the flow-including view of ``axes`` for every event (-1: not filled)."""
    if len(axes) != len(fields):
        raise ValueError(f"{len(axes)} axes but {len(fields)} fields {list(fields)}")
    shape = tuple(int(ax.extent) for ax in axes)
    n = None
    lin = None
    valid = None
    for ax, f in zip(axes, fields):
        if ax.traits.growth:
            raise ValueError(f"axis {ax.name!r} has growth=True; the engine needs fixed axes (list the categories)")
        if f not in columns:
            raise KeyError(f"field {f!r} for axis {ax.name!r} is not a column; columns are {sorted(columns)}")
        v = np.asarray(columns[f])
        if v.ndim != 1:
            raise ValueError(f"field {f!r} must be 1-D, got shape {v.shape}")
        if n is None:
            n = v.size
        elif v.size != n:
            raise ValueError(f"field {f!r} has {v.size} entries, expected {n}")
        idx, ok = _axis_indices(ax, v)
        lin = idx if lin is None else lin * int(ax.extent) + idx
        valid = ok if valid is None else valid & ok
    if lin is None:
        raise ValueError("at least one axis is needed")
    return np.where(valid, lin, -1), shape


def fill(columns: Mapping[str, np.ndarray], axes: Sequence[Any], fields: Sequence[str],
         weight: np.ndarray | None = None,
         variations: Mapping[str, np.ndarray] | Iterable[tuple[Any, ...]] | None = None, *,
         storage: str = "weight", metadata: Any = None) -> hist.Hist:
    """Fill ``axes`` (+ a ``syst`` axis: ``nominal`` then ``variations``) in one pass.

    ``weight``: nominal per-event weight (None: 1); ``variations``: name -> full per-event
    weight, as a mapping or as an iterable of ``(name, weights)`` pairs that is consumed one
    pair at a time (so only one variation's per-event weights need exist at once); an entry
    ``(name, weights, added)`` also fills the :class:`~wmnb.corrections.AddedEvents` ``added``
    of a column variation (None: nothing added).
    ``storage``: ``"weight"`` (sums of weights and of squared weights) or ``"double"``.
    """
    st = {"weight": hist.storage.Weight(), "double": hist.storage.Double()}.get(storage)
    if st is None:
        raise ValueError(f"storage must be 'weight' or 'double', got {storage!r}")
    lin, shape = bin_index(columns, axes, fields)
    n = lin.size
    w_nom = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
    if w_nom.shape != (n,):
        raise ValueError(f"weight has shape {w_nom.shape}, expected ({n},)")
    ok = lin >= 0
    all_ok = bool(ok.all())
    idx = lin if all_ok else lin[ok]
    size = int(np.prod(shape))
    square = np.empty(idx.size) if storage == "weight" else None
    names: list[str] = []
    sums: list[tuple[np.ndarray, np.ndarray | None]] = []

    def add(name: str, w: np.ndarray, added: AddedEvents | None = None) -> None:
        if name in names:
            raise ValueError(f"variation name {name!r} is used twice" if name != "nominal" else
                             "'nominal' is reserved for the nominal weight; rename the variation")
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"variation {name!r} has shape {w.shape}, expected ({n},)")
        if not all_ok:
            w = w[ok]
        vals = np.bincount(idx, weights=w, minlength=size)
        var = None
        if square is not None:
            np.multiply(w, w, out=square)
            var = np.bincount(idx, weights=square, minlength=size)
        if added is not None:
            lin_a, _ = bin_index(added.columns, axes, fields)
            in_a = lin_a >= 0
            wa = np.asarray(added.weight, dtype=np.float64)[in_a]
            vals += np.bincount(lin_a[in_a], weights=wa, minlength=size)
            if var is not None:
                var += np.bincount(lin_a[in_a], weights=wa * wa, minlength=size)
        names.append(name)
        sums.append((vals, var))

    add("nominal", w_nom)
    entries = variations.items() if isinstance(variations, Mapping) else (variations or ())
    for entry in entries:
        add(*entry)
    syst = hist.axis.StrCategory(names, name=SYST_AXIS, label="Systematic variation", overflow=False)
    h = hist.Hist(*axes, syst, storage=st, metadata=metadata)
    view = h.view(flow=True)
    for i, (vals, var) in enumerate(sums):
        if var is not None:
            view["value"][..., i] += vals.reshape(shape)
            view["variance"][..., i] += var.reshape(shape)
        else:
            view[..., i] += vals.reshape(shape)
    return h


# ---------------------------------------------------------------------------------------------
# corrections and derived quantities: the one pipeline (wmnb.engine.pipeline)

def derive(selection: str, cols: dict[str, np.ndarray]) -> None:
    """Recompute the quantities that depend on the muon kinematics, in place (after corrections)."""
    get_selection(selection).derive(cols)


def preset_variations(cols: Mapping[str, np.ndarray], weight: np.ndarray,
                      presets: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Built-in weight variations from skim columns: ``prefire`` (Up/Down), ``lhe_scale`` (the 8
    non-nominal μR/μF combinations) and ``lhe_pdf`` (Hessian members ``pdf<k>Up/Down``).
    Returns (variations, groups)."""
    out: dict[str, np.ndarray] = {}
    groups: dict[str, str] = {}
    for p in presets:
        if p not in PRESETS:
            raise ValueError(f"unknown variation preset {p!r}; presets are {PRESETS}")
        if p == "prefire":
            if "prefire_up" not in cols:
                continue
            out["prefireUp"] = weight * cols["prefire_up"]
            out["prefireDown"] = weight * cols["prefire_dn"]
            groups["prefire"] = "prefire"
        elif p == "lhe_scale" and "lhe_scale" in cols:
            st = np.ascontiguousarray(np.asarray(cols["lhe_scale"]).T)   # members as contiguous rows
            for i, name in enumerate(LHE_SCALE_NAMES):
                if i != LHE_SCALE_NOMINAL:
                    out[name] = weight * st[i]
                    groups[name] = "QCDscale"
        elif p == "lhe_pdf" and "lhe_pdf" in cols:
            pt = np.ascontiguousarray(np.asarray(cols["lhe_pdf"]).T)
            central = pt[LHE_PDF_CENTRAL].astype(np.float64)
            scale = weight / np.where(central != 0, central, 1.0)
            for k in range(lhe_pdf_pairs(pt.shape[0])):
                out[f"pdf{k + 1}Up"] = scale * pt[lhe_pdf_index(k, True)]
                out[f"pdf{k + 1}Down"] = scale * pt[lhe_pdf_index(k, False)]
                groups[f"pdf{k + 1}"] = "pdf"
    return out, groups


def variation_weights(result: PipelineResult
                      ) -> Iterator[tuple[str, str, str, np.ndarray, AddedEvents | None]]:
    """``(syst entry, nuisance, group, full per-event weight, added events)`` of every variation
    of a pipeline result, lazily: a paired nuisance ``x`` gives ``xUp`` and ``xDown``, a
    one-sided one ``x``; the added events are a column variation's (else None)."""
    w, n = result.weight, result.weight.size
    for var in result.variations():
        up, down = var.full(n)
        if down is None:
            yield var.nuisance, var.nuisance, var.group, w * up, var.added_up
        else:
            yield f"{var.nuisance}Up", var.nuisance, var.group, w * up, var.added_up
            yield f"{var.nuisance}Down", var.nuisance, var.group, w * down, var.added_down


def _syst_entries(result: PipelineResult, variations: Any, groups: dict[str, str]
                  ) -> Iterator[tuple[str, np.ndarray, AddedEvents | None]]:
    """The ``syst`` entries of one sample, one at a time: the corrections' variations, then the
    user ``variations`` (presets or a callable); ``groups`` collects nuisance -> group."""
    seen: set[str] = set()
    for name, nuisance, group, weights, added in variation_weights(result):
        groups[nuisance] = group
        seen.add(name)
        yield name, weights, added
    if variations is None:
        return
    if callable(variations):
        extra = dict(variations(result.columns, result.weight))
    else:
        extra, extra_groups = preset_variations(result.columns, result.weight, list(variations))
        groups.update(extra_groups)
    for name, weights in extra.items():
        if name in seen or name == "nominal":
            raise ValueError(f"variation name {name!r} is used twice")
        yield name, weights, None


def process_columns(selection: str, sample: str, cols: dict[str, np.ndarray], *,
                    corrections: Sequence[Correction] = (), final_cuts: Any = "default",
                    variations: Any = None, wlike_reversed: bool = False
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Steps 1-6 of :func:`histogram_skim` on in-memory skim columns, every variation
    materialised (for small samples; :func:`histogram_skim` fills them one at a time).

    Returns (columns after cuts, nominal weight, variations {name: weight}, info dict with
    ``corrections``, ``groups`` and ``added``: the events each column variation adds, by name)."""
    result = run_pipeline(selection, sample, cols, corrections=corrections, final_cuts=final_cuts,
                          wlike_reversed=wlike_reversed)
    groups: dict[str, str] = {}
    var_w: dict[str, np.ndarray] = {}
    added: dict[str, AddedEvents] = {}
    for name, weights, extra in _syst_entries(result, variations, groups):
        var_w[name] = weights
        if extra is not None:
            added[name] = extra
    return result.columns, result.weight, var_w, {"corrections": result.applied, "groups": groups, "added": added}


def corrected_columns(profile: str, selection: str, sample: str, *, corrections: Any = "discover",
                      final_cuts: Any = "default", variations: Any = None, wlike_reversed: bool = False,
                      exclude_chapters: tuple[str, ...] = (), columns: Sequence[str] | None = None,
                      from_chapters: Sequence[str] | None = None,
                      exclude: Sequence[str] | None = None
                      ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Load a skim (``columns`` / minus ``exclude``: see :func:`~wmnb.engine.skims.read_skim`) and
    apply corrections, derived quantities, final cuts and weights (see :func:`process_columns`).

    ``exclude=None`` (default) skips the large ``lhe_scale`` / ``lhe_pdf`` columns when nothing
    can use them: no ``lhe_*`` variation preset, no callable variations and no weight correction."""
    from .skims import read_skim

    corrs = _resolve_corrections(profile, corrections, exclude_chapters, from_chapters)
    if exclude is None:
        uses_lhe = (callable(variations) or any("weight" in c.kinds for c in corrs)
                    or (variations is not None and any(str(v).startswith("lhe") for v in variations)))
        exclude = () if uses_lhe else ("lhe_scale", "lhe_pdf")
    cols = read_skim(profile, selection, sample, columns, exclude)
    return process_columns(selection, sample, cols, corrections=corrs, final_cuts=final_cuts,
                           variations=variations, wlike_reversed=wlike_reversed)


def _resolve_corrections(profile: str, corrections: Any, exclude_chapters: tuple[str, ...],
                         from_chapters: Sequence[str] | None = None) -> list[Correction]:
    if corrections == "discover":
        # a consumer that says which chapters it depends on reads only theirs (an undeclared
        # publisher is an error, see wmnb.corrections.discover)
        return discover(profile, exclude_chapters=exclude_chapters, from_chapters=from_chapters)
    if corrections is None:
        return []
    corrs = list(corrections)
    for c in corrs:
        if not isinstance(c, Correction):
            raise TypeError(f"corrections must be wmnb.corrections.Correction objects, got {type(c).__name__}")
    return corrs


def histogram_skim(profile: str, selection: str, sample: str, axes: Sequence[Any], fields: Sequence[str], *,
                   corrections: Any = "discover", final_cuts: Any = "default", variations: Any = None,
                   wlike_reversed: bool = False, exclude_chapters: tuple[str, ...] = (),
                   from_chapters: Sequence[str] | None = None,
                   storage: str = "weight", chunk_rows: int = 200_000) -> hist.Hist:
    """Histogram a chapter-01 skim after corrections and final cuts (see the module docstring).

    ``corrections``: ``"discover"`` (everything published under ``results/<profile>``, minus
    ``exclude_chapters``; only ``from_chapters`` when given: the consumer's declared
    dependencies), None, or a list of :class:`~wmnb.corrections.Correction`.
    The skim is processed in slices of ``chunk_rows`` rows: with hundreds of weight variations
    the per-event variation arrays of a whole sample would not fit in memory.
    """
    from .skims import read_skim

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    corrs = _resolve_corrections(profile, corrections, exclude_chapters, from_chapters)
    uses_lhe = (callable(variations) or any("weight" in c.kinds for c in corrs)
                or (variations is not None and any(str(v).startswith("lhe") for v in variations)))
    cols = read_skim(profile, selection, sample, None, () if uses_lhe else ("lhe_scale", "lhe_pdf"))
    n_rows = len(next(iter(cols.values()))) if cols else 0
    total: hist.Hist | None = None
    n_events, applied, groups = 0, [], {}
    for start in range(0, max(n_rows, 1), chunk_rows):
        part = {k: v[start:start + chunk_rows] for k, v in cols.items()}
        result = run_pipeline(selection, sample, part, corrections=corrs, final_cuts=final_cuts,
                              wlike_reversed=wlike_reversed)
        chunk_groups: dict[str, str] = {}
        # one variation's per-event weights at a time: nothing scales with events x variations
        h = fill(result.columns, axes, fields, result.weight, _syst_entries(result, variations, chunk_groups),
                 storage=storage)
        total = h if total is None else total + h
        n_events += int(result.weight.size)
        applied, groups = result.applied, chunk_groups
        del result
    assert total is not None
    total.metadata = {"profile": profile, "selection": selection, "sample": sample, "n_events": n_events,
                      "corrections": applied, "groups": groups, "wlike_reversed": wlike_reversed}
    return total


# ---------------------------------------------------------------------------------------------
# straight from NanoAOD chunks

def _hist_task(task: tuple) -> hist.Hist:
    (path, start, stop, selection, norm, nonfinite, axes, fields, final_cuts, variations, sample, storage) = task
    from .nanoaod import load_chunk, open_tree, selection_branches
    from .selections import select

    tree = open_tree(path)
    req, opt = selection_branches(selection, set(tree.keys()),
                                  "genWeight" in tree.keys(), path, lean=True)
    need_lhe = variations is not None and (callable(variations) or bool({"lhe_scale", "lhe_pdf"} & set(variations)))
    # only what the reconstructed-level histogram needs: no GenPart / GenV, LHE only for its variations
    need_prefire = variations is not None and (callable(variations) or "prefire" in set(variations))
    opt = tuple(b for b in opt if not b.startswith(("GenPart_", "GenV_", "Pileup_"))
                and (need_lhe or not b.startswith("LHE"))
                and (need_prefire or b not in ("L1PreFiringWeight_Up", "L1PreFiringWeight_Dn")))
    chunk = load_chunk(path, start, stop, req, optional=opt, nonfinite=nonfinite, tree=tree)
    cols, _ = select(chunk, selection, norm, gen=False)
    cols, w, var_w, _ = process_columns(selection, sample, cols, final_cuts=final_cuts, variations=variations)
    return fill(cols, axes, fields, w, var_w, storage=storage)


def histogram_files(files: Sequence[str], selection: str, axes: Sequence[Any], fields: Sequence[str], *,
                    norm: float = 1.0, sample: str = "mc", final_cuts: Any = "default", variations: Any = None,
                    step: int = 500_000, executor: str = "local", scheduler: str | None = None,
                    client: Any = None, progress: bool = True, nonfinite: str = "error",
                    storage: str = "weight") -> hist.Hist:
    """Select and histogram NanoAOD ``files`` chunk by chunk (no skim, no corrections).

    Chunk histograms are summed in chunk order, so ``local`` and ``dask`` give identical results.
    ``final_cuts`` / ``variations`` must be picklable for ``dask`` (module-level functions or presets).
    """
    from .executors import run_tasks
    from .nanoaod import check_distinct, plan_chunks

    check_distinct(files)   # a file given twice would be counted twice
    tasks = [(p, s, e, selection, norm, nonfinite, list(axes), list(fields), final_cuts, variations, sample, storage)
             for f in files for (p, s, e) in plan_chunks(f, step)]
    total = None
    for h in run_tasks(_hist_task, tasks, executor=executor, scheduler=scheduler, client=client,
                       progress=progress, desc=f"{selection} histograms"):
        total = h if total is None else total + h
    if total is None:   # no events at all: an empty histogram with the right axes
        total = fill({f: np.zeros(0) for f in fields}, axes, fields, np.zeros(0), storage=storage)
    return total
