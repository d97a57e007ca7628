"""Benchmark of chapter 04's recoil models (reports, never asserts).

On a profile's Z samples (the chapter's own inputs and settings): the training of both methods'
chains (the binned quantiles and the four BDT quantile regressions), then the application of
each chain to every simulated W event of the profile's W skims (u_∥, u_⊥ along the muon +
neutrino q_T), against the baseline in the same process — a plain numpy per-q_T-bin
interpolation of the two CDFs (``np.interp`` of the binned quantiles, no tails, no chain) — and
against the vectorised numpy reference of the same rule (``morphing.morph_1d``, which the
compiled kernels replaced).  Then the recoil nuisances: every column variation of the
correction through the pipeline of each W sample (the re-morphing of the events near the m_T
thresholds and the rerun of their derived quantities and cuts), per variation; and the training
of the DNN recoil regression on the simulated Z.

    python benchmarks/bench_recoil.py [profile]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from wmnb.engine.kinematics import project
from wmnb.engine.pipeline import run_pipeline
from wmnb.recoil import chapter, inputs, regression
from wmnb.recoil.correction import RecoilCorrection, recoil_variations
from wmnb.recoil.morphing import BinnedQuantiles, morph_1d


def _interp_baseline(x: np.ndarray, qt: np.ndarray, mc: BinnedQuantiles, data: BinnedQuantiles) -> np.ndarray:
    """Per q_T bin: x -> data quantile at the level np.interp gives it in the simulation's."""
    b = np.clip(np.searchsorted(mc.edges, qt, side="right") - 1, 0, mc.values.shape[0] - 1)
    out = np.empty_like(x)
    for i in range(mc.values.shape[0]):
        s = b == i
        p = np.interp(x[s], mc.values[i], mc.levels)
        out[s] = np.interp(p, data.levels, data.values[i])
    return out


def main(profile: str = "default") -> dict:
    from wmnb.corrections import SampleInfo
    from wmnb.engine import read_skim
    from wmnb.engine.registry import get_selection
    from wmnb.profiles import chapter_parameters, load_profile

    cfg = chapter.RecoilConfig.from_parameters(chapter_parameters(load_profile(profile), chapter.CHAPTER))
    samples = inputs.load_z(profile)
    t0 = time.perf_counter()
    cal = chapter.calibrate(samples, cfg)
    t_train = time.perf_counter() - t0
    w = {}
    for s in ("wplus_munu", "wminus_munu"):
        cols = read_skim(profile, "w", s, exclude=("lhe_pdf", "lhe_scale"))
        cols["ut_x"], cols["ut_y"] = get_selection("w").recoil(cols)
        w[s] = cols
    n_w = sum(len(c["weight"]) for c in w.values())
    out: dict = {"profile": profile, "train_time_s": cal.train_time_s, "train_total_s": t_train, "n_w_events": n_w}
    for method, chain in cal.morphs.items():
        corr = RecoilCorrection(chain, method)
        chain.apply(np.zeros((8, 2)), np.ones((8, 3)))      # the kernels' compile (or cache load) is not timed
        t0 = time.perf_counter()
        for s, cols in w.items():
            corr.correct(dict(cols), SampleInfo(s, False, "w", ("mu",)))
        dt = time.perf_counter() - t0
        out[f"apply_{method}_s"] = dt
        out[f"apply_{method}_evps"] = n_w / dt
    # the baseline: np.interp per q_T bin on u_par alone (no chain, no tails), the same events
    mc0, d0 = cal.morphs["binned"].mc[0], cal.morphs["binned"].data[0]
    corr = RecoilCorrection(cal.morphs["binned"], "binned")
    t0 = time.perf_counter()
    for cols in w.values():
        qt, phi, _ = corr.boson(cols, SampleInfo("w", False, "w", ("mu",)))  # type: ignore[misc]
        par = cols["ut_x"] * np.cos(phi) + cols["ut_y"] * np.sin(phi)
        _interp_baseline(par, qt, mc0, d0)  # type: ignore[arg-type]
    dt = time.perf_counter() - t0
    out["baseline_interp_s"] = dt
    out["baseline_interp_evps"] = n_w / dt
    out["ratio_binned_over_baseline"] = out["apply_binned_s"] / dt
    out["ratio_bdt_over_baseline"] = out["apply_bdt_s"] / dt
    # the numpy reference of the rule the kernels compile, on the same events
    chain = cal.morphs["binned"]
    t0 = time.perf_counter()
    for cols in w.values():
        qt, phi, y = corr.boson(cols, SampleInfo("w", False, "w", ("mu",)))  # type: ignore[misc]
        par, perp = project(cols["ut_x"], cols["ut_y"], phi)
        cond = np.stack([qt, y, cols["npv"].astype(np.float64)], axis=1)
        for j, x in enumerate((par, perp)):
            morph_1d(x, chain.mc[j].levels, chain.mc[j].predict(cond), chain.data[j].predict(cond))
    out["apply_binned_numpy_reference_s"] = time.perf_counter() - t0
    out["ratio_numpy_reference_over_kernel"] = out["apply_binned_numpy_reference_s"] / out["apply_binned_s"]
    # the nuisances: column variations through the pipeline, per variation
    stat = cal.stat.deltas if cal.stat is not None else np.zeros((0,))
    varied = RecoilCorrection(chain, "binned", recoil_variations(cal.morphs, "binned", stat, cal.method_delta))
    t_var, fractions = 0.0, []
    for s, cols in w.items():
        res = run_pipeline("w", s, cols, corrections=[varied])
        t0 = time.perf_counter()
        touched = [0 if var.rows is None else var.rows.size for var in res.variations()]
        t_var += time.perf_counter() - t0
        fractions.append(np.mean(touched) / res.weight.size if touched else 0.0)
    # the DNN recoil regression on the same Z sample, with the chapter's settings
    _, _, out["dnn_train_s"] = regression.train(samples[inputs.SIGNAL],
                                                regression.DNNConfig(max_train_events=cfg.max_train_events,
                                                                     seed=cfg.seed))
    out["n_recoil_nuisances"] = len(varied.variations)
    out["variation_per_nuisance_s"] = t_var / max(len(varied.variations), 1)
    # the share of the selected events each variation re-morphs (those near an m_T threshold)
    out["variation_selected_share"] = float(np.mean(fractions))
    print(json.dumps(out, indent=1))
    dest = Path(__file__).parent / "out"
    dest.mkdir(exist_ok=True)
    (dest / f"recoil_{profile}.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(*sys.argv[1:2])
