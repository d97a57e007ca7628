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

from collections.abc import Mapping, Sequence
from typing import Any

import hist
import numpy as np

from ..corrections import Correction, SampleInfo, discover
from .kinematics import pair, project, to_ptphi, to_xy, mt as _mt
from .selections import ISO_MAX, SELECTIONS, abcd_region, final_mask, wlike_derived

MUON_PREFIXES = ("mu", "mu2", "mup", "mum", "tag", "probe")
SYST_AXIS = "syst"
PRESETS = ("prefire", "lhe_scale", "lhe_pdf")
SCALE_NAMES = ("muR0p5_muF0p5", "muR0p5_muF1", "muR0p5_muF2", "muR1_muF0p5", "muR1_muF1",
               "muR1_muF2", "muR2_muF0p5", "muR2_muF1", "muR2_muF2")


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
         weight: np.ndarray | None = None, variations: Mapping[str, np.ndarray] | None = None, *,
         storage: str = "weight", metadata: Any = None) -> hist.Hist:
    """Fill ``axes`` (+ a ``syst`` axis: ``nominal`` then ``variations``) in one pass.

    ``weight``: nominal per-event weight (None: 1); ``variations``: name -> full per-event weight.
    ``storage``: ``"weight"`` (sums of weights and of squared weights) or ``"double"``.
    """
    variations = dict(variations or {})
    if "nominal" in variations:
        raise ValueError("'nominal' is reserved for the nominal weight; rename the variation")
    lin, shape = bin_index(columns, axes, fields)
    n = lin.size
    w_nom = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
    if w_nom.shape != (n,):
        raise ValueError(f"weight has shape {w_nom.shape}, expected ({n},)")
    names = ["nominal", *variations]
    syst = hist.axis.StrCategory(names, name=SYST_AXIS, label="Systematic variation", overflow=False)
    st = {"weight": hist.storage.Weight(), "double": hist.storage.Double()}.get(storage)
    if st is None:
        raise ValueError(f"storage must be 'weight' or 'double', got {storage!r}")
    h = hist.Hist(*axes, syst, storage=st, metadata=metadata)
    ok = lin >= 0
    all_ok = bool(ok.all())
    idx = lin if all_ok else lin[ok]
    size = int(np.prod(shape))
    view = h.view(flow=True)
    square = np.empty(idx.size) if storage == "weight" else None
    for i, name in enumerate(names):
        w = w_nom if name == "nominal" else np.asarray(variations[name], dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"variation {name!r} has shape {w.shape}, expected ({n},)")
        if not all_ok:
            w = w[ok]
        vals = np.bincount(idx, weights=w, minlength=size).reshape(shape)
        if storage == "weight":
            view["value"][..., i] += vals
            np.multiply(w, w, out=square)
            view["variance"][..., i] += np.bincount(idx, weights=square, minlength=size).reshape(shape)
        else:
            view[..., i] += vals
    return h


# ---------------------------------------------------------------------------------------------
# corrections and derived quantities

def sample_info(selection: str, sample: str, columns: Mapping[str, np.ndarray]) -> SampleInfo:
    """The :class:`~wmnb.corrections.SampleInfo` of a skim."""
    prefixes = tuple(p for p in MUON_PREFIXES if f"{p}_pt" in columns)
    return SampleInfo(name=sample, is_data=sample in ("data", "closure"), selection=selection,
                      muon_prefixes=prefixes)


def add_recoil_vector(selection: str, cols: dict[str, np.ndarray]) -> None:
    """Add the hadronic recoil ``ut_x``, ``ut_y`` (float64), computed before any muon correction."""
    if "met_pt" not in cols:
        return
    ex, ey = to_xy(cols["met_pt"], cols["met_phi"])
    if selection in ("w", "wlike"):     # wlike skims store MET with mu2 already added
        mx, my = to_xy(cols["mu_pt"], cols["mu_phi"])
        cols["ut_x"], cols["ut_y"] = -(ex + mx), -(ey + my)
    elif selection == "z":
        px, py = to_xy(cols["mup_pt"], cols["mup_phi"])
        qx, qy = to_xy(cols["mum_pt"], cols["mum_phi"])
        cols["ut_x"], cols["ut_y"] = -(ex + px + qx), -(ey + py + qy)


def swap_wlike(cols: dict[str, np.ndarray]) -> None:
    """Reversed W-like parity: exchange the ``mu_*`` and ``mu2_*`` columns in place."""
    for k in [k for k in cols if k.startswith("mu_")]:
        other = "mu2_" + k[3:]
        if other in cols:
            cols[k], cols[other] = cols[other], cols[k]
    cols["parity_odd"] = ~np.asarray(cols["parity_odd"], bool)


