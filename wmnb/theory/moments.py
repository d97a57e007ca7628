"""Angular coefficients A0..A7 and the unpolarised cross section from angular moments.

The fully differential Drell-Yan / W cross section in the Collins-Soper frame factorises into the
unpolarised cross section and eight harmonic coefficients (PHYSICS.md, "Theory model"):

    dσ/(dq_T dy dcosθ dφ) = (3/16π) dσ_UL/(dq_T dy) [ (1 + cos²θ) + Σ_i A_i(q_T, y) P_i(cosθ, φ) ],

    P0 = ½(1 − 3cos²θ)    P1 = sin2θ cosφ    P2 = ½ sin²θ cos2φ    P3 = sinθ cosφ
    P4 = cosθ             P5 = sin²θ sin2φ    P6 = sin2θ sinφ        P7 = sinθ sinφ

The polynomials are orthogonal on the sphere to each other and to 1 + cos²θ, so each coefficient
is the weighted mean of one function of the angles in a (q_T, y) bin:

    A0 = 4 − 10⟨cos²θ⟩,  A1 = 5⟨sin2θ cosφ⟩,  A2 = 10⟨sin²θ cos2φ⟩,  A3 = 4⟨sinθ cosφ⟩,
    A4 = 4⟨cosθ⟩,        A5 = 5⟨sin²θ sin2φ⟩, A6 = 5⟨sin2θ sinφ⟩,   A7 = 4⟨sinθ sinφ⟩.

The statistical covariance of the coefficients in a bin is that of ratio estimators of weighted
events: cov(A_i, A_j) = c_i c_j Σ w² (P_i − ⟨P_i⟩)(P_j − ⟨P_j⟩) / (Σ w)², with c_i the constants
of A_i = c_i ⟨P_i⟩ + const (20/3, 5, 20, 4, 4, 5, 5, 4), so correlated coefficients (A0 and A2 share events, and the Lam-Tung difference A0 − A2
needs their covariance) get the right errors.

Under lepton ↔ antilepton (θ → π − θ, φ → φ + π) P3, P4 and P7 change sign and the others do not:
A3, A4 and A7 of the antilepton are minus those of the lepton.  In the standard Collins-Soper frame
(z along the sign of the boson p_z) A1 and A4 are even in y, so |y| bins lose nothing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..angular import harmonic_polynomials

#: bin edges: a sequence of floats or an array
Edges = Sequence[float] | np.ndarray

#: names of the harmonic coefficients, in the order of :func:`harmonic_polynomials`
COEFFICIENTS = ("A0", "A1", "A2", "A3", "A4", "A5", "A6", "A7")
#: A_i = SCALE_i <P_i> + OFFSET_i (A0 = 4 - 10<cos^2> = 20/3 <P0> + 2/3, A2 = 10<sin^2 cos2phi> = 20<P2>)
_SCALE = np.array([20.0 / 3.0, 5.0, 20.0, 4.0, 4.0, 5.0, 5.0, 4.0])
_OFFSET = np.array([2.0 / 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])

#: generator-level branches the moments read (the NanoGEN-like ``mc_gen`` samples of chapter 00)
GEN_BRANCHES = ("GenV_pt", "GenV_y", "GenV_cosThetaCS", "GenV_phiCS", "genWeight")


class MomentsInputError(ValueError):
    """Input the moments cannot use: names the file, branch or argument and what to do."""


@dataclass(frozen=True)
class AngularMoments:
    """Coefficients and unpolarised cross section in (q_T, |y|) bins.

    ``coeffs`` (n_qt, n_y, 8) and ``cov`` (n_qt, n_y, 8, 8) are NaN in bins with fewer than
    ``min_events`` events; ``sigma`` (n_qt, n_y) is the weighted sum of events times ``norm``
    (a cross section in pb when ``norm`` = xsec / sum of weights), ``sigma_err`` its error."""

    qt_edges: np.ndarray
    absy_edges: np.ndarray
    coeffs: np.ndarray
    cov: np.ndarray
    sigma: np.ndarray
    sigma_err: np.ndarray
    n_events: np.ndarray

    def errors(self) -> np.ndarray:
        """Statistical errors of the coefficients, (n_qt, n_y, 8)."""
        return np.sqrt(np.diagonal(self.cov, axis1=-2, axis2=-1))

    def coefficient(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(value, error) of one coefficient (``"A0"`` .. ``"A7"``) per bin."""
        if name not in COEFFICIENTS:
            raise KeyError(f"unknown angular coefficient {name!r}; use one of {COEFFICIENTS}")
        i = COEFFICIENTS.index(name)
        return self.coeffs[..., i], self.errors()[..., i]

    def lam_tung(self) -> tuple[np.ndarray, np.ndarray]:
        """(A0 − A2, its error) per bin, with the A0-A2 covariance (zero at leading order and
        for a Lam-Tung-respecting generator)."""
        d = self.coeffs[..., 0] - self.coeffs[..., 2]
        var = self.cov[..., 0, 0] + self.cov[..., 2, 2] - 2.0 * self.cov[..., 0, 2]
        return d, np.sqrt(var)

    def pulls(self, reference: np.ndarray) -> np.ndarray:
        """(measured − reference) / error per bin and coefficient; ``reference`` broadcasts
        against (n_qt, n_y, 8)."""
        return (self.coeffs - np.asarray(reference, dtype=float)) / self.errors()


