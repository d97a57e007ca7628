"""What the ``full`` profile needs on Dask, measured by scaling from 1 to 2 local workers.

Each heavy step runs through :func:`wmnb.engine.executors.run_tasks` on a fresh ``LocalCluster``
of 1 and then 2 single-threaded workers (fresh, so that each worker's peak RSS belongs to that
step alone): universe generation (one task per file), selection (one per NanoAOD chunk),
chapter 08's template build (one per skim chunk, real corrections) and goodness-of-fit toys on
chapter 08's model (one per toy).  Per step it records the wall time, the compute time of every
task (the scheduler's task stream), each worker's RSS after importing the step's code and its
peak RSS after the step, and the bytes written per event; the template build and the toys are
also run locally and checked bit for bit.  A third template run (1 worker, smaller chunks)
separates a template task's fixed cost from its cost per skim row, in time and memory.

Then it extrapolates to ``full`` (117 M selected W) with these rules, printed with the result:

* CPU of a step ∝ its events, at the lower of the 1- and 2-worker runs' CPU seconds per event
  (the workers' process time over the step: on a machine shared with other work, wall and task
  times grow with the contention, CPU time hardly): generation ∝ produced events,
  selection ∝ NanoAOD events read; the events of ``full`` come from planning its universe
  (:func:`wmnb.universe.generate.plan_jobs`, nothing generated) and the smoke universe's
  written/produced fraction per sample;
* templates: task time = a + b × rows (a: setting up and filling every variation once per
  chunk; b: per row), both × (nuisances of the full model / of the smoke model); at ``full``
  chunks of 500 000 rows and rows per sample ∝ that sample's produced events;
* disk ∝ written events, per sample (bytes per written event of each sample at smoke);
* memory of a worker = its RSS after the imports + (peak − that) × (events of one task at
  ``full`` / at smoke): a task holds one chunk (generation: ``chunk_size``, selection: ``step``),
  whatever the size of the sample; templates: the fixed part × the nuisance ratio + the per-row
  part × 500 000;
* toys: one fit each, whose cost depends on the model, not on the events: at ``full`` the
  default/full model, whose fit time is the one measured in ``benchmarks/README.md`` (10 random
  starts of the 5058-nuisance default model, 217 s on 2 cores).

It reports; it does not assert.  Needs the profile's chapters 00–06 run (the template step
reads its skims and corrections), and writes only to a temporary folder and ``--out``;
``--from OUT.json`` redoes the extrapolation of an earlier run.

    python benchmarks/bench_dask_scaling.py [--profile smoke] [--toys 4] [--out bench_dask.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CHUNK_ROWS = 20_000            # skim rows per template task on smoke (its profile's skim_chunk_rows)
SMALL_CHUNK_ROWS = 5_000       # the third template run: memory per row
FULL_CHUNK_ROWS = 500_000      # params/full.yaml: 08_mw_fit.skim_chunk_rows
FULL_FIT_S = 217.1 / 10        # benchmarks/README.md: one random-start fit of the 5058-nuisance default model


# ---------------------------------------------------------------- worker probes (run on every worker)
def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_rss_bytes() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _warm(modules: list[str]) -> int:
    import importlib

    for m in modules:
        importlib.import_module(m)
    return _rss_bytes()


STEP_MODULES = {"generation": ["wmnb.universe.generate"], "selection": ["wmnb.engine.skims"],
                "templates": ["wmnb.mw.chapter", "wmnb.corrections"],
                "toys": ["wmnb.templatefit.fitting", "wmnb.fit"]}


def _measured(step: str, n_workers: int, run: Callable[[Any], Any]) -> tuple[dict[str, Any], Any]:
    """Run ``run(client)`` on a fresh LocalCluster of ``n_workers``: timings and memory."""
    from distributed import get_task_stream

    from wmnb.engine.executors import dask_client

    with dask_client(None, n_workers=n_workers) as client:
        base = client.run(_warm, STEP_MODULES[step])
        cpu0 = client.run(time.process_time)
        with get_task_stream(client) as stream:
            t0 = time.perf_counter()
            out = run(client)
            wall = time.perf_counter() - t0
        cpu1 = client.run(time.process_time)
        peak = client.run(_peak_rss_bytes)
        times = [sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute")
                 for t in stream.data]
    times = [t for t in times if t > 0]
    rec = {"workers": n_workers, "wall_s": round(wall, 2), "n_tasks": len(times),
           # CPU seconds the workers spent (their process time): what contention does not inflate
           "worker_cpu_s": round(sum(cpu1[w] - cpu0[w] for w in cpu1), 2),
           "task_s_total": round(float(np.sum(times)), 2), "task_s_mean": round(float(np.mean(times)), 4),
           "task_s_max": round(float(np.max(times)), 3),
           "worker_rss_after_imports_gb": round(max(base.values()) / 1e9, 3),
           "worker_peak_rss_gb": round(max(peak.values()) / 1e9, 3)}
    return rec, out


# ---------------------------------------------------------------- the four steps
def _generation(profile: str, tmp: Path, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from wmnb.universe.generate import generate_universe

    out = tmp / f"universe_{n}"
    rec, man = _measured("generation", n, lambda c: generate_universe(profile, out=out, progress=False,
                                                                        executor="dask", client=c))
    size = sum(f.stat().st_size for f in (out / "samples").rglob("*.root"))
    gen = man["generation"]
    rec.update({"n_generated": gen["n_generated_total"], "n_written": gen["n_events_total"], "bytes": size,
                "bytes_per_written_event": round(size / gen["n_events_total"], 1),
                "cpu_s_per_generated_event": rec["worker_cpu_s"] / gen["n_generated_total"]})
    return rec, man


def _selection(profile: str, man: dict[str, Any], root: Path, tmp: Path, n: int) -> dict[str, Any]:
    from wmnb.engine.skims import run_selections, sample_plan, write_skim
    from wmnb.paths import universe_dir

    store = universe_dir(profile)
    plan = sample_plan(profile, man)
    out = tmp / f"skims_{n}"

    def run(client: Any) -> tuple[int, int]:
        n_in = size = 0
        for item in plan:
            files = [str(root / os.path.relpath(f, store)) for f in item["files"]]
            res = run_selections(files, item["selections"], norm=item["norm"], executor="dask", client=client,
                                 progress=False)
            for sel, r in res.items():
                size += write_skim(out / sel / f"{item['sample']}.root", r["columns"]).stat().st_size
            n_in += next(iter(res.values()))["cutflow"]["all events"][0]
        return n_in, size

    rec, (n_in, size) = _measured("selection", n, run)
    rec.update({"n_input_events": int(n_in), "skim_bytes": size,
                "skim_bytes_per_input_event": round(size / n_in, 2),
                "cpu_s_per_input_event": rec["worker_cpu_s"] / n_in})
    return rec


def _templates(profile: str, n: int, chunk_rows: int, reference: Any) -> tuple[dict[str, Any], Any]:
    from wmnb.execution import using
    from wmnb.mw import chapter

    def run(client: Any) -> Any:
        with using("dask", client.scheduler_info()["address"]):
            return chapter.load_templates(profile, "data", skims=chapter.load_skims(profile, chunk_rows))

    rec, ts = _measured("templates", n, run)
    rows = _skim_rows(profile)
    shapes = sum(len(p.shapes) for p in ts.processes.values())
    rec.update({"chunk_rows": chunk_rows, "skim_rows": rows, "n_shapes": shapes,
                "cpu_s_per_row": rec["worker_cpu_s"] / sum(rows.values()),
                "identical_to_local": None if reference is None else _same_templates(reference, ts)})
    return rec, ts


def _skim_rows(profile: str) -> dict[str, int]:
    from wmnb.conventions import W_FIT_PROCESSES
    from wmnb.engine.skims import skim_index

    index = skim_index(profile)["selections"]["w"]
    return {s: int(index[s]["n_rows"]) for s in (*W_FIT_PROCESSES, "data")}


def _same_templates(a: Any, b: Any) -> bool:
    if not np.array_equal(a.data, b.data) or list(a.processes) != list(b.processes):
        return False
    for p, x in a.processes.items():
        y = b.processes[p]
        if not (np.array_equal(x.nominal, y.nominal) and np.array_equal(x.sumw2, y.sumw2)
                and list(x.shapes) == list(y.shapes)):
            return False
        for k, s in x.shapes.items():
            t = y.shapes[k]
            if not (np.array_equal(s.up, t.up) and np.array_equal(s.down, t.down) and np.array_equal(s.bins, t.bins)):
                return False
    return all(np.array_equal(v, b.mass_up[p]) and np.array_equal(a.mass_down[p], b.mass_down[p])
               for p, v in a.mass_up.items())


def _toys(spec: Any, nominal: Any, n: int, n_toys: int, reference: dict[str, Any]) -> dict[str, Any]:
    from wmnb.templatefit.fitting import gof_toys

    rec, out = _measured("toys", n, lambda c: gof_toys(spec, nominal, n_toys, seed=1, executor="dask", client=c))
    rec.update({"n_toys": n_toys, "cpu_s_per_toy": rec["worker_cpu_s"] / n_toys,
                "identical_to_local": out == reference})
    return rec


# ---------------------------------------------------------------- extrapolation to full
def _full_plan() -> dict[str, Any]:
    """Produced events per sample of the ``full`` universe (planned, not generated)."""
    from wmnb.universe.card import card_hash
    from wmnb.universe.generate import _universe_cards, plan_jobs, universe_settings

    settings = universe_settings("full")
    cards, _ = _universe_cards("data")
    hashes = {k: card_hash(v) for k, v in cards.items()}
    jobs, _ = plan_jobs(settings, cards, hashes, Path("/nonexistent"), 1)
    produced: dict[str, int] = {}
    for j in jobs:
        if j["kind"] == "data":
            for o in j["outputs"]:
                key = f"{o['set']}/{j['stream']}"
                produced[key] = produced.get(key, 0) + sum(j["counts"].values())
        else:
            key = f"{'mc' if j['kind'] == 'mc' else 'mc_gen'}/{j['process']}"
            produced[key] = produced.get(key, 0) + j["n_produced"]
    return {"settings": {k: settings[k] for k in ("events_scale", "chunk_size", "max_produced_per_file")},
            "n_files": len(jobs) + sum(len(j["outputs"]) - 1 for j in jobs if j["kind"] == "data"),
            "produced": produced}


def _entries(man: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for s in ("mc", "mc_gen"):
        for p, e in man[s].items():
            out[f"{s}/{p}"] = {"files": e["files"], "n_events": e["n_events"], "n_produced": e["n_produced"]}
    for s in ("data", "closure"):
        for st, e in man[s].items():
            out[f"{s}/{st}"] = {"files": e["files"], "n_events": e["n_events"],
                                "n_produced": sum(e["n_produced"].values())}
    return out


def _samples(man: dict[str, Any], root: Path) -> dict[str, dict[str, Any]]:
    """Per sample of the measured universe: produced and written events, files and bytes."""
    out = {}
    for key, e in _entries(man).items():
        out[key] = {"n_produced": e["n_produced"], "n_events": e["n_events"], "n_files": len(e["files"]),
                    "bytes": sum((root / f).stat().st_size for f in e["files"])}
    return out


def _key(sample: str) -> str:
    """The universe entry a W skim sample comes from."""
    return "data/SingleMuon" if sample == "data" else f"mc/{sample}"


def _extrapolate(res: dict[str, Any]) -> dict[str, Any]:
    """The needs of ``full`` from the measurements in ``res`` (rules in the module docstring)."""
    from wmnb.engine.skims import DEFAULT_STEP

    samples = res["samples"]
    full = res["full_plan"]
    written = {k: v * (samples[k]["n_events"] / samples[k]["n_produced"] if samples[k]["n_produced"] else 0.0)
               for k, v in full["produced"].items()}
    n_gen_full = sum(full["produced"].values())
    n_written_full = sum(written.values())

    def cpu(step: str, per: str) -> float:
        # the cheaper of the two runs (the 2-worker one adds the second worker's imports)
        return min(r[per] for r in res[step])

    def memory(rec: dict[str, Any], ratio: float) -> float:
        base = rec["worker_rss_after_imports_gb"]
        return round(base + max(rec["worker_peak_rss_gb"] - base, 0.0) * ratio, 2)

    disk_nano = sum(s["bytes"] / s["n_events"] * written[k] for k, s in samples.items() if s["n_events"])
    gen_chunk = min(res["settings"]["chunk_size"], res["settings"]["max_produced_per_file"])
    sel_chunk = min(DEFAULT_STEP, max(s["n_events"] / max(s["n_files"], 1) for s in samples.values()))
    # templates: task time = a (per task: every variation set up and filled once per chunk) + b x rows,
    # both from the two 1-worker runs (chunks of CHUNK_ROWS and SMALL_CHUNK_ROWS rows)
    big, small = res["templates"][0], res["templates_small"]
    rows_smoke = sum(big["skim_rows"].values())
    a = max((small["worker_cpu_s"] - big["worker_cpu_s"]) / max(small["n_tasks"] - big["n_tasks"], 1), 0.0)
    b = max((big["worker_cpu_s"] - big["n_tasks"] * a) / rows_smoke, 0.0)
    rows_full = {s: rows * full["produced"][_key(s)] / samples[_key(s)]["n_produced"]
                 for s, rows in big["skim_rows"].items()}
    tasks_full = sum(math.ceil(r / FULL_CHUNK_ROWS) for r in rows_full.values())
    nuis_ratio = res["full_model"]["n_nuisances"] / res["smoke_model"]["n_nuisances"]
    # memory: peak = fixed (template, corrections) + per-row part x rows of the chunk
    per_row_gb = max(big["worker_peak_rss_gb"] - small["worker_peak_rss_gb"], 0.0) / (CHUNK_ROWS - SMALL_CHUNK_ROWS)
    fixed_gb = big["worker_peak_rss_gb"] - big["worker_rss_after_imports_gb"] - per_row_gb * CHUNK_ROWS
    n_fits = res["full_model"]["n_fits"]
    return {
        "n_files": full["n_files"], "n_generated": n_gen_full, "n_written": round(n_written_full),
        "generation_core_h": round(cpu("generation", "cpu_s_per_generated_event") * n_gen_full / 3600, 1),
        "generation_worker_gb": memory(res["generation"][-1], full["settings"]["chunk_size"] / gen_chunk),
        "nanoaod_disk_tb": round(disk_nano / 1e12, 2),
        "selection_core_h": round(cpu("selection", "cpu_s_per_input_event") * n_written_full / 3600, 1),
        "selection_worker_gb": memory(res["selection"][-1], DEFAULT_STEP / sel_chunk),
        "skim_disk_tb": round(res["selection"][-1]["skim_bytes_per_input_event"] * n_written_full / 1e12, 2),
        "template_rows": round(sum(rows_full.values())), "template_tasks": tasks_full,
        "template_s_per_task": round(a, 3), "template_s_per_million_rows": round(b * 1e6, 2),
        "templates_core_h": round((tasks_full * a + sum(rows_full.values()) * b) * nuis_ratio / 3600, 1),
        "templates_worker_gb": round(big["worker_rss_after_imports_gb"] + fixed_gb * nuis_ratio
                                     + per_row_gb * FULL_CHUNK_ROWS, 2),
        "toy_fit_s": round(FULL_FIT_S, 1), "n_toy_fits": n_fits, "toys_core_h": round(FULL_FIT_S * n_fits / 3600, 1),
        "toy_worker_gb_smoke_model": res["toys"][-1]["worker_peak_rss_gb"],
        "rules": {
            "cpu": "the lower of the 1- and 2-worker runs' worker CPU seconds per event x the events of full",
            "memory": "RSS after imports + (peak - that) x (events of one task at full / at smoke)",
            "templates": (f"task time a + b x rows (a = {a:.2f} s, b = {b * 1e6:.1f} s per million rows, from "
                          f"chunks of {CHUNK_ROWS} and {SMALL_CHUNK_ROWS} rows), x {nuis_ratio:.2f} for the "
                          f"nuisances (full/smoke), {FULL_CHUNK_ROWS}-row chunks, rows per sample x "
                          f"produced(full)/produced(smoke); memory: the fixed part x {nuis_ratio:.2f} + "
                          f"{per_row_gb * 1e6:.3f} GB per million rows of the chunk"),
            "toys": f"{FULL_FIT_S:.1f} s per fit of the full-size model (benchmarks/README.md), one task each",
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--toys", type=int, default=4, help="toys per toy run (one task each)")
    ap.add_argument("--full-nuisances", type=int, default=4859,
                    help="nuisances of the full model (the paper's 4859; the default profile has fewer today)")
    ap.add_argument("--full-fits", type=int, default=300 + 25 + 10,
                    help="toy fits of a full run: coverage toys + goodness-of-fit toys + random starts")
    ap.add_argument("--out", default="benchmarks/out/bench_dask_scaling.json")
    ap.add_argument("--from", dest="source", default=None,
                    help="recompute the extrapolation from a JSON this script wrote (no measurement)")
    args = ap.parse_args()
    if args.source:
        res = json.loads(Path(args.source).read_text())
        res["full_model"] = {"n_nuisances": args.full_nuisances, "n_fits": args.full_fits}
        res["full"] = _extrapolate(res)
        _report(res, Path(args.out))
        return
    res = _measure(args)
    res["full"] = _extrapolate(res)
    _report(res, Path(args.out))


def _report(res: dict[str, Any], out: Path) -> None:
    print(json.dumps({"speedup_1_to_2": res["speedup_1_to_2"], "full": res["full"]}, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of the module docstring, on ``args.profile``."""
    from wmnb.mw import chapter
    from wmnb.templatefit import make_spec
    from wmnb.templatefit.fitting import gof_toys, run_fit
    from wmnb.universe.generate import universe_settings

    res: dict[str, Any] = {"profile": args.profile, "cpu_count": os.cpu_count(),
                           "load_avg_start": os.getloadavg(), "generation": [], "selection": [],
                           "templates": [], "toys": []}
    with tempfile.TemporaryDirectory(prefix="bench_dask_") as tmpdir:
        tmp = Path(tmpdir)
        for n in (1, 2):
            rec, man = _generation(args.profile, tmp, n)
            res["generation"].append(rec)
            print("generation", rec, flush=True)
        root = tmp / "universe_2"
        for n in (1, 2):
            rec = _selection(args.profile, man, root, tmp, n)
            res["selection"].append(rec)
            print("selection", rec, flush=True)
        t0 = time.perf_counter()
        local = chapter.load_templates(args.profile, "data", skims=chapter.load_skims(args.profile, CHUNK_ROWS))
        res["templates_local_s"] = round(time.perf_counter() - t0, 2)
        for n in (1, 2):
            rec, _ = _templates(args.profile, n, CHUNK_ROWS, local)
            res["templates"].append(rec)
            print("templates", rec, flush=True)
        res["templates_small"], _ = _templates(args.profile, 1, SMALL_CHUNK_ROWS, None)
        print("templates (small chunks)", res["templates_small"], flush=True)
        spec = make_spec(local)
        nominal = run_fit(spec)
        t0 = time.perf_counter()
        reference = gof_toys(spec, nominal, args.toys, seed=1, executor="local")
        res["toys_local_s_per_toy"] = round((time.perf_counter() - t0) / args.toys, 2)
        for n in (1, 2):
            rec = _toys(spec, nominal, n, args.toys, reference)
            res["toys"].append(rec)
            print("toys", rec, flush=True)
        res["smoke_model"] = {"n_nuisances": len(spec.nuisances), "n_bins": int(spec.mask.sum())}
        res["full_model"] = {"n_nuisances": args.full_nuisances, "n_fits": args.full_fits}
        res["speedup_1_to_2"] = {s: round(res[s][0]["wall_s"] / res[s][1]["wall_s"], 2)
                                 for s in ("generation", "selection", "templates", "toys")}
        res["samples"] = _samples(man, root)
    res["full_plan"] = _full_plan()
    res["settings"] = {k: universe_settings(args.profile)[k] for k in ("chunk_size", "max_produced_per_file")}
    res["load_avg_end"] = os.getloadavg()
    return res


if __name__ == "__main__":
    main()
