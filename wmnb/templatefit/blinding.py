"""Blinding of the W mass: a hidden offset in [−500, 500] MeV derived from a seed.

The fit itself always runs unblinded internally (pulls, impacts, uncertainties and plots stay
valid); the offset is added to m_W in everything the chapter *shows or writes* until the
notebook's ``unblind`` parameter is true.  The offset depends only on the seed (and a fixed
salt, so it is not simply the profile's random stream), hence the same run shows the same
blinded value every time, and differences between m_W values (charge split, ...) are unaffected.
"""
from __future__ import annotations

import numpy as np

_SALT = 0x3A5F_1C0D   # separates the blinding stream from every other use of the seed
RANGE_MEV = 500.0


def offset_mev(seed: int) -> float:
    """The blinding offset (MeV) for ``seed``: uniform in [−500, 500]."""
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"blinding seed must be an integer, got {seed!r}")
    return float(np.random.default_rng([int(seed) & 0xFFFF_FFFF, _SALT]).uniform(-RANGE_MEV, RANGE_MEV))


def present(mw_mev: float, seed: int, unblind: bool) -> float:
    """m_W as it may be shown: with the offset unless ``unblind``."""
    return float(mw_mev) if unblind else float(mw_mev) + offset_mev(seed)
