"""W templates on a profile's skims with ~5000 synthetic variations of realistic locality,
against the nominal-only build in the same run (time and peak memory, each mode in its own
process so that peak memory is its own).

The synthetic correction mimics the paper's efficiency nuisances: per (eta bin, charge) 50
statistical eigenvectors that touch only that bin's events (48 x 2 x 50 = 4800 local
variations, :attr:`wmnb.corrections.Variation.rows`), plus 200 tabulated variations per
(eta, charge) bin over all events (systematic-like), i.e. 5000 nuisances on top of the chapter's
own ~50, on every simulated process.  It reports; it asserts
nothing (targets: <= 3x the nominal-only time; the shared-layers issue).

    python benchmarks/bench_templates.py [--profile default] [--fit]

``--fit`` also builds the fit model of the 5000-nuisance templates and runs one fit without
impacts (the wmnb.fit fitter), reporting its time and peak memory.

``--chapter`` runs chapter 08's whole sequence of fits on the 5000-nuisance templates (closure
templates and fit, the nominal fit with nominal and global impacts, the data-statistics-only
and Asimov fits, the eight cross-check fits, both injection scans, the random starts, the
independent reference fit and the post-fit yields of the plots), each step's time and the
running peak memory: what the chapter costs at the paper's number of nuisances.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_EIGEN = 50          # per (eta bin, charge)
N_GLOBAL = 200


def synthetic_efficiency():
    from wmnb.corrections import Correction, Variation

    class SyntheticEfficiency(Correction):
        name, kinds = "syntheticEfficiency", ("weight",)

        def nominal_factor(self, columns, sample):
            return None

        def iter_variations(self, columns, sample):
            eta = np.asarray(columns["mu_eta"], np.float64)
            q = np.asarray(columns["mu_charge"])
            ibin = np.clip(((eta + 2.4) / 0.1).astype(np.int64), 0, 47) * 2 + (q > 0)
            order = np.argsort(ibin, kind="stable")
            bounds = np.searchsorted(ibin[order], np.arange(97))
            for b in range(96):
                rows = order[bounds[b]:bounds[b + 1]]
                for k in range(N_EIGEN):
                    up = np.full(rows.size, 1.0 + 1e-3 / (1 + k))
                    yield Variation(f"effStat_b{b}_e{k}", "muonEfficiency", up, 2.0 - up, rows)
            # systematic-like: a tabulated scale-factor variation per (eta, charge) bin, as real
            # efficiency tables are, touching every event
            centers = -2.35 + 0.1 * (np.arange(96) // 2)
            for k in range(N_GLOBAL):
                table = 1.0 + 1e-4 * (k + 1) * np.cos((k + 1) * centers)
                up = table[ibin]
                yield f"effSyst{k}", "muonEfficiency", up, 2.0 - up

    return SyntheticEfficiency()


def run_mode(profile: str, mode: str, fit: bool) -> dict:
    from wmnb.mw import chapter
    from wmnb.mw.templates import build_templates

    config = chapter.simulation_config()
    samples, data = chapter.load_skims(profile, chunk_rows=500_000)     # as chapter 08 reads them
    corrections = [synthetic_efficiency()] if mode == "5000" else []
    t0 = time.perf_counter()
    ts = build_templates(samples, data["data"], config, corrections)
    out = {"mode": mode, "templates_s": round(time.perf_counter() - t0, 2),
           "n_shapes": sum(len(t.shapes) for t in ts.processes.values()),
           "n_nuisances": len({k for t in ts.processes.values() for k in t.shapes})}
    if fit:
        from wmnb.templatefit.fitting import run_fit
        from wmnb.templatefit.model import make_spec

        t0 = time.perf_counter()
        spec = make_spec(ts)
        res = run_fit(spec, full_cov=False)
        out.update({"fit_s": round(time.perf_counter() - t0, 2), "mass_mev": res.values["mass"],
                    "mass_err_mev": res.errors["mass"]})
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    return out


def run_chapter(profile: str, n_starts: int) -> dict:
    """Chapter 08's fits in the notebook's order on templates with 5000 more nuisances."""
    from wmnb.mw import chapter, fitting, model, plots

    steps: list[dict] = []
    t_last = time.perf_counter()

    def step(name: str, **info) -> None:
        nonlocal t_last
        now = time.perf_counter()
        steps.append({"step": name, "s": round(now - t_last, 1), "peak_rss_gb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2), **info})
        print(json.dumps(steps[-1]), file=sys.stderr, flush=True)
        t_last = time.perf_counter()

    config = chapter.simulation_config()
    skims = chapter.load_skims(profile, chunk_rows=500_000)     # the default profile's skim_chunk_rows
    step("open skims (read in chunks as the templates fill)")
    ts = chapter.load_templates(profile, "data", config, corrections=[synthetic_efficiency()], skims=skims)
    step("templates (data, 20 injection shifts)")
    ts_closure = chapter.load_templates(profile, "closure", config, skims=skims, mass_shifts_mev=())
    del skims
    step("templates (closure)")
    fitting.run_fit(model.make_spec(ts_closure), full_cov=False, keep_raw=False)
    step("closure fit")
    spec = model.make_spec(ts)
    nominal = fitting.run_fit(spec, impacts=True)
    step("nominal fit with impacts", n_nuisances=len(spec.nuisances), mass_err_mev=round(nominal.errors["mass"], 2))
    fitting.stat_only(ts)
    step("stat-only fit")
    fitting.run_fit(model.make_spec(ts, data=model.asimov(ts)), full_cov=False, keep_raw=False)
    step("Asimov fit")
    fitting.cross_checks(ts, nominal=nominal)
    step(f"{len(fitting.CROSS_CHECKS)} cross-check fits")
    scan = fitting.injection_scan(ts)
    step(f"injection scan ({len(scan)} points)",
         max_residual_mev=round(max(abs(f - i) for i, f, _ in scan), 4))
    if n_starts:
        starts = fitting.random_starts(ts, n_starts, 1)
        step(f"{n_starts} random starts", spread_mev=round(float(np.ptp(starts)), 5))
    ref = fitting.run_fit(spec, backend="reference")
    step("reference fit", diff_mev=round(ref.values["mass"] - nominal.values["mass"], 4),
         err_ratio=round(ref.errors["mass"] / nominal.errors["mass"], 5))
    refm = plots.RefModel(spec)
    plots.per_process(spec, plots.parameter_vector(refm, spec, nominal), refm)
    step("post-fit yields")
    return {"steps": steps, "total_s": round(sum(s["s"] for s in steps), 1),
            "peak_rss_gb": steps[-1]["peak_rss_gb"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--chapter", action="store_true", help="chapter 08's whole sequence of fits at 5000 nuisances")
    ap.add_argument("--random-starts", type=int, default=10, help="random starts of --chapter (the default profile's)")
    ap.add_argument("--mode", choices=("nominal", "5000"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    from wmnb.paths import chapter_dir

    skims = chapter_dir(args.profile, "01_selection") / "skims"
    if not args.mode and not skims.is_dir():
        print(f"bench_templates: no skims at {skims}; run `wmnb run --profile {args.profile} --only 01_selection` "
              "first (nothing measured)")
        return
    if args.chapter:
        report = {"profile": args.profile, **run_chapter(args.profile, args.random_starts)}
        out = Path(__file__).resolve().parent / "out"
        out.mkdir(exist_ok=True)
        (out / "bench_templates_chapter.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return
    if args.mode:
        print(json.dumps(run_mode(args.profile, args.mode, args.fit)))
        return
    rows = []
    for mode in ("nominal", "5000"):
        cmd = [sys.executable, __file__, "--profile", args.profile, "--mode", mode] + (["--fit"] if args.fit else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base, big = rows
    report = {"profile": args.profile, "nominal": base, "with_5000": big,
              "time_ratio": round(big["templates_s"] / base["templates_s"], 2),
              "memory_ratio": round(big["peak_rss_gb"] / base["peak_rss_gb"], 2)}
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_templates.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
