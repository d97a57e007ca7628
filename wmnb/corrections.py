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
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .artefacts import read_json, write_json
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
                        ) -> Iterator[tuple[str, str, np.ndarray, np.ndarray | None]]:
        """Yield ``(name, group, up, down)`` one variation at a time, as factors **relative to
        the nominal factor** (``down`` None for one-sided variations).

        Callers that histogram hundreds of variations use this so that only one sits in memory;
        corrections with many variations override it to compute them lazily (and then override
        :meth:`nominal_factor` too, whose default calls :meth:`weights`).  The default derives
        them from :meth:`weights` (``<name>Up`` / ``<name>Down`` pairs).
        """
        ws = self.weights(columns, sample)
        nom = None if ws.nominal is None else np.asarray(ws.nominal, dtype=np.float64)
        safe = None if nom is None else np.where(nom != 0, nom, 1.0)

        def rel(v: np.ndarray) -> np.ndarray:
            v = np.asarray(v, dtype=np.float64)
            return v if safe is None else np.where(nom != 0, v / safe, 0.0)

        seen: set[str] = set()
        for key in ws.variations:
            base = key[:-2] if key.endswith("Up") else key[:-4] if key.endswith("Down") else key
            if base in seen:
                continue
            seen.add(base)
            up = ws.variations.get(f"{base}Up", ws.variations.get(base))
            down = ws.variations.get(f"{base}Down")
            if up is None:  # only a Down variation: mirror nothing, report it as one-sided
                up, down = down, None
            yield base, ws.groups.get(base, "other"), rel(up), None if down is None else rel(down)

    def templates(self, **context: Any) -> dict[str, Any]:
        """Replacement process templates (kind ``template``)."""
        return {}


@dataclass(frozen=True)
class Manifest:
    """The JSON manifest a chapter writes to publish a correction."""

    name: str
    chapter: str
    kinds: tuple[str, ...]
    factory: str              # "wmnb.calib.momentum:load_correction"
    artefact: str             # file name relative to the manifest's chapter directory
    order: int = 50           # lower runs first (momentum scale before efficiencies ...)
    groups: tuple[str, ...] = ()
    description: str = ""


def publish(chapter_dir: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest`` to ``<chapter_dir>/corrections/<name>.json`` (atomically)."""
    bad = set(manifest.kinds) - set(KINDS)
    if bad:
        raise ValueError(f"correction {manifest.name!r}: unknown kinds {sorted(bad)}; allowed: {KINDS}")
    if ":" not in manifest.factory:
        raise ValueError(f"correction {manifest.name!r}: factory must be 'module:function', got {manifest.factory!r}")
    chapter_dir = Path(chapter_dir)
    if not (chapter_dir / manifest.artefact).exists():
        raise FileNotFoundError(
            f"correction {manifest.name!r}: artefact {chapter_dir / manifest.artefact} must be written before publishing"
        )
    doc = {"manifest_version": MANIFEST_VERSION, **manifest.__dict__,
           "kinds": list(manifest.kinds), "groups": list(manifest.groups)}
    return write_json(chapter_dir / "corrections" / f"{manifest.name}.json", doc)


def _load(path: Path) -> Correction:
    doc = read_json(path)
    module_name, func_name = doc["factory"].split(":")
    factory = getattr(importlib.import_module(module_name), func_name)
    artefact = path.parent.parent / doc["artefact"]
    if not artefact.exists():
        raise FileNotFoundError(f"correction manifest {path} points to missing artefact {artefact}; rerun chapter {doc['chapter']}")
    corr = factory(artefact)
    if not isinstance(corr, Correction):
        raise TypeError(f"factory {doc['factory']} returned {type(corr).__name__}, not a wmnb.corrections.Correction")
    return corr


def list_manifests(profile: str, kinds: tuple[str, ...] | None = None,
                   exclude_chapters: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Manifests published under ``results/<profile>/``, sorted by ``order`` then name."""
    docs = []
    for path in sorted(profile_results(profile).glob("*/corrections/*.json")):
        doc = read_json(path)
        doc["_path"] = str(path)
        if doc["chapter"] in exclude_chapters:
            continue
        if kinds and not set(doc["kinds"]) & set(kinds):
            continue
        docs.append(doc)
    return sorted(docs, key=lambda d: (d["order"], d["name"]))


def discover(profile: str, kinds: tuple[str, ...] | None = None,
             exclude_chapters: tuple[str, ...] = ()) -> list[Correction]:
    """Load every published correction of ``profile`` (optionally only some ``kinds``)."""
    return [_load(Path(d["_path"])) for d in list_manifests(profile, kinds, exclude_chapters)]
