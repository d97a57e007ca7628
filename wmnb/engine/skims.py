"""Skims: the compact per-selection samples chapter 01 writes and later chapters read.

Layout (DEVELOPING.md)::

    results/<profile>/01_selection/skims/<selection>/<sample>.root          TTree "Skim", flat columns
    results/<profile>/01_selection/skims/<selection>/<sample>.cutflow.json  cutflow, notes, inputs
    results/<profile>/01_selection/skims/index.json                         every skim with its size

Samples are the simulated processes of the universe manifest (``wplus_munu`` ...), ``data``
(the data card's data) and ``closure`` (the closure universe's data).  Single-muon selections
(w, z, wlike, tnp) read the ``SingleMuon`` stream and the non-onia processes; ``jpsi`` and
``upsilon`` read ``MuOnia`` and the ``jpsi`` / ``upsilon`` processes.

Columns are float32 for kinematics, float64 ``weight``, uint64 ``event``; 2-D ``lhe_scale``
``[n, 9]`` and ``lhe_pdf`` ``[n, N]`` are fixed-size array branches.  The whole ``skims/``
directory is swapped in atomically: readers see the old or the new skims, never a mixture.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uproot

from ..artefacts import atomic_dir, atomic_path, read_json, write_json
from ..paths import chapter_dir, universe_dir
from .executors import run_tasks
from .nanoaod import NanoAODError, check_distinct, load_chunk, open_tree, plan_chunks, selection_branches
from .selections import ONIA_SELECTIONS, SELECTIONS, Cutflow, merge_cutflows, select

CHAPTER = "01_selection"
SKIM_TREE = "Skim"
DEFAULT_STEP = 200_000
ONIA_PROCESSES = ("jpsi", "upsilon")
ONIA_STREAMS = ("MuOnia",)


def skims_dir(profile: str) -> Path:
    """``results/<profile>/01_selection/skims``."""
    return chapter_dir(profile, CHAPTER) / "skims"


def skim_path(profile: str, selection: str, sample: str) -> Path:
    """Where the skim of ``sample`` for ``selection`` lives."""
    return skims_dir(profile) / selection / f"{sample}.root"


# ---------------------------------------------------------------------------------------------
# writing and reading

def concat_columns(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate column dicts (in order); a column missing from some part is an error."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return {}
    keys = list(parts[0])
    for p in parts[1:]:
        if set(p) != set(keys):
            diff = sorted(set(p) ^ set(keys))
            raise ValueError(f"chunks disagree on the skim columns {diff} (e.g. LHE weights present in some files only)")
    out = {}
    for k in keys:
        arrays = [p[k] for p in parts]
        shapes = {a.shape[1:] for a in arrays if a.shape[0] > 0} or {arrays[0].shape[1:]}
        if len(shapes) > 1:
            raise ValueError(f"column {k!r} has different widths {sorted(shapes)} across files")
        arrays = [a for a in arrays if a.shape[0] > 0] or arrays[:1]
        out[k] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    return out


def write_skim(path: str | os.PathLike, cols: dict[str, np.ndarray], basket: int = 1_000_000) -> Path:
    """Write flat (and fixed-width 2-D) columns as TTree ``Skim`` (ZSTD), atomically."""
    path = Path(path)
    if not cols:
        raise ValueError(f"no columns to write to {path}")
    n = {len(v) for v in cols.values()}
    if len(n) != 1:
        raise ValueError(f"columns of {path} have different lengths {sorted(n)}")
    n_rows = n.pop()
    types = {k: (v.dtype.str if v.ndim == 1 else (v.dtype.str, v.shape[1:])) for k, v in cols.items()}
    with atomic_path(path) as tmp:
        with uproot.recreate(tmp, compression=uproot.ZSTD(1)) as f:
            f.mktree(SKIM_TREE, types)
            for s in range(0, n_rows, basket):
                f[SKIM_TREE].extend({k: np.ascontiguousarray(v[s:s + basket]) for k, v in cols.items()})
    return path


def _skim_tree(path: Path, columns: Iterable[str] | None, exclude: Iterable[str]) -> tuple[Any, list[str]]:
    """The ``Skim`` tree of ``path`` and the column names to read (clear errors otherwise)."""
    if not path.is_file():
        raise FileNotFoundError(f"skim {path} does not exist: run chapter 01 (wmnb.engine.make_skims) first")
    try:
        tree = uproot.open(path)[SKIM_TREE]
    except Exception as err:
        raise OSError(f"skim {path} cannot be read ({type(err).__name__}: {err}); delete it and rerun chapter 01") from err
    names = list(tree.keys()) if columns is None else list(columns)
    names = [c for c in names if c not in set(exclude)]
    missing = [c for c in names if c not in tree.keys()]
    if missing:
        raise KeyError(f"skim {path} has no column(s) {missing}; it holds {sorted(tree.keys())}")
    return tree, names


def read_skim_file(path: str | os.PathLike, columns: Iterable[str] | None = None,
                   exclude: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Read a skim file into ``{column: numpy array}`` (all columns, or ``columns``, minus ``exclude``)."""
    path = Path(path)
    tree, names = _skim_tree(path, columns, exclude)
    try:
        arrays = tree.arrays(names, library="np")
    except Exception as err:
        raise OSError(f"skim {path} cannot be read ({type(err).__name__}: {err}); delete it and rerun chapter 01") from err
    return {k: np.asarray(arrays[k]) for k in names}


