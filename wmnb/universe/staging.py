"""Safety rails of ``generate_universe``: where it may write, its temporary folders, SIGTERM.

* :func:`check_output_dir` -- the output-folder rule: never inside the results store
  (``wmnb.paths.results_root()``) unless the runner is executing chapter 00 into its staging
  directory or the caller opted in explicitly (``--into-results``), so a stray ``wmnb generate``
  cannot silently replace the book's universe;
* the samples folder is filled and then swapped in whole by :func:`wmnb.artefacts.atomic_dir`
  (its temporary names record host and pid, so :func:`wmnb.artefacts.remove_stale_dirs` deletes
  the leftovers of runs that died without cleaning up while leaving those of live runs alone);
* :class:`TerminationGuard` -- turns SIGTERM into :class:`GenerationTerminated`, so the usual
  exception clean-up runs instead of the process vanishing with gigabytes of temporary files.
"""
from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from ..paths import STAGE_ENV, chapter_dir, profile_results, results_root
from ..signals import TerminationGuard

LOG = logging.getLogger("wmnb.universe")
#: name of the runner's chapter whose staging directory generation may write into
UNIVERSE_CHAPTER = "00_universe"
INTO_RESULTS_FLAG = "--into-results"


class GenerateError(ValueError):
    """A bad argument of ``generate_universe`` / ``wmnb generate`` (seed, workers, output
    folder, profile settings); the message names the argument."""


class GenerationTerminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM during generation.

    A :class:`SystemExit` (exit status ``128 + signal``, as a shell reports a signal death), so
    that ``except Exception`` blocks do not swallow it while ``finally``/``except
    BaseException`` clean-up still runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


# ------------------------------------------------------------------ the output-folder rule

def _is_inside(path: Path, root: Path) -> bool:
    """True when ``path`` is ``root`` or lies below it (both already resolved)."""
    return path == root or root in path.parents


def _runner_stage(profile: str) -> Path | None:
    """The staging directory of chapter 00 of ``profile`` while the runner executes it, else
    None.  The runner announces it through ``$WMNB_STAGE``; ``chapter_dir`` then points there
    instead of at ``results/<profile>/00_universe``."""
    if not os.environ.get(STAGE_ENV):
        return None
    try:
        stage = chapter_dir(profile, UNIVERSE_CHAPTER)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # malformed variable: not a runner we can trust
    if stage == profile_results(profile) / UNIVERSE_CHAPTER:
        return None  # the variable names another chapter or profile
    return stage.resolve()


def check_output_dir(profile: str, out: str | os.PathLike, into_results: bool = False) -> Path:
    """Validate the output folder ``out`` before any generation work; return it as a Path.

    Refuses (:class:`GenerateError`, naming the folder) when

    * ``out`` or one of its parents exists but is not a directory;
    * ``out`` resolves inside ``wmnb.paths.results_root()``, unless it is the runner's staging
      directory of chapter 00 for ``profile`` or ``into_results`` is true: the results store
      belongs to the runner, which would keep reporting the chapters as up to date while their
      universe had been replaced behind its back.
    """
    out = Path(out).expanduser()
    if str(out).strip() == "":
        raise GenerateError("the output folder is empty: pass --out DIR")
    for p in (out, *out.parents):
        if p.is_symlink() or p.exists():
            if not p.is_dir():
                what = "is a file" if p.is_file() else "exists and is not a directory"
                where = "the output folder" if p == out else f"{p}, a parent of the output folder,"
                raise GenerateError(f"cannot write the universe into {out}: {where} {what}; "
                                    "pass --out DIR with a directory (new or existing)")
            if not os.access(p, os.W_OK | os.X_OK):
                raise GenerateError(f"cannot write the universe into {out}: {p} is not writable")
            break
    resolved = out.resolve()
    results = results_root().resolve()
    if into_results or not _is_inside(resolved, results) or resolved == _runner_stage(profile):
        return out
    raise GenerateError(
        f"refusing to write the universe into {out}: it lies inside the results store {results}, "
        f"which the runner manages (results/{profile}/{UNIVERSE_CHAPTER} is the book's own "
        f"universe). Pass --out DIR with a folder outside {results}, regenerate the book's "
        f"universe with `wmnb run --profile {profile} --only {UNIVERSE_CHAPTER} --force`, or pass "
        f"{INTO_RESULTS_FLAG} (into_results=True) to replace it on purpose.")


# ------------------------------------------------------------------ SIGTERM

def generation_guard() -> TerminationGuard:
    """SIGTERM raises :class:`GenerationTerminated` while generating (see :mod:`wmnb.signals`)."""
    return TerminationGuard(GenerationTerminated)


def worker_signals() -> None:
    """Initializer of generation worker processes: they inherit (fork) the parent's Python
    SIGTERM handler, but must simply die when the parent terminates them, and must leave
    Ctrl-C to the parent, which then stops the whole pool and cleans up."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
