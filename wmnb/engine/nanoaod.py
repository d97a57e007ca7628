"""Reading NanoAOD(-like) files: clear errors, version differences, chunks as flat arrays.

The synthetic files of chapter 00 and real CMS NanoAOD share branch names but differ in places
(see DEVELOPING.md, "The samples").  This module hides the differences behind one object, a
:class:`Chunk` (a range of entries of one file) that hands out scalar branches as numpy arrays
and collections (``Muon``, ``Electron``, ``GenPart``, ``TrigObj``) as flat numpy arrays plus
offsets, which the selections turn into columns with vectorised numpy.

What happens with differences and bad input:

* missing file, not a ROOT file, truncated or corrupt file, no ``Events`` tree: :class:`NanoAODError`
  naming the file and what to do;
* a missing *required* branch: :class:`NanoAODError` naming the file, the branch and the
  selection that needs it;
* a missing *optional* branch gets a documented fallback and a note in the chunk's ``notes``
  (shown in the cutflow): ``Muon_triggerMatch`` -> ΔR < 0.3 match to a ``TrigObj`` muon (or
  "no matching" if ``TrigObj`` is absent too), ``Muon_svMatched`` -> False, a missing
  single-muon trigger path -> False (at least one path must exist), ``L1PreFiringWeight_*`` -> 1,
  ``PV_npvsGood`` -> ``PV_npvs``, ``GenV_*`` -> the boson found in ``GenPart`` (Collins-Soper
  angles then NaN);
* counter types (``nMuon`` as uint32 or int32) do not matter: offsets come from the jagged arrays;
  booleans stored as integers are converted;
* NaN/inf in a branch the selection uses: :class:`NanoAODError` naming file, branch and entry
  (``nonfinite="error"``, the default), or the event is dropped and counted in the cutflow step
  ``finite inputs`` (``nonfinite="skip"``);
* zero entries: an empty chunk list, selections return empty columns of the right types.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

TREE = "Events"

SINGLE_MUON_TRIGGERS = ("HLT_IsoMu24", "HLT_IsoTkMu24")
JPSI_TRIGGERS = ("HLT_Dimuon20_Jpsi",)
UPSILON_TRIGGERS = ("HLT_Dimuon13_Upsilon",)

MUON_FIELDS = ("pt", "eta", "phi", "charge", "pfRelIso04_all", "dxy", "dz", "looseId", "mediumId",
               "tightId", "isGlobal", "isTracker", "isStandalone", "triggerMatch", "svMatched",
               "genPartIdx")
MUON_REQUIRED = ("pt", "eta", "phi", "charge", "pfRelIso04_all", "dxy", "looseId", "mediumId")
ELECTRON_FIELDS = ("pt", "eta", "phi", "cutBased")
GENPART_FIELDS = ("pt", "eta", "phi", "mass", "pdgId", "status", "genPartIdxMother")
TRIGOBJ_FIELDS = ("pt", "eta", "phi", "id")
GENV = ("GenV_mass", "GenV_pt", "GenV_y", "GenV_phi", "GenV_pdgId", "GenV_cosThetaCS", "GenV_phiCS")
FLOAT_CHECKED = ("Muon_pt", "Muon_eta", "Muon_phi", "MET_pt", "MET_phi", "genWeight")


class NanoAODError(ValueError):
    """A NanoAOD input problem; the message names the file (and branch) and what to do."""


@dataclass
class Collection:
    """A jagged collection of one chunk as flat numpy arrays.

    ``offsets[i]:offsets[i+1]`` are the objects of event ``i``; ``event`` gives the event index
    of every object; ``fields`` maps short names (``pt``) to flat arrays.
    """

    offsets: np.ndarray
    fields: dict[str, np.ndarray]

    @property
    def n_events(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def event(self) -> np.ndarray:
        from .jagged import event_index

        return event_index(self.offsets)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    def __contains__(self, name: str) -> bool:
        return name in self.fields


@dataclass
class Chunk:
    """Entries ``[start, stop)`` of one file's ``Events`` tree, loaded into memory."""

    path: str
    start: int
    stop: int
    is_mc: bool
    scalars: dict[str, np.ndarray]
    collections: dict[str, Collection]
    notes: list[str] = field(default_factory=list)
    valid: np.ndarray | None = None   # events with finite inputs (nonfinite="skip")

    @property
    def n(self) -> int:
        return self.stop - self.start

    def has(self, name: str) -> bool:
        return name in self.scalars

    def get(self, name: str, default: Any = None, dtype: Any = None) -> np.ndarray:
        """Scalar branch ``name``; ``default`` (broadcast) when absent, else a NanoAODError."""
        if name in self.scalars:
            arr = self.scalars[name]
        elif default is not None:
            arr = np.full(self.n, default)
        else:
            raise NanoAODError(f"{self.path}: branch {name!r} is required but missing from tree {TREE}")
        return arr.astype(dtype, copy=False) if dtype is not None else arr


