"""Correction manifests are data: hidden directories, foreign code and broken files are refused.

Each test reproduces one failure of the hook seen or feared in practice (see the hardening
issue): a manifest left in the runner's staging directory applied twice, a manifest naming
``runpy:run_path``, artefacts outside the chapter, corrupt or inconsistent manifests.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wmnb import corrections as C
from wmnb.artefacts import write_json
from wmnb.paths import STAGE_ENV

PROFILE = "robust"
TOY = "wmnb.engine.testing:load_toy_scale"      # registered toy factory: pT x (1 + a)


@pytest.fixture()
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``results/`` store; returns ``results/<PROFILE>``."""
    monkeypatch.setenv("WMNB_RESULTS", str(tmp_path))
    monkeypatch.delenv(STAGE_ENV, raising=False)
    root = tmp_path / PROFILE
    root.mkdir()
    return root


def _publish_toy(directory: Path, a: float, chapter: str = "02_calibration", name: str = "toyscale") -> Path:
    """Write the toy artefact and its manifest into ``directory`` (any directory, like the runner's)."""
    write_json(directory / "toy.json", {"a": a})
    return C.publish(directory, C.Manifest(name=name, chapter=chapter, kinds=("muon",), factory=TOY,
                                           artefact="toy.json"))


def _write_manifest(directory: Path, **changes: object) -> Path:
    """A hand-written manifest (a valid toy one, with ``changes`` applied; None deletes a key)."""
    write_json(directory / "toy.json", {"a": 0.1})
    doc: dict[str, object] = {"manifest_version": 1, "name": "toyscale", "chapter": directory.name,
                              "kinds": ["muon"], "factory": TOY, "artefact": "toy.json", "order": 50,
                              "groups": [], "description": ""}
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    path = directory / "corrections" / f"{doc.get('name', 'toyscale')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _scale_of(corr: C.Correction) -> float:
    """The pT factor a toy correction applies to simulation."""
    cols = {"mu_pt": np.array([40.0]), "weight": np.ones(1)}
    corr.correct(cols, C.SampleInfo("wplus_munu", False, "w"))
    return float(cols["mu_pt"][0] / 40.0)


# ------------------------------------------------------------------ A.1 staging directories
@pytest.mark.parametrize("hidden", [".02_calibration.staging", ".02_calibration.old", ".failed/02_calibration"])
def test_staging_and_old_directories_are_invisible(results: Path, hidden: str) -> None:
    """An interrupted forced rerun leaves a staged copy: it must not be applied a second time."""
    _publish_toy(results / "02_calibration", 0.01)
    _publish_toy(results / hidden, 0.01)
    found = C.discover(PROFILE)
    assert len(found) == 1 and _scale_of(found[0]) == pytest.approx(1.01)
    assert [Path(d["_path"]).parent.parent.name for d in C.list_manifests(PROFILE)] == ["02_calibration"]


