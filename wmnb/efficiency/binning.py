"""The tag-and-probe binning of every step (PHYSICS.md, "Facts ... Tag and probe").

Probe pT bins 24, 26, …, 44, 47, 50, 55, 60, 65 GeV (tracking: 24, 35, 45, 55, 65; the veto's
loose ID of the second muon, which starts at 15 GeV: 15, 20, 25, 30, 35, 40, 50, 65); 48 eta bins
(a profile may use fewer); per charge except the isolation; trigger and isolation also in u_∥, the
dimuon q_T projected on the probe (the W's boson q_T projected on its muon when the scale factors
are applied).  m_μμ fitted in 60–120 GeV (tracking 50–130) in 1 GeV bins; the simulated signal
templates come in 0.25 GeV bins over 50–130 GeV, wider than the window, for the convolution.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..conventions import TNP_STEPS, probe_masks, tnp_step_masks

#: the steps whose truth the universe defines (:data:`wmnb.conventions.TNP_STEPS`: the paper's
#: chain and the loose ID of the second-muon veto)
TRUTH_STEPS: tuple[str, ...] = tuple(TNP_STEPS)
#: plus the isolation of a muon that need not trigger (the second muon of the W-like and dimuon
#: selections): probes are ID-passing muons, trigger-matched or not
STEPS: tuple[str, ...] = (*TRUTH_STEPS, "isolation_notrig")
PT_EDGES = (24.0, 26.0, 28.0, 30.0, 32.0, 34.0, 36.0, 38.0, 40.0, 42.0, 44.0, 47.0, 50.0, 55.0, 60.0, 65.0)
TRACKING_PT_EDGES = (24.0, 35.0, 45.0, 55.0, 65.0)
VETO_PT_EDGES = (15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 50.0, 65.0)
MASS_WINDOW = (60.0, 120.0)
TRACKING_MASS_WINDOW = (50.0, 130.0)
#: the simulated signal templates: fine bins over the whole skim window (wider than the fit's)
TEMPLATE_EDGES = np.arange(50.0, 130.0 + 1e-9, 0.25)
ETA_MAX = 2.4
#: steps measured per charge, and versus u_par (PHYSICS.md)
CHARGE_STEPS = ("reco", "tracking", "id", "trigger", "veto")
UPAR_STEPS = ("trigger", "isolation", "isolation_notrig")
ISOLATION_STEPS = ("isolation", "isolation_notrig")
#: u_par range of the scale factors (GeV): values outside are counted in the outer bins
UPAR_RANGE = (-30.0, 100.0)


@dataclass(frozen=True)
class BinCentres:
    """Per flat bin: eta, pT, charge and u_par (None without u_par bins) at its centre."""

    eta: np.ndarray
    pt: np.ndarray
    charge: np.ndarray
    upar: np.ndarray | None


@dataclass(frozen=True)
class StepBinning:
    """Bins of one step: eta × pT × charge [× u_par], and the fitted mass window's bins."""

    step: str
    eta_edges: np.ndarray
    pt_edges: np.ndarray
    charges: tuple[int, ...]
    upar_edges: np.ndarray | None
    mass_edges: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        s = (self.eta_edges.size - 1, self.pt_edges.size - 1, len(self.charges))
        return s + (() if self.upar_edges is None else (self.upar_edges.size - 1,))

    @property
    def n_bins(self) -> int:
        return int(np.prod(self.shape))

    @property
    def n_slices(self) -> int:
        """Smoothing slices: eta × charge."""
        return (self.eta_edges.size - 1) * len(self.charges)

    def index(self, eta: np.ndarray, pt: np.ndarray, charge: np.ndarray, upar: np.ndarray | None = None) -> np.ndarray:
        """Flat bin index of each probe (C order of :attr:`shape`), -1 outside the eta/pT range;
        u_par outside its range counts in the outer bins; the isolation ignores the charge."""
        ie = np.searchsorted(self.eta_edges, eta, side="right") - 1
        ip = np.searchsorted(self.pt_edges, pt, side="right") - 1
        if len(self.charges) == 1:
            iq = np.zeros(np.shape(eta), np.int64)
        else:
            iq = np.where(np.asarray(charge) > 0, self.charges.index(1), self.charges.index(-1))
        ok = (ie >= 0) & (ie < self.eta_edges.size - 1) & (ip >= 0) & (ip < self.pt_edges.size - 1)
        idx = [np.where(ok, ie, 0), np.where(ok, ip, 0), iq]
        if self.upar_edges is not None:
            if upar is None:
                raise ValueError(f"step {self.step!r} is binned in u_par: pass upar")
            iu = np.clip(np.searchsorted(self.upar_edges, upar, side="right") - 1, 0, self.upar_edges.size - 2)
            idx.append(iu)
        flat = np.ravel_multi_index(tuple(idx), self.shape)
        return np.where(ok, flat, -1)

    def binned_upar(self, upar: np.ndarray) -> np.ndarray:
        """u_par moved into the binned range the way :meth:`index` counts it (outside the
        range: into the outer bins), for a consumer that bins by the edges without clipping
        (the truth gate's probe averages)."""
        if self.upar_edges is None:
            return np.asarray(upar, np.float64)
        e = self.upar_edges
        return np.clip(np.asarray(upar, np.float64), e[0], np.nextafter(e[-1], -np.inf))

    def bin_centres(self) -> BinCentres:
        """The centre of every bin, flat in :meth:`index` order."""
        grids = [g.ravel() for g in np.meshgrid(*[np.arange(n) for n in self.shape], indexing="ij")]
        c = self.centres()
        return BinCentres(c["eta"][grids[0]], c["pt"][grids[1]], np.asarray(self.charges)[grids[2]],
                          c["upar"][grids[3]] if self.upar_edges is not None else None)

    def centres(self) -> dict[str, np.ndarray]:
        out = {"eta": 0.5 * (self.eta_edges[1:] + self.eta_edges[:-1]), "pt": 0.5 * (self.pt_edges[1:] + self.pt_edges[:-1])}
        if self.upar_edges is not None:
            out["upar"] = 0.5 * (self.upar_edges[1:] + self.upar_edges[:-1])
        return out