_TREE_CACHE: dict[tuple[str, str], tuple[tuple[int, int], Any]] = {}


def open_tree(path: str | os.PathLike, tree: str = TREE) -> Any:
    """Open ``path`` and return its ``tree`` with clear errors for every way this can fail.

    Trees are cached per process (keyed by path, size and modification time), because reading
    the metadata of a NanoAOD tree costs as much as decompressing a chunk of a few branches."""
    path = str(path)
    try:
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None
    cached = _TREE_CACHE.get((path, tree))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    t = _open_tree(path, tree)
    if stamp is not None:
        if len(_TREE_CACHE) > 64:
            _TREE_CACHE.clear()
        _TREE_CACHE[(path, tree)] = (stamp, t)
    return t


def _open_tree(path: str, tree: str) -> Any:
    if not Path(path).is_file():
        raise FileNotFoundError(f"NanoAOD file {path} does not exist: check the path (or run chapter 00 to generate the samples)")
    try:
        f = uproot.open(path)
    except Exception as err:  # uproot raises several types for truncated/corrupt files
        raise NanoAODError(f"{path} cannot be opened as a ROOT file ({type(err).__name__}: {err}); "
                           "it is probably truncated or corrupt: regenerate or re-download it") from err
    try:
        keys = {k.split(";")[0] for k in f.keys(recursive=False)}
    except Exception as err:
        raise NanoAODError(f"{path}: the ROOT directory cannot be read ({err}); the file is corrupt: regenerate it") from err
    if tree not in keys:
        raise NanoAODError(f"{path} has no TTree {tree!r} (it holds {sorted(keys)}); is it a NanoAOD file?")
    try:
        return f[tree]
    except Exception as err:
        raise NanoAODError(f"{path}: TTree {tree!r} cannot be read ({err}); the file is corrupt: regenerate it") from err


def num_entries(path: str | os.PathLike) -> int:
    """Number of events in ``path`` (0 for an empty file)."""
    return int(open_tree(path).num_entries)


def runs_sumw(path: str | os.PathLike) -> float | None:
    """Sum of generator weights from the ``Runs`` tree (``genEventSumw`` or the older
    ``genEventSumw_``), or None for data / files without it."""
    try:
        runs = uproot.open(str(path))["Runs"]
    except Exception:
        return None
    for name in ("genEventSumw", "genEventSumw_"):
        if name in runs.keys():
            return float(np.sum(runs[name].array(library="np")))
    return None


def provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The ``wmnb_provenance`` JSON string of a synthetic file ({} for real NanoAOD)."""
    try:
        f = uproot.open(str(path))
        if "wmnb_provenance" in f:
            return json.loads(str(f["wmnb_provenance"]))
    except Exception:
        pass
    return {}


def plan_chunks(path: str | os.PathLike, step: int) -> list[tuple[str, int, int]]:
    """Split a file into ``(path, start, stop)`` entry ranges of at most ``step`` events."""
    if step <= 0:
        raise ValueError(f"chunk size must be positive, got {step}")
    n = num_entries(path)
    if n == 0:
        return []
    # equal-sized chunks (no small remainder chunk that pays the per-chunk overheads)
    n_chunks = -(-n // step)
    size = -(-n // n_chunks)
    return [(str(path), s, min(s + size, n)) for s in range(0, n, size)]


def _flat(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """(content, offsets starting at 0) of a one-level jagged awkward array."""
    layout = ak.to_layout(arr)
    if isinstance(layout, ak.contents.ListOffsetArray):
        offsets = np.asarray(layout.offsets.data).astype(np.int64)
        inner = layout.content
        content = (np.asarray(inner.data) if isinstance(inner, ak.contents.NumpyArray)
                   else ak.to_numpy(ak.Array(inner)))
        content = content[offsets[0]:offsets[-1]]
        return content, offsets - offsets[0]
    # ListArray / RegularArray etc.: let awkward do it
    counts = ak.to_numpy(ak.num(arr, axis=1)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return ak.to_numpy(ak.flatten(arr, axis=1)), offsets


def load_chunk(path: str, start: int, stop: int, branches: list[str], *,
               optional: tuple[str, ...] = (), nonfinite: str = "error",
               tree: Any = None) -> Chunk:
    """Load ``branches`` (all required) and ``optional`` ones (where present) for entries
    ``[start, stop)`` of ``path``.  Collections are recognised by their ``<Name>_`` prefix."""
    if nonfinite not in ("error", "skip"):
        raise ValueError(f"nonfinite must be 'error' or 'skip', got {nonfinite!r}")
    t = open_tree(path) if tree is None else tree
    available = set(t.keys())
    missing = [b for b in branches if b not in available]
    if missing:
        raise NanoAODError(f"{path}: required branch(es) {missing} missing from tree {TREE}; "
                           "the file is not NanoAOD-like enough for this selection")
    wanted = list(dict.fromkeys(list(branches) + [b for b in optional if b in available]))
    try:
        arrays = t.arrays(wanted, entry_start=start, entry_stop=stop, how=dict)
    except Exception as err:
        raise NanoAODError(f"{path}: reading entries {start}-{stop} of branches {wanted} failed "
                           f"({type(err).__name__}: {err}); the file is probably truncated or corrupt") from err
    is_mc = "genWeight" in available
    scalars: dict[str, np.ndarray] = {}
    coll_raw: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for name, arr in arrays.items():
        if arr.ndim == 1:
            scalars[name] = ak.to_numpy(arr)
            continue
        prefix, _, fld = name.partition("_")
        if name.startswith(("LHEScaleWeight", "LHEPdfWeight")):
            coll_raw.setdefault(name, {})["w"] = _flat(arr)
            continue
        coll_raw.setdefault(prefix, {})[fld] = _flat(arr)
    collections: dict[str, Collection] = {}
    for prefix, fields in coll_raw.items():
        offsets = None
        flat = {}
        for fld, (content, offs) in fields.items():
            if offsets is None:
                offsets = offs
            elif len(offs) != len(offsets) or not np.array_equal(offs, offsets):
                raise NanoAODError(f"{path}: branch {prefix}_{fld} has a different multiplicity than the other "
                                   f"{prefix}_* branches in entries {start}-{stop}; the file is inconsistent")
            if content.dtype.kind in "iu" and fld in ("looseId", "mediumId", "tightId", "isGlobal", "isTracker",
                                                        "isStandalone", "triggerMatch", "svMatched"):
                content = content.astype(bool)   # some NanoAOD versions store flags as uint8
            flat[fld] = content
        collections[prefix] = Collection(offsets=offsets, fields=flat)
    chunk = Chunk(path=str(path), start=start, stop=stop, is_mc=is_mc, scalars=scalars,
                  collections=collections)
    _check_finite(chunk, nonfinite)
    return chunk


def _check_finite(chunk: Chunk, policy: str) -> None:
    bad = np.zeros(chunk.n, dtype=bool)
    for name in FLOAT_CHECKED:
        prefix, _, fld = name.partition("_")
        if name in chunk.scalars:
            values, event = chunk.scalars[name], None
        elif prefix in chunk.collections and fld in chunk.collections[prefix]:
            values, event = chunk.collections[prefix][fld], chunk.collections[prefix].event
        else:
            continue
        finite = np.isfinite(values)
        if finite.all():
            continue
        first = int(np.flatnonzero(~finite)[0])
        ev = first if event is None else int(event[first])
        if policy == "error":
            raise NanoAODError(
                f"{chunk.path}: branch {name!r} holds {int((~finite).sum())} non-finite value(s) (first in entry "
                f"{chunk.start + ev}); fix the file or select with nonfinite='skip' (--nonfinite skip) to drop such events")
        if event is None:
            bad |= ~finite
        else:
            bad[np.unique(event[~finite])] = True
    if bad.any():
        chunk.valid = ~bad
        chunk.notes.append(f"{int(bad.sum())} event(s) with non-finite inputs dropped")


LEAN_MUON_FIELDS = {
    "w": ("triggerMatch", "svMatched"),
    "z": ("triggerMatch", "svMatched"),
    "wlike": ("triggerMatch", "svMatched"),
    "jpsi": ("svMatched",),
    "upsilon": ("svMatched",),
    "tnp": ("triggerMatch", "svMatched", "tightId", "isGlobal", "isTracker", "isStandalone"),
}


def selection_branches(selection: str, available: set[str], is_mc: bool,
                       path: str = "<input>", lean: bool = False) -> tuple[list[str], tuple[str, ...]]:
    """(required, optional) branches a selection reads from a file with branches ``available``.

    ``lean=True``: only what reconstructed-level histograms need (no generator-level branches,
    no run / pile-up bookkeeping; ``event`` only for the W-like parity)."""
    muon = [f"Muon_{f}" for f in MUON_REQUIRED]
    trig_obj = tuple(f"TrigObj_{f}" for f in TRIGOBJ_FIELDS)
    if lean:
        muon_opt = tuple(f"Muon_{f}" for f in LEAN_MUON_FIELDS.get(selection, ()))
        if "Muon_triggerMatch" in available:
            trig_obj = ()
        muon = muon + (["event"] if selection in ("wlike", "z") else [])
        opt: tuple[str, ...] = muon_opt + trig_obj
        if is_mc:
            opt += ("genWeight", "L1PreFiringWeight_Nom", "L1PreFiringWeight_Up", "L1PreFiringWeight_Dn")
    else:
        muon_opt = tuple(f"Muon_{f}" for f in MUON_FIELDS if f not in MUON_REQUIRED)
        muon = muon + ["run", "event"]
        opt = muon_opt + trig_obj + ("luminosityBlock", "PV_npvs", "PV_npvsGood")
        if is_mc:
            opt += ("genWeight", "L1PreFiringWeight_Nom", "L1PreFiringWeight_Up", "L1PreFiringWeight_Dn",
                    "Pileup_nTrueInt") + GENV + tuple(f"GenPart_{f}" for f in GENPART_FIELDS)
        else:
            opt += ("L1PreFiringWeight_Nom",)
    if selection in ("jpsi", "upsilon"):
        trig = JPSI_TRIGGERS if selection == "jpsi" else UPSILON_TRIGGERS
        req = muon
    else:
        trig = SINGLE_MUON_TRIGGERS
        req = muon + ["MET_pt", "MET_phi"]
        opt += tuple(f"Electron_{f}" for f in ELECTRON_FIELDS if not (lean and f == "phi"))
        if selection in ("w", "z", "wlike") and is_mc:
            opt += ("LHEScaleWeight", "LHEPdfWeight")
    present = [t for t in trig if t in available]
    if not present:
        raise NanoAODError(f"{path}: none of the trigger branches {list(trig)} needed by selection "
                           f"{selection!r} exists; is this the right stream for the selection?")
    opt += tuple(trig)
    return req, opt
