"""Speed of the universe generator: events/s/core for generation and for writing.

Runs one simulation job (W+ -> mu nu, the heaviest kind: GenPart, 50 LHE-like weights) and one
data + closure job (the SingleMuon mixture) in this process (one core), and reports events per
CPU-second for generation (physics + detector + branch assembly) and for writing (uproot,
compression).  Machines differ, so it also measures two baselines in the same run: numpy drawing
normal random numbers, and uproot writing a flat float32 tree of the same size; ratios to them
are comparable across machines.  It reports; it does not assert.

    python benchmarks/bench_universe.py [--events 200000] [--out bench.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import uproot

from wmnb.universe import card_hash, load_card
from wmnb.universe.generate import plan_jobs, run_data_job, run_mc_job, universe_settings


def _baselines(n: int, tmp: Path) -> dict[str, float]:
    rng = np.random.default_rng(0)
    t = time.process_time()
    for _ in range(10):
        rng.standard_normal(n)
    rng_rate = 10 * n / (time.process_time() - t)
    arrays = {f"x{i}": rng.standard_normal(n).astype(np.float32) for i in range(40)}
    t = time.process_time()
    with uproot.recreate(tmp / "flat.root", compression=uproot.ZSTD(1)) as f:
        f.mktree("Events", {k: np.float32 for k in arrays}).extend(arrays)
    write_rate = n / (time.process_time() - t)
    return {"numpy_normals_per_cpu_s": rng_rate, "uproot_flat40_events_per_cpu_s": write_rate}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000, help="produced events per job")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    args = ap.parse_args()
    cards = {k: load_card(k) for k in ("nominal", "data", "closure")}
    hashes = {k: card_hash(v) for k, v in cards.items()}
    settings = universe_settings("default")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        jobs, _ = plan_jobs(settings, cards, hashes, tmp / "u", 1)
        mc = next(j for j in jobs if j["kind"] == "mc" and j["process"] == "wplus_munu")
        mc = {**mc, "n_produced": args.events}
        data = next(j for j in jobs if j["kind"] == "data" and j["stream"] == "SingleMuon")
        tot = sum(data["counts"].values())
        data = {**data, "counts": {p: int(round(c * args.events / tot)) for p, c in data["counts"].items()}}
        out = {"events_produced_per_job": args.events}
        for name, job, runner in (("mc_wplus", mc, run_mc_job), ("data_singlemuon", data, run_data_job)):
            t0 = time.process_time()
            r = runner(job)
            cpu = time.process_time() - t0
            written = r["n_events"] if name.startswith("mc") else sum(n for _, _, n in r["outputs"])
            out[name] = {"events_written": written, "cpu_s": cpu,
                         "gen_events_per_cpu_s": written / r["t_gen"], "write_events_per_cpu_s": written / r["t_write"],
                         "produced_events_per_cpu_s": args.events / cpu,
                         "bytes_per_event": sum(Path(p).stat().st_size for p in (
                             [job["path"]] if name.startswith("mc") else [o["path"] for o in job["outputs"]])) / written}
        base = _baselines(args.events, tmp)
    out["baselines"] = base
    for name in ("mc_wplus", "data_singlemuon"):
        out[name]["write_rate_over_flat_uproot"] = out[name]["write_events_per_cpu_s"] / base["uproot_flat40_events_per_cpu_s"]
        out[name]["gen_rate_per_1e6_normals"] = out[name]["gen_events_per_cpu_s"] / base["numpy_normals_per_cpu_s"] * 1e6
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