def test_running_chapter_reads_its_own_staging_not_the_old_results(results: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """While the runner executes 02, ``chapter_dir`` is the staging directory: discover agrees."""
    _publish_toy(results / "02_calibration", 0.01)            # last run's results, being replaced
    stage = results / ".02_calibration.staging"
    _publish_toy(stage, 0.03)
    monkeypatch.setenv(STAGE_ENV, json.dumps({"profile": PROFILE, "chapter": "02_calibration", "dir": str(stage)}))
    found = C.discover(PROFILE)
    assert len(found) == 1 and _scale_of(found[0]) == pytest.approx(1.03)
    assert C.discover(PROFILE, exclude_chapters=("02_calibration",)) == []
    # another chapter being run sees only the real 02 results
    monkeypatch.setenv(STAGE_ENV, json.dumps({"profile": PROFILE, "chapter": "08_mw_fit",
                                              "dir": str(results / ".08_mw_fit.staging")}))
    assert [_scale_of(c) for c in C.discover(PROFILE)] == [pytest.approx(1.01)]


def test_first_run_of_a_chapter_sees_its_staged_manifest(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``results/<p>/02_calibration`` yet: the staged chapter is still found (it is in CHAPTERS)."""
    stage = results / ".02_calibration.staging"
    _publish_toy(stage, 0.02)
    assert C.discover(PROFILE) == []
    monkeypatch.setenv(STAGE_ENV, json.dumps({"profile": PROFILE, "chapter": "02_calibration", "dir": str(stage)}))
    assert [_scale_of(c) for c in C.discover(PROFILE)] == [pytest.approx(1.02)]


def test_non_chapter_directories_and_hidden_files_are_ignored(results: Path) -> None:
    _publish_toy(results / "02_calibration", 0.01)
    _publish_toy(results / "scratch", 0.05, chapter="scratch")
    hidden = results / "02_calibration" / "corrections" / ".toyscale.json.abc.json"
    hidden.write_text("{not json")
    assert [_scale_of(c) for c in C.discover(PROFILE)] == [pytest.approx(1.01)]


# ------------------------------------------------------------------ A.2 factories and artefact paths
def test_manifest_cannot_run_arbitrary_code(results: Path) -> None:
    """``runpy:run_path`` on a payload: refused before anything is imported or run."""
    chapter = results / "02_calibration"
    marker = results / "pwned"
    (chapter / "corrections").mkdir(parents=True)
    (chapter / "payload.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    path = _write_manifest(chapter, factory="runpy:run_path", artefact="payload.py")
    with pytest.raises(C.CorrectionError) as err:
        C.discover(PROFILE)
    msg = str(err.value)
    assert str(path) in msg and "runpy:run_path" in msg and "wmnb.muonscale.correction:load_correction" in msg
    assert not marker.exists()


def test_unregistered_wmnb_function_is_refused(results: Path) -> None:
    """Even a function of the package may not be named unless it is a registered factory."""
    _write_manifest(results / "02_calibration", factory="wmnb.artefacts:read_json")
    with pytest.raises(C.CorrectionError, match="not a registered correction factory"):
        C.discover(PROFILE)


def test_publish_refuses_unregistered_factory(results: Path) -> None:
    chapter = results / "02_calibration"
    write_json(chapter / "toy.json", {"a": 0.0})
    with pytest.raises(C.CorrectionError, match="runpy:run_path"):
        C.publish(chapter, C.Manifest(name="x", chapter="02_calibration", kinds=("muon",),
                                      factory="runpy:run_path", artefact="toy.json"))
    assert not (chapter / "corrections").exists()


def test_register_only_accepts_package_functions() -> None:
    with pytest.raises(C.CorrectionError, match="wmnb package"):
        C.register_correction_factory("runpy:run_path", "no")
    assert "runpy:run_path" not in C.FACTORIES


@pytest.mark.parametrize("artefact", ["../outside.json", "sub/../../outside.json", "ABSOLUTE"])
def test_artefact_outside_the_chapter_is_refused_on_load(results: Path, artefact: str) -> None:
    write_json(results / "outside.json", {"a": 0.5})
    if artefact == "ABSOLUTE":
        artefact = str(results / "outside.json")
    path = _write_manifest(results / "02_calibration", artefact=artefact)
    with pytest.raises(C.CorrectionError) as err:
        C.discover(PROFILE)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("artefact", ["../outside.json", "ABSOLUTE"])
def test_artefact_outside_the_chapter_is_refused_on_publish(results: Path, artefact: str) -> None:
    write_json(results / "outside.json", {"a": 0.5})
    if artefact == "ABSOLUTE":
        artefact = str(results / "outside.json")
    chapter = results / "02_calibration"
    chapter.mkdir()
    with pytest.raises(C.CorrectionError, match="inside the chapter"):
        C.publish(chapter, C.Manifest(name="x", chapter="02_calibration", kinds=("muon",), factory=TOY,
                                      artefact=artefact))


def test_symlinked_artefact_leaving_the_chapter_is_refused(results: Path) -> None:
    write_json(results / "outside.json", {"a": 0.5})
    chapter = results / "02_calibration"
    _write_manifest(chapter, artefact="link.json")
    (chapter / "link.json").symlink_to(results / "outside.json")
    with pytest.raises(C.CorrectionError, match="outside"):
        C.discover(PROFILE)


def test_missing_artefact_names_manifest_and_chapter(results: Path) -> None:
    path = _write_manifest(results / "02_calibration", artefact="gone.json")
    with pytest.raises(FileNotFoundError) as err:
        C.discover(PROFILE)
    assert isinstance(err.value, C.CorrectionError)
    assert str(path) in str(err.value) and "rerun chapter 02_calibration" in str(err.value)


# ------------------------------------------------------------------ A.3 validation of the manifest
@pytest.mark.parametrize(("change", "expect"), [
    ({"manifest_version": 2}, "manifest_version"),
    ({"manifest_version": None}, "manifest_version"),
    ({"factory": None}, "'factory'"),
    ({"artefact": None}, "'artefact'"),
    ({"kinds": ["muon", "magic"]}, "unknown kinds \\['magic'\\]"),
    ({"kinds": "muon"}, "'kinds'"),
    ({"order": "first"}, "'order'"),
    ({"chapter": "08_mw_fit"}, "'chapter' is '08_mw_fit'"),
])
def test_invalid_manifest_is_a_named_error(results: Path, change: dict, expect: str) -> None:
    path = _write_manifest(results / "02_calibration", **change)
    with pytest.raises(C.CorrectionError, match=expect) as err:
        C.list_manifests(PROFILE)
    assert str(path) in str(err.value) and "rerun chapter 02_calibration" in str(err.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_corrupt_manifest_is_a_named_error(results: Path, text: str) -> None:
    path = _write_manifest(results / "02_calibration")
    path.write_text(text)
    with pytest.raises(C.CorrectionError) as err:
        C.discover(PROFILE)
    assert str(path) in str(err.value) and "--only 02_calibration --force" in str(err.value)


def test_valid_manifest_round_trip_keeps_working(results: Path) -> None:
    path = _publish_toy(results / "02_calibration", 0.04)
    (doc,) = C.list_manifests(PROFILE)
    assert doc["_path"] == str(path) and doc["chapter"] == "02_calibration" and doc["order"] == 50
    assert [_scale_of(c) for c in C.discover(PROFILE, kinds=("muon",))] == [pytest.approx(1.04)]
    assert C.discover(PROFILE, kinds=("template",)) == []


# ------------------------------------------------------------------ A.4 declared dependencies
def test_from_chapters_restricts_to_declared_dependencies(results: Path) -> None:
    _publish_toy(results / "02_calibration", 0.01)
    assert len(C.discover(PROFILE, from_chapters=("01_selection", "02_calibration"))) == 1
    with pytest.raises(C.CorrectionError, match="chapter 02_calibration publishes corrections.*depends_on"):
        C.discover(PROFILE, from_chapters=("01_selection",))
    assert C.discover(PROFILE, from_chapters=("01_selection",), exclude_chapters=("02_calibration",)) == []


def test_upstream_takes_the_declared_chapters_and_ignores_later_ones(results: Path) -> None:
    """A chapter rerun after a later chapter has published (06 after 05's template) sees only
    the chapters it depends on."""
    _publish_toy(results / "02_calibration", 0.01)
    _publish_toy(results / "05_nonprompt", 0.02, chapter="05_nonprompt", name="later")
    assert [c.name for c in C.upstream(PROFILE, "06_theory")] == ["toyscale"]
    assert len(C.upstream(PROFILE, "08_mw_fit")) == 2
    assert C.upstream(PROFILE, "06_theory", exclude_chapters=("02_calibration",)) == []
