"""Conventions of the repository: clean notebooks, one parameters cell, environment files, TOC."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from wmnb.book import toc_chapters, toc_entries
from wmnb.chapters import CHAPTERS
from wmnb.runner import available_chapters

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_clean(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") for c in code), f"{path.name} has outputs: clear them"
    assert all(c.get("execution_count") is None for c in code), f"{path.name} has execution counts"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    params = "".join(tagged[0]["source"])
    for name in ("profile", "seed", "executor"):
        assert re.search(rf"^{name}\s*=", params, re.M), f"{path.name}: parameters cell lacks {name!r}"
    source = "\n".join("".join(c["source"]) for c in code)
    assert not re.search(r"['\"](/work|/home|/tmp|/Users|[A-Z]:\\\\)", source), f"{path.name} hard-codes a path"
    assert "use_style()" in source, f"{path.name} should call wmnb.style.use_style()"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter(path):
    """papermill parses each line of the parameters cell (a comment it cannot parse, e.g. one
    with ``=`` or ``;`` in it, makes it warn that the parameter is unknown on every run)."""
    import logging

    import papermill

    nb = json.loads(path.read_text())
    params = "".join(next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))["source"])
    names = {m for m in re.findall(r"^([A-Za-z_]\w*)\s*=", params, re.M)}
    logger = logging.getLogger("papermill")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        found = set(papermill.inspect_notebook(str(path)))
    finally:
        logger.removeHandler(handler)
    assert not [m for m in seen if "Unable to parse" in m], f"{path.name}: {seen}"
    assert names == found, f"{path.name}: papermill does not see {sorted(names - found)}"


def test_every_chapter_notebook_is_registered():
    ids = {c.id for c in CHAPTERS}
    assert {p.stem for p in NOTEBOOKS} <= ids, "notebooks/ holds a notebook that wmnb.chapters does not list"


def test_chapters_depend_only_on_earlier_chapters():
    seen: set[str] = set()
    for c in CHAPTERS:
        assert set(c.depends_on) <= seen, f"{c.id} depends on a later or unknown chapter"
        seen.add(c.id)


def test_toc_lists_exactly_the_available_chapters():
    assert toc_chapters() == [c.id for c in available_chapters()]
    for entry in toc_entries():
        if "_generated" not in entry:
            assert any((ROOT / f"{entry}{ext}").is_file() for ext in (".md", ".ipynb")), entry


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = {_name(d): d for d in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            conda.update({_name(d): d for d in dep["pip"]})
        elif _name(dep) not in ("python", "pip"):
            conda[_name(dep)] = dep
    # dask[distributed] is split into dask + distributed on conda-forge
    expected = {("dask" if n == "dask" else n) for n in pip_deps} | {"distributed"}
    assert set(conda) == expected
    for name, spec in conda.items():
        if name == "distributed":
            continue
        pip_spec = re.sub(r"\[.*?\]", "", pip_deps[name])
        assert _version(spec) == _version(pip_spec), f"{name}: conda {spec!r} vs pip {pip_spec!r}"


def _version(spec: str) -> str:
    return re.sub(r"\s", "", spec)[len(_name(spec)):]


def test_profiles_are_complete():
    for name in ("smoke", "default", "full"):
        prof = yaml.safe_load((ROOT / "params" / f"{name}.yaml").read_text())
        assert prof["name"] == name and isinstance(prof["seed"], int)
        assert set(prof["chapters"]) >= {c.id for c in available_chapters()}


#: modules allowed to read truth cards: the universe that generates from them, and the truth gate
TRUTH_READERS = ("wmnb/universe/", "wmnb/truth.py")
_CARD_READ = re.compile(r"load_card|universe\.card|universe import[^\n]*\bload_card|cards/(data|closure)"
                        r"|recorded_data_card|DATA_CARD_FILE|data_card\.json")   # the universe's copy of its data card


def test_only_the_truth_gate_reads_truth_cards():
    offenders = []
    for path in sorted((ROOT / "wmnb").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel.startswith(TRUTH_READERS):
            continue
        if _CARD_READ.search(path.read_text()):
            offenders.append(rel)
    for path in NOTEBOOKS:
        if path.stem == "00_universe":  # the universe chapter presents its own cards
            continue
        nb = json.loads(path.read_text())
        if any(_CARD_READ.search("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "code"):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"read truth cards outside wmnb.truth (use wmnb.truth.compare): {offenders}"


def test_truth_gate_keeps_the_data_mass_blind():
    from wmnb import truth

    with pytest.raises(truth.BlindedTruth):
        truth.compare("data", "physics.mw_mev", purpose="test")
    assert truth.compare("data", "physics.mz_mev", purpose="test") > 90000


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).is_file():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    proc = subprocess.run([ruff, "check", "wmnb", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]


#: the shared layers, type-checked by `make test`; [tool.mypy] files in pyproject.toml may list more
SHARED_LAYERS = ("wmnb/paths.py", "wmnb/profiles.py", "wmnb/params.py", "wmnb/artefacts.py", "wmnb/histio.py",
                 "wmnb/truth.py", "wmnb/chapters.py", "wmnb/runner.py", "wmnb/book.py", "wmnb/cli.py", "wmnb/fit/",
                 "wmnb/corrections.py", "wmnb/conventions.py", "wmnb/engine/pipeline.py", "wmnb/engine/registry.py",
                 "wmnb/templatefit/")


def test_mypy_shared_layers():
    """mypy passes on the files of [tool.mypy] in pyproject.toml, which hold the shared layers."""
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    assert set(SHARED_LAYERS) <= set(files), f"[tool.mypy] files lacks {sorted(set(SHARED_LAYERS) - set(files))}"
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_docstring_examples_run():
    """The examples in the shared layers' docstrings are executed (a stale example fails)."""
    import doctest
    import importlib

    for name in ("wmnb.params", "wmnb.execution", "wmnb.truth", "wmnb.histio", "wmnb.corrections", "wmnb.fit",
                 "wmnb.engine.registry", "wmnb.templatefit.binning", "wmnb.helicity.binning"):
        module = importlib.import_module(name)
        failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert failed == 0, f"{name}: {failed} of {attempted} docstring examples failed"


