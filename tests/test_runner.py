"""The papermill runner: dependency order, skipping, failure handling, atomic results."""
from __future__ import annotations

import json

import nbformat
import pytest

from wmnb import runner
from wmnb.chapters import Chapter

CHAPTERS = (
    Chapter("a_first", "first"),
    Chapter("b_second", "second", ("a_first",)),
    Chapter("c_third", "third", ("b_second",)),
    Chapter("d_planned", "not written yet", ("c_third",)),
)


def _notebook(body: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "x"\nseed = 0\nexecutor = "local"\nvalue = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _writer(chapter: str, extra: str = "") -> str:
    return (
        "import json, time\n"
        "from wmnb.paths import chapter_dir\n"
        "from wmnb.artefacts import write_summary\n"
        f"d = chapter_dir(profile, {chapter!r})\n"
        "d.mkdir(parents=True, exist_ok=True)\n"
        f"{extra}\n"
        "(d / 'ran.txt').write_text(str(time.time()))\n"
        "write_summary(d, {'value': value, 'seed': seed})\n"
    )


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "params").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params" / "t.yaml").write_text(
        "name: t\nseed: 7\nexecutor: local\nchapters:\n  b_second:\n    value: 2\n")
    for c in CHAPTERS[:3]:
        nbformat.write(_notebook(_writer(c.id)), tmp_path / "notebooks" / f"{c.id}.ipynb")
    monkeypatch.setenv("WMNB_ROOT", str(tmp_path))
    monkeypatch.delenv("WMNB_RESULTS", raising=False)
    return tmp_path


def _run(project, **kw):
    return runner.run("t", chapters=CHAPTERS, notebooks_dir=project / "notebooks", progress=False,
                      echo=lambda *_: None, **kw)


def _states(project):
    return {s.chapter: s.state for s in runner.status("t", CHAPTERS, project / "notebooks")}


def test_runs_in_order_then_skips(project):
    assert _states(project) == {"a_first": "never run", "b_second": "never run", "c_third": "never run"}
    assert _run(project) == {"a_first": "ran", "b_second": "ran", "c_third": "ran"}
    stamps = [float((project / "results" / "t" / c / "ran.txt").read_text()) for c in ("a_first", "b_second", "c_third")]
    assert stamps == sorted(stamps)  # dependency order
    summary = json.loads((project / "results/t/b_second/summary.json").read_text())
    assert summary["headline"] == {"value": 2, "seed": 7}  # profile parameters injected
    assert (project / "results/t/c_third/c_third.ipynb").is_file()  # executed notebook kept
    assert _states(project) == dict.fromkeys(("a_first", "b_second", "c_third"), "up to date")
    assert _run(project) == dict.fromkeys(("a_first", "b_second", "c_third"), "skipped")


def test_change_reruns_chapter_and_dependents_only(project):
    _run(project)
    nbformat.write(_notebook(_writer("b_second", "# a changed comment")), project / "notebooks/b_second.ipynb")
    assert _states(project) == {"a_first": "up to date", "b_second": "stale", "c_third": "stale"}
    assert _run(project) == {"a_first": "skipped", "b_second": "ran", "c_third": "ran"}
    # parameters are part of the hash too
    (project / "params/t.yaml").write_text("name: t\nseed: 7\nexecutor: local\nchapters:\n  c_third:\n    value: 3\n")
    assert _run(project, only=["c_third"]) == {"a_first": "skipped", "b_second": "ran", "c_third": "ran"}


def test_only_and_force(project):
    assert _run(project, only=["b_second"]) == {"a_first": "ran", "b_second": "ran"}
    assert _run(project, only=["b_second"], force=True) == {"a_first": "skipped", "b_second": "ran"}
    with pytest.raises(FileNotFoundError, match="d_planned"):
        _run(project, only=["d_planned"])


def test_failure_stops_run_and_keeps_previous_results(project):
    _run(project)
    before = (project / "results/t/b_second/summary.json").read_bytes()
    nbformat.write(_notebook(_writer("b_second", "raise ValueError('calibration diverged in bin 7')")),
                   project / "notebooks/b_second.ipynb")
    with pytest.raises(runner.ChapterFailed) as info:
        _run(project)
    err = info.value
    assert err.chapter == "b_second" and "ValueError" in err.error and "bin 7" in err.error
    assert err.notebook.is_file() and ".failed" in str(err.notebook)
    # previous complete results untouched, nothing half-written, later chapter not run
    assert (project / "results/t/b_second/summary.json").read_bytes() == before
    assert not any(p.name.endswith(".staging") for p in (project / "results/t").iterdir())
    assert not (project / "results/t/b_second/ran.txt").read_text() == ""
    assert _states(project)["b_second"] == "failed"
    # fixing the notebook clears the failure
    nbformat.write(_notebook(_writer("b_second")), project / "notebooks/b_second.ipynb")
    assert _run(project)["b_second"] == "ran"
    assert _states(project)["b_second"] == "up to date"
    assert not (project / "results/t/.failed/b_second").exists()


def test_cli_reports_failure_and_status(project, capsys, monkeypatch):
    monkeypatch.setattr(runner, "CHAPTERS", CHAPTERS)
    nbformat.write(_notebook("raise RuntimeError('boom')"), project / "notebooks/a_first.ipynb")
    assert runner.cli_run(["--profile", "t", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "boom" in err and "executed notebook" in err
    assert runner.cli_status(["--profile", "t"]) == 0
    out = capsys.readouterr().out
    assert "a_first" in out and "failed" in out and "never run" in out


def test_a_chapter_depends_on_its_own_registry_entry_not_on_the_others(project):
    """Adding a chapter to the registry (or editing another's entry) leaves the others' hashes
    alone; editing a chapter's own entry, or one it depends on, changes its hash."""
    import dataclasses

    nbdir = project / "notebooks"
    base = runner.expected_hashes("t", CHAPTERS, nbdir)
    added = runner.expected_hashes("t", CHAPTERS + (Chapter("e_new", "a new chapter", ("a_first",)),), nbdir)
    assert {k: added[k] for k in base} == base
    retitled = (CHAPTERS[0], CHAPTERS[1], dataclasses.replace(CHAPTERS[2], title="renamed"), CHAPTERS[3])
    moved = runner.expected_hashes("t", retitled, nbdir)
    assert moved["a_first"] == base["a_first"] and moved["b_second"] == base["b_second"]
    assert moved["c_third"] != base["c_third"]
    upstream = (dataclasses.replace(CHAPTERS[0], headline=("value",)), *CHAPTERS[1:])
    changed = runner.expected_hashes("t", upstream, nbdir)
    assert all(changed[k] != base[k] for k in ("a_first", "b_second", "c_third"))
