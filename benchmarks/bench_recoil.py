"""Benchmark of chapter 04's recoil models (reports, never asserts).

On a profile's Z samples (the chapter's own inputs and settings): the training of both methods'
chains (the binned quantiles and the four BDT quantile regressions), then the application of
each chain to every simulated W event of the profile's W skims (u_∥, u_⊥ along the muon +
neutrino q_T), against the baseline in the same process — a plain numpy per-q_T-bin
interpolation of the two CDFs (``np.interp`` of the binned quantiles, no tails, no chain).

    python benchmarks/bench_recoil.py [profile]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from wmnb.recoil import chapter, inputs
from wmnb.recoil.correction import RecoilCorrection
from wmnb.recoil.morphing import BinnedQuantiles


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
    print(json.dumps(out, indent=1))
    dest = Path(__file__).parent / "out"
    dest.mkdir(exist_ok=True)
    (dest / f"recoil_{profile}.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(*sys.argv[1:2])