def _check_edges(edges: Edges, what: str) -> np.ndarray:
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or not np.all(np.diff(e) > 0) or e[0] < 0:
        raise MomentsInputError(f"{what} must be at least two increasing, finite, non-negative edges; got {edges!r}")
    return e


def angular_moments(qt: np.ndarray, y: np.ndarray, cos_theta: np.ndarray, phi: np.ndarray,
                    weights: np.ndarray | None, qt_edges: Edges, absy_edges: Edges,
                    norm: float = 1.0, min_events: int = 10) -> AngularMoments:
    """A0..A7 and σ_UL in (q_T, |y|) bins from the angles of weighted events (arrays of one
    length); events outside the edges are ignored."""
    qe, ye = _check_edges(qt_edges, "qt_edges"), _check_edges(absy_edges, "absy_edges")
    arrays = [np.asarray(x, dtype=float) for x in (qt, y, cos_theta, phi)]
    n = arrays[0].shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if any(a.shape != (n,) for a in arrays) or w.shape != (n,):
        raise MomentsInputError("angular_moments: qt, y, cos_theta, phi and weights must be 1-D arrays of one length; "
                                f"got shapes {[a.shape for a in arrays]} and {w.shape}")
    if not (np.all(np.isfinite(w)) and all(np.all(np.isfinite(a)) for a in arrays)):
        raise MomentsInputError("angular_moments: non-finite values in the inputs (check the generator branches)")
    qt_a, y_a, c_a, f_a = arrays
    iq = np.searchsorted(qe, qt_a, side="right") - 1
    iy = np.searchsorted(ye, np.abs(y_a), side="right") - 1
    inside = (iq >= 0) & (iq < qe.size - 1) & (iy >= 0) & (iy < ye.size - 1)
    nq, ny = qe.size - 1, ye.size - 1
    cell = (iq * ny + iy)[inside]
    w = w[inside]
    g = harmonic_polynomials(c_a[inside], f_a[inside])                   # (8, m)
    n_cells = nq * ny
    sw = np.bincount(cell, weights=w, minlength=n_cells)
    sw2 = np.bincount(cell, weights=w * w, minlength=n_cells)
    count = np.bincount(cell, minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.stack([np.bincount(cell, weights=w * gi, minlength=n_cells) for gi in g]) / sw   # (8, cells)
        dev = g - mean[:, cell]                                          # (8, m)
        w2 = w * w
        cov_g = np.empty((n_cells, 8, 8))
        for i in range(8):
            for j in range(i, 8):
                v = np.bincount(cell, weights=w2 * dev[i] * dev[j], minlength=n_cells) / sw**2
                cov_g[:, i, j] = cov_g[:, j, i] = v
    coeffs = (_SCALE[:, None] * mean + _OFFSET[:, None]).T                # (cells, 8)
    cov = cov_g * _SCALE[None, :, None] * _SCALE[None, None, :]
    few = count < min_events
    coeffs[few] = np.nan
    cov[few] = np.nan
    return AngularMoments(qt_edges=qe, absy_edges=ye, coeffs=coeffs.reshape(nq, ny, 8),
                          cov=cov.reshape(nq, ny, 8, 8), sigma=(norm * sw).reshape(nq, ny),
                          sigma_err=(norm * np.sqrt(sw2)).reshape(nq, ny), n_events=count.reshape(nq, ny))


def read_generator_events(files: Sequence[str | Path], max_events: int | None = None,
                          weight_branches: Sequence[str] = (), extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The :data:`GEN_BRANCHES` of generator-level files as numpy arrays (float64), optionally
    only the first ``max_events``; ``weight_branches`` (e.g. ``LHEScaleWeight``) are read too,
    as 2-D arrays (events × members), ``extra`` scalar branches (e.g. ``GenV_mass``) as 1-D ones.
    A missing file or branch fails naming it."""
    import uproot

    if not files:
        raise MomentsInputError("read_generator_events: no files given (the manifest's mc_gen entry of chapter 00)")
    branches = (*GEN_BRANCHES, *extra, *weight_branches)
    parts: dict[str, list[np.ndarray]] = {b: [] for b in branches}
    n = 0
    for path in map(Path, files):
        if max_events is not None and n >= max_events:
            break
        if not path.is_file():
            raise MomentsInputError(f"{path}: no such file; run chapter 00 (its mc_gen samples) first")
        with uproot.open(path) as fh:
            if "Events" not in fh:
                raise MomentsInputError(f"{path}: no 'Events' tree; is this a generator-level sample of chapter 00?")
            tree = fh["Events"]
            missing = [b for b in branches if b not in tree]
            if missing:
                raise MomentsInputError(f"{path}: missing branch(es) {missing}; the theory chapter needs "
                                        f"{list(branches)} (the mc_gen samples of universe schema 2)")
            stop = None if max_events is None else max_events - n
            arrays = tree.arrays(list(branches), entry_stop=stop, library="np")
        for b in (*GEN_BRANCHES, *extra):
            parts[b].append(np.asarray(arrays[b], dtype=float))
        for b in weight_branches:
            parts[b].append(_stacked(arrays[b], b, path))
        n += len(arrays[GEN_BRANCHES[0]])
    return {b: np.concatenate(v) for b, v in parts.items()}


def _stacked(values: np.ndarray, branch: str, path: Path) -> np.ndarray:
    """A jagged weight branch as (events, members); every event must have the same length."""
    if values.dtype != object:
        return np.asarray(values, dtype=float).reshape(len(values), -1)
    lengths = {len(v) for v in values}
    if len(lengths) > 1 or lengths == {0}:
        raise MomentsInputError(f"{path}: branch {branch} has {sorted(lengths)} members per event; a fixed, "
                                "non-zero number is needed")
    return np.stack(list(values)).astype(float) if len(values) else np.zeros((0, 0))


def moments_from_files(files: Sequence[str | Path], qt_edges: Edges, absy_edges: Edges,
                       norm: float = 1.0, max_events: int | None = None, min_events: int = 10) -> AngularMoments:
    """:func:`angular_moments` of the events of generator-level files (GenV angles, genWeight)."""
    ev = read_generator_events(files, max_events)
    return angular_moments(ev["GenV_pt"], ev["GenV_y"], ev["GenV_cosThetaCS"], ev["GenV_phiCS"], ev["genWeight"],
                           qt_edges, absy_edges, norm=norm, min_events=min_events)
