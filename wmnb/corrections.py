"""The correction hook: how calibration chapters plug into the histogram engine and the fits.

A chapter that measures something (the muon momentum scale, efficiency scale factors, the
recoil, theory weights, a data-driven background) publishes it as a **correction**: a small
JSON manifest in ``results/<profile>/<chapter>/corrections/<name>.json`` that names a factory
function in ``wmnb`` and the artefact holding its parameters.  The histogram engine and the fit
chapters call :func:`discover` and apply whatever has been published, in ``order``; nobody edits
the engine or chapter 08 to add a correction.

Kinds of corrections:

``muon``
    changes muon kinematics (``correct`` mutates the ``<prefix>_pt`` ... columns of every muon
    prefix of the skim, e.g. ``mu`` for the W selection, ``mup``/``mum`` for dimuon selections).
``weight``
    multiplies the event weight (``weights`` returns the nominal factor and named variations).
``template``
    replaces a process template in the fits (e.g. the data-driven nonprompt background);
    ``templates`` returns histograms.

A correction may do several of these; its methods default to doing nothing.  Every variation
it declares carries a nuisance ``group`` (as in PHYSICS.md's impact tables: "muonScale",
"muonEfficiency", "recoil", "nonprompt", "pTV", "angularCoeffs", "pdf", ...).

Manifests are data, not code, and are checked before anything is loaded:

* only chapter directories (``NN_name``) are read; the runner's ``.<id>.staging``, ``.<id>.old``
  and ``.failed`` directories are invisible (while the runner executes a chapter, that chapter
  is read from its staging directory, as :func:`wmnb.paths.chapter_dir` says);
* the factory must be one of :data:`FACTORIES` (functions of this package), the artefact a
  relative path inside the manifest's chapter directory;
* a corrupt file, a missing key, another ``manifest_version``, an unknown kind or a ``chapter``
  field that disagrees with the directory raise :class:`CorrectionError`, naming the file and
  the chapter to rerun.
"""
from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from .artefacts import write_json
from .chapters import CHAPTERS
from .paths import chapter_dir as _chapter_dir
from .paths import profile_results

MANIFEST_VERSION = 1
KINDS = ("muon", "weight", "template")


@dataclass(frozen=True)
class SampleInfo:
    """What a correction needs to know about the sample it is applied to."""

    name: str                 # e.g. "wplus_munu", "data"
    is_data: bool
    selection: str            # "w", "z", "wlike", "jpsi", "upsilon", "tnp"
    muon_prefixes: tuple[str, ...] = ("mu",)


@dataclass(frozen=True)
class AddedEvents:
    """Events a column-changing variation puts into the selection: their columns after the
    final cuts (as the varied columns make them) and their nominal weight."""

    columns: dict[str, np.ndarray]
    weight: np.ndarray


