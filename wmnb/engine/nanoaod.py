"""Reading NanoAOD(-like) files: clear errors, version differences, chunks as flat arrays.

The synthetic files of chapter 00 and real CMS NanoAOD share branch names but differ in places
(see DEVELOPING.md, "The samples").  This module hides the differences behind one object, a
:class:`Chunk` (a range of entries of one file) that hands out scalar branches as numpy arrays
and collections (``Muon``, ``Electron``, ``GenPart``, ``TrigObj``) as flat numpy arrays plus
offsets, which the selections turn into columns with vectorised numpy.

Branch names across NanoAOD versions (v9 to v15), in one place (:data:`MET_NAMING`): the
selections use the PF missing transverse momentum, read from ``MET_pt`` / ``MET_phi`` (NanoAOD
up to v14 and the synthetic files) or, where those are absent, from ``PFMET_pt`` / ``PFMET_phi``
(NanoAOD v15 renamed ``MET_*`` to ``PFMET_*``).  Whichever pair is read, the chunk hands it out
as ``MET_pt`` / ``MET_phi`` (and its scalar sum ``PFMET_sumEt`` as ``MET_sumEt``).  The
track-only and PUPPI METs (``TkMET_*``, ``PuppiMET_*``), the scalar sums and ``PV_nCharged``
(non-NanoAOD) are read where present, as recoil-calibration features stored in the skims (NaN, or
-1 for ``PV_nCharged``, where absent); no cut uses them.  Other flavours
(``DeepMETResolutionTune_*``, ``RawMET_*`` ...) are never read.  Integer widths
(``uint8``/``int16``/``uint32`` counters and flags of newer versions) do not matter.

What happens with differences and bad input (every message names the file, and the branch
where there is one):

* missing file, a directory, an unreadable, empty or non-ROOT file, no ``Events`` TTree:
  :class:`NanoAODError` (:class:`FileNotFoundError` for a missing file) saying what to do;
* a truncated or damaged file: :class:`NanoAODError`.  Checked on opening: the file is as
  long as its ROOT header says (``fEND``), and the records at its end (class descriptions,
  free-segment list) are readable; checked on reading: every basket of every branch read lies
  inside the file, the baskets of each branch hold the tree's number of entries, and each
  array read has one entry per event;
* the same file given twice (also through a symlink, a hard link, another relative path or a
  byte copy with the same ROOT file UUID): :class:`NanoAODError` (:func:`check_distinct`),
  because its events would be counted twice;
* a missing *required* branch: :class:`NanoAODError` naming the file, the branch and the
  selection that needs it; a branch with a list per event where one value is expected (or
  the other way round): :class:`NanoAODError`;
* a missing *optional* branch gets a documented fallback and a note in the chunk's ``notes``
  (shown in the cutflow): ``Muon_triggerMatch`` -> ΔR < 0.3 match to a ``TrigObj`` muon (or
  "no matching" if ``TrigObj`` is absent too), ``Muon_svMatched`` -> False, a missing
  single-muon trigger path -> False (at least one path must exist), ``L1PreFiringWeight_*`` -> 1,
  ``PV_npvsGood`` -> ``PV_npvs``, ``GenV_*`` -> the boson found in ``GenPart`` (Collins-Soper
  angles then NaN);
* counter types (``nMuon`` as uint32 or int32) do not matter: offsets come from the jagged arrays;
  booleans stored as integers are converted;
* NaN/inf in *any* floating-point branch a selection reads (scalars and every field of the
  collections): :class:`NanoAODError` naming file, branches, counts and the first entry
  (``nonfinite="error"``, the default), or the events holding them are dropped and counted in
  the cutflow step ``finite inputs`` (``nonfinite="skip"``);
* zero entries: an empty chunk list, selections return empty columns of the right types.
"""
from __future__ import annotations

import glob
import json
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
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

# Collections: branches ``<prefix>_<field>`` with a list per event.  The LHE weight vectors are
# one-branch collections of their own.
COLLECTIONS = ("Muon", "Electron", "GenPart", "TrigObj")
WEIGHT_VECTORS = ("LHEScaleWeight", "LHEPdfWeight")

MET = ("MET_pt", "MET_phi")
"""The names under which a :class:`Chunk` hands out the PF MET, whatever the file calls it."""

