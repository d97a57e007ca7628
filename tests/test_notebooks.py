"""Smoke run of every chapter notebook on the smoke profile, then the book build.

The chapters run through the real runner into ``results/smoke/`` (so a second ``make test``
skips chapters that are up to date); every test then reads the ``summary.json`` files.
"""
from __future__ import annotations

import json
import math

import pytest

from wmnb import book, runner
from wmnb.artefacts import read_summary
from wmnb.chapters import get_chapter
from wmnb.paths import chapter_dir

pytestmark = pytest.mark.notebook
AVAILABLE = [c.id for c in runner.available_chapters()]


@pytest.fixture(scope="module")
def smoke_run():
    try:
        runner.run("smoke", progress=False)
    except runner.ChapterFailed as err:
        pytest.fail(str(err))
    return {cid: read_summary(chapter_dir("smoke", cid)) for cid in AVAILABLE}


@pytest.mark.parametrize("chapter", AVAILABLE)
def test_chapter_summary_has_headline_numbers(smoke_run, chapter):
    headline = smoke_run[chapter]["headline"]
    for key in get_chapter(chapter).headline:
        assert key in headline, f"{chapter}: summary.json lacks {key!r}"
        value = headline[key]
        if isinstance(value, float):
            assert math.isfinite(value), f"{chapter}: {key} = {value}"
    assert smoke_run[chapter]["parameters"].get("profile") == "smoke"
    assert (chapter_dir("smoke", chapter) / f"{chapter}.ipynb").is_file()


@pytest.mark.parametrize("chapter", AVAILABLE)
def test_executed_chapter_shows_its_plots(smoke_run, chapter):
    nb = json.loads((chapter_dir("smoke", chapter) / f"{chapter}.ipynb").read_text())
    images = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{chapter}: the executed notebook holds no figure (is the inline backend active?)"


def test_the_data_mass_is_shown_nowhere(smoke_run):
    """Blinding: the data universe's m_W appears in no executed chapter and no summary.json.
    Protects against the old closure universe, which carried the data's m_W and had chapter 08
    print it as the closure truth.  (The truth is read here only to search for it.)"""
    from wmnb import truth

    mw = truth.compare("data", "physics.mw_mev", purpose="blinding test: search the outputs", unblinded=True)
    needles = {f"{mw:.1f}", f"{mw:.2f}", f"{mw / 1000:.4f}"}
    for cid in AVAILABLE:
        d = chapter_dir("smoke", cid)
        for path in (d / f"{cid}.ipynb", d / "summary.json"):
            text = path.read_text()
            assert not [n for n in needles if n in text], f"{path.name} shows the data universe's m_W"


def test_status_reports_everything_up_to_date(smoke_run):
    assert {s.chapter: s.state for s in runner.status("smoke")} == dict.fromkeys(AVAILABLE, "up to date")


def test_book_builds_offline_with_warnings_as_errors(smoke_run):
    index = book.build("smoke", strict=True)
    html_dir = index.parent
    intro = (html_dir / "book" / "intro.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in intro and "cdn.jsdelivr" not in intro
    assert (html_dir / "_static" / "mathjax" / "tex-chtml.js").is_file()
    results = (html_dir / "book" / "_generated" / "results.html").read_text()
    for cid in AVAILABLE:
        assert (html_dir / "notebooks" / f"{cid}.html").is_file()
        for key in get_chapter(cid).headline[:1]:
            assert key in results


def test_nonprompt_chapter_on_smoke(smoke_run):
    """Chapter 05 on smoke: the estimate, its nuisances and the truth comparison exist and are
    sane, and chapter 08's fit uses the published data-driven template."""
    if "05_nonprompt" not in smoke_run:
        pytest.skip("chapter 05 not available")
    h = smoke_run["05_nonprompt"]["headline"]
    assert 0.3 < h["nonclosure_factor"] < 1.3 and h["nonclosure_factor_err"] > 0
    assert h["n_stat_nuisances"] == (h["smoothing_order"] + 1) * h["n_slices"]
    assert h["n_nuisances"] == h["n_stat_nuisances"] + 1 + min(h["smoothing_order"], 2)
    assert h["n_propagated_nuisances"] > 100             # efficiency, recoil, theory, normalisations
    assert abs(h["yield_over_truth"] - 1.0) < 3 * h["yield_over_truth_err"], h
    assert math.isfinite(h["biased_pseudodata_shift_mev"])
    if "08_mw_fit" in smoke_run:
        text = (chapter_dir("smoke", "08_mw_fit") / "08_mw_fit.ipynb").read_text()
        assert "nonprompt_abcd" in text, "chapter 08 does not list the data-driven nonprompt template"


def test_theory_chapter_closes_on_smoke(smoke_run):
    """Chapter 06 on the smoke profile: the moments recover the simulation's A_i, the central
    prediction reproduces the generator (the reweighting factor is one within statistics), the
    data's true q_T lies in the prediction's band and the FSR strength is measured near the truth."""
    if "06_theory" not in smoke_run:
        pytest.skip("chapter 06 not available")
    h = smoke_run["06_theory"]["headline"]
    assert all(0.5 < w < 1.6 for w in h["ai_pull_width"].values()), h["ai_pull_width"]
    assert all(c < 1.6 for c in h["central_chi2_ndf"].values()), h["central_chi2_ndf"]
    assert h["qt_truth_covered"] > 0.8 and h["n_nuisances"]["pTV"] == 19 and h["n_nuisances"]["EW"] == 1
    assert abs(h["fsr_strength_pull"]) < 4.0
