"""Chapter 06 end to end: generator-level analysis, correction tables, Z validation, closure.

Inputs: the inclusive generator-level samples of chapter 00 (``mc_gen``: W⁺, W⁻, Z with
``GenV_*``, ``genWeight``, ``LHEScaleWeight``), the Z skims of chapter 01 and the corrections of
chapters 01-03 for the Z validation fit.  The truth is read only through :mod:`wmnb.truth`,
after the measurement, for the comparison panels and the closure numbers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..conventions import LHE_SCALE_NOMINAL, LHE_SCALE_PAIRS
from .correction import SCALE_VARIATIONS, TheoryCorrection, TheoryTables, qt_reweighting
from .moments import AngularMoments, angular_moments, read_generator_events
from .prediction import NUISANCES, Edges, PredictionInputs, QtPrediction

CHAPTER = "06_theory"
GEN_SAMPLES = {"wplus": "wplus_munu", "wminus": "wminus_munu", "z": "z_mumu"}
#: the helicity-fit binning of PHYSICS.md, used for the generator-level A_i analysis
MOMENT_QT_EDGES = (0.0, 3.0, 6.0, 9.7, 12.4, 16.0, 21.4, 29.5, 60.0)
MOMENT_ABSY_EDGES = (0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 3.0)
#: log-normal normalisation uncertainty of the small backgrounds of the Z validation fit
BACKGROUND_KAPPA = 1.10


@dataclass(frozen=True)
class TheoryConfig:
    """Sizes and choices of the chapter (profile parameters of the notebook)."""

    qt_step: float = 1.0          # GeV: q_T bins of the reweighting up to qt_max
    qt_max: float = 100.0
    absy_step: float = 0.25       # |y| bins of the reweighting up to absy_max
    absy_max: float = 3.0
    hel_qt_edges: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 30.0, 400.0)
    hel_absy_edges: tuple[float, ...] = (0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 3.0, 5.0)
    max_gen_events: int | None = None
    pdf_cl_scale: float = 1.0
    min_events: float = 1.0
    z_qt_edges: tuple[float, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 30, 35, 40, 50, 60, 80, 100)
    z_absy_edges: tuple[float, ...] = (0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4)

    @property
    def qt_edges(self) -> np.ndarray:
        """Reweighting q_T edges: ``qt_step`` bins to ``qt_max``, then 150, 200, 400 GeV (flow)."""
        fine = np.arange(0.0, self.qt_max + 1e-9, self.qt_step)
        return np.concatenate([fine, [e for e in (150.0, 200.0, 400.0) if e > fine[-1]]])

    @property
    def absy_edges(self) -> np.ndarray:
        """Reweighting |y| edges: ``absy_step`` bins to ``absy_max``, then 3.5, 4, 5 (flow)."""
        fine = np.arange(0.0, self.absy_max + 1e-9, self.absy_step)
        return np.concatenate([fine, [e for e in (3.5, 4.0, 5.0) if e > fine[-1] + 1e-9]])

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> TheoryConfig:
        """The sizes from the chapter's checked parameters (``wmnb.params.notebook_config``)."""
        names = ("qt_step", "qt_max", "absy_step", "absy_max", "max_gen_events", "pdf_cl_scale")
        return cls(**{k: parameters[k] for k in names if k in parameters})


# ---------------------------------------------------------------- inputs

def generator_files(profile: str) -> dict[str, tuple[list[Path], float]]:
    """boson -> (files, cross section / sum of weights) of chapter 00's ``mc_gen`` samples."""
    from ..engine.skims import load_manifest
    from ..paths import universe_dir

    man = load_manifest(profile)
    if "mc_gen" not in man:
        raise KeyError(f"profile {profile!r}: the universe manifest has no 'mc_gen' samples (schema "
                       f"{man.get('schema_version')}); rerun chapter 00 with this wmnb")
    root = universe_dir(profile)
    out = {}
    for boson, sample in GEN_SAMPLES.items():
        info = man["mc_gen"].get(sample)
        if info is None:
            raise KeyError(f"profile {profile!r}: no mc_gen sample {sample!r} in the universe manifest; rerun chapter 00")
        out[boson] = ([root / f for f in info["files"]], float(info["xsec_pb"]) / float(info["sumw"]))
    return out


