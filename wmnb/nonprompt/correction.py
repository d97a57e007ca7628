"""The published nonprompt background (kind ``template``): chapter 05's estimate for every W fit.

The artefact (``nonprompt_template.h5``) holds the nominal template in the W binning
(:data:`wmnb.templatefit.binning.W_BINNING`), and for every nuisance its up (and down) template
stored as the relative change ``varied / nominal − 1`` in float32 (zero wherever a local
variation leaves the template alone, so it compresses to almost nothing), with the nuisance's
group.  :class:`NonpromptTemplateCorrection` hands them to the template builder for the
``nonprompt`` process of the ``w`` selection, which then replaces the simulated multijet
template.  Its ``sumw2`` is zero: the estimate's statistical uncertainty is in its smoothing
nuisances, so Barlow–Beeston must not count it a second time.

Nuisances: ``nonpromptStat_<slice>_<k>`` (eigenvectors of the smoothing), ``nonpromptNorm``
(the non-closure correction's normalisation), ``nonpromptShapeLin`` / ``nonpromptShapeQuad``
(the smoothing polynomial's linear and quadratic coefficients, correlated across eta and
charge), all in group ``nonprompt``; and the prompt simulation's own nuisances propagated
through the subtraction under their own names and groups (so the fit correlates them).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artefacts import atomic_path
from ..corrections import Correction, Manifest, publish
from ..templatefit.binning import W_BINNING

CORRECTION_NAME = "nonprompt_abcd"
CHAPTER = "05_nonprompt"
ARTEFACT = "nonprompt_template.h5"
GROUP = "nonprompt"
PROCESS = "nonprompt"
SELECTION = "w"
FORMAT_VERSION = 1


def write_template(path: str | Path, nominal: np.ndarray, variations: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
                   groups: Mapping[str, str], attrs: Mapping[str, Any] | None = None) -> Path:
    """Write the nominal template and ``variations`` (name -> (up, down or None)) atomically."""
    import h5py

    nominal = np.asarray(nominal, np.float64)
    if nominal.shape != W_BINNING.shape:
        raise ValueError(f"the nonprompt template must have the W binning's shape {W_BINNING.shape}, got {nominal.shape}")
    if np.any(~np.isfinite(nominal)) or np.any(nominal < 0):
        raise ValueError("the nonprompt template has negative or non-finite bins; it must not be published")
    names = list(variations)
    safe = np.where(nominal > 0, nominal, 1.0)
    rel_up = np.zeros((len(names),) + nominal.shape, np.float32)
    rel_down = np.zeros_like(rel_up)
    two_sided = np.zeros(len(names), bool)
    for i, n in enumerate(names):
        up, down = variations[n]
        rel_up[i] = np.where(nominal > 0, np.asarray(up) / safe - 1.0, 0.0)
        if down is not None:
            two_sided[i] = True
            rel_down[i] = np.where(nominal > 0, np.asarray(down) / safe - 1.0, 0.0)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["meta"] = json.dumps(dict(attrs or {}), default=str)
            f.attrs["names"] = json.dumps(names)
            f.attrs["groups"] = json.dumps({n: groups[n] for n in names})
            f.create_dataset("nominal", data=nominal)
            kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
            f.create_dataset("rel_up", data=rel_up, chunks=(1,) + nominal.shape, **kw)
            f.create_dataset("rel_down", data=rel_down, chunks=(1,) + nominal.shape, **kw)
            f.create_dataset("two_sided", data=two_sided)
    return Path(path)


def read_template(path: str | Path) -> dict[str, Any]:
    """The artefact as ``{"nominal", "variations": {name: (up, down|None)}, "groups", "meta"}``."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
                raise ValueError(f"{path}: format version {f.attrs.get('format_version')} is not {FORMAT_VERSION}; "
                                 "rerun chapter 05")
            nominal = f["nominal"][...]
            names = json.loads(f.attrs["names"])
            groups = json.loads(f.attrs["groups"])
            meta = json.loads(f.attrs["meta"])
            up, down, two = f["rel_up"][...], f["rel_down"][...], f["two_sided"][...]
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: not a readable nonprompt template ({err}); rerun chapter 05") from err
    variations = {n: (nominal * (1.0 + up[i].astype(np.float64)),
                      nominal * (1.0 + down[i].astype(np.float64)) if two[i] else None) for i, n in enumerate(names)}
    return {"nominal": nominal, "variations": variations, "groups": groups, "meta": meta}


class NonpromptTemplateCorrection(Correction):
    """The data-driven nonprompt template of the W selection."""

    name = CORRECTION_NAME
    kinds = ("template",)

    def __init__(self, doc: Mapping[str, Any]):
        self.doc = doc

    def templates(self, selection: str = SELECTION, processes: Sequence[str] = (PROCESS,),
                  shape: tuple[int, ...] | None = None, **_: Any) -> dict[str, Any]:
        if selection != SELECTION or PROCESS not in processes:
            return {}
        nominal = self.doc["nominal"]
        if shape is not None and tuple(shape) != nominal.shape:
            raise ValueError(f"{CORRECTION_NAME}: the nonprompt template has the W binning {nominal.shape}, the fit "
                             f"asks for {tuple(shape)}; a fit with another binning needs its own estimate")
        variations: dict[str, np.ndarray] = {}
        groups: dict[str, str] = {}
        for n, (up, down) in self.doc["variations"].items():
            if down is None:
                variations[n] = up
            else:
                variations[f"{n}Up"], variations[f"{n}Down"] = up, down
            groups[n] = self.doc["groups"][n]
        return {PROCESS: {"nominal": nominal, "sumw2": np.zeros_like(nominal), "variations": variations,
                          "groups": groups}}

    def nuisance_counts(self) -> dict[str, int]:
        """Nuisances by group (the nonprompt group's own and the propagated prompt ones)."""
        out: dict[str, int] = {}
        for g in self.doc["groups"].values():
            out[g] = out.get(g, 0) + 1
        return out


def load_correction(artefact: str | Path) -> NonpromptTemplateCorrection:
    """Factory named in the published manifest."""
    return NonpromptTemplateCorrection(read_template(artefact))


def publish_correction(chapter_dir: str | Path) -> Path:
    """Publish the artefact (written first by :func:`write_template`)."""
    return publish(chapter_dir, Manifest(
        name=CORRECTION_NAME, chapter=CHAPTER, kinds=("template",), factory="wmnb.nonprompt.correction:load_correction",
        artefact=ARTEFACT, order=60, groups=(GROUP,),
        description="nonprompt background of the W selection from data: extended ABCD with smoothing, the "
                    "non-closure correction and the prompt variations propagated through the subtraction"))


__all__ = ["ARTEFACT", "CORRECTION_NAME", "GROUP", "NonpromptTemplateCorrection", "load_correction",
           "publish_correction", "read_template", "write_template"]
