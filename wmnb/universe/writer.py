"""ROOT output: NanoAOD-like ``Events`` and ``Runs`` trees written with uproot, atomically.

Collections are written from awkward record arrays, so uproot creates the ``n<Collection>``
counters (int32: uproot's counter type, where NanoAOD uses UInt_t) and the
``<Collection>_<field>`` branches.  Each file also holds ``wmnb_provenance``, a JSON string with
the card hash, seed, package version and process.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import uproot

from ..artefacts import atomic_path

COMPRESSION = {"zstd": lambda: uproot.ZSTD(1), "lz4": lambda: uproot.LZ4(1), "zlib": lambda: uproot.ZLIB(1)}


def branch_types(branches: dict[str, Any]) -> dict[str, Any]:
    """uproot ``mktree`` types of a chunk of branches (numpy dtypes or awkward types); an explicit
    ``mktree`` makes a TTree (uproot >= 5.7 would make an RNTuple on plain assignment)."""
    return {k: (v.dtype if isinstance(v, np.ndarray) else v.type) for k, v in branches.items()}


class TreeWriter:
    """Open a ROOT file at a temporary name; ``extend`` chunks of branches; ``close`` writes
    ``Runs`` and the provenance and renames the file into place."""

    def __init__(self, path: str | os.PathLike, compression: str = "zstd") -> None:
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._file = uproot.recreate(self._tmp, compression=COMPRESSION[compression]())
        self._tree = None
        self._empty: dict[str, Any] | None = None
        self.n_events = 0

    def extend(self, branches: dict[str, Any]) -> None:
        n = len(next(iter(branches.values())))
        if n == 0:
            self._empty = branches
            return
        if self._tree is None:
            self._tree = self._file.mktree("Events", branch_types(branches))
        self._tree.extend(branches)
        self.n_events += n

    def close(self, runs: dict[str, Any], provenance: dict[str, Any]) -> Path:
        if self._tree is None and self._empty is not None:
            # keep the schema even when no event survived
            self._file.mktree("Events", branch_types(self._empty))
        runs = {k: np.asarray(v) for k, v in runs.items()}
        self._file.mktree("Runs", branch_types(runs)).extend(runs)
        self._file["wmnb_provenance"] = json.dumps(provenance, sort_keys=True)
        self._file.close()
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file (the target is left untouched)."""
        try:
            self._file.close()
        finally:
            try:
                self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The ``wmnb_provenance`` JSON of a generated file."""
    with uproot.open(path) as f:
        return json.loads(str(f["wmnb_provenance"]))


def write_tree(path: str | os.PathLike, chunks: Iterable[dict[str, Any]], runs: dict[str, Any],
               provenance: dict[str, Any], compression: str = "zstd") -> int:
    """Write chunks of branches to ``path`` in one go; returns the number of events."""
    w = TreeWriter(path, compression)
    try:
        for c in chunks:
            w.extend(c)
    except BaseException:
        w.abort()
        raise
    w.close(runs, provenance)
    return w.n_events