def load_generator_events(profile: str, max_events: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """boson -> generator events (GenV kinematics and mass, angles, genWeight, LHEScaleWeight), with
    ``norm`` (pb per unit weight) added."""
    out = {}
    for boson, (files, norm) in generator_files(profile).items():
        ev = read_generator_events(files, max_events, weight_branches=("LHEScaleWeight",), extra=("GenV_mass",))
        ev["norm"] = np.array(norm)
        out[boson] = ev
    return out


def fsr_emission_fractions(profile: str, max_events: int | None = 500_000) -> dict[str, float]:
    """boson -> fraction of its generator muons that radiated a photon (GenPart of ``mc_gen``)."""
    import awkward as ak
    import uproot

    from .ew import emission_fraction

    out = {}
    for boson, (files, _) in generator_files(profile).items():
        with uproot.open(files[0]) as fh:
            tree = fh["Events"]
            missing = [b for b in ("GenPart_pdgId", "GenPart_genPartIdxMother") if b not in tree]
            if missing:
                raise KeyError(f"{files[0]}: missing {missing}; the FSR variation needs the generator record")
            a = tree.arrays(["GenPart_pdgId", "GenPart_genPartIdxMother"], entry_stop=max_events)
        out[boson] = emission_fraction(ak.to_numpy(ak.flatten(a.GenPart_pdgId)),
                                       ak.to_numpy(ak.flatten(a.GenPart_genPartIdxMother)),
                                       ak.to_numpy(ak.num(a.GenPart_pdgId)))
    return out


def pdf_eigenvectors(profile: str) -> int:
    """Hessian eigenvectors of the simulation (the width of ``LHEPdfWeight`` of the W⁺ sample)."""
    import uproot

    from ..conventions import lhe_pdf_pairs

    files, _ = generator_files(profile)["wplus"]
    with uproot.open(files[0]) as fh:
        tree = fh["Events"]
        if "LHEPdfWeight" not in tree:
            raise KeyError(f"{files[0]}: no LHEPdfWeight branch; the PDF variations need it (rerun chapter 00)")
        first = tree["LHEPdfWeight"].array(entry_stop=1, library="np")
    return lhe_pdf_pairs(len(first[0])) if len(first) else 0


def prediction() -> QtPrediction:
    """The prediction with central inputs from the generator's settings (the simulation's card)."""
    from .. import truth

    return QtPrediction(PredictionInputs.from_generator_settings(truth.simulation("physics")))


# ---------------------------------------------------------------- tables

def _moments(ev: Mapping[str, np.ndarray], weight: np.ndarray, qt_edges: Edges, absy_edges: Edges,
             **kw: Any) -> AngularMoments:
    """:func:`angular_moments` of generator events (their GenV kinematics and angles) with ``weight``."""
    return angular_moments(ev["GenV_pt"], ev["GenV_y"], ev["GenV_cosThetaCS"], ev["GenV_phiCS"], weight,
                           qt_edges, absy_edges, **kw)


def _bin_means(ev: Mapping[str, np.ndarray], values: np.ndarray, qe: np.ndarray, ye: np.ndarray,
               clip: bool) -> tuple[np.ndarray, np.ndarray]:
    """(sum of genWeight, genWeight-weighted mean of each row of ``values`` (k, N)) per (q_T, |y|)
    bin, shaped (n_qt, n_y) and (n_qt, n_y, k); events outside the edges are put into the edge
    bins with ``clip``, else left out."""
    qt, ay = np.asarray(ev["GenV_pt"], float), np.abs(np.asarray(ev["GenV_y"], float))
    iq, iy = np.searchsorted(qe, qt, side="right") - 1, np.searchsorted(ye, ay, side="right") - 1
    if clip:
        iq, iy = np.clip(iq, 0, qe.size - 2), np.clip(iy, 0, ye.size - 2)
    inside = (iq >= 0) & (iq < qe.size - 1) & (iy >= 0) & (iy < ye.size - 1)
    cell = (iq * (ye.size - 1) + iy)[inside]
    w = np.asarray(ev["genWeight"], float)[inside]
    sw = np.bincount(cell, w, minlength=(qe.size - 1) * (ye.size - 1))
    means = np.stack([np.bincount(cell, w * v[inside], minlength=sw.size) / np.where(sw > 0, sw, 1.0)
                      for v in values], axis=-1)
    return sw.reshape(qe.size - 1, ye.size - 1), means.reshape(qe.size - 1, ye.size - 1, len(values))

@dataclass
class TablesResult:
    """The correction tables and what was measured on the way."""

    tables: TheoryTables
    simulated: dict[str, np.ndarray]            # boson -> (n_y, n_qt) weighted counts
    central_chi2: dict[str, tuple[float, int]]  # boson -> chi2, ndf of the central factor against 1
    n_empty: dict[str, int]


def scale_moments(ev: Mapping[str, np.ndarray], qt_edges: Edges, absy_edges: Edges,
                  min_events: int = 10) -> tuple[AngularMoments, dict[str, AngularMoments]]:
    """Moments of the events with ``genWeight`` and under each μR/μF scale weight (``MuRUp`` ...)."""
    if "LHEScaleWeight" not in ev:
        raise KeyError("scale moments: the generator events lack 'LHEScaleWeight' (read them with "
                       "weight_branches=('LHEScaleWeight',))")
    sc = np.asarray(ev["LHEScaleWeight"], dtype=float)
    nominal = np.where(sc[:, LHE_SCALE_NOMINAL] != 0, sc[:, LHE_SCALE_NOMINAL], 1.0)
    base = _moments(ev, ev["genWeight"], qt_edges, absy_edges, min_events=min_events)
    varied = {}
    for scale in SCALE_VARIATIONS:
        iu, idn = LHE_SCALE_PAIRS[scale]
        for d, idx in (("Up", iu), ("Down", idn)):
            varied[f"{scale}{d}"] = _moments(ev, ev["genWeight"] * sc[:, idx] / nominal, qt_edges, absy_edges,
                                             min_events=min_events)
    return base, varied


def build_tables(events: Mapping[str, Mapping[str, np.ndarray]], pred: QtPrediction, config: TheoryConfig,
                 provenance: Mapping[str, Any] | None = None,
                 fsr_emission: Mapping[str, float] | None = None) -> TablesResult:
    """The :class:`TheoryTables` from generator events of each boson and the prediction."""
    qe, ye = config.qt_edges, config.absy_edges
    hq, hy = np.asarray(config.hel_qt_edges, float), np.asarray(config.hel_absy_edges, float)
    nominal, variations, sims, chi2, n_empty = {}, {}, {}, {}, {}
    ang_nom, ang_shift = {}, {}
    for boson, ev in events.items():
        qt = np.minimum(np.asarray(ev["GenV_pt"], float), qe[-1] * (1 - 1e-12))
        ay = np.minimum(np.abs(np.asarray(ev["GenV_y"], float)), ye[-1] * (1 - 1e-12))
        w = np.asarray(ev["genWeight"], float)
        sim, _, _ = np.histogram2d(ay, qt, bins=(ye, qe), weights=w)
        sim2, _, _ = np.histogram2d(ay, qt, bins=(ye, qe), weights=w * w)
        central = pred.fractions(boson, qe, ye)
        factor, empty = qt_reweighting(central, sim, config.min_events, what=f"of {boson}")
        nominal[boson] = factor
        # the central factor against 1: its error is the simulation's relative error per bin
        ok = ~empty & (sim2 > 0)
        rel = np.sqrt(np.where(ok, sim2, 1.0)) / np.where(ok, sim, 1.0)
        chi2[boson] = (float(np.sum(((factor - 1.0) / rel)[ok] ** 2)), int(ok.sum() - ye.size + 1))
        safe = np.where(central > 0, central, 1.0)
        variations[boson] = {name: (np.where(central > 0, up / safe, 1.0), np.where(central > 0, down / safe, 1.0))
                             for name, (up, down) in pred.variations(boson, qe, ye).items()}
        base, varied = scale_moments(ev, hq, hy)
        ang_nom[boson] = np.nan_to_num(base.coeffs)
        ang_shift[boson] = {k: np.nan_to_num(m.coeffs - base.coeffs) for k, m in varied.items()}
        sims[boson], n_empty[boson] = sim, int(empty.sum())
    tables = TheoryTables(qe, ye, hq, hy, nominal, variations, ang_nom, ang_shift, config.pdf_cl_scale,
                          dict(provenance or {}), dict(fsr_emission or {}))
    return TablesResult(tables, sims, chi2, n_empty)


# ---------------------------------------------------------------- generator-level analysis

@dataclass
class GeneratorAnalysis:
    """A_i and σ_UL of each boson in the helicity binning, with the simulation's truth."""

    moments: dict[str, AngularMoments]
    truth: dict[str, np.ndarray]                 # boson -> (n_qt, n_y, 5): the card's A0..A4 averaged over the bin's events
    pull_width: dict[str, float]                 # A0..A4 -> pooled RMS of the pulls
    pull_mean: dict[str, float]
    lam_tung_max_dev: float                      # max |A0 - A2| over the bins
    lam_tung_max_sig: float                      # its significance


def generator_analysis(events: Mapping[str, Mapping[str, np.ndarray]],
                       qt_edges: Edges = MOMENT_QT_EDGES, absy_edges: Edges = MOMENT_ABSY_EDGES,
                       min_events: int = 50) -> GeneratorAnalysis:
    """Moments of every boson; their pulls against the simulation's own card functions (read
    through the truth gate: the simulation's card is public, as a generator configuration)."""
    from .. import truth

    moments, truths = {}, {}
    pulls: dict[int, list[np.ndarray]] = {i: [] for i in range(5)}
    lt_dev, lt_sig = 0.0, 0.0
    qe, ye = np.asarray(qt_edges, float), np.asarray(absy_edges, float)
    for boson, ev in events.items():
        m = _moments(ev, ev["genWeight"], qe, ye, norm=float(ev.get("norm", 1.0)), min_events=min_events)
        card = truth.angular_coefficients("simulation", boson, ev["GenV_pt"], ev["GenV_y"],
                                          purpose="chapter 06: generator-level A_i against the simulation's card")
        _, ref = _bin_means(ev, card, qe, ye, clip=False)
        moments[boson], truths[boson] = m, ref
        p = m.pulls(np.concatenate([ref, np.zeros(ref.shape[:2] + (3,))], axis=-1))
        for i in range(5):
            pulls[i].append(p[..., i][np.isfinite(p[..., i])])
        d, e = m.lam_tung()
        good = np.isfinite(d) & (e > 0)
        if good.any():
            lt_dev = max(lt_dev, float(np.max(np.abs(d[good]))))
            lt_sig = max(lt_sig, float(np.max(np.abs(d[good] / e[good]))))
    width = {f"A{i}": float(np.std(np.concatenate(v))) for i, v in pulls.items()}
    mean = {f"A{i}": float(np.mean(np.concatenate(v))) for i, v in pulls.items()}
    return GeneratorAnalysis(moments, truths, width, mean, lt_dev, lt_sig)


# ---------------------------------------------------------------- closure against the truth

@dataclass
class AngularClosure:
    """The data universe's true A0..A4 against the simulation's, with the angular nuisances' band."""

    qt_edges: np.ndarray
    absy_edges: np.ndarray
    difference: dict[str, np.ndarray]     # boson -> (n_qt, n_y, 5): A_i(data truth) - A_i(simulation truth)
    band: dict[str, np.ndarray]           # boson -> (n_qt, n_y, 5): quadrature of the muR, muF shifts and handles
    covered: dict[str, float]             # A0..A4 -> fraction of populated bins (all bosons) inside the band


def pdf_moment_shifts(profile: str, tables: TheoryTables, max_events: int | None = 500_000) -> dict[str, np.ndarray]:
    """boson -> (n_qt, n_y, 8): the quadrature sum over the Hessian eigenvectors of half the
    up-down change of A_i (moments of the first ``max_events`` generator events under each
    ``LHEPdfWeight`` member), divided by the correction's ``pdf_cl_scale``."""
    from ..conventions import LHE_PDF_CENTRAL, lhe_pdf_index, lhe_pdf_pairs

    out = {}
    for boson, (files, _) in generator_files(profile).items():
        ev = read_generator_events(files, max_events, weight_branches=("LHEPdfWeight",))
        pdf = ev["LHEPdfWeight"]
        central = np.where(pdf[:, LHE_PDF_CENTRAL] != 0, pdf[:, LHE_PDF_CENTRAL], 1.0)
        var = np.zeros((tables.hel_qt_edges.size - 1, tables.hel_absy_edges.size - 1, 8))
        for k in range(lhe_pdf_pairs(pdf.shape[1])):
            up, down = (_moments(ev, ev["genWeight"] * pdf[:, lhe_pdf_index(k, u)] / central,
                                 tables.hel_qt_edges, tables.hel_absy_edges).coeffs for u in (True, False))
            var += np.nan_to_num(0.5 * (up - down) / tables.pdf_cl_scale) ** 2
        out[boson] = np.sqrt(var)
    return out


def angular_closure(events: Mapping[str, Mapping[str, np.ndarray]], tables: TheoryTables,
                    pdf_shifts: Mapping[str, np.ndarray] | None = None) -> AngularClosure:
    """Per bin of the decorrelation binning, the data universe's true A_i minus the simulation's
    (both the cards' functions averaged over the simulation's events there, through the truth
    gate) against the 1σ band of the angular nuisances (half the μR and μF up-down differences
    and the A1/A3 handles, in quadrature), with the PDF eigenvectors' A_i changes
    (:func:`pdf_moment_shifts`) added in quadrature when given."""
    from .. import truth
    from .correction import A13_HANDLE

    qe, ye = tables.hel_qt_edges, tables.hel_absy_edges
    diff, band = {}, {}
    inside, total = np.zeros(5), np.zeros(5)
    for boson, ev in events.items():
        qt, y = np.asarray(ev["GenV_pt"], float), np.asarray(ev["GenV_y"], float)
        why = "chapter 06: A_i closure of the angular band"
        a_data = truth.angular_coefficients("data", boson, qt, y, purpose=why)
        a_sim = truth.angular_coefficients("simulation", boson, qt, y, purpose=why)
        sw, diff[boson] = _bin_means(ev, a_data - a_sim, qe, ye, clip=True)
        sh = tables.angular_shift[boson]
        var = sum((0.5 * (sh[f"{s}Up"] - sh[f"{s}Down"])[..., :5]) ** 2 for s in SCALE_VARIATIONS)
        nom = tables.angular_nominal[boson][..., :5]
        var = var + np.where(np.isin(np.arange(5), (1, 3)), (A13_HANDLE * nom) ** 2, 0.0)
        if pdf_shifts is not None and boson in pdf_shifts:
            var = var + pdf_shifts[boson][..., :5] ** 2
        band[boson] = np.sqrt(var)
        populated = (sw > 0)[..., None] & np.ones(5, bool)
        inside += np.sum((np.abs(diff[boson]) <= band[boson]) & populated, axis=(0, 1))
        total += populated.sum(axis=(0, 1))
    return AngularClosure(qe, ye, diff, band, {f"A{i}": float(inside[i] / max(total[i], 1)) for i in range(5)})


@dataclass
class QtClosure:
    """The prediction and its band against the data universe's true q_T spectrum."""

    qt_edges: np.ndarray
    absy_edges: np.ndarray
    central: dict[str, np.ndarray]
    band: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    simulation: dict[str, np.ndarray]
    covered: float                               # fraction of bins with |truth - central| <= band
    theta_truth: dict[str, dict[str, tuple[float, float]]]   # boson -> nuisance -> (value, error)


def prediction_band(pred: QtPrediction, boson: str, qt_edges: np.ndarray, absy_edges: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(central fractions, 1σ band: the quadrature sum of every nuisance's half-difference,
    nuisance -> symmetric shift)."""
    central = pred.fractions(boson, qt_edges, absy_edges)
    shifts = {n: 0.5 * (up - down) for n, (up, down) in pred.variations(boson, qt_edges, absy_edges).items()}
    band = np.sqrt(sum(s**2 for s in shifts.values()))
    return central, band, shifts


def theta_reproducing(truth_frac: np.ndarray, central: np.ndarray, shifts: Mapping[str, np.ndarray],
                      n_events: float) -> dict[str, tuple[float, float]]:
    """The nuisance values that best reproduce a target spectrum, linearised around the central
    prediction: least squares of the fractions with the statistics of ``n_events`` events per
    |y| row and the unit Gaussian priors (value, error per nuisance)."""
    names = list(shifts)
    ok = central > 1e-6
    var = central[ok] / n_events
    d = np.stack([shifts[n][ok] for n in names], axis=1) / np.sqrt(var)[:, None]
    r = (truth_frac - central)[ok] / np.sqrt(var)
    a = d.T @ d + np.eye(len(names))
    cov = np.linalg.inv(a)
    theta = cov @ (d.T @ r)
    return {n: (float(theta[k]), float(np.sqrt(cov[k, k]))) for k, n in enumerate(names)}


def qt_closure(pred: QtPrediction, tables: TablesResult, qt_max: float = 60.0, absy_max: float = 2.4,
               n_events: float = 1e6) -> QtClosure:
    """Reweighted simulation (= the central prediction) against the data universe's true q_T
    spectrum in the reweighting bins below ``qt_max`` and ``absy_max``; the truth is read through
    the truth gate (blinded m_W replaced by the simulation's)."""
    from .. import truth

    t = tables.tables
    qe = t.qt_edges[t.qt_edges <= qt_max + 1e-9]
    qe = np.concatenate([qe, [t.qt_edges[-1]]])      # the rest as one flow bin keeps rows normalised
    ye = t.absy_edges[t.absy_edges <= absy_max + 1e-9]
    central, band, truths, sims, theta = {}, {}, {}, {}, {}
    inside, total = 0, 0
    for boson in tables.simulated:
        c, b, shifts = prediction_band(pred, boson, qe, ye)
        tr = truth.qt_shape("data", boson, qe, ye, purpose="chapter 06: q_T closure of the prediction's band")
        central[boson], band[boson], truths[boson] = c, b, tr
        sim = tables.simulated[boson]
        n_q = qe.size - 2
        s = sim[: ye.size - 1, :n_q]
        sims[boson] = s / sim[: ye.size - 1].sum(axis=1, keepdims=True)
        inside += int(np.sum(np.abs(tr - c)[:, :n_q] <= b[:, :n_q]))
        total += b[:, :n_q].size
        theta[boson] = theta_reproducing(tr, c, shifts, n_events)
    return QtClosure(qe, ye, central, band, truths, sims, inside / max(total, 1), theta)


def data_theory_weights(events: Mapping[str, Mapping[str, np.ndarray]], qt_edges: np.ndarray, absy_edges: np.ndarray
                        ) -> dict[str, np.ndarray]:
    """Per boson and event, the data universe's true theory over the simulation's (through the
    truth gate): the q_T fraction ratio in the (|y|, q_T) bin times the angular-density ratio at
    the event's own (q_T, y, cos θ, φ).  For the generator-level m_W bias; its PDF position (a
    change of the rapidity distribution) is not included."""
    from .. import truth
    from ..angular import harmonic_polynomials

    why = "chapter 06: m_W bias of the data universe's theory at generator level"
    out = {}
    for boson, ev in events.items():
        ratio = (truth.qt_shape("data", boson, qt_edges, absy_edges, purpose=why)
                 / truth.qt_shape("simulation", boson, qt_edges, absy_edges, purpose=why))
        qt, y = np.asarray(ev["GenV_pt"], float), np.asarray(ev["GenV_y"], float)
        iq = np.clip(np.searchsorted(qt_edges, qt, side="right") - 1, 0, qt_edges.size - 2)
        iy = np.clip(np.searchsorted(absy_edges, np.abs(y), side="right") - 1, 0, absy_edges.size - 2)
        c, f = np.asarray(ev["GenV_cosThetaCS"], float), np.asarray(ev["GenV_phiCS"], float)
        polys = harmonic_polynomials(c, f)[:5]
        dens = [1.0 + c * c + np.sum(truth.angular_coefficients(src, boson, qt, y, purpose=why) * polys, axis=0)
                for src in ("data", "simulation")]
        out[boson] = np.nan_to_num(ratio[iy, iq], nan=1.0, posinf=1.0) * dens[0] / dens[1]
    return out


def _rows(columns: Mapping[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """The ``rows`` of every per-event array (scalars kept)."""
    return {k: (v[rows] if np.ndim(v) else v) for k, v in columns.items()}


def mw_bias(profile: str, events: Mapping[str, Mapping[str, np.ndarray]], correction: TheoryCorrection,
            max_events: int | None = None) -> Any:
    """:func:`wmnb.theory.mwbias.generator_mw_bias` of the data universe's theory, the W events
    normalised to the profile's expected data."""
    from .. import truth
    from ..engine.skims import effective_lumi_pb, load_manifest
    from .mwbias import final_muons, generator_mw_bias, in_acceptance

    files = generator_files(profile)
    w_events = {b: events[b] for b in ("wplus", "wminus")}
    muons = {b: final_muons(files[b][0], max_events) for b in w_events}
    n = {b: min(len(muons[b]["pt"]), len(w_events[b]["genWeight"])) for b in w_events}
    w_events = {b: _rows(ev, np.arange(n[b])) for b, ev in w_events.items()}
    muons = {b: _rows(mu, np.arange(n[b])) for b, mu in muons.items()}
    manifest = load_manifest(profile)
    lumi = effective_lumi_pb(manifest)
    expected = {}
    for b, ev in w_events.items():
        w = np.asarray(ev["genWeight"], float)
        acc = in_acceptance(muons[b])
        # cross section x luminosity x acceptance (the events read may be part of the sample)
        xsec = float(manifest["mc_gen"][GEN_SAMPLES[b]]["xsec_pb"])
        expected[b] = xsec * lumi * float(w[acc].sum() / w.sum())
    # the truth is analytic: fine bins whatever the profile's reweighting binning
    fine = TheoryConfig()
    weights = data_theory_weights(w_events, fine.qt_edges, fine.absy_edges)
    phys = truth.simulation("physics")
    mass, width = phys["mw_mev"] / 1e3, phys["gw_mev"] / 1e3
    result = generator_mw_bias(w_events, muons, weights, correction, expected, mass, width)
    # the simulation's own statistical error of the bias: the fixed-nuisance fit on two halves
    halves = []
    for parity in (0, 1):
        pick = {b: np.arange(n[b]) % 2 == parity for b in w_events}
        halves.append(generator_mw_bias({b: _rows(ev, pick[b]) for b, ev in w_events.items()},
                                        {b: _rows(mu, pick[b]) for b, mu in muons.items()},
                                        {b: weights[b][pick[b]] for b in w_events}, correction, expected, mass, width,
                                        groups=()).fixed)
    return replace(result, mc_error=abs(halves[0] - halves[1]) / 2.0)


# ---------------------------------------------------------------- Z validation fit

@dataclass
class ZFit:
    """The Z validation fit of the dimuon (q_T, |y|) distribution."""

    result: Any
    qt_edges: np.ndarray
    absy_edges: np.ndarray
    data: np.ndarray
    prefit: np.ndarray
    postfit: np.ndarray
    pulls: dict[str, tuple[float, float]]
    gof: tuple[float, int, float]
    n_nuisances: dict[str, int]


@dataclass
class ZInputs:
    """The Z skims after the one correction pipeline: data, the Z→μμ simulation (its variations
    on demand) and the small backgrounds, simulation weights at the data luminosity."""

    data: Any
    signal: Any
    backgrounds: dict[str, Any]
    lumi: float
    correction: TheoryCorrection


def z_inputs(profile: str, correction: TheoryCorrection) -> ZInputs:
    """Data and simulation of the Z selection with every published correction of the chapters 06
    depends on and this chapter's own ``correction``."""
    from ..corrections import upstream
    from ..engine import read_skim
    from ..engine.pipeline import run_pipeline
    from ..engine.skims import list_skim_samples, mc_lumi_scale

    # the dimuon (q_T, |y|) fit uses no recoil quantity: chapter 04's recoil correction stays out
    published = upstream(profile, CHAPTER, exclude_chapters=("04_recoil",))
    corrections = [*published, correction]
    run = lambda sample: run_pipeline("z", sample, read_skim(profile, "z", sample), corrections=corrections)  # noqa: E731
    backgrounds = {s: run(s) for s in list_skim_samples(profile, "z") if s not in ("data", "closure", "z_mumu")}
    return ZInputs(run("data"), run("z_mumu"), backgrounds, mc_lumi_scale(profile, "z"), correction)


def _z_hist(cols: Mapping[str, np.ndarray], weight: np.ndarray, qe: np.ndarray, ye: np.ndarray) -> np.ndarray:
    h, _, _ = np.histogram2d(np.abs(np.asarray(cols["pair_y"], float)), np.asarray(cols["pair_pt"], float),
                             bins=(ye, qe), weights=weight)
    return h.ravel()


def _mass_hist(cols: Mapping[str, np.ndarray], weight: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(np.asarray(cols["mass"], float), bins=edges, weights=weight)[0]


def _z_template_fit(inputs: ZInputs, hist: Any, groups: Sequence[str]) -> tuple[Any, Any, np.ndarray, np.ndarray,
                                                                                 dict[str, int]]:
    """Fit the data histogram ``hist(cols, weight)`` with the Z simulation (free normalisation),
    the backgrounds (±10 % each) and the simulation's variations of ``groups``; returns
    (result, model, observed, kept-bin mask, nuisances per group)."""
    from ..fit import ModelBuilder, fit

    observed = hist(inputs.data.columns, inputs.data.weight)
    mc = inputs.signal
    weight = mc.weight * inputs.lumi
    nominal = hist(mc.columns, weight)
    keep = nominal > 0
    b = ModelBuilder(observed[keep])
    b.add_process("Z", nominal[keep], sumw2=hist(mc.columns, weight**2)[keep], signal=True)
    b.add_norm_poi("norm_Z", "Z")
    for sample, bkg in inputs.backgrounds.items():
        w = bkg.weight * inputs.lumi
        h = hist(bkg.columns, w)[keep]
        if h.sum() > 0:
            b.add_process(sample, h, sumw2=hist(bkg.columns, w**2)[keep])
            b.add_norm_systematic(f"norm_{sample}", sample, BACKGROUND_KAPPA, group="normalisation")
    counts: dict[str, int] = {}
    for var in mc.variations():
        if var.group not in groups:
            continue
        up, down = var.full(weight.size)
        hu = hist(mc.columns, weight * up)[keep]
        hd = hist(mc.columns, weight * down)[keep] if down is not None else None
        if np.all(np.abs(hu / nominal[keep] - 1.0) < 1e-7):
            continue                      # a W-only parameter: nothing on the Z
        b.add_shape_systematic(var.nuisance, "Z", up=np.maximum(hu, 1e-12),
                               down=None if hd is None else np.maximum(hd, 1e-12), group=var.group)
        counts[var.group] = counts.get(var.group, 0) + 1
    model = b.build()
    return fit(model, global_impacts=False, impacts=False), model, observed, keep, counts


def z_validation_fit(inputs: ZInputs, config: TheoryConfig, groups: Sequence[str] = ("pTV",)) -> ZFit:
    """Fit the reconstructed dimuon (q_T, |y|) of Z→μμ data (:func:`z_inputs`), the theory
    nuisances of ``groups`` free within their priors (Z-relevant ones: the W-only parameters do
    not act), the Z normalisation free; saturated goodness of fit."""
    qe, ye = np.asarray(config.z_qt_edges, float), np.asarray(config.z_absy_edges, float)
    res, model, observed, keep, counts = _z_template_fit(inputs, lambda c, w: _z_hist(c, w, qe, ye), groups)
    pulls = {k: v for k, v in res.pulls.items() if k in {n.name for n in NUISANCES}}
    return ZFit(res, qe, ye, _expand(observed[keep], keep), _expand(np.asarray(model.expected()), keep),
                _expand(np.asarray(res.postfit_yields.total), keep), pulls, res.gof(), counts)


@dataclass
class FsrFit:
    """The FSR strength measured from the dimuon mass line shape (data over simulation)."""

    strength_ratio: float
    error: float
    edges: np.ndarray
    data: np.ndarray
    prefit: np.ndarray
    postfit: np.ndarray
    gof: tuple[float, int, float]


MASS_EDGES = np.linspace(70.0, 100.0, 61)


def fsr_strength_fit(inputs: ZInputs, edges: np.ndarray = MASS_EDGES) -> FsrFit:
    """Measure the FSR strength of the data relative to the simulation: a fit of m_μμ (the
    radiative tail below the peak) with the ``EW`` nuisance (its prior: the correction's
    ``fsr_strength_err`` around ``fsr_strength``) and the momentum-scale variations of chapter 02
    (the peak's position and width), the normalisation free.  The chapter then calibrates the
    simulation with it: the measured ratio enters the nominal weight and its error the ``EW``
    variation of every fit (a measurement on the Z, applied to W and Z alike: the FSR strength
    is one QED parameter of the universe)."""
    from .ew import NUISANCE

    res, model, observed, keep, _ = _z_template_fit(inputs, lambda c, w: _mass_hist(c, w, edges),
                                                    ("EW", "muonScale"))
    if NUISANCE not in res.pulls:
        raise ValueError("FSR strength fit: the simulation has no FSR variation (the correction's fsr_emission is empty)")
    theta, err = res.pulls[NUISANCE]
    t = inputs.correction.tables
    return FsrFit(t.fsr_strength + t.fsr_strength_err * theta, t.fsr_strength_err * err, edges, _expand(observed[keep], keep),
                  _expand(np.asarray(model.expected()), keep), _expand(np.asarray(res.postfit_yields.total), keep),
                  res.gof())


def _expand(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    out = np.zeros(keep.size)
    out[keep] = values
    return out


# ---------------------------------------------------------------- summary

def headline(gen: GeneratorAnalysis, closure: QtClosure, zfit: ZFit | None, counts: Mapping[str, int],
             angular: AngularClosure | None = None) -> dict[str, Any]:
    """The summary keys of the chapter."""
    return {"ai_pull_width": gen.pull_width, "ai_pull_mean": gen.pull_mean,
            "ai_truth_covered": None if angular is None else angular.covered,
            "lam_tung_max_dev": gen.lam_tung_max_dev, "lam_tung_max_significance": gen.lam_tung_max_sig,
            "z_qt_gof_pvalue": None if zfit is None else float(zfit.gof[2]),
            "n_nuisances": dict(counts), "qt_truth_covered": closure.covered}


__all__ = ["CHAPTER", "NUISANCES", "AngularClosure", "FsrFit", "GeneratorAnalysis", "QtClosure", "TablesResult",
           "TheoryConfig", "ZFit", "ZInputs", "angular_closure", "build_tables", "data_theory_weights",
           "fsr_emission_fractions", "fsr_strength_fit", "generator_analysis", "generator_files", "headline",
           "load_generator_events", "mw_bias", "pdf_eigenvectors", "pdf_moment_shifts", "prediction",
           "prediction_band", "qt_closure", "scale_moments", "theta_reproducing", "z_inputs", "z_validation_fit"]
