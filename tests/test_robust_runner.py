"""Hardening of the runner, the profiles and the parameter gate: each test is a case that once
gave a wrong result, lost data or a traceback."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from wmnb import artefacts, params, profiles, runner
from wmnb.chapters import CHAPTERS as BOOK_CHAPTERS
from wmnb.chapters import Chapter

CHAPTERS = (
    Chapter("a_first", "first"),
    Chapter("b_second", "second", ("a_first",)),
)
PROFILE = "name: t\nseed: 7\nexecutor: local\nchapters:\n  b_second:\n    value: 2\n"


def _notebook(body: str, extra_params: str = "value = 1") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f'profile = "x"\nseed = 0\nexecutor = "local"\n{extra_params}')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _writer(chapter: str, extra: str = "") -> str:
    return ("from wmnb.paths import chapter_dir\nfrom wmnb.artefacts import write_summary\n"
            f"d = chapter_dir(profile, {chapter!r})\nd.mkdir(parents=True, exist_ok=True)\n{extra}\n"
            "(d / 'out.txt').write_text(str(seed))\nwrite_summary(d, {'seed': seed})\n")


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "params").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params" / "t.yaml").write_text(PROFILE)
    for c in CHAPTERS:
        nbformat.write(_notebook(_writer(c.id)), tmp_path / "notebooks" / f"{c.id}.ipynb")
    monkeypatch.setenv("WMNB_ROOT", str(tmp_path))
    monkeypatch.delenv("WMNB_RESULTS", raising=False)
    monkeypatch.delenv(profiles.PROFILE_FILES_ENV, raising=False)
    return tmp_path


def _run(project, profile="t", **kw):
    return runner.run(profile, chapters=CHAPTERS, notebooks_dir=project / "notebooks", progress=False,
                      echo=lambda *_: None, **kw)


def _states(project, profile="t"):
    return {s.chapter: s.state for s in runner.status(profile, CHAPTERS, project / "notebooks")}


# ------------------------------------------------------------------ 1. clean removes only its own


def test_clean_refuses_paths_and_empty_names(project, tmp_path_factory):
    victim = tmp_path_factory.mktemp("victim")
    (victim / "precious.txt").write_text("keep")
    for bad in (str(victim), "../..", "", "..", "results/../.."):
        with pytest.raises(profiles.ProfileError):
            runner.clean(bad, echo=lambda *_: None)
    assert (victim / "precious.txt").read_text() == "keep"
    assert runner.cli_clean(["--profile", str(victim)]) == 2


def test_clean_removes_only_directories_the_runner_created(project):
    _run(project)
    foreign = project / "results" / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not wmnb's")
    outside = project / "elsewhere"
    outside.mkdir()
    (project / "results" / "link").symlink_to(outside)
    said: list[str] = []
    removed = runner.clean(None, echo=said.append)
    assert removed == [project / "results" / "t"]
    assert (foreign / "mine.txt").is_file() and outside.is_dir() and (project / "results").is_dir()
    assert any("notes" in s and "not created by `wmnb run`" in s for s in said)
    assert any("symbolic link" in s for s in said)


# ------------------------------------------------------------------ 2. interrupted runs


def test_staging_leftovers_are_reported_then_removed(project, capsys, monkeypatch):
    _run(project)
    stage = project / "results/t/.b_second.staging"
    (stage / "corrections").mkdir(parents=True)
    (stage / "corrections" / "scale.json").write_text("{}")
    monkeypatch.setattr(runner, "CHAPTERS", CHAPTERS)
    runner.cli_status(["--profile", "t"])
    assert ".b_second.staging was left by an interrupted run" in capsys.readouterr().out
    _run(project)
    assert not stage.exists()


def test_interrupted_swap_restores_previous_results(project):
    _run(project)
    base = project / "results/t"
    os.replace(base / "b_second", base / ".b_second.old")  # killed between the two renames
    _run(project)
    assert (base / "b_second" / "summary.json").is_file() and not (base / ".b_second.old").exists()
    assert _states(project) == {"a_first": "up to date", "b_second": "up to date"}


def test_sigterm_moves_the_running_chapter_aside(project):
    (project / "params" / "t.yaml").write_text("name: t\nseed: 7\nexecutor: local\n")
    nb = _notebook(_writer("00_universe", "(d / 'started.txt').write_text('1')\nimport time\ntime.sleep(120)"),
                   extra_params="")
    nbformat.write(nb, project / "notebooks" / "00_universe.ipynb")
    env = {**os.environ, "WMNB_ROOT": str(project)}
    proc = subprocess.Popen([sys.executable, "-m", "wmnb.cli", "run", "--profile", "t", "--only", "00",
                             "--no-progress"], env=env, cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    stage = project / "results/t/.00_universe.staging"
    deadline = time.monotonic() + 90
    while not (stage / "started.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (stage / "started.txt").exists(), "the chapter never started"
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (1, 130), err
    assert not stage.exists()
    assert (project / "results/t/.failed/00_universe").is_dir()
    # the lock went with the process
    with runner.profile_lock("t", "test"):
        pass


# ------------------------------------------------------------------ 3. a profile given as a path


def test_yaml_path_profile_runs_staged_under_its_own_name(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("mine")
    path = elsewhere / "mine.yaml"
    path.write_text(PROFILE.replace("name: t", "name: mine").replace("seed: 7", "seed: 11"))
    assert _run(project, str(path)) == {"a_first": "ran", "b_second": "ran"}
    summary = json.loads((project / "results/mine/b_second/summary.json").read_text())
    assert summary["headline"] == {"seed": 11} and summary["chapter"] == "b_second"
    assert not (project / "results/t").exists()
    assert _states(project, str(path)) == {"a_first": "up to date", "b_second": "up to date"}


@pytest.mark.parametrize("stem,name,match", [("other", "t2", "must equal its file name"),
                                             ("t", "t", "has the name of the profile")])
def test_yaml_path_profile_must_not_hide_another(project, tmp_path_factory, stem, name, match):
    path = tmp_path_factory.mktemp("p") / f"{stem}.yaml"
    path.write_text(PROFILE.replace("name: t", f"name: {name}"))
    with pytest.raises(profiles.ProfileError, match=match):
        _run(project, str(path))
    assert not (project / "results").exists()


# ------------------------------------------------------------------ 4. the parameter gate


@pytest.mark.parametrize("section,match", [
    ("08_mw_fit: {unblind: 'no'}", "'unblind' must be a boolean"),
    ("08_mw_fit: {unblind: 1}", "'unblind' must be a boolean"),
    ("00_universe: {workers: two}", "'workers' must be an integer"),
    ("00_universe: {events_scale: huge}", "'events_scale' must be one of"),
    ("01_selection: {step: big}", "'step' must be an integer"),
    ("01_selection: {stepp: 1000}", r"unknown parameter\(s\) \['stepp'\]"),
    ("01_selection: {step: 0}", "'step' must be >= 1"),
    ("02_calibration: [n_eta, 6]", "chapters.02_calibration must be a mapping"),
    ("03_typo: {}", r"unknown chapter\(s\) \['03_typo'\]"),
])
def test_profile_values_are_checked_by_name(project, section, match):
    (project / "params" / "bad.yaml").write_text(f"name: bad\nseed: 1\nexecutor: local\nchapters:\n  {section}\n")
    with pytest.raises(profiles.ProfileError, match=match):
        profiles.load_profile("bad")


@pytest.mark.parametrize("top,match", [("seed: true", "'seed' must be an integer"),
                                       ("seed: -3", "'seed' must be >= 0"),
                                       ("executor: slurm", "'executor' must be one of"),
                                       ("workers: 2", r"unknown parameter\(s\) \['workers'\]")])
def test_profile_top_level_is_checked(project, top, match):
    text = "name: bad\nseed: 1\nexecutor: local\n"
    key = top.split(":")[0]
    text = "\n".join(line for line in text.splitlines() if not line.startswith(key + ":")) + f"\n{top}\n"
    (project / "params" / "bad.yaml").write_text(text)
    with pytest.raises(profiles.ProfileError, match=match):
        profiles.load_profile("bad")


def test_notebook_gate_rejects_a_string_for_unblind():
    from wmnb.chapters import get_chapter

    ns = {"profile": "smoke", "seed": 1, "executor": "local",
          **{p.name: p.default for p in get_chapter("08_mw_fit").parameters or ()}, "unblind": "no"}
    with pytest.raises(params.ParameterError, match="'unblind' must be a boolean"):
        params.notebook_config("08_mw_fit", ns)
    assert params.notebook_config("08_mw_fit", {**ns, "unblind": False}).unblind is False


def test_shipped_profiles_pass_the_gate_and_name_every_size():
    for name in profiles.PROFILES:
        prof = profiles.load_profile(name)
        cal = prof["chapters"]["02_calibration"]
        # sizes come from the profile, never from its name (a custom profile gets no hidden table)
        assert {p.name for p in dict((c.id, c) for c in BOOK_CHAPTERS)["02_calibration"].parameters} <= set(cal)


def test_every_notebook_parameter_is_declared():
    for c in runner.available_chapters():
        nb = json.loads(runner.notebook_path(c).read_text())
        cell = next(x for x in nb["cells"] if "parameters" in x.get("metadata", {}).get("tags", []))
        names = {line.split("=")[0].strip() for line in "".join(cell["source"]).splitlines()
                 if "=" in line and not line.startswith("#")}
        declared = {p.name for p in c.parameters or ()} | set(params.COMMON)
        assert names <= declared, (c.id, names - declared)
        assert c.parameters is not None


def test_executor_names_agree_with_the_engine():
    from wmnb.engine.executors import EXECUTORS

    assert tuple(profiles.EXECUTOR_NAMES) == tuple(EXECUTORS)


# ------------------------------------------------------------------ 5. results changed after their run


def test_outputs_changed_in_place_make_the_chapter_and_dependents_stale(project):
    _run(project)
    (project / "results/t/a_first/out.txt").write_text("overwritten by hand")
    assert _states(project) == {"a_first": "modified", "b_second": "stale"}
    # the rerun restores identical results, so the chapter after it need not run again
    assert _run(project) == {"a_first": "ran", "b_second": "skipped"}
    assert _states(project) == {"a_first": "up to date", "b_second": "up to date"}


def test_corrupt_records_are_reported_not_trusted(project, capsys, monkeypatch):
    _run(project)
    (project / "results/t/a_first/summary.json").write_text("{not json")
    (project / "results/t/b_second/.run.json").write_text("[]")
    assert _states(project) == {"a_first": "corrupt", "b_second": "corrupt"}
    monkeypatch.setattr(runner, "CHAPTERS", CHAPTERS)
    assert runner.cli_status(["--profile", "t"]) == 0
    assert "is not valid JSON" in capsys.readouterr().out
    assert _run(project) == {"a_first": "ran", "b_second": "ran"}


def test_unknown_profile_is_a_named_error(project, capsys):
    assert runner.cli_status(["--profile", "nosuch"]) == 2
    assert "profile 'nosuch' not found" in capsys.readouterr().err


def test_summary_records_the_chapter_not_the_staging_directory(project):
    _run(project)
    assert json.loads((project / "results/t/a_first/summary.json").read_text())["chapter"] == "a_first"


# ------------------------------------------------------------------ 6. one run per profile


def test_second_run_on_a_locked_profile_is_refused(project):
    with runner.profile_lock("t", "run"):
        with pytest.raises(runner.ProfileLocked, match=f"pid {os.getpid()}"):
            _run(project)
        with pytest.raises(runner.ProfileLocked):
            runner.clean("t", echo=lambda *_: None)
    # a lock file left by a dead process holds no flock: it is taken over
    (project / "results/t/.lock").write_text("pid 999999 (wmnb run since long ago)\n")
    assert _run(project) == {"a_first": "ran", "b_second": "ran"}


# ------------------------------------------------------------------ artefact permissions


def test_artefacts_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        f = artefacts.write_json(tmp_path / "x.json", {"a": 1})
        with artefacts.atomic_dir(tmp_path / "d") as d:
            (d / "y").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_code_digest_follows_imports_and_correction_factories(project):
    root = Path(runner.__file__).resolve().parent.parent
    nb = root / "notebooks" / "08_mw_fit.ipynb"
    chapter = dict((c.id, c) for c in BOOK_CHAPTERS)["08_mw_fit"]
    files = {str(p.relative_to(root)) for p in runner.chapter_code_files(chapter, nb, root,
                                                                           {"wmnb.muonscale.correction"})}
    assert "wmnb/mw/templates.py" in files and "wmnb/fit/fitter.py" in files
    assert "wmnb/muonscale/correction.py" in files  # run through discover(), not imported by 08
    assert "wmnb/runner.py" not in files and "wmnb/book.py" not in files


def test_notebook_parameters_reach_the_generator():
    # papermill -p events_scale default used to be ignored: the generator read only the profile
    from wmnb.universe.generate import SCALES, universe_settings

    assert universe_settings("smoke")["events_scale"] == SCALES["smoke"]
    chosen = universe_settings("smoke", {"events_scale": "default", "chunk_size": None, "workers": 1})
    assert chosen["events_scale"] == SCALES["default"] and chosen["workers"] == 1


def test_timings_of_an_upstream_rerun_do_not_rerun_downstream(project):
    timed = ("import time\nfrom wmnb.paths import chapter_dir\nfrom wmnb.artefacts import write_summary\n"
             "d = chapter_dir(profile, 'a_first')\nd.mkdir(parents=True, exist_ok=True)\n"
             "write_summary(d, {'seed': seed, 'runtime_s': time.time(), 'skim_seconds': time.time()})\n")
    nbformat.write(_notebook(timed), project / "notebooks" / "a_first.ipynb")
    _run(project)
    assert _run(project, only=["a_first"], force=True) == {"a_first": "ran"}
    assert _states(project) == {"a_first": "up to date", "b_second": "up to date"}
    # a result that changes does rerun it
    nbformat.write(_notebook(timed.replace("'seed': seed", "'seed': seed + 1")), project / "notebooks" / "a_first.ipynb")
    _run(project, only=["a_first"])
    assert _states(project)["b_second"] == "stale"