@dataclass(frozen=True)
class SkimChunks:
    """A skim file read lazily, ``step_rows`` rows at a time: iterate it (as often as needed;
    nothing is cached) to get ``{column: numpy array}`` chunks.  What the template builders
    take instead of whole columns, so a sample never has to be in memory at once.
    ``weight_scale`` multiplies the ``weight`` column of every chunk (a luminosity factor)."""

    path: Path
    step_rows: int = 500_000
    columns: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    weight_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.step_rows < 1:
            raise ValueError(f"step_rows must be >= 1, got {self.step_rows}")
        _skim_tree(self.path, self.columns, self.exclude)    # fail now, naming the file and columns

    @property
    def num_rows(self) -> int:
        return int(_skim_tree(self.path, self.columns, self.exclude)[0].num_entries)

    def ranges(self) -> list[tuple[int, int]]:
        """The ``(start, stop)`` rows of the chunks :meth:`__iter__` yields, in order (one empty
        range for an empty skim): what a distributed template build reads one task each."""
        n = self.num_rows
        return [(s, min(s + self.step_rows, n)) for s in range(0, n, self.step_rows)] or [(0, 0)]

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` as :meth:`__iter__` yields them (``weight`` scaled), read on their
        own: with ``(start, stop)`` from :meth:`ranges` the very arrays of that chunk."""
        tree, names = _skim_tree(self.path, self.columns, self.exclude)
        if tree.num_entries == 0 and start == stop == 0:
            return self._scaled(read_skim_file(self.path, names))
        if not 0 <= start < stop <= tree.num_entries:
            raise ValueError(f"skim {self.path}: rows {start}:{stop} are not a non-empty range of its "
                             f"{tree.num_entries} rows (use SkimChunks.ranges())")
        try:
            arrays = tree.arrays(names, entry_start=start, entry_stop=stop, library="np")
        except Exception as err:
            raise OSError(f"skim {self.path} cannot be read ({type(err).__name__}: {err}); "
                          "delete it and rerun chapter 01") from err
        return self._scaled({k: np.asarray(arrays[k]) for k in names})

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        tree, names = _skim_tree(self.path, self.columns, self.exclude)
        if tree.num_entries == 0:       # uproot yields no chunk at all: give one empty chunk
            yield self._scaled(read_skim_file(self.path, names))
            return
        try:
            for arrays in tree.iterate(names, step_size=self.step_rows, library="np"):
                yield self._scaled({k: np.asarray(arrays[k]) for k in names})
        except (KeyError, OSError):
            raise
        except Exception as err:
            raise OSError(f"skim {self.path} cannot be read ({type(err).__name__}: {err}); "
                          "delete it and rerun chapter 01") from err

    def _scaled(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.weight_scale != 1.0 and "weight" in cols:
            cols["weight"] = cols["weight"] * self.weight_scale
        return cols


def read_skim(profile: str, selection: str, sample: str, columns: Iterable[str] | None = None,
              exclude: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Columns of the skim of ``sample`` (``wplus_munu``, ``data``, ``closure`` ...) for
    ``selection`` (``w``, ``z``, ``wlike``, ``jpsi``, ``upsilon``, ``tnp``); optionally only
    ``columns`` and without ``exclude`` (e.g. ``("lhe_pdf",)`` to save memory)."""
    return read_skim_file(_existing_skim(profile, selection, sample), columns, exclude)


def _existing_skim(profile: str, selection: str, sample: str) -> Path:
    """Path of a skim, with an error naming the samples there are if this one is missing."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; choose one of {SELECTIONS}")
    path = skim_path(profile, selection, sample)
    if not path.is_file() and path.parent.is_dir():
        raise FileNotFoundError(f"no skim for sample {sample!r} of selection {selection!r} at {path}; "
                                f"samples are {list_skim_samples(profile, selection)}")
    return path


def skim_chunks(profile: str, selection: str, sample: str, step_rows: int = 500_000,
                columns: Iterable[str] | None = None, exclude: Iterable[str] = (),
                weight_scale: float = 1.0) -> SkimChunks:
    """:func:`read_skim`, lazily in chunks of ``step_rows`` rows (see :class:`SkimChunks`)."""
    path = _existing_skim(profile, selection, sample)
    return SkimChunks(path, step_rows, None if columns is None else tuple(columns), tuple(exclude), weight_scale)


def read_cutflow(profile: str, selection: str, sample: str) -> dict[str, Any]:
    """The cutflow document written next to a skim."""
    return read_json(skim_path(profile, selection, sample).with_suffix(".cutflow.json"))


def list_skim_samples(profile: str, selection: str) -> list[str]:
    """Samples with a skim for ``selection``: MC processes (sorted), then ``data``, ``closure``."""
    d = skims_dir(profile) / selection
    if not d.is_dir():
        raise FileNotFoundError(f"no skims for selection {selection!r} under {d}: run chapter 01 first")
    names = sorted(p.stem for p in d.glob("*.root"))
    tail = [n for n in ("data", "closure") if n in names]
    return [n for n in names if n not in tail] + tail


# ---------------------------------------------------------------------------------------------
# running selections on files

def _chunk_task(task: tuple) -> dict[str, Any]:
    """Load one chunk once and run every requested selection on it (a Dask task)."""
    path, start, stop, selections, norm, nonfinite = task
    tree = open_tree(path)
    available = set(tree.keys())
    is_mc = "genWeight" in available
    req: list[str] = []
    opt: tuple[str, ...] = ()
    for sel in selections:
        r, o = selection_branches(sel, available, is_mc, path)
        req += r
        opt += o
    chunk = load_chunk(path, start, stop, list(dict.fromkeys(req)), optional=tuple(dict.fromkeys(opt)),
                       nonfinite=nonfinite, tree=tree)
    out: dict[str, Any] = {"notes": chunk.notes, "results": {}}
    from .registry import get_selection

    for sel in selections:
        spec = get_selection(sel)
        parent = out["results"].get(spec.derived_from) if spec.derived_from else None
        if parent is not None and spec.derive_from is not None:
            out["results"][sel] = spec.derive_from(*parent)   # reuse the parent's pair finding
            continue
        out["results"][sel] = select(chunk, sel, norm)
    return out


def _empty_result(path: str, selections: Sequence[str], norm: float, nonfinite: str) -> dict[str, Any]:
    """Typed empty columns for a file with zero entries (so empty skims have the right schema)."""
    return _chunk_task((path, 0, 0, tuple(selections), norm, nonfinite))


def run_selections(files: Sequence[str], selections: Sequence[str], *, norm: float = 1.0,
                   step: int = DEFAULT_STEP, executor: str = "local", scheduler: str | None = None,
                   client: Any = None, progress: bool = True, nonfinite: str = "error",
                   desc: str = "") -> dict[str, dict[str, Any]]:
    """Run ``selections`` on ``files`` (one read per chunk for all of them).

    Returns ``{selection: {"columns": dict, "cutflow": Cutflow, "notes": [...]}}``; a file with
    zero events contributes nothing but the column schema.  The same file given twice is a
    :class:`NanoAODError`.
    """
    for sel in selections:
        if sel not in SELECTIONS:
            raise ValueError(f"unknown selection {sel!r}; choose one of {SELECTIONS}")
    from .registry import get_selection

    order = list(selections)
    for sel in selections:              # a derived selection's parent first, so it can be reused
        parent = get_selection(sel).derived_from
        if parent in order and order.index(parent) > order.index(sel):
            order.remove(parent)
            order.insert(order.index(sel), parent)
    check_distinct(files)   # a file given twice would be counted twice
    tasks = []
    for f in files:
        for path, start, stop in plan_chunks(f, step):
            tasks.append((path, start, stop, tuple(order), norm, nonfinite))
    if not tasks and files:
        results = [_empty_result(str(files[0]), order, norm, nonfinite)]
    else:
        results = run_tasks(_chunk_task, tasks, executor=executor, scheduler=scheduler, client=client,
                            progress=progress, desc=desc)
    parts: dict[str, list] = {s: [] for s in selections}
    cfs: dict[str, list] = {s: [] for s in selections}
    notes: list[str] = []
    for res in results:
        for n in res["notes"]:
            if n not in notes:
                notes.append(n)
        for sel in selections:
            cols, cf = res["results"][sel]
            parts[sel].append(cols)
            cfs[sel].append(cf)
    return {sel: {"columns": concat_columns(parts[sel]), "cutflow": merge_cutflows(cfs[sel]), "notes": notes}
            for sel in selections}


# ---------------------------------------------------------------------------------------------
# the chapter-01 skims from the universe manifest

def load_manifest(profile: str) -> dict[str, Any]:
    """The chapter-00 manifest ``results/<profile>/00_universe/manifest.json`` (its format is the
    contract between the chapters, DEVELOPING.md; the engine does not import the universe)."""
    path = universe_dir(profile) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no universe manifest at {path}: run chapter 00 first "
                                f"(`wmnb run --profile {profile} --only 00_universe`)")
    return read_json(path)


def effective_lumi_pb(manifest: dict[str, Any]) -> float:
    """Integrated luminosity the generated data correspond to: ``lumi_pb × events_scale``
    (a profile generates the fraction ``events_scale`` of the paper's statistics), unless the
    manifest states it directly as ``data_lumi_pb``."""
    if "data_lumi_pb" in manifest:
        return float(manifest["data_lumi_pb"])
    return float(manifest["lumi_pb"]) * float(manifest.get("events_scale", 1.0))


def sample_plan(profile: str, manifest: dict[str, Any] | None = None,
                selections: Sequence[str] = SELECTIONS) -> list[dict[str, Any]]:
    """Which files each skim sample reads: ``[{"sample", "files", "norm", "selections"}]``."""
    man = load_manifest(profile) if manifest is None else manifest
    root = universe_dir(profile)
    lumi = effective_lumi_pb(man)
    plan = []
    for proc, info in man.get("mc", {}).items():
        onia = info.get("stream") in ONIA_STREAMS if "stream" in info else proc in ONIA_PROCESSES
        sels = [s for s in selections if (s in ONIA_SELECTIONS) == onia]
        if not sels:
            continue
        sumw = float(info["sumw"])
        if not sumw > 0:
            raise ValueError(f"manifest of profile {profile!r}: process {proc!r} has sum of weights {sumw}")
        plan.append({"sample": proc, "files": [str(root / f) for f in info["files"]],
                     "norm": float(info["xsec_pb"]) * lumi / sumw, "selections": sels})
    for kind in ("data", "closure"):
        streams = man.get(kind, {})
        for onia in (False, True):
            sels = [s for s in selections if (s in ONIA_SELECTIONS) == onia]
            files = [str(root / f) for st, info in sorted(streams.items())
                     if (st in ONIA_STREAMS) == onia for f in info["files"]]
            if sels and files:
                plan.append({"sample": kind, "files": files, "norm": 1.0, "selections": sels})
    return plan


def make_skims(profile: str, *, executor: str = "local", scheduler: str | None = None,
               selections: Sequence[str] = SELECTIONS, step: int = DEFAULT_STEP, progress: bool = True,
               nonfinite: str = "error", manifest: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Run every selection on every sample of the profile's universe and write the skims.

    Returns ``{selection: {sample: {"n_rows", "cutflow", "notes", "size_bytes"}}}`` (also
    written to ``skims/index.json``).  The ``skims/`` directory is replaced atomically.
    """
    man = load_manifest(profile) if manifest is None else manifest
    plan = sample_plan(profile, man, selections=selections)
    if not plan:
        raise ValueError(f"the universe manifest of profile {profile!r} lists no samples")
    index: dict[str, dict[str, Any]] = {s: {} for s in selections}
    with _ClientScope(executor, scheduler) as client:
        with atomic_dir(skims_dir(profile)) as tmp:
            for item in plan:
                res = run_selections(item["files"], item["selections"], norm=item["norm"], step=step,
                                     executor=executor, client=client, progress=progress,
                                     nonfinite=nonfinite, desc=f"{item['sample']}")
                for sel, r in res.items():
                    out = Path(tmp) / sel / f"{item['sample']}.root"
                    if item["sample"] in ("data", "closure") and out.exists():
                        raise RuntimeError(f"two inputs for {out}")
                    write_skim(out, r["columns"])
                    n_rows = len(r["columns"]["weight"])
                    doc = {"selection": sel, "sample": item["sample"], "n_rows": n_rows,
                           "cutflow": r["cutflow"], "notes": r["notes"], "norm": item["norm"],
                           "files": [os.path.relpath(f, universe_dir(profile)) for f in item["files"]]}
                    write_json(out.with_suffix(".cutflow.json"), doc)
                    index[sel][item["sample"]] = {"n_rows": n_rows, "cutflow": r["cutflow"], "notes": r["notes"],
                                                  "size_bytes": out.stat().st_size}
            write_json(Path(tmp) / "index.json", {"profile": profile, "lumi_pb": effective_lumi_pb(man),
                                                  "selections": index})
    return index


class _ClientScope:
    """Open one Dask client for all samples of :func:`make_skims` (nothing for ``local``)."""

    def __init__(self, executor: str, scheduler: str | None) -> None:
        self.executor, self.scheduler, self._cm = executor, scheduler, None

    def __enter__(self) -> Any:
        if self.executor != "dask":
            return None
        from .executors import dask_client

        self._cm = dask_client(self.scheduler)
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)


def skim_index(profile: str) -> dict[str, Any]:
    """``skims/index.json`` written by :func:`make_skims`."""
    return read_json(skims_dir(profile) / "index.json")


__all__ = ["skims_dir", "skim_path", "read_skim", "read_skim_file", "read_cutflow", "list_skim_samples",
           "write_skim", "run_selections", "make_skims", "sample_plan", "skim_index", "NanoAODError",
           "Cutflow"]


def mc_lumi_scale(profile: str, selection: str = "w", reference: str | None = None) -> float:
    """Factor taking a selection's skimmed MC weights to the luminosity of the profile's data.

    Chapter 01 normalises simulation to the full ``lumi_pb`` of the manifest, while the data of
    a profile correspond to ``lumi_pb × events_scale``.  The skim's recorded ``norm`` tells which
    convention a skim follows, so this keeps working if chapter 01 starts to fold the scale in.
    """
    reference = reference or ("wplus_munu" if selection == "w" else "z_mumu")
    man = load_manifest(profile)
    scale = float(man.get("events_scale", 1.0))
    info = man["mc"][reference]
    norm = float(read_cutflow(profile, selection, reference)["norm"])
    full = float(info["xsec_pb"]) * float(man["lumi_pb"]) / float(info["sumw"])
    if np.isclose(norm, full, rtol=1e-3):
        return scale
    if np.isclose(norm, full * scale, rtol=1e-3):
        return 1.0
    raise ValueError(f"profile {profile!r}: the {selection} skim's MC norm {norm} matches neither xsec*lumi/sumw = {full} "
                     f"nor that times events_scale = {full * scale}; check chapters 00/01")
