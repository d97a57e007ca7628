"""The chapter runner: papermill execution in dependency order, skipping, status, cleaning.

Each chapter ``<id>`` runs ``notebooks/<id>.ipynb`` with the profile's parameters and writes
``results/<profile>/<id>/``.  The runner guarantees:

* **skipping** — a chapter is *up to date* when the hash of its notebook source (code and
  markdown, not outputs), its parameters, the source of the ``wmnb`` code it uses and its inputs
  (the hashes and ``summary.json`` of the chapters it depends on; for chapter 00 also the content
  of the profile's ``truth_card``) equals the hash recorded at its last successful run;
* **no half-written results** — the notebook runs against a *staging* directory
  (``results/<profile>/.<id>.staging``; :func:`wmnb.paths.chapter_dir` points there for the
  chapter being run) that replaces the chapter directory only when the whole notebook succeeded;
* **clear failures** — a failing chapter stops the run; the error of the failing cell and the
  path of the executed notebook (kept in ``results/<profile>/.failed/<id>/``) are reported, and
  the previous results of that chapter and of every earlier chapter stay as they were.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as _dt
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artefacts import read_json, write_json
from .chapters import CHAPTERS, Chapter, dependency_order, get_chapter
from .paths import STAGE_ENV, profile_results, project_root, results_root
from .signals import TerminationGuard
from .profiles import (TRUTH_CARD_CHAPTER, ProfileError, chapter_parameters, check_name, load_profile,
                       profile_path, register_profile, truth_card_digest)

STATE_FILE = ".run.json"
#: written into every results/<profile>/ the runner creates; `wmnb clean` removes nothing else
MARKER_FILE = ".wmnb-profile.json"
#: one run (or clean) per profile at a time: flock on this file, holder's pid inside
LOCK_FILE = ".lock"
# shared core every chapter uses; the rest of the chapter's code is found from its imports
_CORE = ("artefacts.py", "histio.py", "paths.py", "profiles.py", "params.py", "style.py")
#: left-overs of an interrupted run: a staging directory, or the previous results mid-swap
_LEFTOVER = re.compile(r"\.(?P<id>.+)\.(?P<kind>staging|old)")


class ProfileLocked(RuntimeError):
    """Another ``wmnb`` process holds the profile's lock."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) arrived: unwinds like Ctrl-C so staging is moved aside, never left."""


class ChapterFailed(RuntimeError):
    """A chapter's notebook raised; carries the failing cell's error and the notebook path."""

    def __init__(self, chapter: str, error: str, notebook: Path):
        super().__init__(f"chapter {chapter} failed: {error}\n  executed notebook: {notebook}")
        self.chapter, self.error, self.notebook = chapter, error, notebook


@dataclass
class ChapterStatus:
    """State of one chapter for one profile."""

    chapter: str
    state: str                      # "up to date" | "stale" | "failed" | "never run"
    headline: dict[str, Any]
    detail: str = ""


def notebook_path(chapter: Chapter, notebooks_dir: Path | None = None) -> Path:
    """Source notebook of ``chapter``."""
    return (notebooks_dir or project_root() / "notebooks") / f"{chapter.id}.ipynb"


def available_chapters(chapters: Sequence[Chapter] | None = None,
                       notebooks_dir: Path | None = None) -> list[Chapter]:
    """Chapters whose notebook exists (the others are planned, not yet written)."""
    chapters = CHAPTERS if chapters is None else chapters
    return [c for c in chapters if notebook_path(c, notebooks_dir).is_file()]


def _notebook_source_digest(path: Path) -> str:
    """Hash of what a notebook *does*: cell types, sources and tags; outputs are ignored."""
    nb = json.loads(path.read_text())
    cells = [(c.get("cell_type"), "".join(c.get("source", [])),
              sorted(c.get("metadata", {}).get("tags", []))) for c in nb.get("cells", [])]
    return hashlib.sha256(json.dumps(cells, sort_keys=True).encode()).hexdigest()