def step_binnings(n_eta: int | Mapping[str, int] = 48, upar_edges: Sequence[float] | None = (-30.0, 0.0, 15.0, 100.0),
                  pt_edges: Sequence[float] = PT_EDGES, tracking_pt_edges: Sequence[float] = TRACKING_PT_EDGES,
                  mass_bin: float = 1.0) -> dict[str, StepBinning]:
    """The binning of every step; ``n_eta`` one number or one per step; ``upar_edges`` None: no
    u_par bins (trigger and isolation then in eta × pT only)."""
    out = {}
    for step in STEPS:
        n = int(n_eta[step] if isinstance(n_eta, Mapping) else n_eta)
        if n < 1 or n > 48:
            raise ValueError(f"n_eta of step {step!r} must be 1..48, got {n}")
        pts = np.asarray(tracking_pt_edges if step == "tracking" else VETO_PT_EDGES if step == "veto" else pt_edges, float)
        if pts.ndim != 1 or pts.size < 2 or np.any(np.diff(pts) <= 0):
            raise ValueError(f"pT edges of step {step!r} must increase, got {pts.tolist()}")
        lo, hi = TRACKING_MASS_WINDOW if step == "tracking" else MASS_WINDOW
        ue = None
        if step in UPAR_STEPS and upar_edges is not None:
            ue = np.asarray(upar_edges, float)
            if ue.size < 2 or np.any(np.diff(ue) <= 0):
                raise ValueError(f"upar_edges must increase, got {list(upar_edges)}")
        out[step] = StepBinning(step, np.linspace(-ETA_MAX, ETA_MAX, n + 1), pts,
                                (-1, 1) if step in CHARGE_STEPS else (0,), ue,
                                np.arange(lo, hi + 1e-9, mass_bin))
    return out


def step_masks(cols: Mapping[str, np.ndarray], step: str) -> tuple[np.ndarray, np.ndarray]:
    """(probe, passing probe) masks of ``step`` on tnp skim columns: the paper's chain
    (:func:`wmnb.conventions.tnp_step_masks`, which includes the second-muon veto) and
    ``isolation_notrig`` (global, ID-passing probes; passing: isolated)."""
    if step == "isolation_notrig":
        return probe_masks(cols, ("probe_pass_glb", "probe_pass_id"), "probe_pass_iso", step)
    return tnp_step_masks(cols, step)


def probe_upar(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """u_∥ of each probe: the dimuon q_T projected on the probe's direction,
    pT_probe + pT_tag cos(φ_tag − φ_probe), from reconstructed muons (data and simulation alike)."""
    return (np.asarray(cols["probe_pt"], np.float64)
            + np.asarray(cols["tag_pt"], np.float64) * np.cos(np.asarray(cols["tag_phi"], np.float64)
                                                               - np.asarray(cols["probe_phi"], np.float64)))


__all__ = ["CHARGE_STEPS", "ISOLATION_STEPS", "MASS_WINDOW", "PT_EDGES", "STEPS", "TEMPLATE_EDGES", "TRACKING_MASS_WINDOW",
           "TRACKING_PT_EDGES", "TRUTH_STEPS", "UPAR_RANGE", "UPAR_STEPS", "VETO_PT_EDGES", "BinCentres", "StepBinning", "probe_upar", "step_binnings",
           "step_masks"]
