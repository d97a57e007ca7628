"""Benchmark of the batched J/psi 4-D bin fits (reports, never asserts).

Fits the same toy bins twice: batched (``MassFitConfig.chunk`` bins at once) and one bin at a
time (``chunk=1``, the baseline: what a loop of independent small fits costs with the same
code), and prints the speed-up ratio and the throughput.

    python benchmarks/bench_calib.py [n_signal]
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from wmnb.muonscale.binning import Binning4D, quantile_pt_edges
from wmnb.muonscale.massfit import MassFitConfig, fit_bins
from wmnb.muonscale.scale_model import eta_edges
from wmnb.muonscale.toys import generate_dimuons, random_scale_params


def main(n_signal: int = 300_000) -> dict:
    rng = np.random.default_rng(1)
    edges = eta_edges(12)
    bias = random_scale_params(rng, edges)
    data = generate_dimuons(n_signal, rng, bias=bias, window=(2.9, 3.3), n_bkg=n_signal // 6, pt_parent=(6.0, 8.0))
    mc = generate_dimuons(2 * n_signal, rng, window=(2.8, 3.4), pt_parent=(6.0, 8.0))
    b = Binning4D(edges, quantile_pt_edges(np.r_[mc["mup_pt"], mc["mum_pt"]], 3))
    didx, midx = b.index(data), b.index(mc)
    # baseline on a subset (one bin at a time is slow); same subset for both
    occupied = np.unique(didx[didx >= 0])
    subset = occupied[:: max(1, len(occupied) // 60)]
    keep_d, keep_m = np.isin(didx, subset), np.isin(midx, subset)
    t0 = time.perf_counter()
    r1 = fit_bins(np.where(keep_d, didx, -1), data["mass"], np.where(keep_m, midx, -1), mc["mass"], MassFitConfig(chunk=1))
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    r2 = fit_bins(np.where(keep_d, didx, -1), data["mass"], np.where(keep_m, midx, -1), mc["mass"], MassFitConfig())
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = fit_bins(didx, data["mass"], midx, mc["mass"], MassFitConfig())
    t_full = time.perf_counter() - t0
    same = float(np.nanmax(np.abs(r1.s - r2.s) / r2.s_err)) if r1.n_fits else float("nan")
    out = {"n_bins_subset": r2.n_fits, "t_loop_s": t_loop, "t_batch_s": t_batch, "speedup": t_loop / t_batch,
           "max_diff_in_sigma": same, "n_bins_full": full.n_fits, "t_full_s": t_full,
           "bins_per_s": full.n_fits / t_full, "n_failed_full": full.n_failed}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300_000)
