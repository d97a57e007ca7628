"""The parameter gate: every knob a chapter takes, with its type and range, checked in one place.

A chapter declares its parameters in the registry (:data:`wmnb.chapters.CHAPTERS`, field
``parameters``) as :class:`Param` entries.  The profile's values (``params/<profile>.yaml``,
section ``chapters.<id>``) are checked against that declaration *before* the runner starts a
kernel, and the notebook checks the values it actually received (papermill's ``-p`` gives
strings) with :func:`notebook_config`, so a typo (``stepp:``), a wrong type (``workers: "two"``)
or a string where a boolean belongs (``unblind: "no"``) stops the run with an error that names the
profile, the chapter and the key instead of silently doing something else.

>>> from wmnb.params import Param, parse_parameters
>>> spec = (Param("n_random_starts", int, 3, "fits from random starting points", minimum=0),
...         Param("unblind", bool, False, "show the true m_W"))
>>> cfg = parse_parameters("08_mw_fit", spec, {"n_random_starts": 10})
>>> cfg.n_random_starts, cfg.unblind
(10, False)
>>> parse_parameters("08_mw_fit", spec, {"unblind": "no"})
Traceback (most recent call last):
...
wmnb.params.ParameterError: 08_mw_fit: parameter 'unblind' must be a boolean (true or false), got the str 'no'
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: parameters every chapter notebook receives from the profile's top level
COMMON = ("profile", "seed", "executor", "dask_scheduler")


class ParameterError(ValueError):
    """A parameter of a profile or a notebook has an unknown name, a wrong type or a bad value."""


_TYPE_WORDS = {bool: "a boolean (true or false)", int: "an integer", float: "a number", str: "a string"}


@dataclass(frozen=True)
class Param:
    """One chapter parameter.

    ``kind`` is ``bool``, ``int``, ``float`` or ``str`` (a tuple of them for a value that may be
    either, e.g. an events scale given by name or number); ``nullable`` admits ``None`` (YAML
    ``null``).  ``minimum``/``maximum`` bound numbers, ``choices`` restricts strings.
    """

    name: str
    kind: type | tuple[type, ...]
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False
    choices: tuple[str, ...] | None = None
    nullable: bool = False

    def kinds(self) -> tuple[type, ...]:
        return self.kind if isinstance(self.kind, tuple) else (self.kind,)

    def check(self, value: Any, where: str) -> Any:
        """Return ``value`` (an ``int`` widened to ``float`` where a number is asked for) or
        raise :class:`ParameterError` naming ``where`` and the parameter."""
        if value is None:
            if self.nullable:
                return None
            raise ParameterError(f"{where}: parameter {self.name!r} must not be null ({self.doc})")
        kinds = self.kinds()
        # bool is a subclass of int in Python: True must not pass as a count, 1 not as a switch
        matched = next((k for k in kinds if _is_kind(value, k)), None)
        if matched is None:
            wanted = " or ".join(_TYPE_WORDS[k] for k in kinds)
            raise ParameterError(f"{where}: parameter {self.name!r} must be {wanted}, got the "
                                 f"{type(value).__name__} {value!r}")
        if matched is float:
            value = float(value)
            if not math.isfinite(value):
                raise ParameterError(f"{where}: parameter {self.name!r} must be finite, got {value!r}")
        if matched in (int, float):
            if self.minimum is not None and value < self.minimum:
                raise ParameterError(f"{where}: parameter {self.name!r} must be >= {self.minimum}, got {value!r}")
            if self.positive and not value > 0:
                raise ParameterError(f"{where}: parameter {self.name!r} must be > 0, got {value!r}")
            if self.maximum is not None and value > self.maximum:
                raise ParameterError(f"{where}: parameter {self.name!r} must be <= {self.maximum}, got {value!r}")
        if matched is str and self.choices is not None and value not in self.choices:
            raise ParameterError(f"{where}: parameter {self.name!r} must be one of "
                                 f"{list(self.choices)}, got {value!r}")
        return value


def _is_kind(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


class ChapterConfig(Mapping[str, Any]):
    """The checked parameters of one chapter: read-only, by attribute or by key."""

    __slots__ = ("_chapter", "_values")

    def __init__(self, chapter: str, values: Mapping[str, Any]):
        object.__setattr__(self, "_chapter", chapter)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"chapter {self._chapter} has no parameter {name!r}; "
                                 f"its parameters are {sorted(self._values)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a chapter configuration is read-only; change the profile instead")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"ChapterConfig[{self._chapter}]({inner})"


def parse_parameters(chapter: str, spec: Sequence[Param], values: Mapping[str, Any] | None,
                     source: str = "", *, fill_defaults: bool = True) -> ChapterConfig:
    """Check ``values`` against ``spec``: unknown keys, types and ranges, each error naming the
    key.  Missing keys take their declared default (unless ``fill_defaults`` is false)."""
    where = f"{source}: {chapter}" if source else chapter
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ParameterError(f"{where}: the chapter's parameters must be a mapping of name: value, "
                             f"got a {type(values).__name__}")
    by_name = {p.name: p for p in spec}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise ParameterError(f"{where}: unknown parameter(s) {unknown}; this chapter takes "
                             f"{sorted(by_name) or 'no parameters'}")
    out: dict[str, Any] = {}
    for p in spec:
        if p.name in values:
            out[p.name] = p.check(values[p.name], where)
        elif fill_defaults:
            out[p.name] = p.default
    return ChapterConfig(chapter, out)


def notebook_config(chapter: str, namespace: Mapping[str, Any]) -> ChapterConfig:
    """Check the parameters a notebook runs with (call it right after the ``parameters`` cell
    with ``globals()``): the same gate as the runner's, for runs started by hand or by papermill
    directly (``papermill -p unblind no`` passes the *string* ``'no'``).  It also declares the
    notebook's profile to this process (:func:`wmnb.paths.declare_profile`), and the checked
    ``executor`` and ``dask_scheduler`` become the process's executor (:func:`wmnb.execution.activate`)."""
    from .chapters import get_chapter
    from .paths import declare_profile
    from .profiles import check_common

    c = get_chapter(chapter)
    spec = c.parameters or ()
    check_common({k: namespace[k] for k in COMMON if k in namespace}, f"notebook {c.id}")
    if isinstance(namespace.get("profile"), str):
        declare_profile(namespace["profile"])   # for the truth gate (wmnb.truth), also in a run by hand
    values = {p.name: namespace[p.name] for p in spec if p.name in namespace}
    missing = [p.name for p in spec if p.name not in namespace]
    if missing:
        raise ParameterError(f"notebook {c.id}: the parameters cell lacks {missing}")
    config = parse_parameters(c.id, spec, values, "notebook")
    if "executor" in namespace:
        # the profile's executor becomes the kernel's: the heavy steps of the shared layers
        # (generation, selection, templates, toys) run on it unless told otherwise
        from .execution import activate

        activate(namespace["executor"], namespace.get("dask_scheduler"))
    return config