#: one package per chapter, named by its physics (wmnb.chapters ids -> package)
CHAPTER_PACKAGES = {"00_universe": "universe", "01_selection": "selection", "02_calibration": "muonscale",
                    "03_efficiencies": "efficiency", "04_recoil": "recoil", "05_nonprompt": "nonprompt",
                    "06_theory": "theory", "07_wlike": "wlike",
                    "08_mw_fit": "mw", "09_helicity": "helicity"}


def _wmnb_imports(path: Path) -> set[str]:
    """Top-level wmnb subpackages a module imports (absolute or relative), as the runner's
    code hash finds them."""
    from wmnb.runner import _imports

    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return {m.split(".")[1] for m in _imports(path.read_text(), module) if m.count(".") >= 1}


def test_chapter_packages_are_isolated_and_expose_a_small_api():
    assert set(CHAPTER_PACKAGES) >= {c.id for c in available_chapters()}
    packages = set(CHAPTER_PACKAGES.values())
    offenders = []
    for pkg in packages:
        init = ROOT / "wmnb" / pkg / "__init__.py"
        assert "__all__" in init.read_text(), f"wmnb/{pkg}/__init__.py must declare its notebook-facing __all__"
        for path in sorted((ROOT / "wmnb" / pkg).rglob("*.py")):
            other = _wmnb_imports(path) & (packages - {pkg})
            if other:
                offenders.append(f"{path.relative_to(ROOT)} imports {sorted(other)}")
    for path in sorted((ROOT / "wmnb").glob("*.py")) + [p for d in ("engine", "templatefit", "fit")
                                                         for p in sorted((ROOT / "wmnb" / d).rglob("*.py"))]:
        used = _wmnb_imports(path) & packages
        if used and path.name != "truth.py":       # the truth gate reads the universe's cards
            offenders.append(f"shared layer {path.relative_to(ROOT)} imports chapter package(s) {sorted(used)}")
    assert not offenders, "\n".join(offenders)


def test_notebooks_use_only_their_own_chapter_package():
    from wmnb.runner import _imports

    packages = set(CHAPTER_PACKAGES.values())
    for path in NOTEBOOKS:
        own = CHAPTER_PACKAGES[path.stem]
        nb = json.loads(path.read_text())
        used = {m.split(".")[1] for c in nb["cells"] if c["cell_type"] == "code"
                for m in _imports("".join(c["source"])) if m.count(".") >= 1}
        assert not (used & packages) - {own}, f"{path.name} imports other chapters' packages {(used & packages) - {own}}"
