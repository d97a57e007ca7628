"""The observable of the W-mass fit: muon (eta, pT, charge) in 48 × 30 × 2 = 2880 bins.

The binning is the shared :data:`wmnb.templatefit.binning.W_BINNING`; this module names its
edges and the regions of the chapter's cross-checks.  The functions below are the W binning's
methods under the names the chapter and its tests use.
"""
from __future__ import annotations

import numpy as np

from ..templatefit.binning import W_BINNING
from ..templatefit.binning import W_CHARGE_EDGES as CHARGE_EDGES  # noqa: F401  (re-exported)
from ..templatefit.binning import W_ETA_EDGES as ETA_EDGES
from ..templatefit.binning import W_PT_EDGES as PT_EDGES
SHAPE = W_BINNING.shape
NBINS = W_BINNING.nbins

from ..templatefit.binning import CENTRAL_ETA  # noqa: F401  (re-exported)
from ..templatefit.binning import region_mask as shared_region_mask


def bin_index(eta: np.ndarray, pt: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Flat bin number (C order over eta, pT, charge) of each event, or -1 outside the binning
    (bins are half-open ``[lo, hi)``: pT = 56 exactly is outside, as in the selection)."""
    eta, pt, charge = np.asarray(eta), np.asarray(pt), np.asarray(charge)
    if not (eta.shape == pt.shape == charge.shape):
        raise ValueError(f"eta, pt, charge must have one shape, got {eta.shape}, {pt.shape}, {charge.shape}")
    return W_BINNING.bin_index({"mu_eta": eta, "mu_pt": pt, "mu_charge": charge})


fill = W_BINNING.fill
fill_values = W_BINNING.fill_values
to_hist = W_BINNING.to_hist


def eta_centers() -> np.ndarray:
    """Bin centres of the eta axis."""
    return 0.5 * (ETA_EDGES[1:] + ETA_EDGES[:-1])


def pt_centers() -> np.ndarray:
    """Bin centres of the pT axis."""
    return 0.5 * (PT_EDGES[1:] + PT_EDGES[:-1])


def region_mask(region: str) -> np.ndarray:
    """Boolean mask of shape ``SHAPE`` for the cross-check regions (see
    :func:`wmnb.templatefit.binning.region_mask`): ``"all"``, ``"plus"``/``"minus"``,
    ``"etapos"``/``"etaneg"``, ``"central"``/``"forward"`` (|eta| below/above :data:`CENTRAL_ETA`)
    and ``"pt<lo>-<hi>"``."""
    return shared_region_mask(W_BINNING, region, CENTRAL_ETA)
