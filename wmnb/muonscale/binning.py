"""The 4-D (eta+, pT+, eta-, pT-) binning of dimuon events.

The eta axis of each muon is the calibration's eta binning (48 bins of 0.1 on the default
profile), the pT axis a few bins whose edges are quantiles of the simulated muon pT spectrum (so
every pT bin holds a similar number of muons).  Only the occupied combinations are fitted; J/psi
muons are close in eta, so most of the 48 x 48 eta pairs are empty.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scale_model import eta_index

REQUIRED_COLUMNS = ("mup_pt", "mup_eta", "mum_pt", "mum_eta", "mass")


def check_columns(cols: dict[str, np.ndarray], what: str, extra: tuple[str, ...] = ()) -> None:
    """Raise a clear error if a dimuon skim lacks columns or has inconsistent lengths."""
    missing = [c for c in (*REQUIRED_COLUMNS, *extra) if c not in cols]
    if missing:
        raise KeyError(f"{what}: dimuon skim lacks columns {missing}; chapter 01's dimuon skims provide "
                       f"{list(REQUIRED_COLUMNS)} (+ gen columns for simulation). Rerun chapter 01.")
    n = {len(np.asarray(cols[c])) for c in (*REQUIRED_COLUMNS, *extra)}
    if len(n) != 1:
        raise ValueError(f"{what}: dimuon skim columns have different lengths {sorted(n)}")


def quantile_pt_edges(pt: np.ndarray, n_bins: int, pt_min: float | None = None,
                      pt_max: float | None = None) -> np.ndarray:
    """pT edges with about equal numbers of muons per bin; outer edges cover everything."""
    pt = np.asarray(pt, dtype=np.float64)
    if pt.size == 0:
        raise ValueError("cannot derive pT bin edges from an empty sample")
    inner = np.quantile(pt, np.linspace(0, 1, n_bins + 1)[1:-1])
    lo = pt.min() * 0.999 if pt_min is None else pt_min
    hi = pt.max() * 1.001 if pt_max is None else pt_max
    edges = np.unique(np.round(np.concatenate([[lo], inner, [hi]]), 3))
    if len(edges) < 2:
        raise ValueError("degenerate pT distribution: cannot build pT bins")
    return edges


def bin_positions(idx: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each event's flat bin id ``idx`` in the sorted fitted ``bins`` and whether the
    event belongs to a fitted bin at all (positions of other events are meaningless)."""
    bins = np.asarray(bins)
    idx = np.asarray(idx)
    if len(bins) == 0:
        return np.zeros(len(idx), dtype=np.int64), np.zeros(len(idx), dtype=bool)
    pos = np.clip(np.searchsorted(bins, idx), 0, len(bins) - 1)
    return pos, (idx >= 0) & (bins[pos] == idx)


@dataclass(frozen=True)
class Binning4D:
    """(eta+, pT+, eta-, pT-) bins; flat id = ((ie+ * npt + ip+) * neta + ie-) * npt + ip-.

    ``mode="ratio"`` replaces the pT bins by the sign of pT+ - pT- (ip+ = [pT+ >= pT-], ip- = 0):
    for a broad resonance (Z) pT edges near m/2 select different parts of the line shape when
    data and simulation scales differ (bin migration biases the fitted scale), whereas the
    ordering of the two pT's is insensitive to a common scale and still separates the
    charge-dependent M' term (which enters as M' (pT+ - pT-))."""

    eta_edges: np.ndarray
    pt_edges: np.ndarray
    mode: str = "pt"

    @classmethod
    def ratio(cls, eta_edges: np.ndarray) -> "Binning4D":
        return cls(np.asarray(eta_edges, float), np.array([0.0, 1.0, 2.0]), "ratio")

    @property
    def n_eta(self) -> int:
        return len(self.eta_edges) - 1

    @property
    def n_pt(self) -> int:
        return len(self.pt_edges) - 1

    @property
    def n_bins(self) -> int:
        return (self.n_eta * self.n_pt) ** 2

    def index(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """Flat bin id of each event, -1 when a muon is outside the pT or eta range."""
        ids = []
        ok = np.ones(len(np.asarray(cols["mup_pt"])), dtype=bool)
        for p in ("mup", "mum"):
            pt = np.asarray(cols[f"{p}_pt"], dtype=np.float64)
            eta = np.asarray(cols[f"{p}_eta"], dtype=np.float64)
            if self.mode == "pt":
                ok &= (pt >= self.pt_edges[0]) & (pt < self.pt_edges[-1])
            ok &= (eta >= self.eta_edges[0]) & (eta < self.eta_edges[-1]) & np.isfinite(pt) & (pt > 0)
            ie = eta_index(eta, self.eta_edges)
            ip = np.clip(np.searchsorted(self.pt_edges, pt, side="right") - 1, 0, self.n_pt - 1)
            ids.append((ie, ip))
        (ep, pp), (em, pm) = ids
        if self.mode == "ratio":
            pp = (np.asarray(cols["mup_pt"], float) >= np.asarray(cols["mum_pt"], float)).astype(np.int64)
            pm = np.zeros_like(pp)
        flat = ((ep * self.n_pt + pp) * self.n_eta + em) * self.n_pt + pm
        return np.where(ok, flat, -1)

    def unravel(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ieta+, ipt+, ieta-, ipt-) of flat bin ids."""
        return np.unravel_index(np.asarray(flat), (self.n_eta, self.n_pt, self.n_eta, self.n_pt))

    def to_dict(self) -> dict:
        return {"eta_edges": self.eta_edges.tolist(), "pt_edges": self.pt_edges.tolist(), "mode": self.mode}
