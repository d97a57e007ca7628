"""The generator-level binning of the helicity fit: W q_T × |y| bins per charge, six components.

The paper's binning (PHYSICS.md, "Helicity fit"): q_T edges 0, 3, 6, 9.7, 12.4, 16, 21.4, 29.5,
60 GeV and |y| edges 0, 0.4, …, 2.4, 3.0, with an overflow bin above the last edge of each
axis: 9 × 8 = 72 bins per charge (7 × 8 + 16 overflow), each with σ_UL and σ_0..σ_4, so
2 × 72 × 6 = 864 helicity parameters.  Without the overflow bins (``overflow=False``) the
events beyond the last edges are the *out-of-acceptance* part of the signal: no helicity
parameter acts on them and they keep the theory nuisances of the nominal fit.

>>> b = HelicityBinning((0.0, 6.0, 60.0), (0.0, 1.2, 3.0))
>>> b.n_bins, b.n_parameters
(9, 108)
>>> b.bin_index(np.array([1.0, 70.0, 5.0]), np.array([0.5, 0.1, 4.0])).tolist()
[0, 6, 2]
>>> b.label(8)
'qT2_y2'
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: the components of each bin: σ_UL (the 1 + cos²θ term) and σ_i = σ_UL A_i for i = 0..4
COMPONENTS = ("UL", "A0", "A1", "A2", "A3", "A4")
#: the paper's binning
PAPER_QT_EDGES = (0.0, 3.0, 6.0, 9.7, 12.4, 16.0, 21.4, 29.5, 60.0)
PAPER_ABSY_EDGES = (0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 3.0)
#: a coarse binning for the smoke profile (a few events per parameter would leave it empty)
REDUCED_QT_EDGES = (0.0, 6.0, 16.0, 60.0)
REDUCED_ABSY_EDGES = (0.0, 1.2, 2.4)
#: the signal samples and the charge label of their parameters
CHARGE_OF_SAMPLE = {"wplus_munu": "plus", "wminus_munu": "minus"}


class HelicityBinningError(ValueError):
    """A helicity binning that cannot be used; the message names the argument."""


def _edges(values: Iterable[float], name: str) -> tuple[float, ...]:
    try:
        edges = tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise HelicityBinningError(f"{name}: edges must be numbers, got {values!r}") from err
    if len(edges) < 2:
        raise HelicityBinningError(f"{name}: at least two edges are needed (one bin), got {list(edges)}")
    if not all(np.isfinite(edges)):
        raise HelicityBinningError(f"{name}: edges must be finite (the overflow bin is added by overflow=True), "
                                   f"got {list(edges)}")
    if edges[0] != 0.0:
        raise HelicityBinningError(f"{name}: the first edge must be 0, got {edges[0]:g}")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise HelicityBinningError(f"{name}: edges must be strictly ascending, got {list(edges)}")
    return edges


@dataclass(frozen=True)
class HelicityBinning:
    """q_T and |y| edges (GeV, unitless) of the helicity parameters; ``overflow`` adds a bin
    above the last edge of each axis."""

    qt_edges: tuple[float, ...] = PAPER_QT_EDGES
    absy_edges: tuple[float, ...] = PAPER_ABSY_EDGES
    overflow: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "qt_edges", _edges(self.qt_edges, "qt_edges"))
        object.__setattr__(self, "absy_edges", _edges(self.absy_edges, "absy_edges"))
        if self.absy_edges[-1] > 5.0:
            raise HelicityBinningError(f"absy_edges: the last edge {self.absy_edges[-1]:g} is beyond the generated "
                                       "rapidity range (|y| < 5)")

    @property
    def n_qt(self) -> int:
        return len(self.qt_edges) - 1 + int(self.overflow)

    @property
    def n_absy(self) -> int:
        return len(self.absy_edges) - 1 + int(self.overflow)

    @property
    def n_bins(self) -> int:
        """Bins per charge."""
        return self.n_qt * self.n_absy

    @property
    def n_parameters(self) -> int:
        """Helicity parameters of both charges."""
        return 2 * len(COMPONENTS) * self.n_bins

    def bin_index(self, qt: np.ndarray, absy: np.ndarray) -> np.ndarray:
        """Flat bin (q_T major) of each event, -1 outside the binning (beyond the last edges
        without overflow bins: the out-of-acceptance events)."""
        def index(v: np.ndarray, edges: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
            i = np.searchsorted(np.asarray(edges), np.asarray(v, float), side="right") - 1
            inside = (i >= 0) & (i < len(edges) - 1 + int(self.overflow))
            return np.minimum(i, len(edges) - 2 + int(self.overflow)), inside

        iq, okq = index(qt, self.qt_edges)
        iy, oky = index(np.abs(absy), self.absy_edges)
        return np.where(okq & oky, iq * self.n_absy + iy, -1)

    def is_overflow(self, k: int) -> bool:
        """Whether flat bin ``k`` is an overflow bin of either axis."""
        iq, iy = divmod(k, self.n_absy)
        return iq >= len(self.qt_edges) - 1 or iy >= len(self.absy_edges) - 1

    def label(self, k: int) -> str:
        """``qT<i>_y<j>`` of flat bin ``k``."""
        iq, iy = divmod(k, self.n_absy)
        return f"qT{iq}_y{iy}"

    def parameter(self, charge: str, component: str, k: int) -> str:
        """Name of the helicity parameter of one charge (``plus``/``minus``), component and bin."""
        return f"hel_{charge}_{component}_{self.label(k)}"

    def qt_range(self, k: int) -> tuple[float, float]:
        iq = k // self.n_absy
        return (self.qt_edges[iq], self.qt_edges[iq + 1]) if iq < len(self.qt_edges) - 1 else (self.qt_edges[-1], np.inf)

    def absy_range(self, k: int) -> tuple[float, float]:
        iy = k % self.n_absy
        return ((self.absy_edges[iy], self.absy_edges[iy + 1]) if iy < len(self.absy_edges) - 1
                else (self.absy_edges[-1], np.inf))


_EXPLICIT = re.compile(r"^\s*qt\s*=\s*(?P<qt>[^;]+);\s*absy\s*=\s*(?P<absy>[^;]+?)\s*;?\s*$")


def parse_binning(spec: str, overflow: bool = True) -> HelicityBinning:
    """The helicity binning a profile asks for: ``paper``, ``reduced`` or explicit edges
    ``"qt=0,6,16,60; absy=0,1.2,3"``; anything else raises :class:`HelicityBinningError`
    naming the parameter."""
    if spec == "paper":
        return HelicityBinning(PAPER_QT_EDGES, PAPER_ABSY_EDGES, overflow)
    if spec == "reduced":
        return HelicityBinning(REDUCED_QT_EDGES, REDUCED_ABSY_EDGES, overflow)
    m = _EXPLICIT.match(spec or "")
    if m is None:
        raise HelicityBinningError(f"binning: {spec!r} is neither 'paper', 'reduced' nor explicit edges such as "
                                   "'qt=0,6,16,60; absy=0,1.2,3'")
    try:
        qt = [float(x) for x in m["qt"].split(",")]
        absy = [float(x) for x in m["absy"].split(",")]
    except ValueError as err:
        raise HelicityBinningError(f"binning: {spec!r} has an edge that is not a number ({err})") from err
    return HelicityBinning(tuple(qt), tuple(absy), overflow)
