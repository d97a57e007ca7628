"""Blinding of a fitted mass (m_W, the W-like m_Z): a hidden offset in [−500, 500] MeV derived
from a seed and the quantity.

The fit itself always runs unblinded internally (pulls, impacts, uncertainties and plots stay
valid); the offset is added to m_W in everything the chapter *shows or writes* until the
notebook's ``unblind`` parameter is true.  The offset depends only on the seed (and a fixed
salt, so it is not simply the profile's random stream), hence the same run shows the same
blinded value every time, and differences between m_W values (charge split, ...) are unaffected.
Each quantity has its own offset (``quantity``), so unblinding the W-like m_Z (the paper's
validation, unblinded first) reveals nothing of the m_W offset.
"""
from __future__ import annotations

import numpy as np

_SALT = 0x3A5F_1C0D   # separates the blinding stream from every other use of the seed
RANGE_MEV = 500.0
#: the blinded quantities and their salts (m_W keeps the stream it always had)
QUANTITY_SALTS = {"mw": (_SALT,), "mz_wlike": (_SALT, 0x07)}


def offset_mev(seed: int, quantity: str = "mw") -> float:
    """The blinding offset (MeV) of ``quantity`` for ``seed``: uniform in [−500, 500]."""
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"blinding seed must be an integer, got {seed!r}")
    if quantity not in QUANTITY_SALTS:
        raise ValueError(f"unknown blinded quantity {quantity!r}; known: {sorted(QUANTITY_SALTS)}")
    rng = np.random.default_rng([int(seed) & 0xFFFF_FFFF, *QUANTITY_SALTS[quantity]])
    return float(rng.uniform(-RANGE_MEV, RANGE_MEV))


def present(mass_mev: float, seed: int, unblind: bool, quantity: str = "mw") -> float:
    """The mass as it may be shown: with the offset of ``quantity`` unless ``unblind``."""
    return float(mass_mev) if unblind else float(mass_mev) + offset_mev(seed, quantity)
