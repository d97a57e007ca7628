"""The chapters of the book, in data-flow order, and what each depends on.

The runner executes them in this order, skipping chapters whose notebook, parameters, code and
inputs are unchanged (see :mod:`wmnb.runner`).  A chapter is listed here only once its notebook
exists and works; the book's table of contents is built from this list.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Chapter:
    """One chapter: notebook ``notebooks/<id>.ipynb`` writing ``results/<profile>/<id>/``."""

    id: str                       # "02_calibration"
    title: str
    depends_on: tuple[str, ...] = ()
    code: tuple[str, ...] = ()    # wmnb modules/packages whose source changes invalidate it
                                  # (besides the shared core, see wmnb.runner)
    headline: tuple[str, ...] = ()  # summary.json keys shown by `wmnb status`


CHAPTERS: tuple[Chapter, ...] = (
    Chapter("00_universe", "The synthetic universe", (),
            ("wmnb/universe",), ("n_events_total", "size_mb", "gen_rate_evps", "stat_err_scaled_117M")),
    Chapter("01_selection", "Data selection", ("00_universe",),
            ("wmnb/engine", "wmnb/plotting.py", "wmnb/corrections.py"), ("n_w_data", "n_z_data", "n_jpsi_data")),
    Chapter("02_calibration", "Muon momentum calibration with J/psi", ("01_selection",),
            ("wmnb/calib", "wmnb/engine", "wmnb/fit", "wmnb/plotting.py", "wmnb/corrections.py"),
            ("pull_mean", "pull_width", "mz_minus_truth", "mz_err")),
    Chapter("08_mw_fit", "The W-boson mass", ("01_selection", "02_calibration"),
            ("wmnb/mw", "wmnb/fit", "wmnb/engine", "wmnb/plotting.py", "wmnb/corrections.py"),
            ("mw", "mw_err", "stat_err", "blinded")),
)
"""Every planned chapter; the runner and the book use only those whose notebook exists."""


def get_chapter(chapter_id: str, chapters: Sequence[Chapter] | None = None) -> Chapter:
    """Look a chapter up by id (or by its number prefix, e.g. ``"02"``)."""
    chapters = CHAPTERS if chapters is None else chapters
    for c in chapters:
        if c.id == chapter_id or c.id.split("_", 1)[0] == chapter_id:
            return c
    raise KeyError(f"unknown chapter {chapter_id!r}; chapters are {[c.id for c in chapters]}")


def dependency_order(selected: Sequence[str] | None = None,
                     chapters: Sequence[Chapter] | None = None) -> list[Chapter]:
    """Chapters to run for ``selected`` (ids or number prefixes) plus everything they need, in
    order; all chapters when ``selected`` is None."""
    chapters = CHAPTERS if chapters is None else chapters
    if not selected:
        return list(chapters)
    wanted: set[str] = set()

    def add(cid: str) -> None:
        c = get_chapter(cid, chapters)
        if c.id in wanted:
            return
        wanted.add(c.id)
        for dep in c.depends_on:
            add(dep)

    for cid in selected:
        add(cid)
    return [c for c in chapters if c.id in wanted]