MET_NAMING: tuple[tuple[str, str, str], ...] = (
    ("MET_pt", "MET_phi", "NanoAOD v9-v14 and the synthetic files"),
    ("PFMET_pt", "PFMET_phi", "NanoAOD v15 (MET_* renamed PFMET_*)"),
)
"""The PF MET branch pair of each NanoAOD naming, in order of preference: the first pair a file
has completely is read.  PUPPI and other MET flavours are deliberately not in the list."""


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


def check_input_path(path: str | os.PathLike) -> None:
    """Fail unless ``path`` is a readable, non-empty regular file starting like a ROOT file.

    A missing file raises :class:`FileNotFoundError`, everything else :class:`NanoAODError`."""
    path = str(path)
    p = Path(path)
    if p.is_dir():
        n_root = len(glob.glob(os.path.join(glob.escape(path), "*.root")))
        raise NanoAODError(f"{path} is a directory, not a NanoAOD file: give the files in it, e.g. "
                           f"{os.path.join(path, '*.root')} ({n_root} .root file(s) there)")
    if not p.exists():
        hint = ("; the name contains a wildcard that matched no file (the shell passes an unmatched "
                "pattern on unchanged)" if any(c in path for c in "*?[") else
                ": check the path (or run chapter 00 to generate the samples)")
        raise FileNotFoundError(f"NanoAOD file {path} does not exist{hint}")
    if not p.is_file():
        raise NanoAODError(f"{path} is not a regular file (a device, socket or pipe?): give a NanoAOD ROOT file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise NanoAODError(f"{path} cannot be read ({err.strerror or err}): check its permissions") from err
    if not magic:
        raise NanoAODError(f"{path} is empty (0 bytes): regenerate or re-download it")
    if magic != b"root":
        raise NanoAODError(f"{path} is not a ROOT file (it starts with {magic!r}, a ROOT file with b'root'); "
                           "give NanoAOD ROOT files")


def _open_tree(path: str, tree: str) -> Any:
    check_input_path(path)
    try:
        f = uproot.open(path)
    except Exception as err:  # uproot raises several types for truncated/corrupt files
        raise NanoAODError(f"{path} cannot be opened as a ROOT file ({type(err).__name__}: {err}); "
                           "it is probably truncated or corrupt: regenerate or re-download it") from err
    check_file_end(path, f)
    try:
        keys = {k.split(";")[0] for k in f.keys(recursive=False)}
    except Exception as err:
        raise NanoAODError(f"{path}: the ROOT directory cannot be read ({err}); "
                           "the file is corrupt: regenerate it") from err
    if tree not in keys:
        raise NanoAODError(f"{path} has no TTree {tree!r} (it holds {sorted(keys)}); is it a NanoAOD file?")
    try:
        obj = f[tree]
    except Exception as err:
        raise NanoAODError(f"{path}: TTree {tree!r} cannot be read ({err}); "
                           "the file is corrupt: regenerate it") from err
    if not isinstance(obj, uproot.behaviors.TTree.TTree):
        kind = getattr(obj, "classname", type(obj).__name__)
        raise NanoAODError(f"{path}: {tree!r} is a {kind}, not a TTree; is it a NanoAOD file?")
    return obj


def check_file_end(path: str, f: Any) -> None:
    """Fail if the file is shorter than its ROOT header says or its last records are unreadable.

    uproot reads only what it needs, so a file cut short behind the last basket of ``Events``
    (where ROOT and uproot put the ``Runs`` tree, the class descriptions and the free-segment
    list) would otherwise be read without complaint."""
    size = os.path.getsize(path)
    end = int(f.file.fEND)
    if size < end:
        raise NanoAODError(f"{path} is truncated: it has {size} bytes but its ROOT header says {end} "
                           f"({end - size} missing); regenerate or re-download it")
    seek_free, n_free = int(f.file.fSeekFree), int(f.file.fNbytesFree)
    if seek_free > 0 and n_free > 0:
        # the free-segment record is written when the file is closed; its key starts with its length
        with open(path, "rb") as fh:
            fh.seek(seek_free)
            head = fh.read(4)
        if len(head) < 4 or struct.unpack(">i", head)[0] != n_free:
            raise NanoAODError(f"{path}: the end of the file is damaged (its free-segment record at byte "
                               f"{seek_free} is not where the header says); regenerate or re-download it")
    try:
        _ = f.file.streamers   # the class descriptions near the end of the file
    except Exception as err:
        raise NanoAODError(f"{path}: the end of the file is damaged (the class descriptions cannot be read: "
                           f"{type(err).__name__}); it is truncated or corrupt: regenerate or re-download it") from err


def check_distinct(files: Iterable[str | os.PathLike]) -> None:
    """Fail if two entries of ``files`` are the same file (same resolved path or inode: symlinks,
    hard links, other relative paths) or byte copies of one ROOT file (same file UUID, which
    ROOT draws anew for every file it writes): their events would be counted twice.

    Files that do not exist are skipped here and reported by :func:`open_tree`."""
    seen: dict[tuple[str, Any], str] = {}
    for f in map(str, files):
        try:
            st = os.stat(f)
        except OSError:
            continue
        keys: list[tuple[str, Any]] = [("path", os.path.realpath(f))]
        if st.st_ino:   # 0 where the file system has no inode numbers
            keys.append(("inode", (st.st_dev, st.st_ino)))
        uuid = str(open_tree(f).file.uuid)
        if set(uuid) - {"0", "-"}:   # a nil UUID says nothing
            keys.append(("uuid", uuid))
        for key in keys:
            if key in seen:
                how = ("are copies of the same ROOT file (same file UUID)" if key[0] == "uuid"
                       else f"are the same file ({os.path.realpath(f)})")
                raise NanoAODError(f"input files {seen[key]} and {f} {how}: give each file once, "
                                   "otherwise its events are counted twice")
        for key in keys:
            seen[key] = f


def num_entries(path: str | os.PathLike) -> int:
    """Number of events in ``path`` (0 for an empty file)."""
    return int(open_tree(path).num_entries)


def runs_sumw(path: str | os.PathLike) -> float | None:
    """Sum of generator weights from the ``Runs`` tree (``genEventSumw`` or the older
    ``genEventSumw_``), or None for data / files without it.  A ``Runs`` tree that exists
    but cannot be read is a :class:`NanoAODError` (a silent fallback would change the
    normalisation)."""
    open_tree(path)   # the checks of the file as a whole, with their messages
    try:
        root = uproot.open(str(path))
        if "Runs" not in {k.split(";")[0] for k in root.keys(recursive=False)}:
            return None
        runs = root["Runs"]
        for name in ("genEventSumw", "genEventSumw_"):
            if name in runs.keys():
                return float(np.sum(runs[name].array(library="np")))
    except Exception as err:
        raise NanoAODError(f"{path}: the Runs tree cannot be read ({type(err).__name__}: {err}); "
                           "the file is corrupt: regenerate or re-download it") from err
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
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step <= 0:
        raise ValueError(f"chunk size (step) must be a positive number of events, got {step!r}")
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


def check_baskets(path: str, tree: Any, names: Sequence[str], size: int | None = None) -> None:
    """Fail unless every basket of the branches ``names`` lies inside the file (``size`` bytes,
    default: its size on disk) and the baskets of each branch hold the tree's entries.

    Uses only the branch metadata (no basket is read): seek and length of every basket
    written to the file, the entry ranges of the baskets."""
    size = os.path.getsize(path) if size is None else int(size)
    n_tree = int(tree.num_entries)
    for name in names:
        b = tree[name]
        try:
            n_branch = int(b.entry_offsets[-1])   # uproot checks normal + embedded baskets add up
        except Exception as err:
            raise NanoAODError(f"{path}: the baskets of branch {name!r} are inconsistent ({err}); "
                               "the file is corrupt: regenerate or re-download it") from err
        if n_branch != n_tree or b.num_entries != n_tree:
            raise NanoAODError(f"{path}: branch {name!r} holds {n_branch} entries but tree {TREE} has {n_tree}; "
                               "the file is truncated or inconsistent: regenerate or re-download it")
        seek = np.asarray(b.member("fBasketSeek"), np.int64)
        nbytes = np.asarray(b.member("fBasketBytes"), np.int64)
        # baskets on disk: as uproot counts them, up to fWriteBasket or the first zero seek
        n_disk = min(int(b.member("fWriteBasket")), seek.size)
        zero = np.flatnonzero(seek[:n_disk] == 0)
        n_disk = int(zero[0]) if zero.size else n_disk
        ends = seek[:n_disk] + nbytes[:n_disk]
        beyond = np.flatnonzero(ends > size)
        if beyond.size:
            i = int(beyond[0])
            raise NanoAODError(f"{path}: basket {i} of branch {name!r} (bytes {seek[i]}-{ends[i]}) lies beyond the "
                               f"end of the file ({size} bytes): the file is truncated; regenerate or re-download it")


def load_chunk(path: str, start: int, stop: int, branches: list[str], *,
               optional: tuple[str, ...] = (), nonfinite: str = "error",
               tree: Any = None) -> Chunk:
    """Load ``branches`` (all required) and ``optional`` ones (where present) for entries
    ``[start, stop)`` of ``path``.  Collections are recognised by their ``<Name>_`` prefix.
    A PF MET read under its NanoAOD v15 name is handed out as ``MET_pt`` / ``MET_phi``."""
    if nonfinite not in ("error", "skip"):
        raise ValueError(f"nonfinite must be 'error' or 'skip', got {nonfinite!r}")
    t = open_tree(path) if tree is None else tree
    available = set(t.keys())
    missing = [b for b in branches if b not in available]
    if missing:
        raise NanoAODError(f"{path}: required branch(es) {missing} missing from tree {TREE}; "
                           "the file is not NanoAOD-like enough for this selection")
    wanted = list(dict.fromkeys(list(branches) + [b for b in optional if b in available]))
    check_baskets(path, t, wanted)
    try:
        arrays = t.arrays(wanted, entry_start=start, entry_stop=stop, how=dict)
    except Exception as err:
        raise NanoAODError(f"{path}: reading entries {start}-{stop} of branches {wanted} failed "
                           f"({type(err).__name__}: {err}); the file is probably truncated or corrupt") from err
    is_mc = "genWeight" in available
    scalars: dict[str, np.ndarray] = {}
    coll_raw: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for name, arr in arrays.items():
        _check_shape(path, name, arr, stop - start)
        if arr.ndim == 1:
            scalars[name] = ak.to_numpy(arr)
            continue
        prefix, _, fld = name.partition("_")
        if name.startswith(WEIGHT_VECTORS):
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
    _check_finite(chunk, nonfinite)   # before the MET renaming: messages name the file's branches
    _canonical_met(chunk)
    return chunk


def _check_shape(path: str, name: str, arr: Any, n: int) -> None:
    """One entry per event, a list per event for collection branches, one value otherwise."""
    if len(arr) != n:
        raise NanoAODError(f"{path}: branch {name!r} gave {len(arr)} entries for {n} events; "
                           "the file is truncated or corrupt: regenerate or re-download it")
    is_list = name.startswith(WEIGHT_VECTORS) or name.partition("_")[0] in COLLECTIONS
    if is_list and arr.ndim == 1:
        raise NanoAODError(f"{path}: branch {name!r} holds one value per event, but a list per event "
                           f"(collection {name.partition('_')[0]}) is expected; is it a NanoAOD file?")
    if not is_list and arr.ndim != 1:
        raise NanoAODError(f"{path}: branch {name!r} holds a list per event, but one value per event is "
                           "expected; is it a NanoAOD file?")


def _float_arrays(chunk: Chunk) -> Iterator[tuple[str, np.ndarray, Collection | None]]:
    """(branch name, values, collection or None for scalars) of every floating-point array."""
    for name, values in chunk.scalars.items():
        if values.dtype.kind == "f":
            yield name, values, None
    for prefix, coll in chunk.collections.items():
        for fld, values in coll.fields.items():
            if values.dtype.kind == "f":
                yield (prefix if prefix in WEIGHT_VECTORS else f"{prefix}_{fld}"), values, coll


def _check_finite(chunk: Chunk, policy: str) -> None:
    """NaN/inf in any floating-point branch loaded: raise (``error``) or mark the events (``skip``)."""
    bad = np.zeros(chunk.n, dtype=bool)
    found: list[tuple[str, int, int]] = []   # (branch, non-finite values, first entry)
    for name, values, coll in _float_arrays(chunk):
        nonfin = ~np.isfinite(values)
        if not nonfin.any():
            continue
        events = np.flatnonzero(nonfin) if coll is None else np.unique(coll.event[nonfin])
        found.append((name, int(nonfin.sum()), chunk.start + int(events[0])))
        bad[events] = True
    if not found:
        return
    listing = ", ".join(f"{name!r} ({count})" for name, count, _ in found)
    if policy == "error":
        name, count, first = found[0]
        also = f"; also in {', '.join(repr(n) for n, _, _ in found[1:])}" if len(found) > 1 else ""
        raise NanoAODError(
            f"{chunk.path}: branch {name!r} holds {count} non-finite value(s) (first in entry {first}){also}; "
            f"{int(bad.sum())} event(s) of entries {chunk.start}-{chunk.stop} affected, non-finite values per "
            f"branch: {listing}; fix the file or select with nonfinite='skip' (--nonfinite skip) to drop such events")
    chunk.valid = ~bad
    chunk.notes.append(f"{int(bad.sum())} event(s) with non-finite inputs dropped ({listing})")


def _canonical_met(chunk: Chunk) -> None:
    """Hand out the PF MET as ``MET_pt`` / ``MET_phi`` when the file uses another name (v15)."""
    if MET[0] in chunk.scalars:
        return
    for pt, phi, what in MET_NAMING:
        if pt in chunk.scalars and phi in chunk.scalars:
            chunk.scalars[MET[0]], chunk.scalars[MET[1]] = chunk.scalars.pop(pt), chunk.scalars.pop(phi)
            sumet = pt.replace("_pt", "_sumEt")
            if sumet in chunk.scalars and "MET_sumEt" not in chunk.scalars:
                chunk.scalars["MET_sumEt"] = chunk.scalars.pop(sumet)
            chunk.notes.append(f"MET read from {pt} / {phi}: {what}")
            return


def met_branches(available: set[str], path: str = "<input>") -> tuple[str, str]:
    """The (pt, phi) branches of the PF MET in a file with branches ``available`` (:data:`MET_NAMING`)."""
    for pt, phi, _ in MET_NAMING:
        if pt in available and phi in available:
            return pt, phi
    names = " or ".join(f"{pt}/{phi} ({what})" for pt, phi, what in MET_NAMING)
    raise NanoAODError(f"{path}: required branch(es) for the missing transverse momentum missing from tree "
                       f"{TREE}: need {names}; PUPPI and other MET flavours are not used")


def selection_branches(selection: str, available: set[str], is_mc: bool,
                       path: str = "<input>", lean: bool = False) -> tuple[list[str], tuple[str, ...]]:
    """(required, optional) branches a selection reads from a file with branches ``available``.

    ``lean=True``: only what reconstructed-level histograms need (no generator-level branches,
    no run / pile-up bookkeeping; ``event`` only for the W-like parity).  What a selection reads
    is declared in its :class:`~wmnb.engine.registry.SelectionSpec` (a derived selection reads the
    branches of the one it is built from)."""
    from .registry import get_selection

    spec = get_selection(selection).branch_source
    muon = [f"Muon_{f}" for f in MUON_REQUIRED]
    trig_obj = tuple(f"TrigObj_{f}" for f in TRIGOBJ_FIELDS)
    if lean:
        muon_opt = tuple(f"Muon_{f}" for f in spec.lean_muon_fields)
        if "Muon_triggerMatch" in available:
            trig_obj = ()
        muon = muon + (["event"] if spec.lean_event else [])
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
    trig = spec.triggers
    req = muon
    if spec.single_muon:
        met = met_branches(available, path)
        req = muon + list(met)
        opt += tuple(f"Electron_{f}" for f in ELECTRON_FIELDS if not (lean and f == "phi"))
        if not lean and spec.recoil_estimators is not None:   # the other MET estimators and features
            from .selections import RECOIL_FEATURE_BRANCHES

            opt += RECOIL_FEATURE_BRANCHES + (met[0].replace("_pt", "_sumEt"),)
        if spec.lhe and is_mc:
            opt += ("LHEScaleWeight", "LHEPdfWeight")
    present = [t for t in trig if t in available]
    if not present:
        raise NanoAODError(f"{path}: none of the trigger branches {list(trig)} needed by selection "
                           f"{selection!r} exists; is this the right stream for the selection?")
    opt += tuple(trig)
    return req, opt