def _python_source(text: str) -> str:
    """Notebook cell source without IPython magics and shell escapes, so ``ast`` can parse it."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in text.splitlines())


def _module_file(module: str, root: Path) -> Path | None:
    """The source file of ``wmnb.<...>`` under ``root``, or None."""
    parts = module.split(".")
    if parts[0] != "wmnb":
        return None
    base = root.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(source: str, module: str | None = None) -> set[str]:
    """Modules that ``source`` (of module ``module``, for relative imports) imports, including
    ``pkg.name`` candidates for ``from pkg import name`` (which may be a submodule)."""
    try:
        tree = ast.parse(_python_source(source))
    except SyntaxError:
        return set()
    package = None
    if module is not None:
        package = module if module.endswith(".__init__") else module.rsplit(".", 1)[0]
        package = package.removesuffix(".__init__")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and package:
                parent = package.split(".")
                parent = parent[:len(parent) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "wmnb" or m.startswith("wmnb.")}


@functools.lru_cache(maxsize=4096)
def _file_imports(path: Path, module: str, mtime_ns: int, size: int) -> frozenset[str]:
    """:func:`_imports` of a module file, parsed once per version of the file (``run`` asks for
    every chapter's hash after each chapter it runs)."""
    return frozenset(_imports(path.read_text(), module))


def _factory_modules(profile: str, chapter: Chapter) -> set[str]:
    """Modules named by the correction manifests the chapter's dependencies published: the code
    that ``wmnb.corrections.discover`` will import in this chapter (invisible to ``ast``)."""
    modules: set[str] = set()
    for dep in chapter.depends_on:
        for path in sorted((profile_results(profile) / dep / "corrections").glob("*.json")):
            with contextlib.suppress(ValueError, OSError, AttributeError, TypeError):
                modules.add(str(read_json(path).get("factory", "")).split(":")[0])
    return modules


def chapter_code_files(chapter: Chapter, notebook: Path, root: Path,
                       extra_modules: Set[str] = frozenset()) -> set[Path]:
    """Every file of ``wmnb`` the chapter runs: the shared core, what its notebook imports
    (followed through the package's own imports), the correction factories it will load, and
    the files it lists in ``Chapter.code`` (data such as truth cards)."""
    files: set[Path] = {root / "wmnb" / name for name in _CORE if (root / "wmnb" / name).is_file()}
    todo: set[str] = set(extra_modules)
    if notebook.is_file():
        nb = json.loads(notebook.read_text())
        for cell in nb.get("cells", []):
            if cell.get("cell_type") == "code":
                todo |= _imports("".join(cell.get("source", [])))
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module, root)
        if path is None:
            continue
        files.add(path)
        parts = module.split(".")
        todo.update(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run too
        name = module + (".__init__" if path.name == "__init__.py" else "")
        st = path.stat()
        todo |= _file_imports(path, name, st.st_mtime_ns, st.st_size) - seen
    for entry in chapter.code:
        target = root / entry
        if target.is_dir():
            files.update(target.rglob("*.py"))
            files.update(target.rglob("*.yaml"))
        elif target.is_file():
            files.add(target)
        elif target.with_suffix(".py").is_file():
            files.add(target.with_suffix(".py"))
    return files


def _code_digest(files: set[Path], root: Path) -> str:
    """Hash of the analysis code a chapter uses (editing the runner, the book builder or the CLI
    reruns nothing)."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _read_state(profile: str, chapter_id: str) -> dict[str, Any] | None:
    """The run record of a chapter (its failure record if the last run failed); a record that
    cannot be read is reported as ``{"status": "corrupt"}``, never trusted."""
    path = profile_results(profile) / chapter_id / STATE_FILE
    failed = profile_results(profile) / ".failed" / chapter_id / STATE_FILE
    target = failed if failed.is_file() else path if path.is_file() else None
    if target is None:
        return None
    try:
        state = read_json(target)
    except (ValueError, OSError) as err:
        return {"status": "corrupt", "error": str(err)}
    if not isinstance(state, dict) or "status" not in state:
        return {"status": "corrupt", "error": f"run record {target} lacks 'status'; rerun the chapter"}
    return state


def _output_listing(directory: Path) -> dict[str, list[int]]:
    """``{relative path: [size, mtime_ns]}`` of every file a chapter wrote (its run record
    aside): compared at every status, it shows results changed after their run (for example a
    universe overwritten in place by ``wmnb generate``)."""
    out: dict[str, list[int]] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != STATE_FILE:
            st = path.stat()
            out[str(path.relative_to(directory))] = [st.st_size, st.st_mtime_ns]
    return out


def _modified(directory: Path, recorded: dict[str, Any] | None) -> str:
    """What changed in ``directory`` since its listing was recorded ('' if nothing)."""
    if recorded is None:
        return ""
    now = _output_listing(directory)
    for name in sorted(set(recorded) | set(now)):
        if name not in now:
            return f"{name} was removed after the run"
        if name not in recorded:
            return f"{name} was added after the run"
        if list(recorded[name]) != now[name]:
            return f"{name} was changed after the run"
    return ""


def expected_hashes(profile: str, chapters: Sequence[Chapter] | None = None,
                    notebooks_dir: Path | None = None) -> dict[str, str]:
    """The hash each available chapter would have if run now (dependencies first)."""
    chapters = CHAPTERS if chapters is None else chapters
    root = project_root()
    prof = load_profile(profile, chapters)
    by_id = {c.id: c for c in chapters}
    out: dict[str, str] = {}
    for c in available_chapters(chapters, notebooks_dir):
        nb = notebook_path(c, notebooks_dir)
        h = hashlib.sha256()
        h.update(_notebook_source_digest(nb).encode())
        h.update(json.dumps(chapter_parameters(prof, c.id), sort_keys=True).encode())
        card = truth_card_digest(prof) if c.id == TRUTH_CARD_CHAPTER else None
        if card is not None:  # the content of the profile's own truth card, wherever its file lies
            h.update(f"truth_card:{card}".encode())
        # the registry file holds every chapter's record: a chapter depends on its own record
        # (and, through the hashes below, on its dependencies'), so adding or editing another
        # chapter's entry reruns nothing
        files = chapter_code_files(c, nb, root, _factory_modules(profile, c)) - {root / "wmnb" / "chapters.py"}
        h.update(_code_digest(files, root).encode())
        h.update(repr(c).encode())
        for dep in c.depends_on:
            if dep not in by_id:
                raise KeyError(f"chapter {c.id} depends on unknown chapter {dep}")
            if dep not in out:
                continue  # planned chapter without a notebook: nothing to depend on yet
            h.update(out[dep].encode())
            h.update(summary_digest(profile_results(profile) / dep / "summary.json").encode())
        out[c.id] = h.hexdigest()
    return out


#: headline keys that are timings (by the naming rule of DEVELOPING.md): they differ between
#: identical reruns, so they do not enter the downstream chapters' hashes
TIMING_KEY = re.compile(r".*(_s|_seconds|_evps|_evps_per_core)$")


def summary_digest(path: Path) -> str:
    """Hash of what a chapter's ``summary.json`` says, without its timestamp and timings: an
    upstream rerun with the same results does not make the chapters after it stale."""
    if not path.is_file():
        return "missing"
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError:
        return hashlib.sha256(raw).hexdigest()
    if not isinstance(doc, dict):
        return hashlib.sha256(raw).hexdigest()
    doc.pop("written_at", None)
    if isinstance(doc.get("headline"), dict):
        doc["headline"] = {k: v for k, v in doc["headline"].items() if not TIMING_KEY.fullmatch(k)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _summary_problem(profile: str, chapter_id: str) -> tuple[dict[str, Any], str]:
    """(headline, problem) of a chapter's ``summary.json``; problem '' when it is sound."""
    path = profile_results(profile) / chapter_id / "summary.json"
    if not path.is_file():
        return {}, "summary.json is missing"
    try:
        doc = read_json(path)
    except (ValueError, OSError) as err:
        return {}, str(err)
    if not isinstance(doc, dict) or not isinstance(doc.get("headline"), dict):
        return {}, f"{path} has no 'headline' mapping; rerun the chapter"
    return doc["headline"], ""


def _chapter_state(profile: str, c: Chapter, run_hash: str,
                   upstream: dict[str, str]) -> ChapterStatus:
    """State of one chapter given the states of the chapters before it."""
    state = _read_state(profile, c.id)
    headline, problem = _summary_problem(profile, c.id)
    if state is None:
        return ChapterStatus(c.id, "never run", headline)
    if state.get("status") == "corrupt":
        return ChapterStatus(c.id, "corrupt", {}, f"{state.get('error')}: it is rerun by `wmnb run`")
    if state.get("status") == "failed":
        return ChapterStatus(c.id, "failed", headline,
                             f"{state.get('error', '')} (see {state.get('notebook')})")
    if problem:
        return ChapterStatus(c.id, "corrupt", {}, f"{problem}: it is rerun by `wmnb run`")
    changed = _modified(profile_results(profile) / c.id, state.get("outputs"))
    if changed:
        return ChapterStatus(c.id, "modified", headline, f"{changed}: it is rerun by `wmnb run`")
    if state.get("hash") != run_hash:
        return ChapterStatus(c.id, "stale", headline)
    behind = [f"{d} ({upstream[d]})" for d in c.depends_on if upstream.get(d, "up to date") != "up to date"]
    if behind:
        return ChapterStatus(c.id, "stale", headline, f"depends on {', '.join(behind)}")
    return ChapterStatus(c.id, "up to date", headline)


def status(profile: str, chapters: Sequence[Chapter] | None = None,
           notebooks_dir: Path | None = None) -> list[ChapterStatus]:
    """State of every available chapter: up to date / stale / modified / corrupt / failed /
    never run.  A chapter is up to date only when every chapter it depends on is."""
    profile = register_profile(profile, CHAPTERS if chapters is None else chapters)
    hashes = expected_hashes(profile, chapters, notebooks_dir)
    result: list[ChapterStatus] = []
    states: dict[str, str] = {}
    for c in available_chapters(chapters, notebooks_dir):
        row = _chapter_state(profile, c, hashes[c.id], states)
        states[c.id] = row.state
        result.append(row)
    return result


def leftovers(profile: str) -> list[Path]:
    """Directories an interrupted run left in ``results/<profile>/`` (staging, mid-swap)."""
    base = profile_results(profile)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and _LEFTOVER.fullmatch(p.name))


