"""Benchmark ``wmnb fit`` side by side with rabbit-fit on the neutral W-mass-sized model.

For each ``--neff`` (3 -> 900 parameters, 32 -> 3684) the model is generated once with
``shared/bench/wmodel.py`` (``.npz`` for wmnb, ``--rabbit`` HDF5 for rabbit-fit), then each tool
runs in a fresh process doing fit + Hessian + nominal and global impacts:

    wmnb fit MODEL.npz --json --signal-strength     (a free W normalisation, like rabbit-fit's default)
    rabbit_fit MODEL.hdf5 -o OUT -t 0 --unblind --doImpacts --globalImpacts

Wall time and peak resident memory are measured around the whole process (a wrapper process
reads ``getrusage(RUSAGE_CHILDREN)``), so imports and model loading count for both tools (each
tool's imports are run once beforehand, so neither pays for a cold file cache). We
also time one Newton step (Hessian + dense Cholesky + solve) on the same model as the yardstick
the issue names. rabbit-fit must live in its own environment (never a wmnb dependency):
``python -m venv /tmp/rabbitenv && /tmp/rabbitenv/bin/pip install rabbit-fit
"tensorflow-probability[tf]"``; point ``--rabbit-env`` or ``WMNB_RABBIT_ENV`` at it. Without
it the rabbit columns are skipped with a message.

    python benchmarks/bench_fit.py --neff 3 32 --out /tmp/bench_fit.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

_WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": p.returncode, "wall_s": wall, "peak_mb": ru.ru_maxrss / 1024.0,
                  "cpu_s": ru.ru_utime + ru.ru_stime, "stdout": p.stdout[-20000:],
                  "stderr": p.stderr[-4000:]}))
"""

_NEWTON = r"""
import sys, time, numpy as np, tensorflow as tf
from wmnb.fit import Model
from wmnb.fit import linalg
from wmnb.fit.fitter import likelihood_for
m = Model.read(sys.argv[1]); lik = likelihood_for(m); x = tf.constant(m.default_values())
lik.value_grad_hess(x)  # trace once
best = {}
for _ in range(2):
    t0 = time.perf_counter(); f, g, H = lik.value_grad_hess(x); Hn = H.numpy(); t1 = time.perf_counter()
    L = linalg.cholesky(Hn); t2 = time.perf_counter(); s = linalg.cho_solve(L, g.numpy()); t3 = time.perf_counter()
    for k, v in (("hessian_s", t1 - t0), ("cholesky_s", t2 - t1), ("solve_s", t3 - t2), ("newton_step_s", t3 - t0)):
        best[k] = min(best.get(k, 1e9), v)
import json; print(json.dumps(best))
"""


def measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` in a fresh process; wall time and peak RSS of that process tree."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"measurement wrapper failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in output:\n{text[-2000:]}")


def find_wmodel(arg: str | None) -> Path:
    for cand in (arg, os.environ.get("WMNB_WMODEL"), REPO.parent / "shared" / "bench" / "wmodel.py",
                 Path("/work/shared/bench/wmodel.py")):
        if cand and Path(cand).is_file():
            return Path(cand)
    raise FileNotFoundError("wmodel.py not found: pass --wmodel or set WMNB_WMODEL")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--neff", type=int, nargs="+", default=[3, 32])
    ap.add_argument("--workdir", default="/tmp/wmnb_bench_fit")
    ap.add_argument("--rabbit-env", default=os.environ.get("WMNB_RABBIT_ENV", "/tmp/rabbitenv"))
    ap.add_argument("--wmodel")
    ap.add_argument("--no-rabbit", action="store_true")
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args(argv)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    wmodel = find_wmodel(a.wmodel)
    renv = Path(a.rabbit_env)
    rpy, rfit = renv / "bin" / "python", renv / "bin" / "rabbit_fit"
    use_rabbit = not a.no_rabbit and rpy.is_file() and rfit.is_file()
    if not use_rabbit:
        print(f"rabbit-fit: skipped (no environment at {renv}; create it as in this script's docstring "
              "or set WMNB_RABBIT_ENV)", file=sys.stderr)
    # both tools start from a warm file cache: a cold first import of TensorFlow's shared
    # libraries costs seconds that belong to neither fitter (measured: 10.0 s cold, 7.0 s warm)
    subprocess.run([sys.executable, "-c", "import tensorflow, wmnb.fit.fitter"], capture_output=True)
    if use_rabbit:
        subprocess.run([str(rpy), "-c", "import tensorflow, rabbit"], capture_output=True)
    rows = []
    for neff in a.neff:
        npz, h5 = work / f"wmodel_neff{neff}.npz", work / f"wmodel_neff{neff}.hdf5"
        if not npz.is_file() or (use_rabbit and not h5.is_file()):
            # wmodel.py writes the rabbit file relative to its working directory: pass bare names
            gen = [str(rpy if use_rabbit else sys.executable), str(wmodel), "--neff", str(neff), "--npz", npz.name]
            if use_rabbit:
                gen += ["--rabbit", h5.name]
            g = subprocess.run(gen, cwd=work, capture_output=True, text=True)
            if g.returncode != 0:
                raise RuntimeError(f"model generation failed ({' '.join(gen)}):\n{g.stderr[-3000:]}")
        row: dict = {"neff": neff}
        # rabbit-fit adds a free signal strength for the signal process W (its default POIMode
        # "mu"); --signal-strength gives wmnb the same model
        r = measured([sys.executable, "-m", "wmnb.cli", "fit", str(npz), "--json", "--signal-strength"])
        if r["rc"] != 0:
            raise RuntimeError(f"wmnb fit failed:\n{r['stderr']}")
        j = last_json(r["stdout"])
        row["wmnb"] = {"wall_s": r["wall_s"], "peak_mb": r["peak_mb"], "cpu_s": r["cpu_s"], "poi": j["poi"],
                       "poi_err": j["poi_err"], "edm": j["edm"], "nparams": j["nparams"],
                       "inner": j["timing"], "niter": j["niter"],
                       "nominal": {k: j["impacts_nominal"][k] for k in ("stat", "binByBinStat")},
                       "global": {k: j["impacts_global"][k] for k in ("stat", "binByBinStat")}}
        nw = subprocess.run([sys.executable, "-c", _NEWTON, str(npz)], capture_output=True, text=True)
        row["newton"] = last_json(nw.stdout) if nw.returncode == 0 else {"error": nw.stderr[-500:]}
        if use_rabbit:
            outdir = work / f"rabbit_neff{neff}"
            r = measured([str(rfit), str(h5), "-o", str(outdir), "-t", "0", "--unblind", "--doImpacts",
                          "--globalImpacts"])
            if r["rc"] != 0:
                row["rabbit"] = {"error": r["stderr"][-1000:]}
            else:
                rr = subprocess.run([str(rpy), str(HERE / "rabbit_result.py"), str(outdir / "fitresults.hdf5"),
                                     "massShift100MeV"], capture_output=True, text=True)
                jr = last_json(rr.stdout)
                row["rabbit"] = {"wall_s": r["wall_s"], "peak_mb": r["peak_mb"], "cpu_s": r["cpu_s"],
                                 "poi": jr["poi"], "poi_err": jr["poi_err"], "edm": jr["edm"],
                                 "nominal": {k: jr.get("impacts_nominal", {}).get(k) for k in ("stat", "binByBinStat")},
                                 "global": {k: jr.get("impacts_global", {}).get(k) for k in ("stat", "binByBinStat")}}
                w, rb = row["wmnb"], row["rabbit"]
                row["compare"] = {"time_ratio": w["wall_s"] / rb["wall_s"], "mem_ratio": w["peak_mb"] / rb["peak_mb"],
                                  "dpoi_over_err": abs(w["poi"] - rb["poi"]) / rb["poi_err"],
                                  "derr_rel": abs(w["poi_err"] / rb["poi_err"] - 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| params | tool | wall s | peak MB | POI | POI error | fit+cov+impacts inside s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        w = row["wmnb"]
        print(f"| {w['nparams']} | wmnb | {w['wall_s']:.1f} | {w['peak_mb']:.0f} | {w['poi']:.6f} | "
              f"{w['poi_err']:.6f} | {w['inner']['total_s']:.2f} |")
        if "rabbit" in row and "error" not in row["rabbit"]:
            rb = row["rabbit"]
            print(f"| {w['nparams']} | rabbit-fit | {rb['wall_s']:.1f} | {rb['peak_mb']:.0f} | {rb['poi']:.6f} | "
                  f"{rb['poi_err']:.6f} | |")
            c = row["compare"]
            print(f"|  | ratio | {c['time_ratio']:.3f} | {c['mem_ratio']:.3f} | dPOI/err {c['dpoi_over_err']:.1e} "
                  f"| derr {c['derr_rel']:.1e} | |")
        nt = row["newton"]
        if "newton_step_s" in nt:
            print(f"|  | one Newton step (Hessian {nt['hessian_s']:.2f} + Cholesky {nt['cholesky_s']:.2f} s) "
                  f"| {nt['newton_step_s']:.2f} | | | | |")
    if a.out:
        Path(a.out).write_text(json.dumps({"rows": rows, "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                           "host_cpus": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
