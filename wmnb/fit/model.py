"""Binned likelihood models: building from ``hist`` templates, HDF5 storage, the neutral ``.npz``.

A model is a set of processes with nominal yields ``nom[p, b]`` and MC sums of squared weights
``sumw2[p, b]`` over flattened bins ``b``, observed counts ``data[b]`` and parameters ``x``.
Every parameter acts on the yields through *rows* of one sparse matrix ``K[c, (p, b)]``:

    yield[p, b](x) = nom[p, b] * exp( sum_c  phi_c(x[param_c]) * K[c, (p, b)] )

with ``phi`` the identity (log-normal shapes and normalisations), the square (the even part of
an asymmetric POI template pair, so that theta = +-1 reproduces the up/down templates exactly)
or the logarithm (a multiplicative, unconstrained normalisation ``mu``: ``exp(log mu) = mu``).
Keeping ``K`` sparse is what makes 4000-parameter fits cheap: each efficiency-like nuisance
touches a few dozen bins.

Parameters are POIs (unconstrained, optional Gaussian prior) or nuisances (unit Gaussian
constraint around a global observable, 0 nominally), each in one impact group.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard

import numpy as np

from ..artefacts import atomic_path

if TYPE_CHECKING:
    import boost_histogram as bh
    import h5py
    from numpy.typing import ArrayLike

    #: one template: a ``hist.Hist`` (any boost-histogram: values, and MC variances with ``Weight``
    #: storage) or plain bin contents
    Template: TypeAlias = bh.Histogram | ArrayLike
    #: the templates of a variation: one (acting on one process) or process -> template
    Templates: TypeAlias = Template | Mapping[str, Template]

FORMAT = "wmnb-fit-model"
FORMAT_VERSION = 1

#: row transforms phi_c
LIN, SQ, LOG = 0, 1, 2
#: parameter kinds
NUIS, POI_SHAPE, POI_NORM = 0, 1, 2
#: Barlow-Beeston modes (see wmnb.fit.likelihood)
BB_MODES = ("gamma", "none")

#: HDF5 datasets of a saved model and the dtype each is read as
DATASETS: dict[str, type] = {
    "signal": np.bool_, "nominal": np.float64, "sumw2": np.float64, "data": np.float64,
    "kinds": np.int8, "rows_param": np.int64, "rows_tf": np.int8, "k_row": np.int64,
    "k_col": np.int64, "k_val": np.float64, "prior_sigma": np.float64,
}
#: keys of the JSON ``meta`` attribute and their types
META_KEYS: dict[str, type] = {
    "processes": list, "params": list, "groups": list, "bb_scale": float, "bb_mode": str,
    "poi_scale": dict, "blind_width": dict, "attrs": dict,
}


class ModelError(ValueError):
    """A model file or model arrays that cannot be fitted; the message names the file, dataset,
    process or bins at fault.  ``wmnb fit`` turns it into exit code 2 (bad input)."""


class ModelWarning(UserWarning):
    """Something in a model that is legal but probably unintended (e.g. bins without content)."""


def _some(indices: np.ndarray, limit: int = 8) -> str:
    """The first ``limit`` of ``indices`` for a message (``[3, 7, ...] (12 in all)``)."""
    idx = [int(i) for i in np.asarray(indices).ravel()[:limit]]
    more = f" ({np.asarray(indices).size} in all)" if np.asarray(indices).size > limit else ""
    return f"{idx}{' ...' if more else ''}{more}"


def _check_values(arr: np.ndarray, what: str, rows: Sequence[str] | None = None) -> None:
    """``arr`` ([B] or [P, B]) must be finite and >= 0; the error names the row (process) and bins."""
    bad = ~np.isfinite(arr) | (np.nan_to_num(arr, nan=0.0) < 0)
    if not bad.any():
        return
    if arr.ndim == 1 or rows is None:
        bins = np.flatnonzero(bad.ravel())
        sample = arr.ravel()[bins[:3]]
        raise ModelError(f"{what} must be finite and >= 0: bins {_some(bins)} hold {sample.tolist()}")
    for i, row in enumerate(bad):
        if row.any():
            bins = np.flatnonzero(row)
            raise ModelError(f"{what} of process {rows[i]!r} must be finite and >= 0: bins {_some(bins)} "
                             f"hold {arr[i, bins[:3]].tolist()}")


def _model_path(path: str | os.PathLike) -> Path:
    """``path`` as a model file: a missing file is a ``FileNotFoundError``, a directory a
    :class:`ModelError` naming the model files inside it."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".h5", ".hdf5", ".npz"))[:5]
        hint = f" (model files there: {inside})" if inside else ""
        raise ModelError(f"{path} is a directory, not a model file; give the .h5/.hdf5 or .npz file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    return path


def is_hist(obj: object) -> TypeGuard[bh.Histogram]:
    """Whether ``obj`` is a histogram (duck-typed: it has ``values()`` and ``axes``)."""
    return hasattr(obj, "values") and hasattr(obj, "axes")


def _as_counts(obj: Template, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Flattened values (and variances if the storage has them) of a hist or an array."""
    if is_hist(obj):
        values = np.asarray(obj.values(), dtype=np.float64).ravel()
        var = obj.variances()
        storage = type(obj.storage_type()).__name__ if not isinstance(obj.storage_type, type) else obj.storage_type.__name__
        has_var = storage in ("Weight", "WeightedMean")
        return values, (np.asarray(var, dtype=np.float64).ravel() if has_var and var is not None else None)
    arr = np.asarray(obj, dtype=np.float64)
    if arr.dtype.names:
        raise TypeError(f"{what}: structured arrays are not supported; pass a hist.Hist or plain values")
    return arr.ravel(), None


@dataclass
class Model:
    """A built binned likelihood model (numpy arrays; see the module docstring for the maths).

    Attributes
    ----------
    processes, signal: process names and signal flags [P]
    nominal, sumw2: [P, B] yields and MC sum of squared weights
    data: [B] observed counts
    params, kinds, groups: parameter names, kinds (0 nuisance, 1 shape POI, 2 norm POI), groups
    rows_param, rows_tf: [C] parameter index and transform of each row of K
    k_row, k_col, k_val: COO entries of K; column index = p * B + b
    prior_sigma: [N] Gaussian prior width on POIs (``nan``: none)
    bb_scale: Barlow-Beeston-lite scale of the MC statistical uncertainty (sigma -> scale*sigma)
    poi_scale, blind_width: per POI, for printing and the size of blinding offsets
    """

    processes: list[str]
    signal: np.ndarray
    nominal: np.ndarray
    sumw2: np.ndarray
    data: np.ndarray
    params: list[str]
    kinds: np.ndarray
    groups: list[str]
    rows_param: np.ndarray
    rows_tf: np.ndarray
    k_row: np.ndarray
    k_col: np.ndarray
    k_val: np.ndarray
    prior_sigma: np.ndarray
    bb_scale: float = 1.0
    bb_mode: str = "gamma"
    poi_scale: dict[str, float] = field(default_factory=dict)
    blind_width: dict[str, float] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- shape and naming
    @property
    def nbins(self) -> int:
        return int(self.nominal.shape[1])

    @property
    def nprocs(self) -> int:
        return int(self.nominal.shape[0])

    @property
    def nparams(self) -> int:
        return len(self.params)

    @property
    def constrained(self) -> np.ndarray:
        return self.kinds == NUIS

    @property
    def pois(self) -> list[str]:
        return [p for p, k in zip(self.params, self.kinds) if k != NUIS]

    def index(self, name: str) -> int:
        """Position of parameter ``name`` (clear error if unknown)."""
        try:
            return self.params.index(name)
        except ValueError:
            raise KeyError(f"parameter {name!r} is not in the model; POIs: {self.pois}, "
                           f"{self.nparams} parameters in all") from None

    def default_values(self) -> np.ndarray:
        """Nominal parameter values: 0 for shapes and nuisances, 1 for normalisations."""
        return np.where(self.kinds == POI_NORM, 1.0, 0.0)

    def values_from(self, values: Mapping[str, float] | None) -> np.ndarray:
        x = self.default_values()
        for k, v in (values or {}).items():
            x[self.index(k)] = float(v)
        return x

    def validate(self) -> None:
        """Check shapes, indices and values; raise :class:`ModelError` naming the offending piece.

        Yields and data must be finite and >= 0, MC ``sumw2`` too (a negative or NaN ``sumw2``
        would silently shrink the MC statistical uncertainty).  Bins with observed events but no
        expected yield are an error.  Bins where every process *and* the data are zero are kept
        (the model keeps the histogram's shape; they add exactly nothing to the likelihood and are
        not counted as degrees of freedom by :meth:`FitResult.gof`) with a :class:`ModelWarning`.
        Called by :meth:`ModelBuilder.build`, :meth:`load`, :meth:`from_npz` and :meth:`read`.
        """
        self._validate_structure()
        _check_values(self.nominal, "nominal yield", self.processes)
        _check_values(self.sumw2, "MC sumw2", self.processes)
        _check_values(self.data, "data")
        if not np.all(np.isfinite(self.k_val)):
            bad = np.unique(self.rows_param[self.k_row[~np.isfinite(self.k_val)]])
            raise ModelError(f"non-finite log-variations for parameters {[self.params[i] for i in bad][:5]}")
        ps = self.prior_sigma
        if np.any(np.isfinite(ps) & ~(ps > 0)) or np.any(np.isinf(ps)):
            raise ModelError("prior widths must be > 0 and finite (or NaN: no prior), got "
                             f"{ps[~np.isnan(ps)].tolist()[:5]}")
        if not (np.isfinite(self.bb_scale) and self.bb_scale >= 0):
            raise ModelError(f"bb_scale must be finite and >= 0, got {self.bb_scale}")
        if self.bb_mode not in BB_MODES:
            raise ModelError(f"bb_mode must be one of {BB_MODES}, got {self.bb_mode!r}")
        self._validate_empty_bins()
        used = np.zeros(self.nparams, bool)
        used[self.rows_param[np.unique(self.k_row)]] = True
        if not used.all():
            unused = [self.params[i] for i in np.flatnonzero(~used)][:5]
            warnings.warn(f"parameters without any effect on the yields: {unused}", ModelWarning, stacklevel=3)

    def _validate_structure(self) -> None:
        """Array shapes agree and every sparse index points inside the model."""
        if self.nominal.ndim != 2:
            raise ModelError(f"nominal must be [processes, bins], got shape {self.nominal.shape}")
        P, B = self.nominal.shape
        N, C = len(self.params), len(self.rows_param)
        expect = {"sumw2": (P, B), "data": (B,), "signal": (P,), "kinds": (N,), "prior_sigma": (N,),
                  "rows_tf": (C,), "k_col": self.k_row.shape, "k_val": self.k_row.shape}
        for key, shape in expect.items():
            if np.shape(getattr(self, key)) != shape:
                raise ModelError(f"{key} has shape {np.shape(getattr(self, key))}, expected {shape} "
                                 f"({P} processes, {B} bins, {N} parameters, {C} rows)")
        if len(self.processes) != P or len(self.groups) != N:
            raise ModelError(f"{len(self.processes)} process names for {P} processes, "
                             f"{len(self.groups)} groups for {N} parameters")
        if len(set(self.params)) != N or len(set(self.processes)) != P:
            raise ModelError("parameter and process names must be unique")
        for key, upper in (("rows_param", N), ("k_row", C), ("k_col", P * B)):
            idx = getattr(self, key)
            if idx.size and (idx.min() < 0 or idx.max() >= upper):
                raise ModelError(f"{key} indices must lie in [0, {upper}), got [{idx.min()}, {idx.max()}]")
        for key, allowed in (("rows_tf", (LIN, SQ, LOG)), ("kinds", (NUIS, POI_SHAPE, POI_NORM))):
            bad = np.setdiff1d(getattr(self, key), allowed)
            if bad.size:
                raise ModelError(f"{key} holds unknown codes {bad.tolist()} (allowed {list(allowed)})")

    def _validate_empty_bins(self) -> None:
        """Observed events without expectation: error; bins empty in every respect: warning."""
        no_yield = self.nominal.sum(0) <= 0
        lost = np.flatnonzero(no_yield & (self.data > 0))
        if lost.size:
            raise ModelError(f"{lost.size} bins have zero expected yield but observed events (bins {_some(lost)}); "
                             "merge or drop them before fitting")
        empty = np.flatnonzero(no_yield)
        if empty.size:
            warnings.warn(f"{empty.size} of {self.nbins} bins have no expected yield and no data (bins "
                          f"{_some(empty)}); they are kept but carry no information and are not counted as "
                          "degrees of freedom", ModelWarning, stacklevel=4)

    @property
    def empty_bins(self) -> np.ndarray:
        """[B] mask of bins without any expected yield (validated: their data are 0 as well)."""
        return self.nominal.sum(0) <= 0

    def expected(self, values: Mapping[str, float] | np.ndarray | None = None) -> np.ndarray:
        """Expected total yield per bin [B] at ``values`` (dict name->value or full vector)."""
        return self.expected_per_process(values).sum(0)

    def expected_per_process(self, values: Mapping[str, float] | np.ndarray | None = None) -> np.ndarray:
        """Expected yields [P, B] at ``values`` (numpy reference implementation)."""
        x = values if isinstance(values, np.ndarray) else self.values_from(values)
        xv = x[self.rows_param]
        u = np.where(self.rows_tf == LIN, xv, np.where(self.rows_tf == SQ, xv**2, np.log(np.where(xv > 0, xv, np.nan))))
        expo = np.zeros(self.nominal.size)
        np.add.at(expo, self.k_col, u[self.k_row] * self.k_val)
        y = self.nominal.ravel() * np.exp(expo)
        return y.reshape(self.nominal.shape)

    # ---------------------------------------------------------------- storage
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to HDF5 (atomically); :meth:`load` reads it back exactly."""
        import h5py

        path = Path(path)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            meta = {"processes": self.processes, "params": self.params, "groups": self.groups,
                    "bb_scale": self.bb_scale, "bb_mode": self.bb_mode, "poi_scale": self.poi_scale,
                    "blind_width": self.blind_width, "attrs": self.attrs}
            f.attrs["meta"] = json.dumps(meta)
            for key in ("signal", "nominal", "sumw2", "data", "kinds", "rows_param", "rows_tf",
                        "k_row", "k_col", "k_val", "prior_sigma"):
                f.create_dataset(key, data=np.asarray(getattr(self, key)), compression="gzip",
                                 compression_opts=1, shuffle=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Read a model written by :meth:`save` and validate it (:class:`ModelError` naming the
        file and the attribute, dataset, process or bins at fault)."""
        import h5py

        path = _model_path(path)
        try:
            with h5py.File(path, "r") as f:
                fmt = f.attrs.get("format")
                if fmt != FORMAT:
                    raise ModelError(f"{path} is not a wmnb fit model (format attribute {fmt!r}); "
                                     "build it with wmnb.fit.ModelBuilder")
                version = f.attrs.get("format_version")
                if version != FORMAT_VERSION:
                    raise ModelError(f"{path}: format_version {version!r}, this wmnb reads {FORMAT_VERSION}; "
                                     "rebuild the model with this version")
                meta = _read_meta(f.attrs.get("meta"), path)
                arrays = _read_datasets(f, path)
        except OSError as err:  # not HDF5, truncated, unreadable chunks
            raise ModelError(f"{path} is not a readable HDF5 model file ({err})") from err
        model = cls(processes=[str(x) for x in meta["processes"]], params=[str(x) for x in meta["params"]],
                    groups=[str(x) for x in meta["groups"]], bb_scale=float(meta["bb_scale"]),
                    bb_mode=meta["bb_mode"], poi_scale=dict(meta["poi_scale"]),
                    blind_width=dict(meta["blind_width"]), attrs=dict(meta["attrs"]), **arrays)
        return model._validated(path)

    def _validated(self, path: Path) -> Model:
        """``self`` after :meth:`validate`, its errors prefixed with the file they come from."""
        try:
            self.validate()
        except ModelError as err:
            raise ModelError(f"{path}: {err}") from None
        return self

    @classmethod
    def from_npz(cls, path: str | os.PathLike, bb_scale: float = 1.0, signal_strength: bool = False) -> Model:
        """Read the neutral ``.npz`` of ``shared/bench/wmodel.py`` (symmetric log-normal ``logk``).

        Unconstrained systematics become shape POIs (group ``POI``); all others are nuisances
        grouped by name prefix (see :func:`_default_group`). ``signal_strength=True`` adds a free
        normalisation ``r_<process>`` for the signal process ``W`` (what rabbit-fit does by default
        for signal processes), so that both fitters see the same model.  The model is validated.
        """
        path = _model_path(path)
        if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and suggest allow_pickle
            raise ModelError(f"{path} is not a readable .npz model file (not a zip archive)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                need = ("processes", "nominal", "sumw2", "systs", "constrained", "logk", "data")
                missing = [k for k in need if k not in npz.files]
                if missing:
                    raise ModelError(f"{path} lacks arrays {missing}; expected the format of shared/bench/wmodel.py")
                z = {k: npz[k] for k in need if k != "logk"}
                logk_shape, logk_dtype, row, col, k_val = _nonzero_rows(npz, "logk", path)
        except (OSError, EOFError, zipfile.BadZipFile) as err:
            raise ModelError(f"{path} is not a readable .npz model file ({err})") from err
        except ValueError as err:  # e.g. object arrays, which would need pickle
            raise ModelError(f"{path}: {err}") from err
        _check_npz_shapes(z, logk_shape, logk_dtype, path)
        S, P, B = logk_shape
        systs = [str(s) for s in z["systs"]]
        constrained = z["constrained"].astype(bool)
        # order: POIs first (readable output), rows = params (one linear row each)
        order = np.concatenate([np.flatnonzero(~constrained), np.flatnonzero(constrained)])
        inv = np.empty(S, np.int64)
        inv[order] = np.arange(S)
        params = [systs[i] for i in order]
        kinds = np.where(constrained[order], NUIS, POI_SHAPE).astype(np.int8)
        groups = ["POI" if k != NUIS else _default_group(n) for n, k in zip(params, kinds)]
        new_row = inv[row]
        # np.nonzero is row-major: already sorted unless the POIs had to move to the front
        srt = slice(None) if np.array_equal(order, np.arange(S)) else np.lexsort((col, new_row))
        model = cls(
            processes=[str(p) for p in z["processes"]], signal=np.array([str(p) == "W" for p in z["processes"]]),
            nominal=z["nominal"].astype(np.float64), sumw2=z["sumw2"].astype(np.float64),
            data=z["data"].astype(np.float64), params=params, kinds=kinds, groups=groups,
            rows_param=np.arange(S, dtype=np.int64), rows_tf=np.zeros(S, np.int8),
            k_row=new_row[srt].astype(np.int64), k_col=col[srt].astype(np.int64),
            k_val=k_val[srt],
            prior_sigma=np.full(S, np.nan), bb_scale=bb_scale, attrs={"source": str(path)},
        )
        if signal_strength:
            model = model.with_norm_pois([p for p, sg in zip(model.processes, model.signal) if sg])
        return model._validated(path)

    def with_norm_pois(self, processes: Sequence[str]) -> Model:
        """A copy with a free normalisation POI ``r_<process>`` (a log row) for each process."""
        import dataclasses

        B = self.nbins
        names, kinds, groups = list(self.params), list(self.kinds), list(self.groups)
        rp, rt = list(self.rows_param), list(self.rows_tf)
        kr, kc, kv = [self.k_row], [self.k_col], [self.k_val]
        for proc in processes:
            ip = self.processes.index(proc)
            names.append(f"r_{proc}")
            kinds.append(POI_NORM)
            groups.append("POI")
            c = len(rp)
            rp.append(len(names) - 1)
            rt.append(LOG)
            nz = np.flatnonzero(self.nominal[ip] > 0)
            kr.append(np.full(nz.size, c))
            kc.append(ip * B + nz)
            kv.append(np.ones(nz.size))
        return dataclasses.replace(
            self, params=names, kinds=np.array(kinds, np.int8), groups=groups,
            rows_param=np.array(rp, np.int64), rows_tf=np.array(rt, np.int8),
            k_row=np.concatenate(kr).astype(np.int64), k_col=np.concatenate(kc).astype(np.int64),
            k_val=np.concatenate(kv), prior_sigma=np.concatenate([self.prior_sigma, np.full(len(processes), np.nan)]),
            blind_width={**self.blind_width, **{f"r_{p}": 0.5 for p in processes}})

    @classmethod
    def read(cls, path: str | os.PathLike) -> Model:
        """Load and validate a model from HDF5 (``.h5``/``.hdf5``) or the neutral ``.npz``."""
        return cls.from_npz(path) if str(path).endswith(".npz") else cls.load(path)


def _read_meta(raw: Any, path: Path) -> dict[str, Any]:
    """The JSON ``meta`` attribute of a saved model, with every key of :data:`META_KEYS`."""
    if raw is None:
        raise ModelError(f"{path} lacks the 'meta' attribute; the file is damaged: rebuild the model")
    try:
        meta = json.loads(raw)
    except (TypeError, ValueError) as err:
        raise ModelError(f"{path}: the 'meta' attribute is not valid JSON ({err}); rebuild the model") from err
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: the 'meta' attribute is not a JSON object; rebuild the model")
    for key, typ in META_KEYS.items():
        if key not in meta:
            raise ModelError(f"{path}: the 'meta' attribute lacks the key {key!r}; rebuild the model")
        ok = isinstance(meta[key], (int, float)) and not isinstance(meta[key], bool) if typ is float \
            else isinstance(meta[key], typ)
        if not ok:
            raise ModelError(f"{path}: meta[{key!r}] must be a {typ.__name__}, got {meta[key]!r}")
    return meta


def _read_datasets(f: h5py.File, path: Path) -> dict[str, np.ndarray]:
    """Every dataset of :data:`DATASETS`, converted to its dtype (numbers only: no silent casts
    of strings, no truncation of fractional indices)."""
    missing = [k for k in DATASETS if k not in f]
    if missing:
        raise ModelError(f"{path} lacks the datasets {missing}; the file is damaged or not written by "
                         "wmnb.fit.Model.save: rebuild the model")
    out: dict[str, np.ndarray] = {}
    for key, dtype in DATASETS.items():
        raw = np.asarray(f[key][()])
        integral = np.issubdtype(raw.dtype, np.integer) or raw.dtype == np.bool_
        if not (integral or (np.issubdtype(raw.dtype, np.floating) and np.issubdtype(dtype, np.floating))):
            raise ModelError(f"{path}: dataset {key!r} has dtype {raw.dtype}, expected {np.dtype(dtype)}")
        out[key] = raw.astype(dtype)
    return out


#: bytes of an ``.npz`` model's ``logk`` decompressed at a time by :func:`_nonzero_rows`
NPZ_BLOCK_BYTES = 32 << 20


def _nonzero_rows(npz: Any, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype, np.ndarray, np.ndarray, np.ndarray]:
    """Shape, dtype and the nonzero entries (row, column, float64 value) of the array ``key``
    of an open ``np.load`` archive, flattened to [shape[0], rest] in C order.  A C-ordered
    array is decompressed a block of :data:`NPZ_BLOCK_BYTES` at a time, so the dense array
    (454 MB for the paper-sized model, nearly all zeros) never exists whole."""
    with npz.zip.open(f"{key}.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(f)
        if fortran or dtype.hasobject or len(shape) < 2:
            whole = npz[key]    # the general path; bad dtypes and shapes are reported by the caller
            r, c, v = _entries(whole.reshape(whole.shape[0], -1) if whole.ndim >= 2 else whole.reshape(1, -1), 0)
            return whole.shape, whole.dtype, r, c, v
        width = int(np.prod(shape[1:]))
        per = max(1, NPZ_BLOCK_BYTES // max(1, width * dtype.itemsize))
        buf = np.empty(per * width, dtype)
        parts = [_entries(np.zeros((0, width)), 0)]
        for s0 in range(0, shape[0], per):
            block = buf[: min(per, shape[0] - s0) * width]
            if f.readinto(block.view(np.uint8)) != block.nbytes:
                raise ModelError(f"{path}: {key}.npy ends before its {shape} entries: the file is truncated")
            parts.append(_entries(block.reshape(-1, width), s0))
    r, c, v = (np.concatenate(p) for p in zip(*parts))
    return tuple(shape), dtype, r, c, v


def _entries(flat: np.ndarray, row0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row (offset by ``row0``), column and float64 value of the nonzero entries of 2-d ``flat``."""
    r, c = np.nonzero(flat)
    return r + row0, c, np.asarray(flat[r, c], np.float64)


def _check_npz_shapes(z: Mapping[str, np.ndarray], logk_shape: tuple[int, ...], logk_dtype: np.dtype,
                      path: Path) -> None:
    """The arrays of a neutral ``.npz`` agree: logk [S, P, B], nominal/sumw2 [P, B], data [B] ..."""
    if len(logk_shape) != 3:
        raise ModelError(f"{path}: logk must be [systs, processes, bins], got shape {logk_shape}")
    S, P, B = logk_shape
    expect = {"nominal": (P, B), "sumw2": (P, B), "data": (B,), "processes": (P,), "systs": (S,),
              "constrained": (S,)}
    for key, shape in expect.items():
        if z[key].shape != shape:
            raise ModelError(f"{path}: {key} has shape {z[key].shape}, expected {shape} from logk {logk_shape}")
    dtypes = {**{k: z[k].dtype for k in ("nominal", "sumw2", "data")}, "logk": logk_dtype}
    for key, dt in dtypes.items():
        if not (np.issubdtype(dt, np.number) or dt == np.bool_):
            raise ModelError(f"{path}: {key} has dtype {dt}, expected numbers")


def _default_group(name: str) -> str:
    """Group of a wmodel.py nuisance: its name up to the first ``_`` without trailing digits
    (``effStat_eta3_q0_p1`` -> ``effStat``, ``pdf17`` -> ``pdf``)."""
    import re

    return re.sub(r"\d+$", "", name.split("_")[0]) or name


class ModelBuilder:
    """Collect processes, systematics and POIs from ``hist`` templates (or arrays) into a :class:`Model`.

    All templates must have the data's number of bins (flow bins are not used). Calling a
    ``add_*`` method twice with the same parameter name adds the effects (e.g. one nuisance
    acting on several processes added one call at a time).
    """

    def __init__(self, data: Template):
        self.data, _ = _as_counts(data, "data")
        self.nbins = self.data.size
        self._procs: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
        self._params: dict[str, tuple[int, str]] = {}  # name -> (kind, group)
        # (param, transform) -> {process: [(bins, logk at bins), ...]}: sparse, so that
        # thousands of local variations cost in proportion to the bins they touch
        self._rows: dict[tuple[str, int], dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {}
        self._prior: dict[str, float] = {}
        self.poi_scale: dict[str, float] = {}
        self.blind_width: dict[str, float] = {}
        self.bb_scale = 1.0
        self.bb_mode = "gamma"

    # ---------------------------------------------------------------- helpers
    def _check(self, arr: np.ndarray, what: str) -> np.ndarray:
        if arr.size != self.nbins:
            raise ValueError(f"{what} has {arr.size} bins, the data has {self.nbins}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} has non-finite entries")
        return arr

    def _processes(self, process: str | Sequence[str], what: str) -> list[str]:
        """``process`` as a list of names, each of a process added already."""
        procs = [process] if isinstance(process, str) else list(process)
        for p in procs:
            if p not in self._procs:
                raise KeyError(f"{what}: process {p!r} not added yet (have {list(self._procs)})")
        return procs

    def _targets(self, process: str | Sequence[str], tmpl: Templates, what: str) -> dict[str, np.ndarray]:
        procs = self._processes(process, what)
        if isinstance(tmpl, Mapping):
            missing = [p for p in procs if p not in tmpl]
            if missing:
                raise KeyError(f"{what}: templates missing for processes {missing}")
            return {p: self._check(_as_counts(tmpl[p], what)[0], f"{what}[{p}]") for p in procs}
        if len(procs) > 1:
            raise ValueError(f"{what}: give a dict process -> template when acting on several processes")
        return {procs[0]: self._check(_as_counts(tmpl, what)[0], what)}

    def _logratio(self, proc: str, var: np.ndarray, what: str, bins: np.ndarray | None = None) -> np.ndarray:
        nom = self._procs[proc][0] if bins is None else self._procs[proc][0][bins]
        ok = (nom > 0) & (var > 0)
        bad = (nom > 0) & (var <= 0)
        if bad.any():
            warnings.warn(f"{what}[{proc}]: {int(bad.sum())} bins with a non-positive variation where the "
                          "nominal is positive; their log-variation is set to 0", stacklevel=3)
        out = np.zeros(nom.size)
        out[ok] = np.log(var[ok] / nom[ok])
        return out

    def _sparse_targets(self, process: str | Sequence[str], tmpl: Any, bins: Any, what: str
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(bins, {process: values at bins}) of a variation given on some bins only."""
        procs = self._processes(process, what)
        if len(procs) != 1 or isinstance(tmpl, Mapping) or is_hist(tmpl):
            raise ValueError(f"{what}: with bins=, give the values of one process on those bins as an array")
        idx = np.asarray(bins)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"{what}: bins must be a 1-D array of bin indices, got {idx.dtype} {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.nbins or np.any(np.diff(idx) <= 0)):
            raise ValueError(f"{what}: bins must be increasing indices in [0, {self.nbins})")
        vals = np.asarray(tmpl, dtype=np.float64)
        if vals.shape != idx.shape:
            raise ValueError(f"{what}: {vals.size} values for {idx.size} bins")
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"{what} has non-finite entries")
        return idx.astype(np.int64), {procs[0]: vals}

    def _declare(self, name: str, kind: int, group: str) -> None:
        if name in self._params and self._params[name][0] != kind:
            raise ValueError(f"parameter {name!r} already declared with another kind")
        self._params.setdefault(name, (kind, group))

    def _add_row(self, name: str, tf: int, proc: str, logk: np.ndarray, bins: np.ndarray | None = None) -> None:
        if bins is None:
            bins = np.flatnonzero(logk)
            logk = logk[bins]
        self._rows.setdefault((name, tf), {}).setdefault(proc, []).append((bins, logk))

    # ---------------------------------------------------------------- public API
    def add_process(self, name: str, nominal: Template, sumw2: Template | None = None, signal: bool = False) -> None:
        """Add a process; with a ``Weight``-storage hist the MC ``sumw2`` comes from its variances."""
        if name in self._procs:
            raise ValueError(f"process {name!r} added twice")
        values, var = _as_counts(nominal, f"process {name}")
        self._check(values, f"process {name}")
        if np.any(values < 0):
            raise ValueError(f"process {name}: {int(np.sum(values < 0))} bins with negative yield; "
                             "clip or merge them before building the model")
        if sumw2 is not None:
            var = self._check(_as_counts(sumw2, f"sumw2 of {name}")[0], f"sumw2 of {name}")
        self._procs[name] = (values, np.zeros_like(values) if var is None else var, bool(signal))

    def add_shape_systematic(self, name: str, process: str | Sequence[str], up: Templates, down: Templates | None = None,
                             group: str = "other", symmetrize: str = "average", bins: ArrayLike | None = None) -> None:
        """Log-normal shape nuisance from up (and down) templates.

        ``symmetrize="average"`` (default): log-variation ``(log(up/nom) - log(down/nom)) / 2``,
        the odd part of the pair; the even part (second order in theta) is dropped.
        ``"split"``: additionally a nuisance ``<name>SymDiff`` carrying the even part
        ``(log(up/nom) + log(down/nom)) / 2`` as an independent log-normal variation
        (the CMS choice for strongly asymmetric pairs). Without ``down`` the variation is
        symmetric: ``log(up/nom)``.

        ``bins`` (increasing bin indices) gives a *local* variation: ``up`` and ``down`` are then
        one process's varied yields on those bins only (nominal elsewhere), and the variation
        costs memory in proportion to them.
        """
        if symmetrize not in ("average", "split"):
            raise ValueError(f"symmetrize must be 'average' or 'split', not {symmetrize!r}")
        idx: np.ndarray | None = None
        if bins is None:
            ups = self._targets(process, up, f"systematic {name} up")
            downs = self._targets(process, down, f"systematic {name} down") if down is not None else None
        else:
            idx, ups = self._sparse_targets(process, up, bins, f"systematic {name} up")
            downs = None if down is None else self._sparse_targets(process, down, bins, f"systematic {name} down")[1]
        self._declare(name, NUIS, group)
        for p, u in ups.items():
            lu = self._logratio(p, u, f"systematic {name} up", idx)
            if downs is None:
                self._add_row(name, LIN, p, lu, idx)
                continue
            ld = self._logratio(p, downs[p], f"systematic {name} down", idx)
            self._add_row(name, LIN, p, 0.5 * (lu - ld), idx)
            if symmetrize == "split":
                self._declare(name + "SymDiff", NUIS, group)
                self._add_row(name + "SymDiff", LIN, p, 0.5 * (lu + ld), idx)

    def add_norm_systematic(self, name: str, process: str | Sequence[str],
                            kappa: float | tuple[float, float], group: str = "other") -> None:
        """Log-normal normalisation nuisance: yield x kappa^theta.

        An asymmetric ``(kappa_down, kappa_up)`` (e.g. ``(0.95, 1.06)``) is symmetrised like the
        shapes: ``log kappa = (log kappa_up - log kappa_down) / 2``.
        """
        if isinstance(kappa, (tuple, list)):
            kd, ku = float(kappa[0]), float(kappa[1])
            if kd <= 0 or ku <= 0:
                raise ValueError(f"norm systematic {name}: kappas must be > 0, got {kappa}")
            logk = 0.5 * (np.log(ku) - np.log(kd))
        else:
            if float(kappa) <= 0:
                raise ValueError(f"norm systematic {name}: kappa must be > 0, got {kappa}")
            logk = np.log(float(kappa))
        self._declare(name, NUIS, group)
        for p in dict.fromkeys(self._processes(process, f"norm systematic {name}")):  # each once
            self._add_row(name, LIN, p, np.where(self._procs[p][0] > 0, logk, 0.0))

    def add_poi_shape(self, name: str, process: str | Sequence[str], up: Templates, down: Templates,
                      scale: float = 1.0, blind_width: float = 5.0) -> None:
        """Unconstrained shape POI: theta = +1 gives the ``up`` template, -1 the ``down`` one.

        log(yield/nom) = theta * (lu - ld)/2 + theta^2 * (lu + ld)/2: exact at -1, 0, +1, smooth
        in between (e.g. ``mass`` with +-100 MeV templates). ``scale`` converts theta to printed
        units; ``blind_width``: blinding offsets are uniform in +-blind_width (theta units).
        """
        ups = self._targets(process, up, f"POI {name} up")
        downs = self._targets(process, down, f"POI {name} down")
        self._declare(name, POI_SHAPE, "POI")
        for p, u in ups.items():
            lu = self._logratio(p, u, f"POI {name} up")
            ld = self._logratio(p, downs[p], f"POI {name} down")
            self._add_row(name, LIN, p, 0.5 * (lu - ld))
            even = 0.5 * (lu + ld)
            if np.any(np.abs(even) > 1e-14):
                self._add_row(name, SQ, p, even)
        self.poi_scale[name] = float(scale)
        self.blind_width[name] = float(blind_width)

    def add_norm_poi(self, name: str, process: str | Sequence[str], blind_width: float = 0.5) -> None:
        """Unconstrained multiplicative normalisation ``mu`` (1 = nominal) of the given processes."""
        self._declare(name, POI_NORM, "POI")
        for p in dict.fromkeys(self._processes(process, f"norm POI {name}")):  # each once
            self._add_row(name, LOG, p, (self._procs[p][0] > 0).astype(np.float64))
        self.blind_width[name] = float(blind_width)

    def add_prior(self, poi_name: str, sigma: float) -> None:
        """Gaussian prior of width ``sigma`` on a POI, centred on its nominal value (0 or 1)."""
        if poi_name not in self._params or self._params[poi_name][0] == NUIS:
            raise KeyError(f"add_prior: {poi_name!r} is not a POI added so far")
        if not sigma > 0:
            raise ValueError(f"prior width must be > 0, got {sigma}")
        self._prior[poi_name] = float(sigma)

    def build(self) -> Model:
        """Assemble the sparse model (POIs first, then nuisances in the order added)."""
        if not self._procs:
            raise ValueError("no processes added")
        procs = list(self._procs)
        names = sorted(self._params, key=lambda n: (self._params[n][0] == NUIS,))  # stable: POIs first
        pidx = {n: i for i, n in enumerate(names)}
        keys = sorted(self._rows, key=lambda k: (k[1] != LIN and k[1] != LOG, pidx[k[0]]))
        rows_param, rows_tf, kr, kc, kv = [], [], [], [], []
        B = self.nbins
        for c, key in enumerate(keys):
            rows_param.append(pidx[key[0]])
            rows_tf.append(key[1])
            for p, parts in self._rows[key].items():
                bins, logk = _summed(parts)
                nz = logk != 0
                kr.append(np.full(int(nz.sum()), c))
                kc.append(procs.index(p) * B + bins[nz])
                kv.append(logk[nz])
        kr_a = np.concatenate(kr) if kr else np.zeros(0, np.int64)
        kc_a = np.concatenate(kc) if kc else np.zeros(0, np.int64)
        kv_a = np.concatenate(kv) if kv else np.zeros(0)
        srt = np.lexsort((kc_a, kr_a))
        model = Model(
            processes=procs, signal=np.array([self._procs[p][2] for p in procs]),
            nominal=np.stack([self._procs[p][0] for p in procs]),
            sumw2=np.stack([self._procs[p][1] for p in procs]), data=self.data.copy(),
            params=names, kinds=np.array([self._params[n][0] for n in names], np.int8),
            groups=[self._params[n][1] for n in names],
            rows_param=np.array(rows_param, np.int64), rows_tf=np.array(rows_tf, np.int8),
            k_row=kr_a[srt].astype(np.int64), k_col=kc_a[srt].astype(np.int64), k_val=kv_a[srt],
            prior_sigma=np.array([self._prior.get(n, np.nan) for n in names]),
            bb_scale=float(self.bb_scale), bb_mode=self.bb_mode, poi_scale=dict(self.poi_scale),
            blind_width=dict(self.blind_width),
        )
        model.validate()
        return model


def _summed(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One (bins, values) from the parts of a row added in several calls (same bins summed)."""
    if len(parts) == 1:
        return parts[0]
    bins = np.concatenate([b for b, _ in parts])
    vals = np.concatenate([v for _, v in parts])
    uniq, inverse = np.unique(bins, return_inverse=True)
    return uniq, np.bincount(inverse, weights=vals, minlength=uniq.size)
