"""Build the HTML book with jupyter-book 1.x from the chapters papermill already executed.

The book is assembled in a source tree under ``_build/.src/<profile>/``: the top-level
``_config.yml`` and ``_toc.yml``, the static pages of ``book/``, the executed notebook of every
chapter in the table of contents (from ``results/<profile>/<id>/<id>.ipynb``, placed at
``notebooks/<id>.ipynb`` as in the repository, so relative links between notebooks and book pages
work the same in JupyterLab and in the book) and a results page written from all
``summary.json`` files.  Files are only rewritten when their content changed, so
Sphinx rebuilds only what changed and a second build with nothing new is quick.  The HTML lands
in ``_build/html`` (default profile) or ``_build/<profile>/html``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .artefacts import read_json
from .chapters import CHAPTERS
from .paths import profile_results, project_root

GENERATED = "_generated"   # book/_generated/: pages written by the builder (results)
NOTEBOOKS = "notebooks"    # executed chapter notebooks sit where their sources do


def toc_entries(toc_path: Path | None = None) -> list[str]:
    """Every ``file:`` listed in ``_toc.yml`` (root first), without suffix."""
    toc = yaml.safe_load((toc_path or project_root() / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return files


def toc_chapters(toc_path: Path | None = None) -> list[str]:
    """Chapter ids whose executed notebooks the table of contents lists."""
    ids = {c.id for c in CHAPTERS}
    return [Path(f).name for f in toc_entries(toc_path)
            if Path(f).parts[0] == NOTEBOOKS and Path(f).name in ids]


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        # masses in MeV keep their MeV digit (80 360.2, not 8.036e+04)
        return f"{value:.1f}" if 1e4 <= abs(value) < 1e7 else f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


#: the paper's numbers next to a chapter's headline keys on the results page (PHYSICS.md)
PAPER_VALUES: dict[str, dict[str, str]] = {
    "00_universe": {"stat_err_scaled_117M": "2.4 MeV (data statistics, 117 M W)"},
    "01_selection": {"n_w_data": "117 M", "n_z_data": "7.5 M"},
    "02_calibration": {"mz_minus_truth": "−2.2 ± 4.8 MeV (dimuon m_Z − PDG)", "mz_err": "4.8 MeV"},
    "03_efficiencies": {"n_nuisances": "3658 (efficiency group of the m_W fit)"},
    "05_nonprompt": {"nonclosure_factor": "0.85 ± 5 %", "n_nuisances": "387 (nonprompt group)",
                     "sv_prompt_fraction": "< 2 %"},
    "07_wlike": {"mz_minus_pdg": "−6 ± 14 MeV", "mz_err": "14 MeV (total 13.5)",
                 "central_minus_forward_mev": "22.8 ± 21.1 MeV", "purity": "> 99.5 %",
                 "stat_err_scaled_7p4M": "6.9 MeV"},
    "08_mw_fit": {"mw": "80 360.2 MeV", "mw_err": "9.9 MeV", "stat_err_scaled_117M": "2.4 MeV",
                  "n_nuisances": "4859", "projected_paper_err": "9.9 MeV (total)"},
    "09_helicity": {"mw": "80 360.8 MeV", "mw_err": "15.2 MeV", "mw_err_nominal_fit": "9.9 MeV",
                    "err_ratio_to_nominal": "1.54", "n_helicity_params": "864"},
}


def results_page(profile: str) -> str:
    """Markdown of the results page: every chapter's headline numbers from its summary.json."""
    lines = [
        "# Results at a glance", "",
        f"Headline numbers of every chapter on the **{profile}** profile, read from the",
        "`summary.json` each chapter writes (`results/<profile>/<chapter>/summary.json`), with the",
        "paper's number where it measured the same quantity.",
        "Numbers come from the synthetic universe, never from real CMS data; blinded values stay",
        "blinded here.", "",
    ]
    found = False
    for c in CHAPTERS:
        path = profile_results(profile) / c.id / "summary.json"
        if not path.is_file():
            continue
        found = True
        summary = read_json(path)
        paper = PAPER_VALUES.get(c.id, {})
        lines += [f"## {c.id.split('_', 1)[0]} · {c.title}", "",
                  f"From [the chapter](../../notebooks/{c.id}.ipynb).", "",
                  "| quantity | value | paper |", "|---|---|---|"]
        for key, value in summary.get("headline", {}).items():
            lines.append(f"| `{key}` | {_fmt(value).replace('|', chr(92) + '|')} | {paper.get(key, '')} |")
        versions = summary.get("versions", {})
        lines += ["", f"Written {summary.get('written_at', '?')} with wmnb {versions.get('wmnb', '?')}, "
                  f"Python {versions.get('python', '?')}.", ""]
    if not found:
        lines.append("No chapter has been run on this profile yet: run `wmnb run` first.")
    return "\n".join(lines) + "\n"


def assemble(profile: str, src: Path | None = None) -> Path:
    """Write the book's source tree for ``profile``; return its directory."""
    root = project_root()
    src = src or root / "_build" / ".src" / profile
    src.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        _write_if_changed(src / name, (root / name).read_bytes())
    for page in (root / "book").rglob("*"):
        if page.is_file() and GENERATED not in page.parts:
            _write_if_changed(src / page.relative_to(root), page.read_bytes())
    missing = []
    for cid in toc_chapters():
        executed = profile_results(profile) / cid / f"{cid}.ipynb"
        if not executed.is_file():
            missing.append(cid)
            continue
        _write_if_changed(src / NOTEBOOKS / f"{cid}.ipynb", executed.read_bytes())
    if missing:
        raise FileNotFoundError(
            f"chapters {missing} are in _toc.yml but have no executed notebook for profile "
            f"{profile!r}: run `wmnb run --profile {profile}` first")
    _write_if_changed(src / "book" / GENERATED / "results.md", results_page(profile).encode())
    return src


def build(profile: str = "default", strict: bool = True) -> Path:
    """Assemble and build the book; return the path of ``index.html``."""
    root = project_root()
    src = assemble(profile)
    out = root if profile == "default" else root / "_build" / profile
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(src), "--path-output", str(out)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}")
    index = out / "_build" / "html" / "index.html"
    if not index.is_file():
        raise RuntimeError(f"jupyter-book finished but {index} is missing:\n{proc.stdout[-3000:]}")
    return index


def cli_book(argv: list[str]) -> int:
    """``wmnb book [--profile P] [--no-strict]``."""
    ap = argparse.ArgumentParser(prog="wmnb book", description="Build the HTML book with jupyter-book.")
    ap.add_argument("--profile", default="default", help="run profile: a name in params/ or a YAML file")
    ap.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    args = ap.parse_args(argv)
    from .profiles import register_profile

    try:
        index = build(register_profile(args.profile), strict=not args.no_strict)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"[wmnb] book: {err}", file=sys.stderr)
        return 1
    print(f"[wmnb] book built: {index}")
    return 0