def derive(selection: str, cols: dict[str, np.ndarray]) -> None:
    """Recompute the quantities that depend on the muon kinematics, in place (after corrections)."""
    if selection == "w":
        ux, uy = cols["ut_x"], cols["ut_y"]
        mx, my = to_xy(cols["mu_pt"], cols["mu_phi"])
        met_pt, met_phi = to_ptphi(-(ux + mx), -(uy + my))
        cols["met_pt"], cols["met_phi"] = met_pt, met_phi
        cols["mt"] = _mt(cols["mu_pt"], cols["mu_phi"], met_pt, met_phi)
        cols["ut_para"], cols["ut_perp"] = project(ux, uy, np.asarray(cols["mu_phi"], np.float64))
        cols["iso_pass"] = (np.asarray(cols["mu_iso"]) < ISO_MAX)
        cols["abcd_region"] = abcd_region(cols)
    elif selection == "wlike":
        cols.update(wlike_derived(cols))
        p = pair(cols["mu_pt"], cols["mu_eta"], cols["mu_phi"], cols["mu2_pt"], cols["mu2_eta"], cols["mu2_phi"])
        cols["mass"], cols["pair_pt"], cols["pair_y"], cols["pair_phi"] = p["mass"], p["pt"], p["y"], p["phi"]
    elif selection in ("z", "jpsi", "upsilon"):
        p = pair(cols["mup_pt"], cols["mup_eta"], cols["mup_phi"], cols["mum_pt"], cols["mum_eta"], cols["mum_phi"])
        cols["mass"], cols["pair_pt"], cols["pair_y"], cols["pair_phi"] = p["mass"], p["pt"], p["y"], p["phi"]
        if selection == "z" and "ut_x" in cols:
            ux, uy = cols["ut_x"], cols["ut_y"]
            px, py = to_xy(cols["mup_pt"], cols["mup_phi"])
            qx, qy = to_xy(cols["mum_pt"], cols["mum_phi"])
            cols["met_pt"], cols["met_phi"] = to_ptphi(-(ux + px + qx), -(uy + py + qy))
            cols["ut_para"], cols["ut_perp"] = project(ux, uy, p["phi"])
    elif selection == "tnp":
        p = pair(cols["tag_pt"], cols["tag_eta"], cols["tag_phi"], cols["probe_pt"], cols["probe_eta"], cols["probe_phi"])
        cols["mass"], cols["pair_pt"] = p["mass"], p["pt"]
    for k in ("mu_charge", "mu2_charge", "mup_charge", "mum_charge", "tag_charge", "probe_charge"):
        if k in cols:
            cols[k] = np.asarray(cols[k])


def derive_extras(selection: str, cols: dict[str, np.ndarray]) -> None:
    """The derived columns that skims do not store (``iso_pass``, ``abcd_region`` for ``w``)."""
    if selection == "w":
        cols["iso_pass"] = (np.asarray(cols["mu_iso"]) < ISO_MAX)
        cols["abcd_region"] = abcd_region(cols)