def recover_leftovers(profile: str, echo: Callable[[str], object] = print) -> None:
    """Remove the staging directories of interrupted runs; put back previous results that an
    interrupted swap had moved aside.  Call only while holding the profile's lock."""
    for path in leftovers(profile):
        m = _LEFTOVER.fullmatch(path.name)
        assert m is not None
        target = path.parent / m["id"]
        if m["kind"] == "old" and not target.exists():
            os.replace(path, target)
            echo(f"[wmnb] restored {target.name} from an interrupted swap ({path.name})")
        else:
            shutil.rmtree(path)
            echo(f"[wmnb] removed {path.name}, left by an interrupted run")


def _mark_profile_dir(profile: str) -> Path:
    """Create ``results/<profile>/`` with the marker that lets ``wmnb clean`` remove it."""
    base = profile_results(profile)
    base.mkdir(parents=True, exist_ok=True)
    marker = base / MARKER_FILE
    if not marker.is_file():
        write_json(marker, {"profile": profile, "created_by": "wmnb run"})
    return base


@contextlib.contextmanager
def profile_lock(profile: str, action: str) -> Iterator[None]:
    """Hold the profile's lock for ``action`` (``run``, ``clean``).  The lock is an ``flock``
    on ``results/<profile>/.lock``, which the kernel releases when its holder dies, so a lock
    left by a killed process is stale and simply taken over; the file names the holder."""
    base = _mark_profile_dir(profile)
    path = base / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ProfileLocked(
            f"profile {profile!r} is in use by {holder}; wait for it to finish (or stop it) and "
            f"retry -- two runs on one profile would overwrite each other's results") from None
    try:
        os.ftruncate(fd, 0)
        since = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} (wmnb {action} since {since})\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


