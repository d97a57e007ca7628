"""The observable of the W-mass fit: muon (eta, pT, charge) in 48 × 30 × 2 = 2880 bins.

:func:`bin_index` maps events to a flat bin number once; every template (nominal, each weight
variation) is then one ``np.bincount`` over that index, which is what makes filling a few
hundred variations cheap.  :func:`to_hist` turns arrays back into ``hist`` objects for I/O and
plots.
"""
from __future__ import annotations

import numpy as np

ETA_EDGES = np.round(np.linspace(-2.4, 2.4, 49), 10)
PT_EDGES = np.linspace(26.0, 56.0, 31)
CHARGE_EDGES = np.array([-2.0, 0.0, 2.0])
SHAPE = (len(ETA_EDGES) - 1, len(PT_EDGES) - 1, len(CHARGE_EDGES) - 1)
NBINS = int(np.prod(SHAPE))

#: |eta| boundary between the "central" and "forward" regions of the cross-check (paper: 0.9).
CENTRAL_ETA = 0.9


def bin_index(eta: np.ndarray, pt: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Flat bin number (C order over eta, pT, charge) of each event, or -1 outside the binning.

    Bins are half-open ``[lo, hi)`` like ``hist``/``numpy.histogram`` (except numpy's closed
    last bin, which we do not reproduce: pT = 56 exactly is outside, as in the selection).
    """
    eta = np.asarray(eta, dtype=np.float64)
    pt = np.asarray(pt, dtype=np.float64)
    charge = np.asarray(charge)
    if not (eta.shape == pt.shape == charge.shape):
        raise ValueError(f"eta, pt, charge must have one shape, got {eta.shape}, {pt.shape}, {charge.shape}")
    ie = np.searchsorted(ETA_EDGES, eta, side="right") - 1
    ip = np.searchsorted(PT_EDGES, pt, side="right") - 1
    iq = (charge > 0).astype(np.int64)
    bad_q = ~np.isin(charge, (-1, 1))
    inside = (ie >= 0) & (ie < SHAPE[0]) & (ip >= 0) & (ip < SHAPE[1]) & ~bad_q
    return np.where(inside, (ie * SHAPE[1] + ip) * SHAPE[2] + iq, -1)


def fill(index: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of weights and of squared weights per bin, shaped ``SHAPE``."""
    ok = index >= 0
    idx, w = index[ok], np.asarray(weights, dtype=np.float64)[ok]
    sumw = np.bincount(idx, weights=w, minlength=NBINS)
    sumw2 = np.bincount(idx, weights=w * w, minlength=NBINS)
    return sumw.reshape(SHAPE), sumw2.reshape(SHAPE)


def fill_values(index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sum of weights per bin only (variation templates do not need their own sumw2)."""
    ok = index >= 0
    return np.bincount(index[ok], weights=np.asarray(weights, dtype=np.float64)[ok],
                       minlength=NBINS).reshape(SHAPE)


def eta_centers() -> np.ndarray:
    """Bin centres of the eta axis."""
    return 0.5 * (ETA_EDGES[1:] + ETA_EDGES[:-1])


def pt_centers() -> np.ndarray:
    """Bin centres of the pT axis."""
    return 0.5 * (PT_EDGES[1:] + PT_EDGES[:-1])


def region_mask(region: str) -> np.ndarray:
    """Boolean mask of shape ``SHAPE`` for the cross-check regions.

    ``"all"``, ``"plus"``/``"minus"`` (muon charge), ``"etapos"``/``"etaneg"`` (eta sign),
    ``"central"``/``"forward"`` (|eta| below/above :data:`CENTRAL_ETA`), and
    ``"pt<lo>-<hi>"`` (a pT range in GeV on the bin edges, e.g. ``"pt27-55"``).
    """
    e = eta_centers()[:, None, None]
    p = pt_centers()[None, :, None]
    q = np.array([-1, 1])[None, None, :]
    full = np.ones(SHAPE, dtype=bool)
    simple = {
        "all": full,
        "plus": full & (q > 0), "minus": full & (q < 0),
        "etapos": full & (e > 0), "etaneg": full & (e < 0),
        "central": full & (np.abs(e) < CENTRAL_ETA), "forward": full & (np.abs(e) > CENTRAL_ETA),
    }
    if region in simple:
        return simple[region]
    if region.startswith("pt") and "-" in region:
        try:
            lo, hi = (float(x) for x in region[2:].split("-"))
        except ValueError:
            lo = hi = float("nan")
        if lo < hi and PT_EDGES[0] <= lo and hi <= PT_EDGES[-1]:
            return full & (p > lo) & (p < hi)
    raise ValueError(f"unknown region {region!r}: use one of {sorted(simple)} or 'pt<lo>-<hi>' "
                     f"within [{PT_EDGES[0]:g}, {PT_EDGES[-1]:g}] GeV")


def to_hist(values: np.ndarray, variances: np.ndarray | None = None):
    """A ``hist.Hist`` over (eta, pt, charge) holding ``values`` (and ``variances``: Weight storage)."""
    import hist

    axes = (hist.axis.Variable(ETA_EDGES, name="eta", label=r"Muon $\eta$"),
            hist.axis.Variable(PT_EDGES, name="pt", label=r"Muon $p_T$ [GeV]"),
            hist.axis.Variable(CHARGE_EDGES, name="charge", label="Muon charge"))
    values = np.asarray(values, dtype=np.float64).reshape(SHAPE)
    if variances is None:
        h = hist.Hist(*axes, storage=hist.storage.Double())
        h.view()[...] = values
    else:
        h = hist.Hist(*axes, storage=hist.storage.Weight())
        h.view().value = values
        h.view().variance = np.asarray(variances, dtype=np.float64).reshape(SHAPE)
    return h
