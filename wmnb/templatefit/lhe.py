"""Built-in theory variations of any template fit from the simulation's generator weights.

Until chapter 06's theory correction supersedes them (groups ``pdf`` and ``scales``), a fit of
W or Z production carries the Hessian PDF eigenvector pairs of ``lhe_pdf`` and the μR, μF,
μRμF variations of ``lhe_scale``, the latter decorrelated across bins of the generator boson
q_T (the weight applied only to the events of one bin); and the boson width varied through the
Breit–Wigner line shape (:mod:`wmnb.templatefit.breitwigner`).  Chapters 07 (Z production) and
08 (W production) call these with their own samples and boson.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from ..conventions import LHE_PDF_CENTRAL, LHE_SCALE_NOMINAL, LHE_SCALE_PAIRS, N_LHE_SCALE, lhe_pdf_index, lhe_pdf_pairs
from ..corrections import Variation
from .breitwigner import mass_weights


def require(cols: Mapping[str, np.ndarray], name: str, sample: str, why: str) -> np.ndarray:
    """Column ``name`` of a skim, or a KeyError naming the sample, the column and ``why``."""
    if name not in cols:
        raise KeyError(f"sample {sample!r}: skim column {name!r} is missing; {why}")
    return np.asarray(cols[name])


def width_variation(cols: Mapping[str, np.ndarray], sample: str, nuisance: str, mass_gev: float,
                    width_gev: float, width_unc_gev: float) -> Variation:
    """The boson width ± ``width_unc_gev`` at fixed mass (group ``width``), from the generator mass."""
    m = require(cols, "gen_mass", sample, "the width variation needs the generator boson mass (GeV)")
    return Variation(nuisance, "width", mass_weights(m, mass_gev, width_gev, mass_gev, width_gev + width_unc_gev),
                     mass_weights(m, mass_gev, width_gev, mass_gev, width_gev - width_unc_gev))


def pdf_variations(cols: Mapping[str, np.ndarray], sample: str) -> Iterator[Variation]:
    """One variation per Hessian eigenvector pair of ``lhe_pdf`` (``pdf<k>``, group ``pdf``);
    none without the column."""
    if "lhe_pdf" not in cols:
        return
    pdf = np.asarray(cols["lhe_pdf"])          # kept in its stored precision (it is large)
    if pdf.ndim != 2 or pdf.shape[1] < 3 or pdf.shape[1] % 2 == 0:
        raise ValueError(f"sample {sample!r}: lhe_pdf must be [n, 1 + 2k] (central + Hessian pairs), "
                         f"got shape {pdf.shape}")
    c0 = pdf[:, LHE_PDF_CENTRAL].astype(np.float64)
    central = np.where(c0 != 0, c0, 1.0)
    for k in range(lhe_pdf_pairs(pdf.shape[1])):
        yield Variation(f"pdf{k + 1}", "pdf", pdf[:, lhe_pdf_index(k, True)] / central,
                        pdf[:, lhe_pdf_index(k, False)] / central)


def scale_variations(cols: Mapping[str, np.ndarray], sample: str, qt_edges: Sequence[float]) -> Iterator[Variation]:
    """μR, μF, μRμF from ``lhe_scale``, one set per generator-q_T bin of ``qt_edges``
    (``scale<kind>_qT<j>``, group ``scales``); none without the column."""
    if "lhe_scale" not in cols:
        return
    sc = np.asarray(cols["lhe_scale"], dtype=np.float64)
    if sc.ndim != 2 or sc.shape[1] != N_LHE_SCALE:
        raise ValueError(f"sample {sample!r}: lhe_scale must be [n, {N_LHE_SCALE}] (NanoAOD order), got {sc.shape}")
    qt = require(cols, "gen_qt", sample, "scale variations are decorrelated in generator q_T bins")
    nominal = np.where(sc[:, LHE_SCALE_NOMINAL] != 0, sc[:, LHE_SCALE_NOMINAL], 1.0)
    ibin = np.digitize(qt, list(qt_edges)[1:-1])
    for j in range(len(qt_edges) - 1):
        inbin = ibin == j
        for kind, (iu, idn) in LHE_SCALE_PAIRS.items():
            up = np.where(inbin, sc[:, iu] / nominal, 1.0)
            dn = np.where(inbin, sc[:, idn] / nominal, 1.0)
            yield Variation(f"scale{kind}_qT{j}", "scales", up, dn)
