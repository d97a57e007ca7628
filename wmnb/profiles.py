"""Run profiles: ``params/<name>.yaml``.

A profile fixes sizes, seeds and the executor for a whole run of the book.  Its top-level keys
concern the whole run (``name``, ``seed``, ``executor``, ``dask_scheduler``, ``truth_card``); the
``chapters`` mapping holds each chapter's own parameters, which the runner injects into that
notebook's ``parameters`` cell through papermill.  Every value passes the parameter gate
(:mod:`wmnb.params`) when the profile is loaded: unknown keys, wrong types and out-of-range
values are errors naming the file and the key.

The top-level ``truth_card`` names the truth card of the *data* universe (a shipped card name
such as ``data``, or the path of a YAML file; a relative path is read from the profile file's
folder): chapter 00 generates the data from it, and only the truth gate (:mod:`wmnb.truth`) reads
it afterwards.  ``null`` (the default) is the shipped ``data`` card.

A profile is named by a *profile name* (``smoke``, ``default``, ``full`` or any other file in
``params/``) or given as the path of a YAML file elsewhere.  Either way it is known by its name
afterwards — results go to ``results/<name>/`` — so the file's ``name:`` must equal its stem
(``my.yaml`` holds ``name: my``) and may not shadow a shipped profile.  :func:`register_profile`
makes a file outside ``params/`` known by name to this process and to the chapter kernels it
starts (through ``$WMNB_PROFILE_FILES``).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .execution import EXECUTOR_NAMES
from .params import COMMON, Param, ParameterError, parse_parameters
from .paths import project_root

if TYPE_CHECKING:
    from .chapters import Chapter

PROFILES = ("smoke", "default", "full")
#: profile names: what may stand in a directory name under results/
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: profile files outside params/ known to this process: JSON {name: path}, inherited by kernels
PROFILE_FILES_ENV = "WMNB_PROFILE_FILES"

TOP_LEVEL: tuple[Param, ...] = (
    Param("name", str, None, "profile name, equal to the file's stem"),
    Param("seed", int, None, "master seed of the whole run", minimum=0),
    Param("executor", str, "local", "executor of the heavy steps (generation, selection, templates, toys)",
          choices=EXECUTOR_NAMES),
    Param("dask_scheduler", str, None, "Dask scheduler address (null: a LocalCluster)", nullable=True),
    Param("description", str, "", "free text"),
    Param("truth_card", str, None, "truth card of the data universe: a shipped card name or a YAML path "
          "(relative: from the profile file's folder); null: the shipped data card", nullable=True),
)
#: the one chapter that reads the profile's ``truth_card``: it generates the data universe from it
TRUTH_CARD_CHAPTER = "00_universe"
#: the shipped truth cards (wmnb/universe/cards/<name>.yaml), which ``truth_card`` may name
_CARD_FOLDER = Path(__file__).resolve().parent / "universe" / "cards"
#: the shipped card that ``truth_card: null`` stands for
DEFAULT_TRUTH_CARD = "data"


class ProfileError(ValueError):
    """A profile name or file that cannot be used."""


def check_name(name: object, what: str = "profile name") -> str:
    """Return ``name`` if it can name a profile (letters, digits, ``_``, ``-``; no paths)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ProfileError(
            f"{what} {name!r} is not valid: use letters, digits, '_' and '-' (at most 64, not "
            f"starting with '_' or '-'), e.g. one of {list(PROFILES)} or a YAML file path")
    return name


def _registered() -> dict[str, str]:
    raw = os.environ.get(PROFILE_FILES_ENV)
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ProfileError(f"${PROFILE_FILES_ENV} is not valid JSON ({err}); unset it") from err
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def _is_yaml_path(arg: str) -> bool:
    return arg.endswith((".yaml", ".yml")) or os.sep in arg


