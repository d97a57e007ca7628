"""The momentum-scale uncertainty model as eigenvector variations.

Three sources (PHYSICS.md, "Muon momentum calibration"):

* J/psi statistical: the (A, e, M) covariance, scaled by a factor ``f`` derived from the Z
  closure (the smallest f >= 1 for which the closure chi^2/ndf <= 1, as the paper's 2.1), split
  into eigenvectors -> one nuisance per eigenvector;
* Z closure statistical: the covariance of the closure parameters (A', M' in coarser eta bins),
  eigenvectors mapped onto the fine bins;
* m_Z reference: the PDG m_Z uncertainty (2.0 MeV) as a global A shift of 2.0/91188.

Each variation is a shift ``(dA, de, dM)`` per fine eta bin.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from .scale_model import eta_index


@dataclass
class Variation:
    name: str
    group: str
    dA: np.ndarray
    de: np.ndarray
    dM: np.ndarray

    def to_dict(self) -> dict:
        return {"name": self.name, "group": self.group, "dA": self.dA.tolist(), "de": self.de.tolist(),
                "dM": self.dM.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Variation":
        return cls(d["name"], d["group"], *(np.asarray(d[k], dtype=np.float64) for k in ("dA", "de", "dM")))


def eigen_variations(cov: np.ndarray, names: tuple[str, ...], n_eta: int, prefix: str, group: str,
                     scale: float = 1.0, min_rel: float = 1e-9) -> list[Variation]:
    """sqrt(lambda) * eigenvector shifts of ``scale^2 * cov`` (undetermined parameters: NaN rows
    are ignored); eigenvalues below ``min_rel`` of the largest are dropped."""
    npar = len(names)
    good = np.isfinite(np.diag(cov))
    C = cov[np.ix_(good, good)] * scale ** 2
    C = 0.5 * (C + C.T)
    lam, vec = np.linalg.eigh(C)
    out = []
    keep = lam > min_rel * lam.max() if lam.size else np.zeros(0, bool)
    for j in np.flatnonzero(keep)[::-1]:
        full = np.zeros(n_eta * npar)
        full[good] = np.sqrt(lam[j]) * vec[:, j]
        per = full.reshape(n_eta, npar)
        cols = {nm: per[:, i] for i, nm in enumerate(names)}
        z = np.zeros(n_eta)
        out.append(Variation(f"{prefix}{len(out)}", group, cols.get("A", z), cols.get("e", z), cols.get("M", z)))
    return out


def map_to_fine(var: Variation, coarse_edges: np.ndarray, fine_edges: np.ndarray) -> Variation:
    """Spread a variation on coarse eta bins onto the fine bins (each fine bin takes its coarse
    bin's shift)."""
    centres = 0.5 * (fine_edges[1:] + fine_edges[:-1])
    i = eta_index(centres, coarse_edges)
    return Variation(var.name, var.group, var.dA[i], var.de[i], var.dM[i])


def closure_chi2(resid: np.ndarray, cov_closure: np.ndarray, cov_calib: np.ndarray, scale: float = 1.0) -> float:
    """chi^2 of closure residuals against zero with the closure and (scaled) calibration covariances."""
    C = cov_closure + scale ** 2 * cov_calib
    return float(resid @ np.linalg.solve(C, resid))


def closure_scale_factor(resid: np.ndarray, cov_closure: np.ndarray, cov_calib: np.ndarray,
                         f_max: float = 20.0) -> float:
    """Smallest factor f >= 1 on the calibration covariance giving closure chi^2/ndf <= 1."""
    ndf = len(resid)
    g = lambda f: closure_chi2(resid, cov_closure, cov_calib, f) / ndf - 1.0  # noqa: E731
    if g(1.0) <= 0:
        return 1.0
    if g(f_max) > 0:
        return f_max
    return float(brentq(g, 1.0, f_max, xtol=1e-3))