@dataclass(frozen=True)
class Variation:
    """One shape nuisance: per-event weight factors **relative to the nominal weight**.

    ``down`` is None for a one-sided variation (the fitter symmetrises it).  ``rows`` makes a
    variation *local*: when given, ``up``/``down`` hold the factors of those rows only (indices
    into the sample's events) and every other event keeps factor 1, so a variation of one eta
    bin, one helicity bin or one smoothing coefficient costs in proportion to its events.

    ``added_up``/``added_down`` carry the events a *column* variation (:class:`ColumnVariation`)
    selects: the varied histogram is the selected events with their factors plus these events
    with their weights.  The pipeline builds such a variation with factor 0 on every selected
    row the column variation touches and those rows, re-selected with the varied columns, as
    the added events; so an event that crosses a cut leaves or enters, and one that stays may
    change bin.  Consumers fill both (:mod:`wmnb.templatefit.templates`,
    :func:`wmnb.engine.histogram.fill`).
    """

    nuisance: str
    group: str
    up: np.ndarray
    down: np.ndarray | None = None
    rows: np.ndarray | None = None
    added_up: AddedEvents | None = None
    added_down: AddedEvents | None = None

    def full(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The factors expanded to all ``n`` events."""
        if self.rows is None:
            return self.up, self.down
        up = np.ones(n)
        up[self.rows] = self.up
        down = None
        if self.down is not None:
            down = np.ones(n)
            down[self.rows] = self.down
        return up, down


@dataclass(frozen=True)
class ColumnVariation:
    """One nuisance of a column-changing correction: other values of some columns on some events.

    ``rows`` index the sample's events *before* the final cuts; ``up``/``down`` map a column to
    its varied values on those rows (``down`` None: one-sided).  Every other event keeps its
    columns.  The pipeline recomputes the derived quantities and the final cuts of those rows
    and yields the result as a :class:`Variation` with added events, so a recoil variation
    moves events across the m_T cut.  A correction restricts ``rows`` to the events whose
    selection or bin can change (e.g. those near a cut) to keep a variation cheap.
    """

    nuisance: str
    group: str
    rows: np.ndarray
    up: dict[str, np.ndarray]
    down: dict[str, np.ndarray] | None = None


def as_variation(item: Variation | tuple[Any, ...], source: str) -> Variation:
    """A :class:`Variation` from what :meth:`Correction.iter_variations` yields (a Variation or
    a ``(name, group, up, down)`` tuple); factors as float64 arrays."""
    if isinstance(item, Variation):
        var = item
    else:
        if len(item) != 4:
            raise ValueError(f"correction {source!r}: iter_variations must yield (name, group, up, down) "
                             f"or Variation, got a tuple of {len(item)}")
        var = Variation(str(item[0]), str(item[1]), item[2], item[3])
    up = np.asarray(var.up, dtype=np.float64)
    down = None if var.down is None else np.asarray(var.down, dtype=np.float64)
    rows = None if var.rows is None else np.asarray(var.rows, dtype=np.int64)
    if down is not None and down.shape != up.shape:
        raise ValueError(f"correction {source!r}: variation {var.nuisance!r} has up {up.shape} and down {down.shape}")
    if rows is not None and rows.shape != up.shape:
        raise ValueError(f"correction {source!r}: local variation {var.nuisance!r} has {rows.size} rows but "
                         f"{up.size} factors")
    return Variation(var.nuisance, var.group, up, down, rows, var.added_up, var.added_down)


def pair_variations(names: Iterable[str]) -> list[tuple[str, str, str | None]]:
    """The Up/Down pairing rule, the only one in the package: ``(nuisance, up key, down key)``.

    ``<x>Up`` with ``<x>Down`` make nuisance ``x``; a lone ``<x>Up`` or ``<x>Down`` is the
    one-sided nuisance ``x`` (its sign is irrelevant once the fitter symmetrises it); any other
    name ``y`` is the one-sided nuisance ``y``.  Order follows the first appearance of each.

    >>> pair_variations(["aUp", "aDown", "bDown", "c"])
    [('a', 'aUp', 'aDown'), ('b', 'bDown', None), ('c', 'c', None)]
    """
    names = list(names)
    present = set(names)
    out: list[tuple[str, str, str | None]] = []
    seen: set[str] = set()
    for key in names:
        if key.endswith("Up"):
            base = key[:-2]
        elif key.endswith("Down"):
            base = key[:-4]
        else:
            base = key
        if not base:
            base = key
        if base in seen:
            continue
        seen.add(base)
        up, down = f"{base}Up", f"{base}Down"
        if up in present and down in present:
            out.append((base, up, down))
        else:
            out.append((base, key, None))
    return out


def weightset_variations(ws: WeightSet, source: str) -> Iterator[Variation]:
    """The variations of a :class:`WeightSet` (whose ``variations`` are *full* factors that
    replace ``ws.nominal``) as factors relative to the nominal factor, paired by
    :func:`pair_variations`; a nuisance's group is ``ws.groups[nuisance]``, else ``source``
    (the correction's name: the one group fallback)."""
    nom = None if ws.nominal is None else np.asarray(ws.nominal, dtype=np.float64)
    safe = None if nom is None else np.where(nom != 0, nom, 1.0)

    def rel(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return v if safe is None else np.where(nom != 0, v / safe, 0.0)

    for base, up_key, down_key in pair_variations(ws.variations):
        yield Variation(base, ws.groups.get(base, source), rel(ws.variations[up_key]),
                        None if down_key is None else rel(ws.variations[down_key]))


@dataclass
class WeightSet:
    """Per-event weight factors from one correction.

    ``nominal``: factor applied to the nominal weight (shape ``[n]``), or None for 1.
    ``variations``: name -> array ``[n]`` of the *full* varied factor (replaces ``nominal``
    for that variation); symmetric pairs are named ``<name>Up`` / ``<name>Down``.
    ``groups``: variation base name -> nuisance group for impact tables.
    """

    nominal: np.ndarray | None = None
    variations: dict[str, np.ndarray] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)


class Correction:
    """Base class of published corrections; subclasses override what they provide."""

    name: str = "unnamed"
    kinds: tuple[str, ...] = ()
    #: nuisance groups of the fits' *built-in* sources that this correction replaces (e.g. the
    #: theory chapter's ``("pdf", "scales")``): a template builder drops its own variations of
    #: those groups while the correction is in force (set from the manifest on discovery)
    supersedes: tuple[str, ...] = ()

    def applies_to(self, sample: SampleInfo) -> bool:
        """Whether this correction acts on ``sample`` (default: always)."""
        return True

    def correct(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> None:
        """Modify muon columns in place (kind ``muon``)."""

    def weights(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> WeightSet:
        """Weight factor and variations (kind ``weight``)."""
        return WeightSet()

    def nominal_factor(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> np.ndarray | None:
        """Nominal per-event weight factor (None means 1). Default: ``weights(...).nominal``."""
        return self.weights(columns, sample).nominal

    def iter_variations(self, columns: dict[str, np.ndarray], sample: SampleInfo
                        ) -> Iterator[tuple[str, str, np.ndarray, np.ndarray | None] | Variation]:
        """Yield ``(name, group, up, down)`` one variation at a time, as factors **relative to
        the nominal factor** (``down`` None for one-sided variations), or :class:`Variation`
        objects (which may act on a subset of rows: see :attr:`Variation.rows`).

        Callers that histogram thousands of variations use this so that only one sits in
        memory; corrections with many variations override it to compute them lazily (and then
        override :meth:`nominal_factor` too, whose default calls :meth:`weights`).  The default
        derives them from :meth:`weights` with the one pairing rule, :func:`pair_variations`.
        """
        yield from weightset_variations(self.weights(columns, sample), self.name)

    def column_variations(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> Iterator[ColumnVariation]:
        """Yield the variations of a column-changing correction (kind ``muon``), one at a time, on
        the sample's corrected columns *before* the final cuts (simulation only); the pipeline
        turns each into a :class:`Variation` with added events.  Default: none."""
        return iter(())

    def templates(self, **context: Any) -> dict[str, Any]:
        """Replacement process templates (kind ``template``)."""
        return {}


class CorrectionError(ValueError):
    """A correction manifest (or what it points to) that cannot be used.

    The message names the manifest file, the offending key and what to do (usually: rerun the
    chapter that publishes it).  A ``ValueError`` so that callers catching bad input keep working.
    """


class MissingArtefactError(CorrectionError, FileNotFoundError):
    """The artefact a manifest names does not exist (also a ``FileNotFoundError``)."""


#: The factories a manifest may name, ``"module:function"`` -> what it builds.  A manifest is data
#: read from disk: if it could name any callable, a file dropped below ``results/`` would run
#: arbitrary code on :func:`discover` (``runpy:run_path`` on a ``payload.py``).  Only functions of
#: the package listed here (or added with :func:`register_correction_factory`) are called;
#: their modules are imported only then.
FACTORIES: dict[str, str] = {
    "wmnb.muonscale.correction:load_correction": "chapter 02: muon momentum scale, resolution, scale variations",
    "wmnb.selection.pileup:load_correction": "chapter 01: pileup reweighting of simulation by the number of vertices",
    "wmnb.efficiency.correction:load_correction": "chapter 03: muon efficiency scale factors and prefiring",
    "wmnb.recoil.correction:load_correction": "chapter 04: the simulated hadronic recoil morphed to the data's",
    "wmnb.theory.correction:load_correction": "chapter 06: q_T reweighting, pTV, A_i and PDF variations",
    "wmnb.nonprompt.correction:load_correction": "chapter 05: the data-driven nonprompt template (extended ABCD) and its nuisances",
    "wmnb.engine.testing:load_toy_scale": "toy muon scale of the engine tests (wmnb.engine.testing)",
}

#: Directory names of chapters (``02_calibration``); the runner's ``.<id>.staging``, ``.<id>.old``
#: and ``.failed`` directories, and anything else hidden, never match.
_CHAPTER_DIR = re.compile(r"^\d{2}_[A-Za-z0-9_]+$")


def register_correction_factory(spec: str, description: str) -> None:
    """Allow manifests to name the factory ``spec`` (``"wmnb.<module>:<function>"``).

    For factories outside this module's table; call it at import time of a module that is
    imported before :func:`discover` runs.  Nothing is imported here: a factory's module is
    imported only when an accepted manifest names it.
    """
    module, _, func = spec.partition(":")
    if not module.startswith("wmnb.") or not func.isidentifier():
        raise CorrectionError(f"correction factory {spec!r}: must be 'wmnb.<module>:<function>' of the wmnb package")
    FACTORIES[spec] = description


def _rerun_hint(manifest: Path, chapter: str) -> str:
    """What to tell the user when a chapter's published correction is unusable
    (``manifest`` sits in ``results/<profile>/<chapter directory>/corrections/``)."""
    profile = manifest.parent.parent.parent.name
    return f"rerun chapter {chapter} (`wmnb run --profile {profile} --only {chapter} --force`)"


def _check_factory(spec: Any, where: str) -> tuple[str, str]:
    """``(module, function)`` of a registered factory, or :class:`CorrectionError` naming ``where``."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise CorrectionError(f"{where}: factory must be 'module:function', got {spec!r}")
    if spec not in FACTORIES:
        raise CorrectionError(f"{where}: factory {spec!r} is not a registered correction factory; "
                              f"allowed: {sorted(FACTORIES)}")
    module, func = spec.split(":")
    if not module.startswith("wmnb."):  # FACTORIES is a public dict: check again before importing
        raise CorrectionError(f"{where}: factory {spec!r} is not in the wmnb package")
    return module, func


def _check_artefact(chapter_dir: Path, artefact: Any, where: str) -> Path:
    """Resolved artefact path, which must be relative, without ``..`` and inside ``chapter_dir``."""
    if not isinstance(artefact, str) or not artefact:
        raise CorrectionError(f"{where}: 'artefact' must be a file name relative to the chapter directory, "
                              f"got {artefact!r}")
    rel = PurePosixPath(artefact.replace("\\", "/"))
    if rel.is_absolute() or PureWindowsPath(artefact).is_absolute() or ".." in rel.parts:
        raise CorrectionError(f"{where}: artefact {artefact!r} must be a relative path inside the chapter "
                              "directory (no absolute path, no '..')")
    base = chapter_dir.resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base):  # a symbolic link pointing out of the chapter
        raise CorrectionError(f"{where}: artefact {artefact!r} resolves to {path}, outside {base}")
    return path


@dataclass(frozen=True)
class Manifest:
    """The JSON manifest a chapter writes to publish a correction."""

    name: str
    chapter: str
    kinds: tuple[str, ...]
    factory: str              # "wmnb.muonscale.correction:load_correction", one of FACTORIES
    artefact: str             # file name relative to the manifest's chapter directory
    order: int = 50           # lower runs first (momentum scale before efficiencies ...)
    groups: tuple[str, ...] = ()
    description: str = ""
    supersedes: tuple[str, ...] = ()   # built-in nuisance groups this correction replaces


def publish(chapter_dir: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest`` to ``<chapter_dir>/corrections/<name>.json`` (atomically).

    Refuses what :func:`discover` would refuse later (unknown kinds, an unregistered factory, an
    artefact outside the chapter directory or not written yet), so the publishing chapter fails,
    not its consumers.  (Whether ``manifest.chapter`` matches the directory is checked on reading:
    ``chapter_dir`` may be the runner's staging directory, or any directory in tests.)
    """
    chapter_dir = Path(chapter_dir)
    where = f"correction {manifest.name!r} of chapter {manifest.chapter}"
    if not isinstance(manifest.name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", manifest.name):
        raise CorrectionError(f"{where}: the name must be a plain file name (letters, digits, '_', '-', '.')")
    _check_kinds(manifest.kinds, where)
    _check_factory(manifest.factory, where)
    artefact = _check_artefact(chapter_dir, manifest.artefact, where)
    if not artefact.is_file():
        raise MissingArtefactError(f"{where}: artefact {artefact} must be written before publishing")
    doc = {"manifest_version": MANIFEST_VERSION, **manifest.__dict__,
           "kinds": list(manifest.kinds), "groups": list(manifest.groups),
           "supersedes": list(manifest.supersedes)}
    return write_json(chapter_dir / "corrections" / f"{manifest.name}.json", doc)


def _check_kinds(kinds: Any, where: str) -> None:
    """Kinds must be a non-empty list of :data:`KINDS`."""
    if isinstance(kinds, str) or not isinstance(kinds, Sequence) or not kinds:
        raise CorrectionError(f"{where}: 'kinds' must be a non-empty list of {KINDS}, got {kinds!r}")
    bad = sorted({str(k) for k in kinds} - set(KINDS))
    if bad:
        raise CorrectionError(f"{where}: unknown kinds {bad}; allowed: {KINDS}")


#: key -> (type, default or _REQUIRED) of a manifest file
_REQUIRED = object()
_FIELDS: dict[str, tuple[type, Any]] = {
    "name": (str, _REQUIRED), "chapter": (str, _REQUIRED), "kinds": (list, _REQUIRED),
    "factory": (str, _REQUIRED), "artefact": (str, _REQUIRED), "order": (int, 50),
    "groups": (list, []), "description": (str, ""), "supersedes": (list, []),
}


def read_manifest(path: str | Path, chapter: str | None = None) -> dict[str, Any]:
    """Read and validate one manifest file; ``chapter``: the chapter whose directory holds it.

    Returns the manifest's keys (defaults filled in) plus ``_path``; raises
    :class:`CorrectionError` naming the file and the key for anything :func:`publish` would not
    have written.  Nothing is imported or executed.
    """
    path = Path(path)
    chapter = chapter or path.parent.parent.name
    hint = _rerun_hint(path, chapter)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorrectionError(f"correction manifest {path} cannot be read ({err}); {hint}") from err
    if not isinstance(doc, dict):
        raise CorrectionError(f"correction manifest {path} is not a JSON object; {hint}")
    version = doc.get("manifest_version")
    if version != MANIFEST_VERSION or isinstance(version, bool):
        raise CorrectionError(f"correction manifest {path}: manifest_version is {version!r}, this wmnb reads "
                              f"{MANIFEST_VERSION}; {hint}")
    out: dict[str, Any] = {"manifest_version": MANIFEST_VERSION}
    for key, (typ, default) in _FIELDS.items():
        if key not in doc:
            if default is _REQUIRED:
                raise CorrectionError(f"correction manifest {path} lacks the key {key!r}; {hint}")
            out[key] = default
            continue
        value = doc[key]
        if not isinstance(value, typ) or isinstance(value, bool):
            raise CorrectionError(f"correction manifest {path}: {key!r} must be a {typ.__name__}, "
                                  f"got {value!r}; {hint}")
        out[key] = value
    where = f"correction manifest {path}"
    for key in ("groups", "supersedes"):
        if not all(isinstance(g, str) for g in out[key]):
            raise CorrectionError(f"{where}: {key!r} must be a list of strings; {hint}")
    if out["chapter"] != chapter:
        raise CorrectionError(f"{where}: 'chapter' is {out['chapter']!r} but the file sits in the directory of "
                              f"chapter {chapter} (copied by hand?); delete it and {hint}")
    if out["name"] != path.stem:
        raise CorrectionError(f"{where}: 'name' is {out['name']!r} but the file is {path.name}; {hint}")
    try:
        _check_kinds(out["kinds"], where)
        _check_factory(out["factory"], where)
        _check_artefact(path.parent.parent, out["artefact"], where)
    except CorrectionError as err:
        raise CorrectionError(f"{err}; delete the file and {hint}") from None
    out["_path"] = str(path)
    return out


def _load(path: Path, chapter: str | None = None) -> Correction:
    """Build the correction a manifest describes (validated first: see :func:`read_manifest`)."""
    doc = read_manifest(path, chapter)
    where = f"correction manifest {path}"
    artefact = _check_artefact(path.parent.parent, doc["artefact"], where)
    if not artefact.is_file():
        raise MissingArtefactError(f"{where} points to missing artefact {artefact}; "
                                   f"{_rerun_hint(path, doc['chapter'])}")
    module_name, func_name = _check_factory(doc["factory"], where)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:  # the factory's module exists but is broken: show that
            raise
        module = None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise CorrectionError(f"{where}: factory {doc['factory']!r} does not exist in this wmnb version; "
                              f"{_rerun_hint(path, doc['chapter'])}")
    corr = factory(artefact)
    if not isinstance(corr, Correction):
        raise TypeError(f"factory {doc['factory']} returned {type(corr).__name__}, not a wmnb.corrections.Correction")
    if doc["supersedes"]:
        corr.supersedes = tuple(doc["supersedes"])
    return corr


def chapter_directories(profile: str) -> dict[str, Path]:
    """Chapter id -> the directory whose ``corrections/`` :func:`list_manifests` reads.

    Only chapter directories count (``NN_name``): the runner's staging, ``.old`` and ``.failed``
    directories are invisible, so an interrupted rerun never publishes twice.  The chapter the
    runner is executing is read from its staging directory (what :func:`wmnb.paths.chapter_dir`
    returns), never from the results it is about to replace.
    """
    root = profile_results(profile)
    ids = {c.id for c in CHAPTERS}
    if root.is_dir():
        ids |= {p.name for p in root.iterdir() if p.is_dir() and _CHAPTER_DIR.match(p.name)}
    return {cid: _chapter_dir(profile, cid) for cid in sorted(ids)}


def _manifest_files(directory: Path) -> list[Path]:
    """Manifest files of one chapter directory (hidden files are temporary or foreign)."""
    folder = directory / "corrections"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith(".") and p.is_file())


def list_manifests(profile: str, kinds: tuple[str, ...] | None = None,
                   exclude_chapters: Sequence[str] = (),
                   from_chapters: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Validated manifests published under ``results/<profile>/``, sorted by ``order`` then name.

    ``exclude_chapters``: chapters to skip (a chapter excludes itself).  ``from_chapters``: the
    consumer's declared dependencies (``depends_on`` in :mod:`wmnb.chapters`); a correction
    published by any other, non-excluded chapter is then an error, since the runner would not
    rerun the consumer when that chapter changes.
    """
    docs = []
    for cid, directory in chapter_directories(profile).items():
        if cid in exclude_chapters:
            continue
        paths = _manifest_files(directory)
        if paths and from_chapters is not None and cid not in from_chapters:
            raise CorrectionError(
                f"chapter {cid} publishes corrections ({', '.join(p.name for p in paths)}) but the consumer "
                f"declares only {sorted(from_chapters)}: add {cid} to its depends_on in wmnb/chapters.py, "
                "or pass it in exclude_chapters")
        for path in paths:
            doc = read_manifest(path, cid)
            if kinds and not set(doc["kinds"]) & set(kinds):
                continue
            docs.append(doc)
    return sorted(docs, key=lambda d: (d["order"], d["name"]))


def upstream(profile: str, chapter: str, exclude_chapters: Sequence[str] = ()) -> list[Correction]:
    """The corrections a chapter may apply: those of the chapters it declares in ``depends_on``
    (:mod:`wmnb.chapters`), whatever later chapters have published meanwhile (a rerun of
    chapter 06 after chapter 05 must not pick up 05's template), minus ``exclude_chapters``."""
    from .chapters import get_chapter

    deps = get_chapter(chapter).depends_on
    later = tuple(c.id for c in CHAPTERS if c.id not in deps)
    return discover(profile, from_chapters=deps, exclude_chapters=(*later, *exclude_chapters))


def discover(profile: str, kinds: tuple[str, ...] | None = None,
             exclude_chapters: Sequence[str] = (),
             from_chapters: Sequence[str] | None = None) -> list[Correction]:
    """Load every published correction of ``profile`` (optionally only some ``kinds``).

    See :func:`list_manifests` for ``exclude_chapters`` and ``from_chapters``; every manifest is
    validated and only registered factories (:data:`FACTORIES`) are called.
    """
    return [_load(Path(d["_path"]), d["chapter"])
            for d in list_manifests(profile, kinds, exclude_chapters, from_chapters)]
