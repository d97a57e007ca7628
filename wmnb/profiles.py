"""Run profiles: ``params/<name>.yaml``.

A profile fixes sizes, seeds and the executor for a whole run of the book.  Its top-level keys
are shared by every chapter (``seed``, ``executor``, ``scale`` ...); the ``chapters`` mapping
holds each chapter's own parameters, which the runner injects into that notebook's
``parameters`` cell through papermill.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .paths import project_root

PROFILES = ("smoke", "default", "full")


def profile_path(name: str) -> Path:
    """Path of the YAML file of profile ``name`` (a shipped name or a path to a YAML file)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    path = project_root() / "params" / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(q.stem for q in (project_root() / "params").glob("*.yaml"))
        raise FileNotFoundError(f"profile {name!r} not found at {path}; shipped profiles: {shipped}")
    return path


def load_profile(name: str) -> dict[str, Any]:
    """Load a profile as a dict, with a clear error for malformed files."""
    path = profile_path(name)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"profile file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"profile file {path} must hold a mapping, got {type(data).__name__}")
    for key in ("name", "seed", "executor"):
        if key not in data:
            raise ValueError(f"profile file {path} lacks the required key {key!r}")
    if not isinstance(data["seed"], int):
        raise TypeError(f"profile {path}: 'seed' must be an integer, got {data['seed']!r}")
    data.setdefault("chapters", {})
    return data


def chapter_parameters(profile: dict[str, Any], chapter: str) -> dict[str, Any]:
    """Parameters papermill injects into ``chapter``'s notebook for this profile."""
    params = {
        "profile": profile["name"],
        "seed": profile["seed"],
        "executor": profile["executor"],
    }
    if profile.get("dask_scheduler"):
        # only chapters that run the histogram engine declare this parameter
        params["dask_scheduler"] = profile["dask_scheduler"]
    params.update(profile.get("chapters", {}).get(chapter, {}) or {})
    return params