#: matplotlib backend of the chapter kernels: inline, so figures land in the executed notebook
#: even when the calling environment sets MPLBACKEND=Agg (as CI and the tests do)
KERNEL_MPLBACKEND = "module://matplotlib_inline.backend_inline"


@contextlib.contextmanager
def _kernel_env(profile: str, chapter_id: str, stage: Path) -> Iterator[None]:
    """Environment the chapter's kernel inherits: the staging directory and the plot backend."""
    new = {STAGE_ENV: json.dumps({"profile": profile, "chapter": chapter_id, "dir": str(stage)}),
           "MPLBACKEND": KERNEL_MPLBACKEND}
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _swap_in(stage: Path, target: Path) -> None:
    """Replace ``target`` by ``stage`` with two renames (readers never see a mixture)."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(stage, target)
    shutil.rmtree(old, ignore_errors=True)


def _cell_error(err: BaseException) -> str:
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    cell = getattr(err, "exec_count", None)
    where = f" in cell [{cell}]" if cell is not None else ""
    return f"{ename}{where}: {evalue}"


def run_chapter(chapter: Chapter, profile: str, run_hash: str, *,
                notebooks_dir: Path | None = None, progress: bool = True,
                log_output: bool = False, chapters: Sequence[Chapter] | None = None) -> float:
    """Execute one chapter into a staging directory and swap it in; return the wall time.

    Raises :class:`ChapterFailed` (after keeping the executed notebook under ``.failed/``).
    """
    import papermill

    prof = load_profile(profile, chapters)
    params = chapter_parameters(prof, chapter.id)
    base = _mark_profile_dir(profile)
    target = base / chapter.id
    stage = base / f".{chapter.id}.staging"
    failed_dir = base / ".failed" / chapter.id
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    executed = stage / f"{chapter.id}.ipynb"
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    try:
        with _kernel_env(profile, chapter.id, stage):
            papermill.execute_notebook(
                str(notebook_path(chapter, notebooks_dir)), str(executed), parameters=params,
                kernel_name="python3", progress_bar=progress, log_output=log_output,
                cwd=str(project_root()),
            )
        if not (stage / "summary.json").is_file():
            raise RuntimeError(f"notebook finished without writing summary.json in {stage}")
    except BaseException as err:
        shutil.rmtree(failed_dir, ignore_errors=True)
        failed_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage, failed_dir)
        notebook = failed_dir / f"{chapter.id}.ipynb"
        message = _cell_error(err)
        write_json(failed_dir / STATE_FILE, {
            "status": "failed", "hash": run_hash, "started": started, "error": message,
            "notebook": str(notebook), "parameters": params,
        })
        if isinstance(err, KeyboardInterrupt):
            raise
        raise ChapterFailed(chapter.id, message, notebook) from err
    wall = time.perf_counter() - t0
    write_json(stage / STATE_FILE, {
        "status": "ok", "hash": run_hash, "started": started, "wall_s": round(wall, 2),
        "notebook": str(target / f"{chapter.id}.ipynb"), "parameters": params,
        "outputs": _output_listing(stage),
    })
    _swap_in(stage, target)
    shutil.rmtree(failed_dir, ignore_errors=True)
    return wall


def run(profile: str = "default", only: Sequence[str] | None = None, force: bool = False, *,
        chapters: Sequence[Chapter] | None = None, notebooks_dir: Path | None = None,
        progress: bool = True, echo: Callable[[str], object] = print) -> dict[str, str]:
    """Run the chapters of ``profile`` (``only`` these and what they need) in dependency order.

    ``profile`` is a profile name or the path of a profile YAML file (then known by its name).
    Returns chapter id -> "ran" | "skipped".  ``force`` reruns the selected chapters even if up
    to date (their dependencies still run only if stale).  Stops at the first failure by raising
    :class:`ChapterFailed`; raises :class:`ProfileLocked` while another run holds the profile.
    """
    chapters = CHAPTERS if chapters is None else chapters
    profile = register_profile(profile, chapters)
    available = {c.id for c in available_chapters(chapters, notebooks_dir)}
    plan = dependency_order(only, chapters)
    missing = [c.id for c in plan if c.id not in available]
    wanted = {get_chapter(o, chapters).id for o in only} if only else {c.id for c in plan}
    if only and missing:
        raise FileNotFoundError(f"no notebook for chapter(s) {missing} in {notebooks_dir or 'notebooks/'}")
    plan = [c for c in plan if c.id in available]
    outcome: dict[str, str] = {}
    with profile_lock(profile, "run"):
        recover_leftovers(profile, echo)
        states: dict[str, str] = {}
        for c in plan:
            # recompute: an upstream chapter that just ran changes its summary, hence our hash
            run_hash = expected_hashes(profile, chapters, notebooks_dir)[c.id]
            row = _chapter_state(profile, c, run_hash, states)
            if row.state == "up to date" and not (force and c.id in wanted):
                echo(f"[wmnb] {c.id}: up to date, skipped")
                outcome[c.id] = "skipped"
                states[c.id] = "up to date"
                continue
            why = f" ({row.state}: {row.detail})" if row.detail and row.state != "failed" else ""
            echo(f"[wmnb] {c.id}: running ({profile} profile){why} ...")
            wall = run_chapter(c, profile, run_hash, notebooks_dir=notebooks_dir, progress=progress,
                               chapters=chapters)
            echo(f"[wmnb] {c.id}: done in {wall:.1f} s")
            outcome[c.id] = "ran"
            states[c.id] = "up to date"
    return outcome


def resolve_profile_name(arg: str) -> str:
    """The name of a profile given by name or YAML path, without requiring its content to be
    valid (so that the results of a broken profile can still be cleaned)."""
    if arg.endswith((".yaml", ".yml")) or os.sep in arg:
        path = profile_path(arg)
        with contextlib.suppress(ProfileError):
            return register_profile(arg)
        return check_name(path.stem)
    check_name(arg)
    profile_path(arg)  # a profile that exists: a typo must not pick some other directory
    return arg


def _removable(path: Path) -> str:
    """Why ``wmnb clean`` must not remove ``path`` ('' if it may)."""
    root = results_root()
    if path.is_symlink():
        return f"{path} is a symbolic link"
    if not path.is_dir():
        return f"{path} is not a directory"
    if path.resolve().parent != root.resolve():
        return f"{path} is not directly below {root}"
    if not (path / MARKER_FILE).is_file():
        return (f"{path} was not created by `wmnb run` (no {MARKER_FILE}); remove it by hand if "
                "you are sure")
    return ""


def clean(profile: str | None = None, echo: Callable[[str], object] = print) -> list[Path]:
    """Remove the results of ``profile`` (of every profile when None); return what was removed.

    Only directories ``results/<name>/`` that the runner created (they hold its marker) are
    removed, each while holding its lock; anything else is reported and left alone."""
    root = results_root()
    if profile is not None:
        targets = [profile_results(resolve_profile_name(profile))]
    else:
        targets = sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
    removed = []
    for target in targets:
        if not target.exists() and not target.is_symlink():
            continue
        why = _removable(target)
        if why:
            echo(f"[wmnb] not removed: {why}")
            continue
        with profile_lock(target.name, "clean"):
            shutil.rmtree(target)
        removed.append(target)
    return removed


def _format_headline(headline: dict[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for k in keys or list(headline)[:4]:
        if k in headline:
            v = headline[k]
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


def _terminated(signum: int) -> Terminated:
    return Terminated(f"stopped by signal {signal.Signals(signum).name}")


def _terminate_like_interrupt() -> TerminationGuard:
    """SIGTERM/SIGHUP raise :class:`Terminated` while a run is in progress, so that the staging
    directory is moved to ``.failed/`` and the lock released, as with Ctrl-C."""
    return TerminationGuard(_terminated, (signal.SIGTERM, signal.SIGHUP))


_INPUT_ERRORS = (FileNotFoundError, KeyError, ValueError, TypeError, ProfileLocked)


def cli_run(argv: list[str]) -> int:
    """``wmnb run [--profile P] [--only CHAPTER ...] [--force]``."""
    ap = argparse.ArgumentParser(prog="wmnb run", description="Execute the chapters with papermill.")
    ap.add_argument("--profile", default="default", help="run profile: a name in params/ or a YAML file")
    ap.add_argument("--only", nargs="+", metavar="CHAPTER",
                    help="run only these chapters (ids or numbers) and what they depend on")
    ap.add_argument("--force", action="store_true", help="rerun the selected chapters even if up to date")
    ap.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    args = ap.parse_args(argv)
    try:
        with _terminate_like_interrupt():
            run(args.profile, args.only, args.force, progress=not args.no_progress)
    except ChapterFailed as err:
        print(f"[wmnb] FAILED: {err}", file=sys.stderr)
        print("[wmnb] earlier chapters' results are unchanged; fix the error and rerun `wmnb run`.",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(f"[wmnb] interrupted ({err or 'Ctrl-C'}): the chapter that was running is kept under "
              "results/<profile>/.failed/; all completed results are unchanged.", file=sys.stderr)
        return 130
    except _INPUT_ERRORS as err:
        print(f"[wmnb] error: {err}", file=sys.stderr)
        return 2
    return 0


def cli_status(argv: list[str]) -> int:
    """``wmnb status [--profile P]``: each chapter's state and headline numbers."""
    ap = argparse.ArgumentParser(prog="wmnb status", description="State of every chapter.")
    ap.add_argument("--profile", default="default", help="run profile: a name in params/ or a YAML file")
    args = ap.parse_args(argv)
    keys = {c.id: c.headline for c in CHAPTERS}
    try:
        profile = register_profile(args.profile, CHAPTERS)
        rows = status(profile)
    except _INPUT_ERRORS as err:
        print(f"[wmnb] error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print("no chapter notebooks found")
        return 0
    width = max(len(r.chapter) for r in rows)
    for r in rows:
        line = f"{r.chapter:<{width}}  {r.state:<10}  {_format_headline(r.headline, keys.get(r.chapter, ()))}"
        print(line.rstrip())
        if r.detail:
            print(f"{'':<{width}}  {r.detail}")
    for path in leftovers(profile):
        print(f"note: {path} was left by an interrupted run; the next `wmnb run` removes it")
    return 0


def cli_clean(argv: list[str]) -> int:
    """``wmnb clean [--profile P] [--all]``."""
    ap = argparse.ArgumentParser(prog="wmnb clean", description="Remove generated artefacts: "
                                 "results/<profile>/ directories that `wmnb run` created.")
    ap.add_argument("--profile", default=None, help="only this profile's results (a name or a YAML file)")
    ap.add_argument("--all", action="store_true", help="also remove the built book (_build)")
    args = ap.parse_args(argv)
    try:
        for p in clean(args.profile):
            print(f"removed {p}")
    except _INPUT_ERRORS as err:
        print(f"[wmnb] error: {err}", file=sys.stderr)
        return 2
    if args.all:
        build = project_root() / "_build"
        if build.exists():
            shutil.rmtree(build)
            print(f"removed {build}")
    return 0
