"""Blinding of a fitted mass (m_W, the W-like m_Z): a hidden offset in [−500, 500] MeV.

The fit itself always runs unblinded internally (pulls, impacts, uncertainties and plots stay
valid); the offset is added to the mass in everything a chapter *shows or writes* until the
notebook's ``unblind`` parameter is true.

**Where the offset comes from.**  From a *local secret* that is in neither the repository nor
any profile, combined with the profile's seed and the quantity (HMAC-SHA256): knowing the code,
the seed and the published blinded value therefore tells nothing about the true mass.  The
secret is, in this order, the environment variable :data:`KEY_ENV` or the key file
(:data:`KEY_ENV_FILE` or ``~/.config/wmnb/blinding.key``), generated on first use with 256
random bits and readable by its owner only.  The same machine shows the same blinded value at
every run; another machine (another key) shows another one, and differences between masses
(charge split, random starts, cross-checks) are the same everywhere.  Each quantity has its own
offset (``quantity``), so unblinding the W-like m_Z (the paper's validation, unblinded first)
reveals nothing of the m_W offset.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import numpy as np

RANGE_MEV = 500.0
#: the blinded quantities
QUANTITIES = ("mw", "mz_wlike")
#: environment variables holding the secret itself, or the path of the key file
KEY_ENV, KEY_ENV_FILE = "WMNB_BLINDING_KEY", "WMNB_BLINDING_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/wmnb/blinding.key")


class BlindingKeyError(RuntimeError):
    """The blinding secret cannot be read or created."""


def key_file() -> Path:
    """Where the blinding secret is kept (outside the repository)."""
    return Path(os.environ.get(KEY_ENV_FILE) or DEFAULT_KEY_FILE).expanduser()


def _secret() -> bytes:
    """The local secret: :data:`KEY_ENV`, else the key file, created on first use (mode 0600)."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode()
    path = key_file()
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            # written atomically and private: created with O_EXCL so two runs never both write
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)           # fails if another run created it meanwhile: keep theirs
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        text = path.read_text().strip()
    except OSError as err:
        raise BlindingKeyError(f"cannot read or create the blinding key {path} ({err}); set {KEY_ENV} to a secret "
                               f"or {KEY_ENV_FILE} to a writable path") from err
    if len(text) < 16:
        raise BlindingKeyError(f"the blinding key {path} is too short ({len(text)} characters); delete it to "
                               "generate a new one (the blinded values shown will change)")
    return text.encode()


def offset_mev(seed: int, quantity: str = "mw") -> float:
    """The blinding offset (MeV) of ``quantity`` for ``seed`` on this machine: uniform in [−500, 500]."""
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"blinding seed must be an integer, got {seed!r}")
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown blinded quantity {quantity!r}; known: {list(QUANTITIES)}")
    digest = hmac.new(_secret(), f"{quantity}|{int(seed)}".encode(), hashlib.sha256).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return float((2.0 * u - 1.0) * RANGE_MEV)


def present(mass_mev: float, seed: int, unblind: bool, quantity: str = "mw") -> float:
    """The mass as it may be shown: with the offset of ``quantity`` unless ``unblind``."""
    return float(mass_mev) if unblind else float(mass_mev) + offset_mev(seed, quantity)
