"""The chapter runner: papermill execution in dependency order, skipping, status, cleaning.

Each chapter ``<id>`` runs ``notebooks/<id>.ipynb`` with the profile's parameters and writes
``results/<profile>/<id>/``.  The runner guarantees:

* **skipping** — a chapter is *up to date* when the hash of its notebook source (code and
  markdown, not outputs), its parameters, the source of the ``wmnb`` code it uses and its inputs
  (the hashes and ``summary.json`` of the chapters it depends on) equals the hash recorded at its
  last successful run;
* **no half-written results** — the notebook runs against a *staging* directory
  (``results/<profile>/.<id>.staging``; :func:`wmnb.paths.chapter_dir` points there for the
  chapter being run) that replaces the chapter directory only when the whole notebook succeeded;
* **clear failures** — a failing chapter stops the run; the error of the failing cell and the
  path of the executed notebook (kept in ``results/<profile>/.failed/<id>/``) are reported, and
  the previous results of that chapter and of every earlier chapter stay as they were.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artefacts import read_json, write_json
from .chapters import CHAPTERS, Chapter, dependency_order, get_chapter
from .paths import STAGE_ENV, chapter_dir, profile_results, project_root
from .profiles import chapter_parameters, load_profile

STATE_FILE = ".run.json"
# shared core every chapter uses; other wmnb modules count only where a chapter lists them
_CORE = ("artefacts.py", "histio.py", "paths.py", "profiles.py", "style.py")


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


def _code_digest(code: Sequence[str], root: Path) -> str:
    """Hash of the analysis code a chapter uses: the modules it lists plus the shared core
    (editing the runner, the book builder or the CLI reruns nothing)."""
    h = hashlib.sha256()
    files: set[Path] = {root / "wmnb" / name for name in _CORE if (root / "wmnb" / name).is_file()}
    for entry in code:
        target = root / entry
        if target.is_dir():
            files.update(target.rglob("*.py"))
            files.update(target.rglob("*.yaml"))
        elif target.is_file():
            files.add(target)
        elif target.with_suffix(".py").is_file():
            files.add(target.with_suffix(".py"))
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _read_state(profile: str, chapter_id: str) -> dict[str, Any] | None:
    path = profile_results(profile) / chapter_id / STATE_FILE
    failed = profile_results(profile) / ".failed" / chapter_id / STATE_FILE
    if failed.is_file():
        return read_json(failed)
    return read_json(path) if path.is_file() else None


def expected_hashes(profile: str, chapters: Sequence[Chapter] | None = None,
                    notebooks_dir: Path | None = None) -> dict[str, str]:
    """The hash each available chapter would have if run now (dependencies first)."""
    chapters = CHAPTERS if chapters is None else chapters
    root = project_root()
    prof = load_profile(profile)
    by_id = {c.id: c for c in chapters}
    out: dict[str, str] = {}
    for c in available_chapters(chapters, notebooks_dir):
        h = hashlib.sha256()
        h.update(_notebook_source_digest(notebook_path(c, notebooks_dir)).encode())
        h.update(json.dumps(chapter_parameters(prof, c.id), sort_keys=True).encode())
        h.update(_code_digest(c.code, root).encode())
        for dep in c.depends_on:
            if dep not in by_id:
                raise KeyError(f"chapter {c.id} depends on unknown chapter {dep}")
            if dep not in out:
                continue  # planned chapter without a notebook: nothing to depend on yet
            h.update(out[dep].encode())
            summary = chapter_dir(profile, dep) / "summary.json"
            h.update(hashlib.sha256(summary.read_bytes()).hexdigest().encode()
                     if summary.is_file() else b"missing")
        out[c.id] = h.hexdigest()
    return out


def status(profile: str, chapters: Sequence[Chapter] | None = None,
           notebooks_dir: Path | None = None) -> list[ChapterStatus]:
    """State of every available chapter: up to date / stale / failed / never run."""
    hashes = expected_hashes(profile, chapters, notebooks_dir)
    result = []
    for c in available_chapters(chapters, notebooks_dir):
        state = _read_state(profile, c.id)
        summary_path = profile_results(profile) / c.id / "summary.json"
        headline = read_json(summary_path).get("headline", {}) if summary_path.is_file() else {}
        if state is None:
            result.append(ChapterStatus(c.id, "never run", headline))
        elif state.get("status") == "failed":
            result.append(ChapterStatus(c.id, "failed", headline,
                                        f"{state.get('error', '')} (see {state.get('notebook')})"))
        elif state.get("hash") != hashes[c.id] or not summary_path.is_file():
            result.append(ChapterStatus(c.id, "stale", headline))
        else:
            result.append(ChapterStatus(c.id, "up to date", headline))
    return result


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
                log_output: bool = False) -> float:
    """Execute one chapter into a staging directory and swap it in; return the wall time.

    Raises :class:`ChapterFailed` (after keeping the executed notebook under ``.failed/``).
    """
    import papermill

    prof = load_profile(profile)
    params = chapter_parameters(prof, chapter.id)
    base = profile_results(profile)
    base.mkdir(parents=True, exist_ok=True)
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
    })
    _swap_in(stage, target)
    shutil.rmtree(failed_dir, ignore_errors=True)
    return wall


def run(profile: str = "default", only: Sequence[str] | None = None, force: bool = False, *,
        chapters: Sequence[Chapter] | None = None, notebooks_dir: Path | None = None,
        progress: bool = True, echo: Any = print) -> dict[str, str]:
    """Run the chapters of ``profile`` (``only`` these and what they need) in dependency order.

    Returns chapter id -> "ran" | "skipped".  ``force`` reruns the selected chapters even if up
    to date (their dependencies still run only if stale).  Stops at the first failure by raising
    :class:`ChapterFailed`.
    """
    chapters = CHAPTERS if chapters is None else chapters
    available = {c.id for c in available_chapters(chapters, notebooks_dir)}
    plan = dependency_order(only, chapters)
    missing = [c.id for c in plan if c.id not in available]
    wanted = {get_chapter(o, chapters).id for o in only} if only else {c.id for c in plan}
    if only and missing:
        raise FileNotFoundError(f"no notebook for chapter(s) {missing} in {notebooks_dir or 'notebooks/'}")
    plan = [c for c in plan if c.id in available]
    outcome: dict[str, str] = {}
    for c in plan:
        # recompute: an upstream chapter that just ran changes its summary, hence our hash
        run_hash = expected_hashes(profile, chapters, notebooks_dir)[c.id]
        state = _read_state(profile, c.id)
        fresh = (state is not None and state.get("status") == "ok" and state.get("hash") == run_hash
                 and (chapter_dir(profile, c.id) / "summary.json").is_file())
        if fresh and not (force and c.id in wanted):
            echo(f"[wmnb] {c.id}: up to date, skipped")
            outcome[c.id] = "skipped"
            continue
        echo(f"[wmnb] {c.id}: running ({profile} profile) ...")
        wall = run_chapter(c, profile, run_hash, notebooks_dir=notebooks_dir, progress=progress)
        echo(f"[wmnb] {c.id}: done in {wall:.1f} s")
        outcome[c.id] = "ran"
    return outcome


def clean(profile: str | None = None) -> list[Path]:
    """Remove the artefacts of ``profile`` (all profiles when None); return what was removed."""
    from .paths import results_root

    targets = [profile_results(profile)] if profile else [results_root()]
    removed = []
    for t in targets:
        if t.exists():
            shutil.rmtree(t)
            removed.append(t)
    return removed


def _format_headline(headline: dict[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for k in keys or list(headline)[:4]:
        if k in headline:
            v = headline[k]
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


def cli_run(argv: list[str]) -> int:
    """``wmnb run [--profile P] [--only CHAPTER ...] [--force]``."""
    ap = argparse.ArgumentParser(prog="wmnb run", description="Execute the chapters with papermill.")
    ap.add_argument("--profile", default="default", help="run profile (params/<profile>.yaml)")
    ap.add_argument("--only", nargs="+", metavar="CHAPTER",
                    help="run only these chapters (ids or numbers) and what they depend on")
    ap.add_argument("--force", action="store_true", help="rerun the selected chapters even if up to date")
    ap.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    args = ap.parse_args(argv)
    try:
        run(args.profile, args.only, args.force, progress=not args.no_progress)
    except ChapterFailed as err:
        print(f"[wmnb] FAILED: {err}", file=sys.stderr)
        print("[wmnb] earlier chapters' results are unchanged; fix the error and rerun `wmnb run`.",
              file=sys.stderr)
        return 1
    except (FileNotFoundError, KeyError, ValueError, TypeError) as err:
        print(f"[wmnb] error: {err}", file=sys.stderr)
        return 2
    return 0


def cli_status(argv: list[str]) -> int:
    """``wmnb status [--profile P]``: each chapter's state and headline numbers."""
    ap = argparse.ArgumentParser(prog="wmnb status", description="State of every chapter.")
    ap.add_argument("--profile", default="default")
    args = ap.parse_args(argv)
    keys = {c.id: c.headline for c in CHAPTERS}
    rows = status(args.profile)
    if not rows:
        print("no chapter notebooks found")
        return 0
    width = max(len(r.chapter) for r in rows)
    for r in rows:
        line = f"{r.chapter:<{width}}  {r.state:<10}  {_format_headline(r.headline, keys[r.chapter])}"
        print(line.rstrip())
        if r.detail:
            print(f"{'':<{width}}  {r.detail}")
    return 0


def cli_clean(argv: list[str]) -> int:
    """``wmnb clean [--profile P] [--all]``."""
    ap = argparse.ArgumentParser(prog="wmnb clean", description="Remove generated artefacts.")
    ap.add_argument("--profile", default=None, help="only this profile's results")
    ap.add_argument("--all", action="store_true", help="also remove the built book (_build)")
    args = ap.parse_args(argv)
    for p in clean(args.profile):
        print(f"removed {p}")
    if args.all:
        build = project_root() / "_build"
        if build.exists():
            shutil.rmtree(build)
            print(f"removed {build}")
    return 0
