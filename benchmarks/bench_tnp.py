"""Benchmark of chapter 03's tag-and-probe fits (reports, never asserts).

The full table of a profile — every step, every bin, the data with the nominal and both
alternative models, the closure set with the nominal — with the batched fitter, and, in the
same process, the straightforward baseline: the same likelihood minimised bin by bin with
iminuit (MIGRAD + HESSE) on an evenly spread subset of the data's nominal fits, extrapolated
per fit.  Prints time, fits per second, the ratio, and the largest difference between the two
efficiencies in units of the error.

    python benchmarks/bench_tnp.py [profile] [n_reference_fits]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from wmnb.efficiency import chapter, tnpfit


def main(profile: str = "default", n_reference: int = 300) -> dict:
    from wmnb.profiles import chapter_parameters, load_profile

    params = chapter_parameters(load_profile(profile), chapter.CHAPTER)
    cfg = chapter.EfficiencyConfig.from_parameters(params)
    t0 = time.perf_counter()
    probes = chapter.load_probes(profile)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    meas = chapter.measure_all(probes, cfg)
    t_table = time.perf_counter() - t0
    # the baseline: iminuit bin by bin on a subset of the nominal data fits of every step
    per_step = max(1, n_reference // len(meas.data))
    t_ref, n_ref, worst = 0.0, 0, 0.0
    for m in meas.data.values():
        inp, res = m.inputs["nominal"], m.results["nominal"]
        rows = np.flatnonzero(res.status == 0)
        rows = rows[np.linspace(0, rows.size - 1, min(per_step, rows.size)).astype(int)]
        t0 = time.perf_counter()
        eff, err, _ = tnpfit.fit_reference(inp, rows=rows)
        t_ref += time.perf_counter() - t0
        n_ref += rows.size
        worst = max(worst, float(np.nanmax(np.abs(eff - res.eff[rows]) / res.eff_err[rows])))
    per_fit_ref = t_ref / max(n_ref, 1)
    per_fit_batched = meas.fit_time_s / meas.n_fits
    out = {"profile": profile, "n_fits": meas.n_fits, "fit_time_s": meas.fit_time_s, "table_time_s": t_table,
           "load_time_s": t_load, "fits_per_s": meas.n_fits / meas.fit_time_s,
           "iminuit_fits": n_ref, "iminuit_s_per_fit": per_fit_ref,
           "iminuit_extrapolated_s": per_fit_ref * meas.n_fits,
           "ratio_iminuit_over_batched": per_fit_ref / per_fit_batched,
           "max_eff_diff_in_sigma": worst, "n_failed_fits": meas.n_failed_fits}
    print(json.dumps(out, indent=1))
    target = Path(__file__).parent / "out" / f"bench_tnp_{profile}.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "default", int(sys.argv[2]) if len(sys.argv) > 2 else 300)
