"""``wmnb coverage``: the m_W coverage of chapter 08's own model on a profile, with many toys.

Chapter 08 can run coverage toys itself (``n_coverage_toys``), but at the default profile a toy
is a fit of the ~1900-nuisance model (about 10 s on 2 cores), so 300 of them do not belong in
the chapter's 15 minutes.  This command builds the model exactly as the notebook does (the
chapter's skims, corrections and configuration; :func:`wmnb.mw.chapter.load_templates`,
:func:`wmnb.mw.model.make_spec`) and runs the toys in batches with a progress line:

    wmnb coverage --profile default --toys 300 [--seed 20162] [--batch 25]

Each toy (:func:`wmnb.fit.fitter.toys`) is Poisson data around the nominal expectation with
the global observables drawn around it, fitted from the truth; batch ``b`` draws from the seed
``[seed, b]``.  The result, pulls included, goes to ``results/<profile>/coverage/08_mw_fit.json``
(written atomically, with the profile, seed, versions and the model's size); only m_W pulls
are kept, nothing that reveals the blinded value (the toys' truth is the simulation's own m_W).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np


def run_coverage(profile: str, n_toys: int, seed: int, batch: int = 25, progress: bool = True) -> dict[str, Any]:
    """Coverage toys of chapter 08's nominal model on ``profile``; see the module docstring."""
    from wmnb.fit.fitter import toys
    from wmnb.templatefit.fitting import _built

    from . import chapter, model

    if n_toys < 2:
        raise ValueError(f"coverage needs at least 2 toys, got {n_toys}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    t0 = time.time()
    config = chapter.simulation_config()
    ts = chapter.load_templates(profile, "data", config, skims=chapter.load_skims(profile, chunk_rows=250_000),
                                mass_shifts_mev=())
    spec = model.make_spec(ts)
    fitter_model = _built(spec)
    t_model = time.time() - t0
    pulls: list[float] = []
    n_done = n_conv = 0
    for b in range(int(np.ceil(n_toys / batch))):
        n = min(batch, n_toys - n_done)
        res = toys(fitter_model, n, int(np.random.SeedSequence([seed, b]).generate_state(1)[0]), poi="mass")
        pulls += res["pulls"][res["converged"]].tolist()
        n_done += n
        n_conv += int(res["converged"].sum())
        if progress:
            p = np.asarray(pulls)
            print(f"[coverage] {n_done}/{n_toys} toys ({n_conv} converged): pull mean {p.mean():+.3f}, width "
                  f"{p.std(ddof=1) if p.size > 1 else float('nan'):.3f}; {time.time() - t0:.0f} s", flush=True)
    p = np.asarray(pulls)
    return {"profile": profile, "seed": seed, "n_toys": n_toys, "n_converged": n_conv,
            "pull_mean": float(p.mean()), "pull_mean_err": float(p.std(ddof=1) / np.sqrt(p.size)),
            "pull_width": float(p.std(ddof=1)), "pull_width_err": float(p.std(ddof=1) / np.sqrt(2 * (p.size - 1))),
            "pulls": p.tolist(), "n_nuisances": len(spec.nuisances), "n_bins": int(spec.data.size),
            "model_build_s": round(t_model, 1), "seconds_per_toy": round((time.time() - t0 - t_model) / n_toys, 2),
            "runtime_s": round(time.time() - t0, 1)}


def cli_coverage(argv: list[str]) -> int:
    """``wmnb coverage``: see the module docstring."""
    from wmnb.artefacts import package_versions, write_json
    from wmnb.paths import profile_results

    ap = argparse.ArgumentParser(prog="wmnb coverage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--toys", type=int, default=300)
    ap.add_argument("--seed", type=int, default=20162)
    ap.add_argument("--batch", type=int, default=25, help="toys per progress line")
    args = ap.parse_args(argv)
    try:
        out = run_coverage(args.profile, args.toys, args.seed, args.batch)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"wmnb coverage: {err}", file=sys.stderr)
        return 1
    out["versions"] = package_versions()
    path = write_json(profile_results(args.profile) / "coverage" / "08_mw_fit.json", out)
    print(f"m_W coverage on {args.profile}: {out['n_converged']}/{out['n_toys']} toys, pull mean "
          f"{out['pull_mean']:+.3f} ± {out['pull_mean_err']:.3f}, width {out['pull_width']:.3f} ± "
          f"{out['pull_width_err']:.3f} -> {path}")
    return 0
