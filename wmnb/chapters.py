"""The chapters of the book, in data-flow order, and what each depends on.

The runner executes them in this order, skipping chapters whose notebook, parameters, code and
inputs are unchanged (see :mod:`wmnb.runner`).  A chapter is listed here only once its notebook
exists and works; the book's table of contents is built from this list.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .params import Param


@dataclass(frozen=True)
class Chapter:
    """One chapter: notebook ``notebooks/<id>.ipynb`` writing ``results/<profile>/<id>/``."""

    id: str                       # "02_calibration"
    title: str
    depends_on: tuple[str, ...] = ()
    code: tuple[str, ...] = ()    # wmnb modules/packages whose source changes invalidate it
                                  # (besides the shared core, see wmnb.runner)
    headline: tuple[str, ...] = ()  # summary.json keys shown by `wmnb status`
    #: the chapter's own parameters (besides wmnb.params.COMMON), checked by the parameter gate
    #: for every profile and run; None means "not declared" (any key passes, for test chapters)
    parameters: tuple[Param, ...] | None = None


_UNIVERSE_PARAMETERS = (
    Param("events_scale", (str, float), "smoke",
          "fraction of the paper's statistics: a name (smoke, default, full) or a number", positive=True,
          choices=("smoke", "default", "full")),
    Param("workers", int, 2, "parallel generator processes", minimum=1),
    Param("mc_factor", float, None, "simulation size relative to the expected data (backgrounds)", positive=True, nullable=True),
    Param("signal_mc_factor", float, None, "W and Z signal simulation size relative to the expected data", positive=True,
          nullable=True),
    Param("gen_factor", float, None, "inclusive generator-level W and Z samples relative to the expected data",
          positive=True, nullable=True),
    Param("mc_floor", int, None, "minimum events per simulated sample", minimum=0, nullable=True),
    Param("max_produced_per_file", int, None, "generated events per file", minimum=1, nullable=True),
    Param("chunk_size", int, None, "events generated and written per chunk", minimum=1, nullable=True),
    Param("compression", str, None, "ROOT compression", choices=("zstd", "lz4", "zlib"), nullable=True),
)
_SELECTION_PARAMETERS = (
    Param("step", int, 200_000, "events per chunk of the histogram engine", minimum=1),
)
_CALIBRATION_PARAMETERS = (
    Param("n_eta", int, 6, "calibration eta bins (48 x 0.1 on default/full)", minimum=1, maximum=48),
    Param("n_pt", int, 2, "pT bins per muon in the 4-D J/psi fits", minimum=1),
    Param("n_eta_closure", int, 6, "eta bins of the Z closure", minimum=1, maximum=48),
    Param("n_pt_closure", int, 1, "pT bins per muon of the Z closure", minimum=1),
    Param("min_data", int, 30, "data events needed to fit a J/psi bin", minimum=1),
    Param("min_mc", float, 30.0, "simulated events needed to fit a J/psi bin", positive=True),
    Param("min_data_closure", int, 30, "data events needed to fit a Z closure bin", minimum=1),
)
_EFFICIENCY_PARAMETERS = (
    Param("n_eta", int, 48, "eta bins of the reco, tracking, ID and trigger steps (48 in the paper)", minimum=1, maximum=48),
    Param("n_eta_isolation", int, 8, "eta bins of the isolation step (its probes rarely fail)", minimum=1, maximum=48),
    Param("upar_edges", list, [-30.0, 0.0, 15.0, 100.0], "GeV: u_par bin edges of the trigger and isolation steps "
          "(None: no u_par bins)", nullable=True),
    Param("min_template_events", float, 1000.0, "simulated probes a pass or fail category needs for its own signal "
          "template (else the bin's all-probe shape times a smooth ratio)", positive=True),
)
_RECOIL_PARAMETERS = (
    Param("qt_edges", list, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0],
          "GeV: q_T bins of the binned quantiles and of the closure"),
    Param("qt_max", float, 40.0, "GeV: the recoil models are fitted on Z events below this q_T", positive=True),
    Param("n_estimators", int, 40, "boosting rounds of each BDT quantile regression", minimum=1),
    Param("max_depth", int, 4, "depth of the BDTs' trees", minimum=1),
    Param("learning_rate", float, 0.3, "the BDTs' learning rate", positive=True),
    Param("subsample", float, 0.5, "share of the events each boosting round's trees grow on", positive=True, maximum=1.0),
    Param("max_train_events", int, 150_000, "training events per sample (a random subset of the training half)",
          minimum=100, nullable=True),
    Param("n_bootstrap", int, 40, "bootstrap replicas of the binned models (their statistical uncertainty)", minimum=0),
    Param("n_stat_variations", int, 6, "leading eigenvectors of the replicas kept as nuisances (recoilStat<k>)",
          minimum=0),
)
_THEORY_PARAMETERS = (
    Param("qt_step", float, 1.0, "GeV: q_T bins of the reweighting to the prediction (1 GeV in the paper)", positive=True),
    Param("qt_max", float, 100.0, "GeV: fine q_T bins up to here, then 150, 200, 400 GeV", positive=True),
    Param("absy_step", float, 0.25, "|y| bins of the reweighting (0.25 in the paper)", positive=True),
    Param("absy_max", float, 3.0, "fine |y| bins up to here, then 3.5, 4, 5", positive=True),
    Param("max_gen_events", int, None, "generator-level events read per boson (None: all)", minimum=1, nullable=True),
    Param("pdf_cl_scale", float, 1.0, "divides the PDF variations (1.645 for a 90 % CL Hessian set)", positive=True),
    Param("z_fit", bool, True, "the Z validation fit of the dimuon (q_T, |y|) distribution"),
)
_NONPROMPT_PARAMETERS = (
    Param("order", int, None, "order of the smoothing polynomial (None: chosen by an F-test; the paper's is 3)",
          minimum=0, maximum=6, nullable=True),
    Param("eta_rebin", int, 1, "fine eta bins per smoothing slice (1: the paper's 48 x 2 slices)", minimum=1,
          maximum=48),
    Param("eta_rebin_sv", int, 8, "the same in the secondary-vertex control region", minimum=1, maximum=48),
    Param("norm_uncertainty", float, 0.05, "normalisation prior of the non-closure-corrected estimate (paper: 5 %)",
          positive=True),
    Param("skim_chunk_rows", int, 500_000, "skim rows read and filled at a time", minimum=1000),
    Param("truth_closure", bool, True, "compare with the universe's true nonprompt background (the truth gate)"),
    Param("fits", bool, True, "the m_W fits of the biased pseudo-data test and the SV control-region fit"),
)
_WLIKE_PARAMETERS = (
    Param("unblind", bool, False, "show the fitted m_Z (and its pull against the truth); only an explicit true unblinds"),
    Param("cross_checks", bool, True, "charge / central-forward / eta-sign fits"),
    Param("reversed_parity", bool, True, "the fit of the alternative sample (negative muons in odd events)"),
    Param("n_parity_bootstrap", int, 50, "bootstrap replicas of the data for the error of the reversed-parity "
          "difference (the two samples share most events)", minimum=2),
    Param("closure", bool, True, "fits of the pure-detector closure universe"),
    Param("n_gof_toys", int, 25, "toys calibrating the saturated goodness of fit (0: the asymptotic p-value only)",
          minimum=0),
    Param("skim_chunk_rows", int, 500_000, "skim rows read and filled at a time", minimum=1000),
)
_MW_PARAMETERS = (
    Param("unblind", bool, False, "show the true m_W of the data universe (only an explicit true unblinds)"),
    Param("n_random_starts", int, 3, "fits from random starting points (10 in the paper)", minimum=0),
    Param("cross_checks", bool, True, "charge / eta / central-forward / pT-range / floating-normalisation fits"),
    Param("skim_chunk_rows", int, 500_000, "skim rows read and filled at a time: bounds the memory per sample "
          "(templates equal the one-pass ones up to rounding)", minimum=1000),
    Param("projection", bool, True, "the Asimov fit at the paper's statistics (wmnb.mw.projection)"),
    Param("n_gof_toys", int, 0, "toys calibrating the saturated goodness of fit (0: the asymptotic p-value only)",
          minimum=0),
    Param("n_coverage_toys", int, 0, "pseudo-experiments of the model for the coverage of m_W (0: none)", minimum=0),
)

_HELICITY_PARAMETERS = (
    Param("unblind", bool, False, "show the helicity fit's m_W (and its pull against the truth); only an explicit "
          "true unblinds"),
    Param("binning", str, "paper", "helicity binning: 'paper' (8 q_T x 7 |y| bins + 16 overflow per charge), "
          "'reduced' (a coarse one for CI) or explicit edges 'qt=0,6,16,60; absy=0,1.2,3'"),
    Param("overflow", bool, True, "helicity parameters also for the q_T and |y| overflow bins (else those events "
          "are the out-of-acceptance process)"),
    Param("mode", str, "constrained", "'constrained': the paper's loose priors; 'regularised': the thesis's free "
          "parameters with a weak ridge regularisation", choices=("constrained", "regularised")),
    Param("regularisation_scale", float, 10.0, "regularised mode: the priors widened by this factor "
          "(ridge strength 1/scale^2 in units of the paper's priors)", positive=True),
    Param("prior_scans", bool, True, "refits with the sigma_3 prior x0.5 and x2 and the others x2 and x5"),
    Param("injection", bool, True, "Asimov pseudo-data with every helicity parameter shifted within its prior"),
    Param("injection_scenarios", bool, True, "pseudo-data of alternative productions (tilted q_T and |y| spectra, "
          "A_i moved within their priors) fitted with the helicity and the nominal model"),
    Param("skim_chunk_rows", int, 500_000, "skim rows read and filled at a time", minimum=1000),
)


CHAPTERS: tuple[Chapter, ...] = (
    Chapter("00_universe", "The synthetic universe", (),
            ("wmnb/universe",), ("n_events_total", "size_mb", "gen_rate_evps", "stat_err_scaled_117M",
                                "stat_err_ratio_to_paper", "mc_over_data_w", "gen_rate_evps_per_core",
                                "tnp_fail_bkg_fraction", "sv_prompt_fraction", "gen_wall_s"),
            _UNIVERSE_PARAMETERS),
    Chapter("01_selection", "Data selection", ("00_universe",),
            ("wmnb/selection", "wmnb/engine", "wmnb/plotting.py", "wmnb/corrections.py"), ("n_w_data", "n_z_data", "n_jpsi_data"),
            _SELECTION_PARAMETERS),
    Chapter("02_calibration", "Muon momentum calibration with J/psi", ("01_selection",),
            ("wmnb/muonscale", "wmnb/engine", "wmnb/fit", "wmnb/plotting.py", "wmnb/corrections.py"),
            ("pull_mean", "pull_width", "mz_minus_truth", "mz_err"), _CALIBRATION_PARAMETERS),
    Chapter("03_efficiencies", "Muon efficiencies by tag and probe", ("01_selection", "02_calibration"),
            ("wmnb/efficiency", "wmnb/engine", "wmnb/plotting.py", "wmnb/corrections.py", "wmnb/truth.py"),
            ("sf_pull_mean", "sf_pull_width", "n_nuisances", "fit_time_s"), _EFFICIENCY_PARAMETERS),
    Chapter("04_recoil", "Hadronic recoil calibration", ("01_selection", "02_calibration", "03_efficiencies"),
            ("wmnb/recoil", "wmnb/engine", "wmnb/plotting.py", "wmnb/corrections.py", "wmnb/truth.py"),
            ("response_pull_mean", "resolution_ratio_to_truth", "mt_chi2_ndf_before", "mt_chi2_ndf_after",
             "train_time_s"),
            _RECOIL_PARAMETERS),
    Chapter("06_theory", "Theory corrections", ("00_universe", "01_selection", "02_calibration", "03_efficiencies"),
            ("wmnb/theory", "wmnb/fit", "wmnb/engine", "wmnb/plotting.py", "wmnb/corrections.py", "wmnb/truth.py"),
            ("qt_truth_covered", "z_qt_gof_pvalue", "lam_tung_max_dev"), _THEORY_PARAMETERS),
    Chapter("05_nonprompt", "Nonprompt background", ("01_selection", "02_calibration", "03_efficiencies",
                                                      "04_recoil", "06_theory"),
            ("wmnb/nonprompt", "wmnb/templatefit", "wmnb/fit", "wmnb/engine", "wmnb/plotting.py", "wmnb/corrections.py",
             "wmnb/truth.py"),
            ("nonclosure_factor", "yield_over_truth", "n_nuisances", "biased_pseudodata_shift_mev"),
            _NONPROMPT_PARAMETERS),
    Chapter("07_wlike", "The W-like Z mass", ("01_selection", "02_calibration", "03_efficiencies", "04_recoil",
                                              "06_theory"),
            ("wmnb/wlike", "wmnb/templatefit", "wmnb/fit", "wmnb/engine", "wmnb/plotting.py", "wmnb/corrections.py",
             "wmnb/truth.py"),
            ("mz", "mz_err", "mz_pull", "n_nuisances", "central_minus_forward_mev", "blinded"), _WLIKE_PARAMETERS),
    Chapter("08_mw_fit", "The W-boson mass", ("01_selection", "02_calibration", "03_efficiencies", "04_recoil",
                                              "05_nonprompt", "06_theory"),
            ("wmnb/mw", "wmnb/fit", "wmnb/engine", "wmnb/plotting.py", "wmnb/corrections.py"),
            ("mw", "mw_err", "stat_err", "blinded"), _MW_PARAMETERS),
    Chapter("09_helicity", "The helicity fit", ("01_selection", "02_calibration", "03_efficiencies", "04_recoil",
                                                 "05_nonprompt", "06_theory"),
            ("wmnb/helicity", "wmnb/fit", "wmnb/engine", "wmnb/plotting.py", "wmnb/corrections.py", "wmnb/truth.py"),
            ("mw", "mw_err", "mw_err_nominal_fit", "n_helicity_params", "ai_postfit_pull_width", "blinded"),
            _HELICITY_PARAMETERS),
)
"""Every planned chapter; the runner and the book use only those whose notebook exists."""


def get_chapter(chapter_id: str, chapters: Sequence[Chapter] | None = None) -> Chapter:
    """Look a chapter up by id (or by its number prefix, e.g. ``"02"``)."""
    chapters = CHAPTERS if chapters is None else chapters
    for c in chapters:
        if c.id == chapter_id or c.id.split("_", 1)[0] == chapter_id:
            return c
    raise KeyError(f"unknown chapter {chapter_id!r}; chapters are {[c.id for c in chapters]}")


def dependency_order(selected: Sequence[str] | None = None,
                     chapters: Sequence[Chapter] | None = None) -> list[Chapter]:
    """Chapters to run for ``selected`` (ids or number prefixes) plus everything they need, in
    order; all chapters when ``selected`` is None."""
    chapters = CHAPTERS if chapters is None else chapters
    if not selected:
        return list(chapters)
    wanted: set[str] = set()

    def add(cid: str) -> None:
        c = get_chapter(cid, chapters)
        if c.id in wanted:
            return
        wanted.add(c.id)
        for dep in c.depends_on:
            add(dep)

    for cid in selected:
        add(cid)
    return [c for c in chapters if c.id in wanted]