def _apply_mask(cols: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    n = mask.size
    return {k: (v[mask] if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n else v)
            for k, v in cols.items()}


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
            for i, name in enumerate(SCALE_NAMES):
                if i != 4:
                    out[name] = weight * st[i]
                    groups[name] = "QCDscale"
        elif p == "lhe_pdf" and "lhe_pdf" in cols:
            pt = np.ascontiguousarray(np.asarray(cols["lhe_pdf"]).T)
            central = pt[0].astype(np.float64)
            scale = weight / np.where(central != 0, central, 1.0)
            for k in range((pt.shape[0] - 1) // 2):
                out[f"pdf{k + 1}Up"] = scale * pt[1 + 2 * k]
                out[f"pdf{k + 1}Down"] = scale * pt[2 + 2 * k]
                groups[f"pdf{k + 1}"] = "pdf"
    return out, groups


def process_columns(selection: str, sample: str, cols: dict[str, np.ndarray], *,
                    corrections: Sequence[Correction] = (), final_cuts: Any = "default",
                    variations: Any = None, wlike_reversed: bool = False
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Steps 1-6 of :func:`histogram_skim` on in-memory skim columns.

    Returns (columns after cuts, nominal weight, variations {name: weight}, info dict with
    ``corrections`` and ``groups``)."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; choose one of {SELECTIONS}")
    cols = dict(cols)
    info = sample_info(selection, sample, cols)
    add_recoil_vector(selection, cols)      # before the swap: u_T excludes both muons anyway
    if wlike_reversed:
        if selection != "wlike":
            raise ValueError("wlike_reversed applies only to the 'wlike' selection")
        swap_wlike(cols)
    applied = []
    for c in corrections:
        if "muon" in c.kinds and c.applies_to(info):
            c.correct(cols, info)
            applied.append(c.name)
    if applied or wlike_reversed:
        derive(selection, cols)
    else:
        # nothing moved the muons: the stored derived columns are exact, only add the extras
        derive_extras(selection, cols)
    if final_cuts == "default":
        mask = final_mask(selection, cols)
    elif final_cuts is None:
        mask = None
    elif callable(final_cuts):
        mask = np.asarray(final_cuts(cols), dtype=bool)
    else:
        raise ValueError(f"final_cuts must be 'default', None or a callable, got {final_cuts!r}")
    if mask is not None:
        cols = _apply_mask(cols, mask)
    w = np.asarray(cols["weight"], np.float64).copy()
    ratios: dict[str, np.ndarray] = {}
    groups: dict[str, str] = {}
    for c in corrections:
        if "weight" in c.kinds and c.applies_to(info):
            ws = c.weights(cols, info)
            nom = np.ones_like(w) if ws.nominal is None else np.asarray(ws.nominal, np.float64)
            safe = np.where(nom != 0, nom, 1.0)
            for name, var in ws.variations.items():
                if name in ratios or name == "nominal":
                    raise ValueError(f"correction {c.name!r}: variation name {name!r} is used twice")
                ratios[name] = np.where(nom != 0, np.asarray(var, np.float64) / safe, 0.0)
            groups.update(ws.groups)
            w = w * nom
            if c.name not in applied:
                applied.append(c.name)
    var_w = {name: w * r for name, r in ratios.items()}
    if variations is not None:
        if callable(variations):
            extra = dict(variations(cols, w))
            extra_groups: dict[str, str] = {}
        else:
            extra, extra_groups = preset_variations(cols, w, list(variations))
        for name in extra:
            if name in var_w:
                raise ValueError(f"variation name {name!r} is used twice")
        var_w.update(extra)
        groups.update(extra_groups)
    return cols, w, var_w, {"corrections": applied, "groups": groups}


def corrected_columns(profile: str, selection: str, sample: str, *, corrections: Any = "discover",
                      final_cuts: Any = "default", variations: Any = None, wlike_reversed: bool = False,
                      exclude_chapters: tuple[str, ...] = (), columns: Sequence[str] | None = None,
                      exclude: Sequence[str] | None = None
                      ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Load a skim (``columns`` / minus ``exclude``: see :func:`~wmnb.engine.skims.read_skim`) and
    apply corrections, derived quantities, final cuts and weights (see :func:`process_columns`).

    ``exclude=None`` (default) skips the large ``lhe_scale`` / ``lhe_pdf`` columns when nothing
    can use them: no ``lhe_*`` variation preset, no callable variations and no weight correction."""
    from .skims import read_skim

    corrs = _resolve_corrections(profile, corrections, exclude_chapters)
    if exclude is None:
        uses_lhe = (callable(variations) or any("weight" in c.kinds for c in corrs)
                    or (variations is not None and any(str(v).startswith("lhe") for v in variations)))
        exclude = () if uses_lhe else ("lhe_scale", "lhe_pdf")
    cols = read_skim(profile, selection, sample, columns, exclude)
    return process_columns(selection, sample, cols, corrections=corrs, final_cuts=final_cuts,
                           variations=variations, wlike_reversed=wlike_reversed)


def _resolve_corrections(profile: str, corrections: Any, exclude_chapters: tuple[str, ...]) -> list[Correction]:
    if corrections == "discover":
        return discover(profile, exclude_chapters=exclude_chapters)
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
                   storage: str = "weight", chunk_rows: int = 200_000) -> hist.Hist:
    """Histogram a chapter-01 skim after corrections and final cuts (see the module docstring).

    ``corrections``: ``"discover"`` (everything published under ``results/<profile>``, minus
    ``exclude_chapters``), None, or a list of :class:`~wmnb.corrections.Correction`.
    The skim is processed in slices of ``chunk_rows`` rows: with hundreds of weight variations
    the per-event variation arrays of a whole sample would not fit in memory.
    """
    from .skims import read_skim

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    corrs = _resolve_corrections(profile, corrections, exclude_chapters)
    uses_lhe = (callable(variations) or any("weight" in c.kinds for c in corrs)
                or (variations is not None and any(str(v).startswith("lhe") for v in variations)))
    cols = read_skim(profile, selection, sample, None, () if uses_lhe else ("lhe_scale", "lhe_pdf"))
    n_rows = len(next(iter(cols.values()))) if cols else 0
    total: hist.Hist | None = None
    n_events, applied, groups = 0, [], {}
    for start in range(0, max(n_rows, 1), chunk_rows):
        part = {k: v[start:start + chunk_rows] for k, v in cols.items()}
        pcols, w, var_w, info = process_columns(selection, sample, part, corrections=corrs,
                                                final_cuts=final_cuts, variations=variations,
                                                wlike_reversed=wlike_reversed)
        h = fill(pcols, axes, fields, w, var_w, storage=storage)
        total = h if total is None else total + h
        n_events += int(w.size)
        applied, groups = info["corrections"], info["groups"]
        del pcols, w, var_w
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
    req, opt = selection_branches("z" if selection == "wlike" else selection, set(tree.keys()),
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
