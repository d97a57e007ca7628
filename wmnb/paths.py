"""Where things live: the project root, profiles and the results store.

Everything is relative to the project root (the directory holding ``pyproject.toml`` and
``params/``), so notebooks never hard-code paths.  ``WMNB_ROOT`` overrides the root, which the
tests use to run chapters in a temporary copy.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: Set by the runner while a chapter executes: {"profile", "chapter", "dir"}.  The chapter then
#: writes into a staging directory that replaces its results only if the notebook succeeds.
STAGE_ENV = "WMNB_STAGE"


#: the profile a chapter notebook declared in this process (:func:`declare_profile`)
_DECLARED_PROFILE: str | None = None


def declare_profile(profile: str | None) -> None:
    """Record the profile the chapter notebook running in this process works on
    (:func:`wmnb.params.notebook_config` calls it), so that code which is not handed the profile
    (the truth gate) knows it also when the notebook is run by hand; ``None`` forgets it."""
    global _DECLARED_PROFILE
    _DECLARED_PROFILE = profile


def current_profile() -> str | None:
    """The profile of the chapter running now: the runner's (:data:`STAGE_ENV`, set for the
    chapter it executes), else the one a notebook declared (:func:`declare_profile`), else None."""
    stage = os.environ.get(STAGE_ENV)
    if stage:
        try:
            info = json.loads(stage)
        except ValueError:
            info = None
        if isinstance(info, dict) and isinstance(info.get("profile"), str):
            return str(info["profile"])
    return _DECLARED_PROFILE


def project_root() -> Path:
    """Return the project root: ``$WMNB_ROOT`` if set, else the checkout holding this package,
    else the current directory (an installed, non-editable package)."""
    env = os.environ.get("WMNB_ROOT")
    if env:
        return Path(env).resolve()
    candidate = PACKAGE_DIR.parent
    if (candidate / "params").is_dir():
        return candidate
    return Path.cwd().resolve()


def results_root() -> Path:
    """Top of the artefact store, ``<root>/results`` unless ``$WMNB_RESULTS`` says otherwise."""
    env = os.environ.get("WMNB_RESULTS")
    return Path(env).resolve() if env else project_root() / "results"


def profile_results(profile: str) -> Path:
    """``results/<profile>/``: all artefacts of one run profile."""
    return results_root() / profile


def chapter_dir(profile: str, chapter: str) -> Path:
    """``results/<profile>/<chapter>/``, e.g. ``results/smoke/02_calibration``.

    While the runner executes ``chapter`` this is its staging directory (see
    :mod:`wmnb.runner`), so a failing notebook never overwrites good results.
    """
    stage = os.environ.get(STAGE_ENV)
    if stage:
        info = json.loads(stage)
        if info.get("profile") == profile and info.get("chapter") == chapter:
            return Path(info["dir"])
    return profile_results(profile) / chapter


def universe_dir(profile: str) -> Path:
    """Where chapter 00 writes the generated samples of a profile."""
    return chapter_dir(profile, "00_universe")
