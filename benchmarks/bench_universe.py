"""Speed of the universe generator: generated events per CPU-second (per core), writing included.

Two measurements, each against a baseline taken in the same run (machines differ; the ratios
compare across machines):

* **universe**: a whole universe of the default profile's mixture (every simulated sample,
  inclusive generator-level sample, data and closure stream) at ``--scale`` of the default
  statistics (no per-sample floor), generated with one worker; the rate counts *generated*
  (produced) events, those rejected by the generator filters included.  Baseline: the same files'
  ``Events`` arrays written again with uproot alone (same compression, same chunking, no
  generation), so ``ratio_cpu_to_uproot_write`` says how far the generator is from the cost of
  writing its output.
* **jobs**: one W+ simulation job (the heaviest kind: GenPart, 50 LHE-like weights) and one data
  + closure SingleMuon job, split into generation (physics, detector, theory weights, branch
  assembly) and writing, against uproot writing a flat 40-column float32 tree.

It reports; it does not assert.

    python benchmarks/bench_universe.py [--scale 0.1] [--events 200000] [--out bench.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from wmnb.universe import card_hash, load_card
from wmnb.universe.generate import SCALES, generate_universe, plan_jobs, run_data_job, run_mc_job, universe_settings
from wmnb.universe.writer import COMPRESSION


def _flat_write_rate(n: int, tmp: Path) -> float:
    rng = np.random.default_rng(0)
    arrays = {f"x{i}": rng.standard_normal(n).astype(np.float32) for i in range(40)}
    t = time.process_time()
    with uproot.recreate(tmp / "flat.root", compression=uproot.ZSTD(1)) as f:
        f.mktree("Events", {k: np.float32 for k in arrays}).extend(arrays)
    return n / (time.process_time() - t)


def _rewrite_cpu_s(files: list[Path], tmp: Path, chunk: int) -> float:
    """CPU seconds to write the ``Events`` trees of ``files`` again with uproot alone."""
    cpu = 0.0
    for i, path in enumerate(files):
        with uproot.open(path) as f:
            tree = f["Events"]
            arrays = tree.arrays(library="ak", how=dict)
            n = tree.num_entries
        # collections (the keys with an n<name> counter) as records, as the generator hands them over
        colls = {k[1:] for k in arrays if k.startswith("n") and any(x == k[1:] or x.startswith(k[1:] + "_") for x in arrays)}
        branches: dict = {}
        for c in colls:
            fields = {k.split("_", 1)[1]: v for k, v in arrays.items() if k.startswith(c + "_")}
            branches[c] = ak.zip(fields) if fields else arrays[c]
        for k, v in arrays.items():
            if not (k.startswith("n") and k[1:] in colls) and k not in colls and k.split("_", 1)[0] not in colls:
                branches[k] = ak.to_numpy(v)
        t = time.process_time()
        with uproot.recreate(tmp / f"rewrite_{i}.root", compression=COMPRESSION["zstd"]()) as out:
            t_out = out.mktree("Events", {k: (v.dtype if isinstance(v, np.ndarray) else v.type) for k, v in branches.items()})
            for lo in range(0, n, chunk):
                t_out.extend({k: v[lo:lo + chunk] for k, v in branches.items()})
        cpu += time.process_time() - t
        (tmp / f"rewrite_{i}.root").unlink()
    return cpu


def bench_universe(scale: float, tmp: Path) -> dict[str, float]:
    t0 = time.process_time()
    man = generate_universe("default", out=tmp / "u", progress=False, workers=1,
                            settings={"events_scale": scale * SCALES["default"], "mc_floor": 0})
    cpu = time.process_time() - t0
    gen = man["generation"]
    files = [tmp / "u" / f for s in ("mc", "mc_gen", "data", "closure") for e in man[s].values() for f in e["files"]]
    rewrite = _rewrite_cpu_s(files, tmp, universe_settings("default")["chunk_size"])
    rate = gen["n_generated_total"] / cpu
    return {"scale_of_default": scale, "n_generated": gen["n_generated_total"], "n_written": gen["n_events_total"],
            "size_mb": gen["size_mb"], "cpu_s": round(cpu, 2), "cpu_s_generate": gen["cpu_s_generate"],
            "cpu_s_write": gen["cpu_s_write"], "generated_per_cpu_s": round(rate, 1),
            "written_per_cpu_s": round(gen["n_events_total"] / cpu, 1),
            "uproot_rewrite_cpu_s": round(rewrite, 2),
            "uproot_rewrite_written_per_cpu_s": round(gen["n_events_total"] / rewrite, 1),
            # CPU of the generator per CPU of writing the same output with uproot alone
            "ratio_cpu_to_uproot_write": round(cpu / rewrite, 2),
            "bytes_per_written_event": round(gen["size_mb"] * 1e6 / gen["n_events_total"], 1)}


def bench_jobs(events: int, tmp: Path) -> dict[str, dict[str, float]]:
    cards = {k: load_card(k) for k in ("nominal", "data", "closure")}
    hashes = {k: card_hash(v) for k, v in cards.items()}
    jobs, _ = plan_jobs(universe_settings("default"), cards, hashes, tmp / "jobs", 1)
    mc = {**next(j for j in jobs if j["kind"] == "mc" and j["process"] == "wplus_munu"), "n_produced": events}
    data = next(j for j in jobs if j["kind"] == "data" and j["stream"] == "SingleMuon")
    tot = sum(data["counts"].values())
    data = {**data, "counts": {p: int(round(c * events / tot)) for p, c in data["counts"].items()}}
    out: dict[str, dict[str, float]] = {}
    flat = _flat_write_rate(events, tmp)
    for name, job, runner in (("mc_wplus", mc, run_mc_job), ("data_singlemuon", data, run_data_job)):
        t0 = time.process_time()
        r = runner(job)
        cpu = time.process_time() - t0
        written = r["n_events"] if name.startswith("mc") else sum(n for _, _, n in r["outputs"])
        paths = [job["path"]] if name.startswith("mc") else [o["path"] for o in job["outputs"]]
        write_rate = written / r["t_write"]
        out[name] = {"events_produced": events, "events_written": written, "cpu_s": round(cpu, 3),
                     "generated_per_cpu_s": round(events / cpu, 1),
                     "gen_written_per_cpu_s": round(written / r["t_gen"], 1), "write_written_per_cpu_s": round(write_rate, 1),
                     "write_rate_over_flat_uproot": round(write_rate / flat, 3),
                     "bytes_per_event": round(sum(Path(p).stat().st_size for p in paths) / written, 1)}
    out["baseline_uproot_flat40_events_per_cpu_s"] = {"rate": round(flat, 1)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.1, help="fraction of the default profile's statistics")
    ap.add_argument("--events", type=int, default=200_000, help="produced events of each single job")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result = {"universe": bench_universe(args.scale, tmp), "jobs": bench_jobs(args.events, tmp)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
