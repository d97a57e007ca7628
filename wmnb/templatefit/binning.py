"""The observable of a template fit: any number of axes, each read from one skim column.

:meth:`Binning.bin_index` maps events to a flat bin number once (C order over the axes, -1
outside); every template (nominal, each weight variation) is then one ``np.bincount`` over that
index, which is what makes filling thousands of variations cheap.  Bins are half-open
``[lo, hi)`` like ``hist`` / ``numpy.histogram`` (without numpy's closed last bin).

>>> import numpy as np
>>> from wmnb.templatefit.binning import Axis, Binning
>>> b = Binning(Axis("pt", np.array([26.0, 40.0, 56.0]), "mu_pt"),
...             Axis("charge", np.array([-2.0, 0.0, 2.0]), "mu_charge", allowed=(-1, 1)))
>>> b.shape, b.nbins
((2, 2), 4)
>>> b.bin_index({"mu_pt": np.array([30.0, 50.0, 60.0]), "mu_charge": np.array([1, -1, 1])}).tolist()
[1, 2, -1]
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Axis:
    """One axis: ``edges`` (ascending), the skim ``column`` it is read from, a plot ``label``,
    and optionally the only ``allowed`` values (a charge axis: an event with charge 0 is out)."""

    name: str
    edges: np.ndarray
    column: str
    label: str = ""
    allowed: tuple[float, ...] | None = None

    @property
    def size(self) -> int:
        return len(self.edges) - 1

    def centers(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])


class Binning:
    """A fixed multi-dimensional binning (the observable of one fit)."""

    def __init__(self, *axes: Axis):
        if not axes:
            raise ValueError("a binning needs at least one axis")
        names = [a.name for a in axes]
        if len(set(names)) != len(names):
            raise ValueError(f"axis names must be unique, got {names}")
        for a in axes:
            if a.size < 1 or np.any(np.diff(a.edges) <= 0):
                raise ValueError(f"axis {a.name!r}: edges must be ascending with at least one bin")
        self.axes = tuple(axes)
        self.shape = tuple(a.size for a in axes)
        self.nbins = int(np.prod(self.shape))

    def axis(self, name: str) -> Axis:
        """The axis called ``name``."""
        for a in self.axes:
            if a.name == name:
                return a
        raise KeyError(f"no axis {name!r}; axes are {[a.name for a in self.axes]}")

    @property
    def columns(self) -> tuple[str, ...]:
        """The skim columns the axes are read from, in axis order."""
        return tuple(a.column for a in self.axes)

    def bin_index(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Flat bin number (C order over the axes) of each event, or -1 outside the binning."""
        missing = [a.column for a in self.axes if a.column not in columns]
        if missing:
            raise KeyError(f"binning needs column(s) {missing}")
        values = [np.asarray(columns[a.column]) for a in self.axes]
        if len({v.shape for v in values}) != 1:
            raise ValueError(f"columns {list(self.columns)} must have one shape, got {[v.shape for v in values]}")
        flat = np.zeros(values[0].shape, dtype=np.int64)
        inside = np.ones(values[0].shape, dtype=bool)
        for a, v in zip(self.axes, values):
            i = np.searchsorted(a.edges, np.asarray(v, dtype=np.float64), side="right") - 1
            inside &= (i >= 0) & (i < a.size)
            if a.allowed is not None:
                inside &= np.isin(v, a.allowed)
            flat = flat * a.size + i
        return np.where(inside, flat, -1)

    def fill(self, index: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sum of weights and of squared weights per bin, shaped :attr:`shape`."""
        ok = index >= 0
        idx, w = index[ok], np.asarray(weights, dtype=np.float64)[ok]
        sumw = np.bincount(idx, weights=w, minlength=self.nbins)
        sumw2 = np.bincount(idx, weights=w * w, minlength=self.nbins)
        return sumw.reshape(self.shape), sumw2.reshape(self.shape)

    def fill_values(self, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Sum of weights per bin only (variation templates need no sumw2 of their own)."""
        ok = index >= 0
        return np.bincount(index[ok], weights=np.asarray(weights, dtype=np.float64)[ok],
                           minlength=self.nbins).reshape(self.shape)

    def extended_index(self, index: np.ndarray) -> np.ndarray:
        """``index`` with events outside the binning sent to an extra bin ``nbins`` (for
        :meth:`fill_extended`, which then needs no mask per fill)."""
        return np.where(index >= 0, index, self.nbins)

    def fill_extended(self, index_ext: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """:meth:`fill_values` on an :meth:`extended_index`: every bin adds the same weights in
        the same order (identical to the last bit), without building a mask; for the thousands
        of variation fills of one sample."""
        return np.bincount(index_ext, weights=weights, minlength=self.nbins + 1)[:self.nbins].reshape(self.shape)

    def grid(self, name: str) -> np.ndarray:
        """Bin centres of axis ``name`` broadcast against :attr:`shape` (for masks)."""
        pos = [a.name for a in self.axes].index(name)
        shape = [1] * len(self.axes)
        shape[pos] = self.shape[pos]
        return self.axis(name).centers().reshape(shape)

    def mask(self, condition: Callable[..., np.ndarray]) -> np.ndarray:
        """Boolean mask of :attr:`shape` from ``condition(**{axis: centres})``, e.g.
        ``binning.mask(lambda eta, **_: abs(eta) < 0.9)``."""
        grids = {a.name: self.grid(a.name) for a in self.axes}
        return np.broadcast_to(np.asarray(condition(**grids), dtype=bool), self.shape).copy()

    def as_array(self, x: Any) -> np.ndarray:
        """A ``hist`` (its values) or an array with :attr:`nbins` entries, shaped :attr:`shape`."""
        vals = x.values() if hasattr(x, "values") and callable(x.values) else x
        vals = np.asarray(vals, dtype=np.float64)
        if vals.size != self.nbins:
            raise ValueError(f"template has {vals.size} bins, the fit needs {self.nbins} {self.shape}")
        return vals.reshape(self.shape)

    def to_hist(self, values: np.ndarray, variances: np.ndarray | None = None) -> Any:
        """A ``hist.Hist`` over the axes holding ``values`` (and ``variances``: Weight storage)."""
        import hist

        axes = [hist.axis.Variable(a.edges, name=a.name, label=a.label or a.name) for a in self.axes]
        values = np.asarray(values, dtype=np.float64).reshape(self.shape)
        h: Any
        if variances is None:
            h = hist.Hist(*axes, storage=hist.storage.Double())
            h.view()[...] = values
        else:
            h = hist.Hist(*axes, storage=hist.storage.Weight())
            view: Any = h.view()         # a structured view (value, variance), not a float array
            view.value = values
            view.variance = np.asarray(variances, dtype=np.float64).reshape(self.shape)
        return h


#: The observable of every W fit (chapters 05, 08, 09): muon eta (48 × 0.1), pT (30 × 1 GeV in
#: 26-56) and charge: 2880 bins (PHYSICS.md, "Observable and binning").
W_ETA_EDGES = np.round(np.linspace(-2.4, 2.4, 49), 10)
W_PT_EDGES = np.linspace(26.0, 56.0, 31)
W_CHARGE_EDGES = np.array([-2.0, 0.0, 2.0])
W_BINNING = Binning(Axis("eta", W_ETA_EDGES, "mu_eta", r"Muon $\eta$"),
                    Axis("pt", W_PT_EDGES, "mu_pt", r"Muon $p_T$ [GeV]"),
                    Axis("charge", W_CHARGE_EDGES, "mu_charge", "Muon charge", allowed=(-1, 1)))

#: |eta| boundary between the "central" and "forward" regions of the cross-checks (paper: 0.9).
CENTRAL_ETA = 0.9


#: POI layouts of a mass fit on an (eta, pt, charge) observable: name -> [(POI, region of
#: :func:`region_mask` where it moves the signal)]: one mass, split by charge, by eta sign, central
#: against forward (chapters 07 and 08)
MASS_POI_LAYOUTS: dict[str, list[tuple[str, str]]] = {
    "mass": [("mass", "all")],
    "charge": [("mass_plus", "plus"), ("mass_minus", "minus")],
    "etasign": [("mass_etaneg", "etaneg"), ("mass_etapos", "etapos")],
    "centralforward": [("mass_central", "central"), ("mass_forward", "forward")],
}


def region_mask(binning: Binning, region: str, central_eta: float = CENTRAL_ETA) -> np.ndarray:
    """Boolean mask of ``binning.shape`` for the cross-check regions of an (eta, pt, charge)
    observable (the W and W-like fits; axes named ``eta``, ``pt``, ``charge``).

    ``"all"``, ``"plus"``/``"minus"`` (muon charge), ``"etapos"``/``"etaneg"`` (eta sign),
    ``"central"``/``"forward"`` (|eta| below/above ``central_eta``), and ``"pt<lo>-<hi>"`` (a pT
    range in GeV on the bin edges, e.g. ``"pt27-55"``).
    """
    simple: dict[str, Callable[..., Any]] = {
        "all": lambda **_: True,
        "plus": lambda charge, **_: charge > 0, "minus": lambda charge, **_: charge < 0,
        "etapos": lambda eta, **_: eta > 0, "etaneg": lambda eta, **_: eta < 0,
        "central": lambda eta, **_: np.abs(eta) < central_eta, "forward": lambda eta, **_: np.abs(eta) > central_eta,
    }
    if region in simple:
        return binning.mask(simple[region])
    pt_edges = binning.axis("pt").edges
    if region.startswith("pt") and "-" in region:
        try:
            lo, hi = (float(x) for x in region[2:].split("-"))
        except ValueError:
            lo = hi = float("nan")
        if lo < hi and pt_edges[0] <= lo and hi <= pt_edges[-1]:
            return binning.mask(lambda pt, **_: (pt > lo) & (pt < hi))
    raise ValueError(f"unknown region {region!r}: use one of {sorted(simple)} or 'pt<lo>-<hi>' "
                     f"within [{pt_edges[0]:g}, {pt_edges[-1]:g}] GeV")