def profile_path(name: str) -> Path:
    """Path of the YAML file of profile ``name`` (a profile name, or the path of a YAML file)."""
    if not isinstance(name, str) or not name:
        raise ProfileError(f"profile {name!r}: give a profile name such as {list(PROFILES)} or a YAML file path")
    if _is_yaml_path(name):
        p = Path(name)
        if p.is_dir():
            raise ProfileError(f"profile {name!r} is a directory; give a profile YAML file or a name")
        if not p.is_file():
            raise ProfileError(f"profile file {name!r} does not exist")
        return p
    check_name(name)
    registered = _registered()
    if name in registered:
        return Path(registered[name])
    path = project_root() / "params" / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(q.stem for q in (project_root() / "params").glob("*.yaml"))
        raise ProfileError(f"profile {name!r} not found at {path}; profiles: {shipped} "
                           "(or give the path of a YAML file)")
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ProfileError(f"profile file {path} is not valid YAML: {err}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ProfileError(f"profile file {path} cannot be read: {err}") from err
    if not isinstance(data, dict):
        raise ProfileError(f"profile file {path} must hold a mapping, got {type(data).__name__}")
    return data


def resolve_truth_card(value: str | None, path: Path) -> str | None:
    """The ``truth_card`` of the profile file ``path``, resolved: ``None`` for the shipped
    ``data`` card, the name of another shipped card, or the absolute path of a YAML file (a
    relative path is read from the folder of ``path``).  Only the file's existence is checked
    here; its content is validated (against the card schema of wmnb.universe) when chapter 00 or the
    truth gate reads it.  Errors name the profile file and the key."""
    if value is None:
        return None
    source = f"profile file {path}: 'truth_card' = {value!r}"
    shipped = sorted(q.stem for q in _CARD_FOLDER.glob("*.yaml"))
    if not value.strip():
        raise ProfileError(f"{source} is empty: give a shipped card {shipped}, a YAML path or null")
    if not _is_yaml_path(value):
        if value not in shipped:
            raise ProfileError(f"{source} is neither a shipped card {shipped} nor a YAML path "
                               "(a path ends in .yaml or .yml or holds a '/')")
        return None if value == DEFAULT_TRUTH_CARD else value
    card = Path(value).expanduser()
    if not card.is_absolute():
        card = path.resolve().parent / card
    card = card.resolve()
    if card.is_dir():
        raise ProfileError(f"{source}: {card} is a directory, not a truth card YAML file")
    if not card.is_file():
        raise ProfileError(f"{source}: the truth card {card} does not exist (a relative path is read "
                           f"from the profile file's folder, {path.resolve().parent})")
    return str(card)


def truth_card_digest(profile: Mapping[str, Any]) -> str | None:
    """SHA-256 of the bytes of a loaded profile's truth card (``None`` for the shipped ``data``
    card, whose file is part of chapter 00's code).  It enters chapter 00's run hash, so editing
    the card, not only renaming it, makes the universe and everything after it stale; the same
    content at another path keeps them fresh."""
    import hashlib

    card = profile.get("truth_card")
    if card is None:
        return None
    file = Path(card) if _is_yaml_path(card) else _CARD_FOLDER / f"{card}.yaml"
    try:
        return hashlib.sha256(file.read_bytes()).hexdigest()
    except OSError as err:
        raise ProfileError(f"profile {profile.get('name')!r}: the truth card {file} cannot be read ({err})") from err


def check_common(values: Mapping[str, Any], source: str) -> None:
    """Check the shared top-level values (``seed``, ``executor``, ...) wherever they appear."""
    spec = {p.name: p for p in TOP_LEVEL}
    for key, value in values.items():
        if key == "profile":
            check_name(value, f"{source}: parameter 'profile'")
        elif key in spec:
            spec[key].check(value, source)


def validate_profile(data: Mapping[str, Any], path: Path,
                     chapters: Sequence[Chapter] | None = None) -> dict[str, Any]:
    """Check a profile's content against the parameter gate; return it with defaults filled."""
    from .chapters import CHAPTERS

    registry = CHAPTERS if chapters is None else chapters
    source = f"profile file {path}"
    for key in ("name", "seed"):
        if key not in data:
            raise ProfileError(f"{source} lacks the required key {key!r}")
    top = {k: v for k, v in data.items() if k != "chapters"}
    out = dict(parse_parameters("top level", TOP_LEVEL, top, source))
    check_name(out["name"], f"{source}: 'name'")
    out["truth_card"] = resolve_truth_card(out["truth_card"], path)
    sections = data.get("chapters") or {}
    if not isinstance(sections, dict):
        raise ProfileError(f"{source}: 'chapters' must be a mapping of chapter id: parameters, "
                           f"got a {type(sections).__name__}")
    known = {c.id: c for c in registry}
    unknown = sorted(set(sections) - set(known))
    if unknown:
        raise ProfileError(f"{source}: unknown chapter(s) {unknown} under 'chapters'; chapters are {sorted(known)}")
    out["chapters"] = {}
    for cid, section in sections.items():
        spec = known[cid].parameters
        if section is not None and not isinstance(section, dict):
            raise ProfileError(f"{source}: chapters.{cid} must be a mapping of parameter: value, "
                               f"got a {type(section).__name__}")
        # only the keys the profile sets: the notebook's parameters cell holds the defaults
        out["chapters"][cid] = dict(parse_parameters(cid, spec, section, source, fill_defaults=False)) \
            if spec is not None else dict(section or {})
    return out


def load_profile(name: str, chapters: Sequence[Chapter] | None = None) -> dict[str, Any]:
    """Load and check a profile (a name or a YAML path) as a dict; ``chapters`` are the chapters
    whose sections it may hold (default: the book's)."""
    path = profile_path(name)
    try:
        data = validate_profile(_read_yaml(path), path, chapters)
    except ParameterError as err:
        raise ProfileError(str(err)) from None
    if not _is_yaml_path(name) and data["name"] != name:
        raise ProfileError(f"profile file {path} declares name {data['name']!r}; it must be {name!r}")
    return data


def register_profile(arg: str, chapters: Sequence[Chapter] | None = None) -> str:
    """Resolve a profile argument (name or YAML path) to its name, making a YAML file outside
    ``params/`` known by that name to this process and the kernels it starts."""
    if not _is_yaml_path(arg):
        load_profile(arg, chapters)
        return arg
    path = profile_path(arg).resolve()
    data = load_profile(str(path), chapters)
    name = data["name"]
    if name != path.stem:
        raise ProfileError(f"profile file {arg} declares name {name!r}; a profile's name must equal its "
                           f"file name, so set 'name: {path.stem}' (results go to results/<name>/)")
    shipped = project_root() / "params" / f"{name}.yaml"
    if shipped.is_file() and not shipped.resolve().samefile(path):
        raise ProfileError(f"profile file {arg} has the name of the profile in {shipped}; rename the "
                           "file (and its 'name:') so that the two runs do not share results/")
    registered = _registered()
    if registered.get(name, str(path)) != str(path):
        raise ProfileError(f"profile name {name!r} is already registered for {registered[name]}")
    registered[name] = str(path)
    os.environ[PROFILE_FILES_ENV] = json.dumps(registered)
    return name


def chapter_parameters(profile: Mapping[str, Any], chapter: str) -> dict[str, Any]:
    """Parameters papermill injects into ``chapter``'s notebook for this profile."""
    params: dict[str, Any] = {
        "profile": profile["name"],
        "seed": profile["seed"],
        "executor": profile["executor"],
    }
    if profile.get("dask_scheduler"):
        # only chapters that run the histogram engine declare this parameter
        params["dask_scheduler"] = profile["dask_scheduler"]
    params.update(profile.get("chapters", {}).get(chapter, {}) or {})
    return params


__all__ = ["COMMON", "DEFAULT_TRUTH_CARD", "PROFILES", "ProfileError", "TRUTH_CARD_CHAPTER", "check_name",
           "chapter_parameters", "load_profile", "profile_path", "register_profile", "resolve_truth_card",
           "truth_card_digest", "validate_profile"]
