"""The artefact store: atomic writes, ``summary.json`` files and exact histogram I/O.

Rules (see DESIGN.md, "Artefacts and the runner"):

* every file is written to a temporary name in the same directory and renamed into place, so a
  crash never leaves a half-written file that a later chapter would trust;
* scalars go to JSON with a schema version, histograms to HDF5 with their axes, storage,
  variances and metadata; nothing is pickled.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .signals import TerminationGuard

SCHEMA_VERSION = 1
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter before 3.13)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _respect_umask(path: Path, mode: int) -> None:
    """``tempfile`` creates files 0600 and directories 0700 whatever the umask; give artefacts
    the permissions an ordinary ``open``/``mkdir`` would, so a shared results directory stays
    readable to colleagues."""
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file keeps the target's suffix (``.h5``, ``.root`` ...) so libraries that
    look at extensions behave.  On any exception the temporary file is removed and ``path`` is
    left untouched (the previous version, if any, survives).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=(suffix if suffix is not None else path.suffix) + ".tmp",
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    _respect_umask(tmp_path, 0o666)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _host_tag() -> str:
    """This machine's name, reduced to characters that cannot clash with the name's dots."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _stale_pattern(name: str) -> re.Pattern[str]:
    """Names of :func:`atomic_dir`'s temporary (``.tmp``) and swapped-out (``.old``) folders."""
    return re.compile(rf"^\.{re.escape(name)}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{{8}}\.(tmp|old)$")


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OverflowError:
        return False  # not a possible pid
    return True


def remove_stale_dirs(parent: str | os.PathLike, name: str) -> list[Path]:
    """Delete the temporary folders that :func:`atomic_dir` made for ``parent/name`` and whose
    owner is gone (SIGKILL, power loss: no clean-up ran).

    Only names of exactly that pattern are touched, only those made on this host (a pid means
    nothing on another machine sharing the disk), never our own pid's, and only when that pid
    is no longer alive; returns what was removed.  A reused pid only keeps a leftover longer."""
    import logging
    import shutil

    pattern, host, removed = _stale_pattern(name), _host_tag(), []
    try:
        entries = list(Path(parent).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in sorted(entries):
        m = pattern.match(entry.name)
        if not m or m["host"] != host or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
            logging.getLogger("wmnb").warning("removed %s, left by an interrupted run (process %d is gone)", entry, pid)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, guard: TerminationGuard | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; swap it onto ``path`` whole if the
    block succeeds, delete it if the block raises (Ctrl-C and SIGTERM included).

    An existing directory at ``path`` is replaced as a whole, so readers see either the old or
    the new complete content, never a mixture; if the second rename fails the old content is
    put back.  The temporary names carry host and pid, so :func:`remove_stale_dirs` can delete
    the leftovers of runs that died without cleaning up while leaving those of live runs alone.
    With a ``guard`` (:class:`wmnb.signals.TerminationGuard`) SIGTERM is held back during the
    two renames, so that ``path`` is never left moved aside.
    """
    import secrets
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = f"{_host_tag()}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp = path.with_name(f".{path.name}.{owner}.tmp")
    old = path.with_name(f".{path.name}.{owner}.old")
    tmp.mkdir()
    _respect_umask(tmp, 0o777)
    try:
        yield tmp
        with (guard.deferred() if guard is not None else contextlib.nullcontext()):
            if path.exists():
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                if old.exists() and not path.exists():
                    os.replace(old, path)  # put the previous content back
                raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and path.exists():
            shutil.rmtree(old, ignore_errors=True)  # the swap happened: the old content is obsolete
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    raise TypeError(f"cannot store object of type {type(obj).__name__} in JSON: {obj!r}")


def _finite_or_none(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as null so every reader can parse the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically. Numpy scalars/arrays are converted."""
    text = json.dumps(
        _finite_or_none(json.loads(json.dumps(data, default=_json_default))), indent=2,
        sort_keys=False,
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON artefact with a clear error if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"artefact {path} does not exist: run the chapter that writes it first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"artefact {path} is not valid JSON ({err}); delete it and rerun its chapter") from err


def package_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour shapes the results."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("wmnb", "numpy", "scipy", "awkward", "uproot", "hist", "boost-histogram",
                 "iminuit", "tensorflow-cpu", "tensorflow", "xgboost-cpu", "xgboost", "h5py"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def file_digest(path: str | os.PathLike, algo: str = "sha256") -> str:
    """Hex digest of a file's bytes (streamed, for large files)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_summary(
    chapter_dir: str | os.PathLike,
    headline: Mapping[str, Any],
    parameters: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<chapter_dir>/summary.json``: the chapter's headline numbers plus provenance.

    ``headline`` holds the numbers that tests and the results page read (flat keys; values
    numbers, strings, booleans or small dicts).  ``parameters`` are the notebook parameters,
    ``inputs`` maps input artefact names to their hashes.  Versions and a timestamp are added.
    """
    chapter_dir = Path(chapter_dir)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "chapter": chapter_id_of(chapter_dir),
        "headline": dict(headline),
        "parameters": dict(parameters or {}),
        "inputs": dict(inputs or {}),
        "versions": package_versions(),
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        doc.update(extra)
    return write_json(chapter_dir / "summary.json", doc)


def chapter_id_of(chapter_dir: Path) -> str:
    """The chapter id a directory belongs to: its name, or for the runner's staging directory
    (``.<id>.staging``) the chapter being run."""
    from .paths import STAGE_ENV

    stage = os.environ.get(STAGE_ENV)
    if stage:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            info = json.loads(stage)
            if Path(info["dir"]).resolve() == chapter_dir.resolve():
                return str(info["chapter"])
    name = chapter_dir.name
    if name.startswith(".") and name.endswith(".staging"):
        return name[1:-len(".staging")]
    return name


def read_summary(chapter_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``<chapter_dir>/summary.json`` (see :func:`write_summary`)."""
    return read_json(Path(chapter_dir) / "summary.json")
