"""The chapter-02 pipeline: J/psi scale fits -> (A, e, M) -> resolution -> closure -> uncertainty
model -> published correction -> dimuon m_Z.  The notebook calls :func:`run`; every step is a
function of its own so tests can drive it with toy samples.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..conventions import Z_MASS_PDG, Z_MASS_PDG_ERR
from ..corrections import SampleInfo
from .binning import Binning4D, check_columns, quantile_pt_edges
from .correction import MomentumCalibration, publish_correction, write_artefact
from .massfit import MassFitConfig, MassFitResult, fit_bins
from .paramfit import ParamFit, bin_moments, event_design, fit_parameters, pulls
from .resolution import BinMuons, bin_muons, fit_data_resolution, measure_mc_resolution
from .scale_model import ScaleParams, eta_edges
from .uncertainty import Variation, closure_chi2, closure_scale_factor, eigen_variations, map_to_fine

JPSI_WINDOW = (2.9, 3.3)
UPSILON_WINDOW = (9.1, 9.8)      # Upsilon(1S) only; 2S at 10.02 GeV stays outside
Z_WINDOW = (78.0, 104.0)
UPSILON_ETA_MAX = 0.8            # "central only": the mass resolution separates 1S from 2S


@dataclass
class CalibConfig:
    """Sizes of the chapter (profile parameters of the notebook)."""

    n_eta: int = 48              # calibration eta bins (48 x 0.1 on default/full)
    n_pt: int = 4                # pT bins per muon in the J/psi 4-D fits
    n_eta_closure: int = 24
    n_pt_closure: int = 2
    min_data: int = 50
    min_mc: float = 50.0
    min_data_closure: int = 30
    seed: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any], seed: int = 0) -> "CalibConfig":
        """The sizes from the chapter's checked parameters (``wmnb.params.notebook_config``); every
        size comes from the profile (``params/<profile>.yaml``), none is chosen by profile name."""
        names = [f for f in cls.__dataclass_fields__ if f != "seed"]
        return cls(seed=seed, **{k: parameters[k] for k in names})


#: Largest error of a closure parameter that still counts as measured: a relative scale shift of
#: 5e-3 at the W's pT (45 GeV) for A' and M', a third of the resolution there and fifty times the
#: paper's total scale uncertainty.  Beyond it (sparse Z bins on small profiles) the parameter is
#: reported as unconstrained and gives no variation: a weight-based variation (a shift of the
#: Gaussian curvature response) needs shifts well below the resolution.
MAX_CLOSURE_ERROR = {"A": 5e-3, "M": 5e-3 / 45.0}


def constrained(params: "ParamFit") -> np.ndarray:
    """Determined closure parameters whose error is within :data:`MAX_CLOSURE_ERROR`."""
    err = np.sqrt(np.abs(np.diag(params.cov)))
    bound = np.array([MAX_CLOSURE_ERROR.get(nm, np.inf) for nm in params.names] * params.params.n_bins)
    return params.determined & np.isfinite(params.vector()) & np.isfinite(err) & (err <= bound)


@dataclass
class Sample:
    """A dimuon skim pair: data and (gen-matched) simulation."""

    data: dict[str, np.ndarray]
    mc: dict[str, np.ndarray]


def load_inputs(profile: str, null_test: bool = True) -> dict[str, Sample]:
    """Read chapter 01's J/psi, Upsilon and Z dimuon skims (data and simulation).

    With ``null_test`` the J/psi skim of the ``closure`` stream (data generated with the
    simulation's detector) is added as ``jpsi_null`` when it exists."""
    from ..engine import read_skim
    from ..engine.skims import skim_path

    out = {}
    if null_test and skim_path(profile, "jpsi", "closure").is_file():
        d = read_skim(profile, "jpsi", "closure")
        check_columns(d, "jpsi/closure")
        out["jpsi_null"] = Sample(d, read_skim(profile, "jpsi", "jpsi"))
    for key, sel, mc in (("jpsi", "jpsi", "jpsi"), ("upsilon", "upsilon", "upsilon"), ("z", "z", "z_mumu")):
        d = read_skim(profile, sel, "data")
        m = read_skim(profile, sel, mc)
        check_columns(d, f"{sel}/data")
        check_columns(m, f"{sel}/{mc}", extra=("mup_gen_pt", "mum_gen_pt"))
        out[key] = Sample(d, m)
    return out


def gen_matched(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Simulation events whose two muons are matched to generator muons."""
    ok = np.ones(len(cols["mass"]), bool)
    for p in ("mup", "mum"):
        g = np.asarray(cols[f"{p}_gen_pt"], float)
        ok &= np.isfinite(g) & (g > 0)
    return {k: np.asarray(v)[ok] for k, v in cols.items()}


def select(cols: dict[str, np.ndarray], eta_max: float | None = None) -> dict[str, np.ndarray]:
    """Both muons within |eta| < eta_max (Upsilon: central only)."""
    if eta_max is None:
        return cols
    ok = (np.abs(np.asarray(cols["mup_eta"])) < eta_max) & (np.abs(np.asarray(cols["mum_eta"])) < eta_max)
    return {k: np.asarray(v)[ok] for k, v in cols.items()}


def corrected(cols: dict[str, np.ndarray], corr: MomentumCalibration, is_data: bool, name: str,
              selection: str) -> dict[str, np.ndarray]:
    """A copy of a dimuon skim with the correction applied (data: scale; simulation: smearing)."""
    out = {k: np.array(v, copy=True) for k, v in cols.items()}
    corr.correct(out, SampleInfo(name=name, is_data=is_data, selection=selection, muon_prefixes=("mup", "mum")))
    return out


@dataclass
class ScaleStep:
    """One 4-D scale measurement: binning, bin fits, parameter fit."""

    binning: Binning4D
    fits: MassFitResult
    params: ParamFit
    mom_res: BinMuons | None = None
    runtime_s: float = 0.0

    def dvar(self) -> tuple[np.ndarray, np.ndarray]:
        """Extra relative mass variance per fitted bin and its error (NaN for failed fits)."""
        f = self.fits
        return f.dvar, np.where(f.ok, f.dvar_err, np.nan)


def scale_step(sample: Sample, eta_bins: np.ndarray, n_pt: int, window: tuple[float, float],
               with_e: bool, min_data: int, min_mc: float, mc_res=None,
               pt_edges: np.ndarray | None = None, fine_edges: np.ndarray | None = None,
               ratio_binning: bool = False) -> ScaleStep:
    """4-D binning + batched mass fits + chi^2 parameter fit for one sample.

    ``fine_edges``: also return the propagator from (A, e, M) on these fine eta bins to the
    fitted parameters (closure steps)."""
    t0 = time.perf_counter()
    mc = gen_matched(sample.mc)
    if ratio_binning:
        binning = Binning4D.ratio(eta_bins)
    else:
        if pt_edges is None:
            pt_edges = quantile_pt_edges(np.concatenate([mc["mup_pt"], mc["mum_pt"]]), n_pt)
        binning = Binning4D(np.asarray(eta_bins, float), pt_edges)
    cfg = MassFitConfig(window=window, min_data=min_data, min_mc=min_mc,
                        n_data=40 if window[1] < 20 else 26, pad_bins=6)
    midx = binning.index(mc)
    didx = binning.index(sample.data)
    fits = fit_bins(didx, sample.data["mass"], midx, mc["mass"], cfg,
                    mc_weight=np.asarray(mc.get("weight", np.ones(len(midx))), float))
    mom = bin_moments(midx, mc, fits.bins)
    extra = event_design(fine_edges, midx, mc, fits.bins) if fine_edges is not None else None
    params = fit_parameters(binning, fits, mom, with_e=with_e, extra_design=extra)
    mres = bin_muons(midx, mc, fits.bins, mc_res) if mc_res is not None else None
    return ScaleStep(binning, fits, params, mres, time.perf_counter() - t0)


def truth_difference(edges: np.ndarray) -> ScaleParams | None:
    """Data-card minus nominal-card (A, e, M), rebinned onto ``edges`` (for comparisons only)."""
    from .. import truth

    d = truth.compare("data", "detector.momentum_scale", purpose="chapter 02: fitted A, e, M vs truth")
    n = truth.simulation("detector.momentum_scale")
    fine = eta_edges(len(d["A"]))
    diff = ScaleParams(fine, *(np.asarray(d[k], float) - np.asarray(n[k], float) for k in ("A", "e", "M")))
    return diff if len(edges) == len(fine) else diff.rebinned(edges)


def truth_resolution() -> dict[str, Any] | None:
    """Resolution models of the nominal (simulation) and data truth cards (comparisons only)."""
    from .. import truth
    from .resolution import ResolutionModel

    cards = {"simulation": truth.simulation("detector.resolution"),
             "data": truth.compare("data", "detector.resolution", purpose="chapter 02: resolution vs truth")}
    return {key: ResolutionModel(eta_edges(len(r["a"])), *(np.asarray(r[k], float) for k in "abcd"))
            for key, r in cards.items()}


def run(profile: str, chapter_dir: str | Path, cfg: CalibConfig, inputs: dict[str, Sample] | None = None,
        truth: ScaleParams | None | str = "cards", mz_truth: float | None = None,
        mc_mz: float | None = None, publish: bool = True) -> dict[str, Any]:
    """Run the whole calibration; write the artefact (and publish the correction).

    ``inputs``: samples (default: chapter 01's skims).  ``truth``: data-minus-simulation
    parameters to compare with ("cards": from the truth cards, None: no comparison).  ``mz_truth``
    / ``mc_mz``: m_Z of data and simulation in GeV (default: from the cards).
    """
    t_start = time.perf_counter()
    chapter_dir = Path(chapter_dir)
    inputs = load_inputs(profile) if inputs is None else inputs
    out: dict[str, Any] = {"config": cfg.to_dict()}
    edges = eta_edges(cfg.n_eta)
    cedges = eta_edges(cfg.n_eta_closure)

    # -------- resolution of simulation (gen-matched J/psi and Z muons)
    mcj, mcz = gen_matched(inputs["jpsi"].mc), gen_matched(inputs["z"].mc)
    cat = lambda key: np.concatenate([mcj[f"mup_{key}"], mcj[f"mum_{key}"], mcz[f"mup_{key}"], mcz[f"mum_{key}"]])  # noqa: E731
    mc_res, res_info = measure_mc_resolution(cat("pt"), cat("eta"), cat("gen_pt"), n_eta=cfg.n_eta_closure)
    out["mc_resolution"], out["mc_resolution_info"] = mc_res, res_info

    # -------- step 1 + 2: J/psi 4-D fits and (A, e, M)
    jpsi = scale_step(inputs["jpsi"], edges, cfg.n_pt, JPSI_WINDOW, True, cfg.min_data, cfg.min_mc, mc_res)
    out["jpsi"] = jpsi
    pf = jpsi.params
    if truth == "cards":
        truth = truth_difference(edges)
        out["truth_resolution"] = truth_resolution()
    out["truth"] = truth
    if truth is not None:
        pu = pulls(pf, truth)
        out["pulls"] = pu
        out["pull_mean"], out["pull_width"] = float(np.mean(pu)), float(np.std(pu, ddof=1))

    # null test: the "closure" stream has the simulation's detector, so its (A, e, M) must be zero
    if "jpsi_null" in inputs:
        null = scale_step(inputs["jpsi_null"], edges, cfg.n_pt, JPSI_WINDOW, True, cfg.min_data, cfg.min_mc,
                          pt_edges=jpsi.binning.pt_edges)
        det = null.params.determined
        v = null.params.vector()[det]
        out["null_test"] = null
        out["null_chi2_ndf"] = float(v @ np.linalg.solve(null.params.cov[np.ix_(det, det)], v)) / max(int(det.sum()), 1)

    corr0 = MomentumCalibration(pf.params, [], None, seed=cfg.seed)

    # -------- closure on Z, Upsilon (central) and J/psi with the correction applied to data
    closure = {}
    for key, window, eta_max, n_pt in (("z", Z_WINDOW, None, cfg.n_pt_closure),
                                       ("upsilon", UPSILON_WINDOW, UPSILON_ETA_MAX, cfg.n_pt_closure),
                                       ("jpsi", JPSI_WINDOW, None, cfg.n_pt)):
        s = inputs[key]
        data_c = select(corrected(s.data, corr0, True, "data", key), eta_max)
        mc_s = select(s.mc, eta_max)
        if len(data_c["mass"]) == 0 or len(mc_s["mass"]) == 0:
            closure[key] = None
            continue
        closure[key] = scale_step(Sample(data_c, mc_s), cedges, n_pt, window, False,
                                  cfg.min_data_closure, cfg.min_mc, mc_res if key == "z" else None,
                                  fine_edges=edges, ratio_binning=(key == "z"))
    out["closure"] = closure

    # -------- resolution: data (a, b, c, d) from the extra mass variance of the J/psi bins and
    # (after the scale correction) of the Z bins
    pieces = [(*s.dvar(), s.mom_res) for s in (jpsi, closure["z"]) if s is not None]
    data_res = fit_data_resolution(mc_res, pieces)
    out["data_resolution"] = data_res

    # -------- closure chi2 (Z) and the uncertainty scale factor
    zc = closure["z"]
    if zc is not None:
        det = constrained(zc.params)
        out["closure_unconstrained_z"] = [f"{nm}'[{i // len(zc.params.names)}]" for i, nm in
                                          enumerate(np.tile(zc.params.names, cfg.n_eta_closure))
                                          if zc.params.determined[i] and not det[i]]
        r = zc.params.vector()[det]
        Cz = zc.params.cov[np.ix_(det, det)]
        # the J/psi calibration's statistical covariance carried exactly into the Z closure
        # parameters (each Z muon through its own fine eta bin and curvature)
        L = zc.params.propagator[det]
        C = np.where(np.isfinite(pf.cov), pf.cov, 0.0)
        Ccal = L @ C @ L.T
        out["closure_propagator_z"] = zc.params.propagator
        chi2 = closure_chi2(r, Cz, Ccal)
        out["closure_chi2_z"], out["closure_ndf_z"] = chi2, int(det.sum())
        out["closure_chi2_ndf_z"] = chi2 / max(int(det.sum()), 1)
        sf = closure_scale_factor(r, Cz, Ccal)
        # split into the charge-independent (A') and charge-dependent (M') parts as in the paper
        names = np.tile(["A", "M"], cfg.n_eta_closure)[det]
        for nm in ("A", "M"):
            sel = names == nm
            out[f"closure_chi2_ndf_z_{nm}"] = (closure_chi2(r[sel], Cz[np.ix_(sel, sel)], Ccal[np.ix_(sel, sel)]) / sel.sum()
                                               if sel.any() else float("nan"))
    else:
        out["closure_chi2_ndf_z"], sf = float("nan"), 1.0
    out["scale_factor"] = sf

    # -------- uncertainty model -> variations
    variations: list[Variation] = eigen_variations(pf.cov, pf.names, cfg.n_eta, "muonScaleStat", "muonScale", scale=sf)
    if zc is not None:
        cz = np.where(np.outer(det, det), zc.params.cov, np.nan)
        zvars = eigen_variations(cz, zc.params.names, cfg.n_eta_closure, "muonScaleZClosure", "muonScale")
        variations += [map_to_fine(v, cedges, edges) for v in zvars]
    dA = Z_MASS_PDG_ERR / Z_MASS_PDG
    variations.append(Variation("muonScaleMZRef", "muonScale", np.full(cfg.n_eta, dA), np.zeros(cfg.n_eta), np.zeros(cfg.n_eta)))
    out["n_variations"] = len(variations)

    write_artefact(chapter_dir, pf.params, pf.cov, variations, data_res, sf, cfg.seed,
                   extra={"n_fits": jpsi.fits.n_fits, "n_failed_fits": jpsi.fits.n_failed,
                          "binning": jpsi.binning.to_dict(), "skipped_bins": jpsi.fits.skipped,
                          "undetermined": [int(i) for i in np.flatnonzero(~pf.determined)]})
    if publish:
        publish_correction(chapter_dir)
    corr = MomentumCalibration(pf.params, variations, data_res, seed=cfg.seed)
    out["correction"] = corr

    # -------- dimuon m_Z with the full correction
    from .mz import fit_mz

    if mz_truth is None or mc_mz is None:
        from .. import truth
        if mz_truth is None:
            mz_truth = truth.compare("data", "physics.mz_mev", purpose="chapter 02: dimuon m_Z closure") / 1000
        mc_mz = truth.simulation("physics.mz_mev") / 1000 if mc_mz is None else mc_mz
    zs = inputs["z"]
    zdata = corrected(zs.data, corr, True, "data", "z")
    zmc = corrected(zs.mc, corr, False, "z_mumu", "z")
    mz = fit_mz(zdata, zmc, mc_mz, corr.iter_variations(zmc, SampleInfo("z_mumu", False, "z", ("mup", "mum"))))
    out["mz"] = mz
    out["mz_truth"] = mz_truth
    out["mz_minus_truth"] = (mz.mz - mz_truth) * 1000
    out["mz_err"] = mz.err * 1000
    out["mz_pull"] = (mz.mz - mz_truth) / mz.err if mz.err > 0 else float("nan")
    out["runtime_s"] = time.perf_counter() - t_start
    return out


def headline(out: dict[str, Any]) -> dict[str, Any]:
    """The summary.json headline of the chapter."""
    j = out["jpsi"]
    h = {
        "pull_mean": out.get("pull_mean", float("nan")), "pull_width": out.get("pull_width", float("nan")),
        "n_fits": j.fits.n_fits, "n_failed_fits": j.fits.n_failed,
        "n_skipped_bins": sum(j.fits.skipped.values()),
        "n_params_determined": int(j.params.determined.sum()),
        "chi2_ndf_param_fit": j.params.chi2 / max(j.params.ndf, 1),
        "closure_chi2_ndf_z": out["closure_chi2_ndf_z"],
        "null_test_chi2_ndf": out.get("null_chi2_ndf", float("nan")),
        "closure_chi2_ndf_z_A": out.get("closure_chi2_ndf_z_A", float("nan")),
        "closure_chi2_ndf_z_M": out.get("closure_chi2_ndf_z_M", float("nan")),
        "uncertainty_scale_factor": out["scale_factor"],
        "n_variations": out["n_variations"],
        "mz_minus_truth": out["mz_minus_truth"], "mz_err": out["mz_err"], "mz_pull": out["mz_pull"],
        "mz_stat_err": out["mz"].stat * 1000, "mz_calib_err": out["mz"].calib * 1000,
        "jpsi_fit_time_s": j.runtime_s,
        "runtime_s": out["runtime_s"],
    }
    return h
