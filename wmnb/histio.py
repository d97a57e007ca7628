"""Exact, pickle-free storage of ``hist.Hist`` objects in HDF5.

A histogram is stored as one HDF5 group: its axes (type, edges or categories, name, label,
flow and growth options), its storage type, the full content including flow bins (every
field of structured storages such as ``Weight``: sum of weights *and* variances), the
histogram's name/label and its ``metadata`` (JSON).  Loading gives back a histogram that
compares equal to the original, bin for bin and variance for variance.

    save_hists("templates.h5", {"wplus": h1, "wminus": h2}, attrs={"profile": "smoke"})
    hists = load_hists("templates.h5")
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boost_histogram as bh
import h5py
import hist
import numpy as np

from .artefacts import atomic_path

FORMAT = "wmnb-hist"
FORMAT_VERSION = 1

_STORAGES: dict[str, type[bh.storage.Storage]] = {
    "Double": hist.storage.Double,
    "Int64": hist.storage.Int64,
    "AtomicInt64": hist.storage.AtomicInt64,
    "Weight": hist.storage.Weight,
    "Mean": hist.storage.Mean,
    "WeightedMean": hist.storage.WeightedMean,
    "Unlimited": hist.storage.Unlimited,
}


def _axis_spec(ax: bh.axis.Axis) -> dict[str, Any]:
    traits = ax.traits
    spec: dict[str, Any] = {
        # the raw axis metadata (name, label as given, any extra keys); ax.label falls back to
        # the name, which would not round-trip
        "metadata": dict(vars(ax)),
        "underflow": bool(traits.underflow),
        "overflow": bool(traits.overflow),
        "growth": bool(traits.growth),
        "circular": bool(traits.circular),
    }
    if isinstance(ax, bh.axis.Regular):
        transform = ax.transform
        spec["type"] = "Regular"
        if transform is None:
            pass
        elif isinstance(transform, bh.axis.transform.Pow):
            spec["power"] = float(transform.power)
        elif transform == bh.axis.transform.log:
            spec["transform"] = "log"
        elif transform == bh.axis.transform.sqrt:
            spec["transform"] = "sqrt"
        else:
            raise TypeError(f"axis {ax.name!r}: custom transforms cannot be stored; use a Variable axis")
        spec["bins"] = int(ax.size)
        # the edges of a transformed axis are in data space; invert to get the original limits
        spec["start"], spec["stop"] = float(ax.edges[0]), float(ax.edges[-1])
    elif isinstance(ax, bh.axis.Variable):
        spec["type"] = "Variable"
    elif isinstance(ax, bh.axis.Integer):
        spec["type"] = "Integer"
        spec["start"], spec["stop"] = int(ax.edges[0]), int(ax.edges[-1])
    elif isinstance(ax, bh.axis.IntCategory):
        spec["type"] = "IntCategory"
    elif isinstance(ax, bh.axis.StrCategory):
        spec["type"] = "StrCategory"
    elif isinstance(ax, bh.axis.Boolean):
        spec["type"] = "Boolean"
    else:
        raise TypeError(f"axis {ax.name!r} of type {type(ax).__name__} is not supported by histio")
    return spec


def _axis_from_spec(spec: dict[str, Any], values: np.ndarray) -> bh.axis.Axis:
    ax = _make_axis(spec, values)
    ax.__dict__.update(spec["metadata"])
    return ax


def _make_axis(spec: dict[str, Any], values: np.ndarray) -> bh.axis.Axis:
    meta = spec["metadata"]
    common = {"name": meta.get("name", ""), "label": meta.get("label", "")}
    kind = spec["type"]
    if kind == "Regular":
        transform: bh.axis.transform.AxisTransform | None = None
        if "power" in spec:
            transform = bh.axis.transform.Pow(spec["power"])
        elif spec.get("transform") == "log":
            transform = bh.axis.transform.log
        elif spec.get("transform") == "sqrt":
            transform = bh.axis.transform.sqrt
        return hist.axis.Regular(
            spec["bins"], spec["start"], spec["stop"], underflow=spec["underflow"],
            overflow=spec["overflow"], growth=spec["growth"], circular=spec["circular"],
            transform=transform, **common,
        )
    if kind == "Variable":
        return hist.axis.Variable(
            values, underflow=spec["underflow"], overflow=spec["overflow"], growth=spec["growth"],
            circular=spec["circular"], **common,
        )
    if kind == "Integer":
        return hist.axis.Integer(
            spec["start"], spec["stop"], underflow=spec["underflow"], overflow=spec["overflow"],
            growth=spec["growth"], circular=spec["circular"], **common,
        )
    if kind == "IntCategory":
        return hist.axis.IntCategory([int(v) for v in values], growth=spec["growth"],
                                     overflow=spec["overflow"], **common)
    if kind == "StrCategory":
        return hist.axis.StrCategory([v.decode() if isinstance(v, bytes) else str(v) for v in values],
                                     growth=spec["growth"], overflow=spec["overflow"], **common)
    if kind == "Boolean":
        return hist.axis.Boolean(**common)
    raise ValueError(f"unknown axis type {kind!r} in stored histogram")


def _write_one(group: h5py.Group, h: hist.Hist) -> None:
    group.attrs["format"] = FORMAT
    group.attrs["format_version"] = FORMAT_VERSION
    storage_name = type(h.storage_type()).__name__ if not isinstance(h.storage_type, type) else h.storage_type.__name__
    if storage_name not in _STORAGES:
        raise TypeError(f"storage {storage_name} is not supported by histio")
    group.attrs["storage"] = storage_name
    try:
        # name, label and metadata of the histogram, exactly as set
        group.attrs["hist_attrs"] = json.dumps(vars(h))
    except TypeError as err:
        raise TypeError(f"histogram metadata must be JSON-serialisable to be stored: {err}") from err
    axes = group.create_group("axes")
    for i, ax in enumerate(h.axes):
        spec = _axis_spec(ax)
        ds_name = f"axis{i}"
        if spec["type"] == "Variable":
            axes.create_dataset(ds_name, data=np.asarray(ax.edges, dtype=np.float64))
        elif spec["type"] == "IntCategory":
            axes.create_dataset(ds_name, data=np.asarray(list(ax), dtype=np.int64))
        elif spec["type"] == "StrCategory":
            axes.create_dataset(ds_name, data=np.asarray(list(ax), dtype=h5py.string_dtype()))
        else:
            axes.create_dataset(ds_name, data=np.zeros(0))
        axes[ds_name].attrs["spec"] = json.dumps(spec)
    # structured (Weight, Mean, ...) or plain, whatever the storage
    view: np.ndarray = h.view(flow=True)
    if view.dtype.names:
        content = group.create_group("content")
        for field in view.dtype.names:
            content.create_dataset(field, data=np.ascontiguousarray(view[field]),
                                   compression="gzip", compression_opts=4, shuffle=True)
    else:
        group.create_dataset("content", data=np.ascontiguousarray(view),
                             compression="gzip", compression_opts=4, shuffle=True)


def _read_one(group: h5py.Group, where: str) -> hist.Hist:
    if group.attrs.get("format") != FORMAT:
        raise ValueError(f"{where} is not a histogram stored by wmnb.histio")
    axes = []
    for i in range(len(group["axes"])):
        ds = group["axes"][f"axis{i}"]
        axes.append(_axis_from_spec(json.loads(ds.attrs["spec"]), ds[()]))
    storage = _STORAGES[group.attrs["storage"]]()
    h = hist.Hist(*axes, storage=storage)
    h.__dict__.update(json.loads(group.attrs["hist_attrs"]))
    view: np.ndarray = h.view(flow=True)
    content = group["content"]
    if isinstance(content, h5py.Group):
        if view.dtype.names is None:
            raise ValueError(f"{where}: per-field content stored for the single-valued storage "
                             f"{group.attrs['storage']}")
        for field in view.dtype.names:
            view[field] = content[field][()]
    else:
        view[...] = content[()]
    return h


def save_hists(path: str | os.PathLike, hists: Mapping[str, hist.Hist],
               attrs: Mapping[str, Any] | None = None) -> Path:
    """Save named histograms to one HDF5 file, atomically.

    ``attrs`` (JSON-serialisable) are stored at file level, e.g. profile, seed, versions.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["attrs"] = json.dumps(dict(attrs or {}))
            for key, h in hists.items():
                if "/" in key:
                    raise ValueError(f"histogram name {key!r} may not contain '/'")
                _write_one(f.create_group(key), h)
    return path


def load_hists(path: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, hist.Hist]:
    """Load the histograms of a file written by :func:`save_hists` (all, or only ``names``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"histogram file {path} does not exist: run the chapter that writes it first")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise OSError(f"histogram file {path} cannot be opened ({err}); it may be truncated: delete it and rerun its chapter") from err
    with f:
        keys = list(f.keys()) if names is None else names
        out: dict[str, hist.Hist] = {}
        for key in keys:
            if key not in f:
                raise KeyError(f"histogram {key!r} not in {path}; it holds {sorted(f.keys())}")
            out[key] = _read_one(f[key], f"{path}:{key}")
        return out


def load_hist_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """File-level attributes stored by :func:`save_hists`."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["attrs"])
