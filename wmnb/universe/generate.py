"""Generate a whole universe: simulation (nominal card), data (data card) and closure samples.

Layout and manifest as in DEVELOPING.md ("The samples").  Work is split into jobs, one per
output file.  The closure universe (card ``closure``) is the simulation's physics and detector
with its own m_W, generated from its own physics and yields like a second data set; only when a
closure card has the very physics of the data card are the two made from the same
generator-level events (one job per file pair, each with its own detector stream).  Every job draws from
its own ``np.random.SeedSequence`` keyed by (seed, sample set, process or stream, file, chunk),
so results do not depend on the number of workers or on job order: same card + seed -> the same
event content bit for bit.  Jobs run in a process pool; files are written to temporary names and
renamed when complete, the ``samples/`` folder is swapped in whole and ``manifest.json`` is
written last, so an interrupted generation never leaves anything that looks complete.

Safety rails (:mod:`wmnb.universe.staging`): the output folder may not lie inside the results
store unless the runner executes chapter 00 or the caller says ``into_results=True``; SIGTERM
becomes :class:`~wmnb.universe.staging.GenerationTerminated`, so the temporary folder is removed;
and the leftovers of earlier runs that died without cleaning up are removed at the start.
"""
from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing as mp
import operator
import os
import shutil
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, conventions
from ..engine import executors as engine_executors
from ..engine.executors import task_client
from ..execution import resolve
from ..artefacts import atomic_dir, read_json, remove_stale_dirs, write_json
from ..paths import universe_dir
from ..profiles import load_profile
from .card import CARDS_DIR, CardError, card_hash, card_path, check_closure_card, check_shared_fields, load_card
from .detector import simulate
from .events import assemble, concatenate, generator_branches, n_events
from .physics import BOSONS, theory_weights
from .processes import GENERATORS
from .staging import (
    GenerateError,
    check_output_dir,
    generation_guard,
    worker_signals,
)
from .writer import COMPRESSION, TreeWriter

LUMI_PB = 16800.0
MC_PROCESSES = conventions.MC_PROCESSES
STREAMS = {
    "SingleMuon": ("wplus_munu", "wminus_munu", "z_mumu", "w_taunu", "z_tautau", "ttbar", "diboson", "qcd"),
    "MuOnia": ("jpsi", "upsilon", "dimuon_bkg"),
}
STREAM_TRIGGERS = {"SingleMuon": ("HLT_IsoMu24", "HLT_IsoTkMu24"),
                   "MuOnia": ("HLT_Dimuon20_Jpsi", "HLT_Dimuon13_Upsilon")}
# events_scale: fraction of the paper's luminosity-equivalent statistics (1 = 16.8/fb)
# (at 1 the universe has the paper's 16.8/fb and selects ~151 M W-like events, ~25 % more than
# CMS's 117 M because its acceptance is a bit larger; "full" matches the paper's 117 M)
SCALES = {"smoke": 1.2e-4, "default": 0.01325, "full": 0.775}
DEFAULTS = {
    # smoke keeps the signal simulation at 2x: it tests code paths, not MC-statistics impacts
    "smoke": {"mc_factor": 2.0, "signal_mc_factor": 2.0, "gen_factor": 1.0, "mc_floor": 10000,
              "max_produced_per_file": 200_000, "chunk_size": 50_000},
    "default": {"mc_factor": 2.0, "signal_mc_factor": 5.0, "gen_factor": 1.0, "mc_floor": 50000,
                "max_produced_per_file": 1_000_000, "chunk_size": 100_000},
    "full": {"mc_factor": 2.0, "signal_mc_factor": 5.0, "gen_factor": 1.0, "mc_floor": 1_000_000,
             "max_produced_per_file": 2_000_000, "chunk_size": 200_000},
}
# simulation size relative to the expected data yield: ``signal_mc_factor`` (5x) for the W and Z
# signal processes (at 5x the MC-statistics impact relative to the data statistics is about the
# paper's, whose W simulation was ~35x the data), ``mc_factor`` (2x) for the other electroweak
# processes, half of that for the multijet and quarkonium samples (their analyses are data-driven
# or use data/MC ratios)
MC_FACTOR_SCALE = {"qcd": 0.5, "jpsi": 0.5, "upsilon": 0.5}
SIGNAL_MC = ("wplus_munu", "wminus_munu", "z_mumu")
SCHEMA_VERSION = 2
#: the validated data card a universe was generated from, as canonical JSON in the universe folder
#: (manifest entry ``data_card``); only the universe chapter and the truth gate read it
DATA_CARD_FILE = "data_card.json"
# Every simulated process passes the generator filter of its generator (W and Z: a post-FSR muon
# with pT > 15 GeV, |eta| < 2.4) before the detector, the theory weights and the writing, as the
# data do: the reconstructed selections (muon pT > 26 GeV, |eta| < 2.4; tag-and-probe probes
# > 15 GeV next to a 25 GeV tag) cannot select an event that fails it.  The theory chapter and
# the helicity fit need the full phase space (angular coefficients, the out-of-acceptance
# cross section), so W and Z also have inclusive generator-level samples (``mc_gen``: NanoGEN-like,
# generator branches and theory weights only, ``gen_factor`` x the expected data yield).
INCLUSIVE_GEN = SIGNAL_MC


def _seed(seed: int, *names: Any) -> np.random.SeedSequence:
    """Independent, reproducible seed sequence for a named piece of work."""
    key = tuple(zlib.crc32(str(n).encode()) for n in names)
    return np.random.SeedSequence(int(seed), spawn_key=key)


def _rng(seed: int, *names: Any) -> np.random.Generator:
    return np.random.default_rng(_seed(seed, *names))


def check_count(value: Any, what: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; :class:`GenerateError` naming ``what`` otherwise.

    Accepts ints (numpy ints too) and integral floats (YAML ``1e5``), never booleans."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        n = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        n = None
    if n is None or n < minimum:
        kind = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
        raise GenerateError(f"{what} must be {kind}, got {value!r}")
    return int(n)


def _positive_number(value: Any, what: str) -> float:
    """``value`` as a finite float > 0; :class:`GenerateError` naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise GenerateError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


def universe_settings(profile: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Generation settings of a profile: ``params/<profile>.yaml`` chapters.00_universe, updated
    by ``overrides`` (the notebook's parameters; ``None`` values keep the profile's), with
    ``events_scale`` (``smoke``/``default``/``full`` or a number) resolved to a float.

    Every setting is checked here, so a malformed profile fails before any work with a
    :class:`GenerateError` (a ``ValueError``) naming the key."""
    try:
        prof = load_profile(profile)
    except TypeError as err:  # load_profile reports a non-integer seed as a TypeError
        raise GenerateError(str(err)) from err
    chapters = prof.get("chapters") or {}
    if not isinstance(chapters, Mapping):
        raise GenerateError(f"profile {profile!r}: 'chapters' must be a mapping, got {type(chapters).__name__}")
    sec = chapters.get("00_universe") or {}
    if not isinstance(sec, Mapping):
        raise GenerateError(f"profile {profile!r}: chapters.00_universe must be a mapping, got {type(sec).__name__}")
    where = f"profile {profile!r}: chapters.00_universe"
    # null means "the generator's default", as the profile's parameter declarations allow
    sec = {k: v for k, v in {**sec, **(overrides or {})}.items() if v is not None}
    name = sec.get("events_scale", prof["name"])
    if isinstance(name, str):
        if name not in SCALES:
            raise GenerateError(f"{where}.events_scale = {name!r}; use one of {sorted(SCALES)} or a number")
        scale, base = SCALES[name], name
    else:
        scale, base = _positive_number(name, f"{where}.events_scale (a name or a number)"), "default"
    out: dict[str, Any] = dict(DEFAULTS[base])
    for k, default in out.items():
        if k in sec:
            out[k] = (_positive_number(sec[k], f"{where}.{k}") if isinstance(default, float)
                      else check_count(sec[k], f"{where}.{k}", 0 if k == "mc_floor" else 1))
    compression = sec.get("compression", "zstd")
    if compression not in COMPRESSION:
        raise GenerateError(f"{where}.compression = {compression!r}; use one of {sorted(COMPRESSION)}")
    out.update({"events_scale": scale, "events_scale_name": str(name),
                "seed": check_count(prof["seed"], f"profile {profile!r}: seed", 0),
                "workers": check_count(sec.get("workers", os.cpu_count() or 1), f"{where}.workers", 1),
                "compression": str(compression)})
    return out


def _split(n: int, parts: int) -> list[int]:
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# ------------------------------------------------------------------ jobs

def _event_ids(n: int, offset: int, is_data: bool, file_index: int) -> dict[str, np.ndarray]:
    idx = np.arange(offset, offset + n, dtype=np.int64)
    if is_data:
        run = 273158 + 53 * file_index + idx // 25000
        lumi = 1 + (idx // 250) % 100
    else:
        run = np.ones(n, dtype=np.int64)
        lumi = 1 + idx // 1000
    return {"run": run.astype(np.uint32), "luminosityBlock": lumi.astype(np.uint32),
            "event": (np.uint64(file_index) * np.uint64(10**9) + idx.astype(np.uint64) + np.uint64(1))}


def _weights(truth: Any, physics: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    n = truth.n
    npdf = 1 + 2 * int(physics["pdf"]["n_eigen"])
    scale, pdf = np.ones((n, 9)), np.ones((n, npdf))
    th = truth.theory
    for code, boson in enumerate(BOSONS):
        rows = th["boson"] == code
        if np.any(rows):
            s, p = theory_weights(physics, boson, th["y"][rows], th["qt"][rows], th["cos"][rows], th["phi"][rows])
            scale[rows], pdf[rows] = s, p
    return scale, pdf


def _with_ids(branches: dict[str, Any], ids: dict[str, np.ndarray]) -> dict[str, Any]:
    return {**ids, **branches}


def _mc_chunk(job: dict[str, Any], c: int, n: int) -> tuple[Any, dict[str, Any]]:
    """Truth and branches of chunk ``c`` (``n`` produced events) of a simulation file: filtered
    events through the detector."""
    card, seed, p, k = job["card"], job["seed"], job["process"], job["index"]
    truth = GENERATORS[p](_rng(seed, "mc", p, k, c, "physics"), n, card["physics"])
    truth = truth.select(truth.passed)
    reco = simulate(truth, card["detector"], _rng(seed, "mc", p, k, c, "detector"), is_data=False)
    return truth, assemble(truth, reco, None, True, _weights(truth, card["physics"]))


def _gen_chunk(job: dict[str, Any], c: int, n: int) -> tuple[Any, dict[str, Any]]:
    """Truth and branches of chunk ``c`` of an inclusive generator-level file: every produced
    event, generator branches and theory weights only."""
    card, seed, p, k = job["card"], job["seed"], job["process"], job["index"]
    truth = GENERATORS[p](_rng(seed, "mc_gen", p, k, c, "physics"), n, card["physics"])
    return truth, generator_branches(truth, _weights(truth, card["physics"]))


def _run_simulation_job(job: dict[str, Any], chunk: Any) -> dict[str, Any]:
    p, k, n_prod = job["process"], job["index"], job["n_produced"]
    w = TreeWriter(job["path"], job["compression"])
    t_gen = t_write = 0.0
    try:
        written = 0
        for c, nc in enumerate(_split(n_prod, max(1, math.ceil(n_prod / job["chunk_size"])))):
            t0 = time.process_time()
            truth, br = chunk(job, c, nc)
            br = _with_ids(br, _event_ids(truth.n, written, False, k))
            t1 = time.process_time()
            w.extend(br)
            t_write += time.process_time() - t1
            t_gen += t1 - t0
            written += truth.n
        # the Runs tree counts every produced event (the luminosity weight's sum of weights)
        runs = {"run": np.array([1], dtype=np.uint32), "genEventCount": np.array([n_prod], dtype=np.int64),
                "genEventSumw": np.array([float(n_prod)]), "genEventSumw2": np.array([float(n_prod)])}
        t1 = time.process_time()
        w.close(runs, job["provenance"])
        t_write += time.process_time() - t1
    except BaseException:
        w.abort()
        raise
    return {"kind": job["kind"], "process": p, "path": job["path"], "n_events": written, "n_produced": n_prod,
            "sumw": float(n_prod), "t_gen": t_gen, "t_write": t_write}


def run_mc_job(job: dict[str, Any]) -> dict[str, Any]:
    """Generate one simulation file (events that pass the generator filter)."""
    return _run_simulation_job(job, _mc_chunk)


def run_gen_job(job: dict[str, Any]) -> dict[str, Any]:
    """Generate one inclusive generator-level file (``mc_gen``): every produced event, generator
    branches and theory weights only (no filter, no detector)."""
    return _run_simulation_job(job, _gen_chunk)


def run_data_job(job: dict[str, Any]) -> dict[str, Any]:
    """Generate one data-like file of a stream (data or closure), or a data and a closure file
    from the same generator-level events when the two sets share their physics."""
    seed, stream, k = job["seed"], job["stream"], job["index"]
    phys = job["physics"]
    outs = job["outputs"]  # [(set, detector card section, path, set-specific seed name)]
    writers = [TreeWriter(o["path"], job["compression"]) for o in outs]
    trig = STREAM_TRIGGERS[stream]
    t_gen = t_write = 0.0
    written = [0] * len(outs)
    try:
        total = sum(job["counts"].values())
        n_chunks = max(1, math.ceil(total / job["chunk_size"]))
        splits = {p: _split(n, n_chunks) for p, n in job["counts"].items()}
        for c in range(n_chunks):
            t0 = time.process_time()
            truths = {}
            for p in STREAMS[stream]:
                nc = splits.get(p, [0] * n_chunks)[c]
                if nc:
                    t = GENERATORS[p](_rng(seed, job["physics_set"], stream, p, k, c, "physics"), nc, phys)
                    truths[p] = t.select(t.passed)
            chunks_out = []
            for o in outs:
                parts = []
                for p, t in truths.items():
                    reco = simulate(t, o["detector"], _rng(seed, o["set"], stream, p, k, c, "detector"), is_data=True)
                    sel = reco["keep"] & np.logical_or.reduce([reco["scalars"][h] for h in trig])
                    parts.append(assemble(t, reco, sel, False))
                m = sum(n_events(x) for x in parts)
                perm = _rng(seed, o["set"], stream, k, c, "shuffle").permutation(m)
                chunks_out.append(concatenate(parts, perm))
            t1 = time.process_time()
            t_gen += t1 - t0
            for i, (wr, br) in enumerate(zip(writers, chunks_out)):
                m = n_events(br)
                wr.extend(_with_ids(br, _event_ids(m, written[i], True, k)))
                written[i] += m
            t_write += time.process_time() - t1
        t1 = time.process_time()
        for i, (wr, o) in enumerate(zip(writers, outs)):
            runs = {"run": np.array([273158 + 53 * k], dtype=np.uint32),
                    "genEventCount": np.array([written[i]], dtype=np.int64),
                    "genEventSumw": np.array([float(written[i])]), "genEventSumw2": np.array([float(written[i])])}
            wr.close(runs, o["provenance"])
        t_write += time.process_time() - t1
    except BaseException:
        for wr in writers:
            wr.abort()
        raise
    return {"kind": "data", "stream": stream, "outputs": [(o["set"], o["path"], written[i]) for i, o in enumerate(outs)],
            "counts": job["counts"], "t_gen": t_gen, "t_write": t_write}


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    return {"mc": run_mc_job, "gen": run_gen_job, "data": run_data_job}[job["kind"]](job)


# ------------------------------------------------------------------ planning

def plan_jobs(settings: dict[str, Any], cards: dict[str, dict[str, Any]], hashes: dict[str, str],
              root: Path, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All jobs of a universe (paths under ``root``) and the expected per-process yields."""
    scale = settings["events_scale"]
    maxf = settings["max_produced_per_file"]
    common = {"seed": seed, "chunk_size": settings["chunk_size"], "compression": settings["compression"]}
    jobs: list[dict[str, Any]] = []
    nominal = cards["nominal"]
    samples = [("mc", p, settings["signal_mc_factor"] if p in SIGNAL_MC else settings["mc_factor"] * MC_FACTOR_SCALE.get(p, 1.0))
               for p in MC_PROCESSES] + [("mc_gen", p, settings["gen_factor"]) for p in INCLUSIVE_GEN]
    for sample_set, p, factor in samples:
        n = int(max(factor * nominal["physics"]["xsec_pb"][p] * LUMI_PB * scale, settings["mc_floor"]))
        nf = max(1, math.ceil(n / maxf))
        for k, nk in enumerate(_split(n, nf)):
            path = root / sample_set / p / f"{p}_{k}.root"
            jobs.append({**common, "kind": "mc" if sample_set == "mc" else "gen", "process": p, "index": k,
                         "n_produced": nk, "card": nominal, "path": str(path),
                         "provenance": _prov("nominal", hashes, seed, p, k, sample_set)})
    # data and closure: Poisson yields from each set's own cross sections
    sets = {"data": cards["data"], "closure": cards["closure"]}
    share = sets["closure"]["physics"] == sets["data"]["physics"]
    yields = {"data": _poisson_yields(sets["data"], scale, seed)}
    yields["closure"] = yields["data"] if share else _poisson_yields(sets["closure"], scale, seed, "closure")
    groups = [("data", "closure")] if share else [("data",), ("closure",)]
    for stream, procs in STREAMS.items():
        for group in groups:
            own = yields[group[0]]
            nf = max(1, math.ceil(sum(own[p] for p in procs) / maxf))
            per_file = {p: _split(own[p], nf) for p in procs}
            for k in range(nf):
                outs = [{"set": s, "detector": sets[s]["detector"],
                         "path": str(root / s / stream / f"{stream}_{k}.root"),
                         "provenance": _prov(s, hashes, seed, stream, k, s)} for s in group]
                jobs.append({**common, "kind": "data", "stream": stream, "index": k,
                             "counts": {p: per_file[p][k] for p in procs},
                             "physics": sets[group[0]]["physics"], "physics_set": group[0], "outputs": outs})
    return jobs, {"data_produced": yields["data"], "closure_produced": yields["closure"],
                  "closure_shares_data_physics": share}


def _poisson_yields(card: dict[str, Any], scale: float, seed: int, *key: str) -> dict[str, int]:
    """Produced events per process of a data-like set: Poisson(xsec x lumi x events_scale), each
    from its own seed (the data's key is ("yield", process), as before closure had its own)."""
    return {p: int(_rng(seed, "yield", *key, p).poisson(card["physics"]["xsec_pb"][p] * LUMI_PB * scale))
            for procs in STREAMS.values() for p in procs}


def _prov(card: str, hashes: dict[str, str], seed: int, what: str, k: int, sample_set: str) -> dict[str, Any]:
    return {"card": card, "card_sha256": hashes[card], "seed": seed, "file_index": k, "set": sample_set,
            "process" if sample_set in ("mc", "mc_gen") else "stream": what, "wmnb_version": __version__,
            "generator": "wmnb.universe"}


def _job_size(job: dict[str, Any]) -> int:
    return job["n_produced"] if job["kind"] != "data" else len(job["outputs"]) * sum(job["counts"].values())


def _universe_cards(truth: str | os.PathLike) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The nominal, data and closure cards of a universe whose data card is ``truth``, and where
    each comes from (for messages); checks the fields all cards must share and that the closure
    card is the simulation with its own m_W (a pure-detector closure, whatever the data card)."""
    nominal = load_card("nominal")
    data_card = load_card(truth)
    closure = load_card("closure")
    sources = {"nominal": str(card_path("nominal")), "data": str(card_path(truth)),
               "closure": str(CARDS_DIR / "closure.yaml")}
    check_closure_card(closure, nominal, f"closure card {sources['closure']}")
    cards = {"nominal": nominal, "data": data_card, "closure": closure}
    check_shared_fields(cards, sources)
    return cards, sources


def profile_truth_card(profile: str) -> str:
    """The data card a profile's universe is generated from: its ``truth_card`` (a shipped card
    name, or the absolute path the profile's relative path resolves to), else the shipped
    ``data`` card."""
    try:
        prof = load_profile(profile)
    except TypeError as err:  # load_profile reports a non-integer seed as a TypeError
        raise GenerateError(str(err)) from err
    return prof.get("truth_card") or "data"


def recorded_data_card(root: Path | str, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The validated data card a generated universe (folder ``root``) was made from: its copy
    :data:`DATA_CARD_FILE`, checked against the hash its manifest records.  A universe generated
    before the copy was kept raises :class:`GenerateError` (rerun chapter 00)."""
    root = Path(root)
    manifest = read_json(root / "manifest.json") if manifest is None else manifest
    entry = manifest.get("data_card")
    if not isinstance(entry, Mapping) or "file" not in entry:
        raise GenerateError(f"the universe in {root} keeps no copy of its data card (generated by an older "
                            "wmnb): rerun chapter 00")
    path = root / str(entry["file"])
    card = load_card(path)
    recorded = dict(manifest.get("cards", {})).get("data")
    if card_hash(card) != recorded or entry.get("sha256") != recorded:
        raise GenerateError(f"{path} does not hash to the data card recorded in {root / 'manifest.json'}: "
                            "the universe was changed after its generation; rerun chapter 00")
    return card


def generate_universe(profile: str, out: Path | str | None = None, seed: int | None = None,
                      progress: bool = True, truth: str | os.PathLike | None = None,
                      workers: int | None = None, into_results: bool = False,
                      settings: Mapping[str, Any] | None = None, *, executor: str | None = None,
                      scheduler: str | None = None, client: Any = None) -> dict[str, Any]:
    """Generate the mc + data + closure samples of ``profile`` into ``out`` and write
    ``manifest.json``; return the manifest.

    ``out`` defaults to ``wmnb.paths.universe_dir(profile)``, which is allowed only while the
    runner executes chapter 00 (its staging directory): a folder inside the results store is
    refused unless ``into_results`` is true (see :func:`~wmnb.universe.staging.check_output_dir`).
    ``truth`` is the data card (shipped name or path), by default the profile's ``truth_card``
    (:func:`profile_truth_card`); a validated copy of it is written next to the manifest
    (:data:`DATA_CARD_FILE`, manifest entry ``data_card``) for the truth gate.  The closure set is
    always the shipped ``closure`` card (the simulation with its own m_W).  ``seed`` (non-negative) defaults to the profile's seed, ``workers``
    (>= 1) to the profile's setting.  Every argument is checked before any work
    (:class:`GenerateError`, :class:`~wmnb.universe.card.CardError`); SIGTERM raises
    :class:`GenerationTerminated` after removing the temporary files.  ``settings`` override the
    profile's chapters.00_universe values (the notebook passes its checked parameters, so that
    ``papermill -p events_scale default`` is honoured, not silently ignored).

    ``executor`` (None: the process's choice, :func:`wmnb.execution.active`, i.e. the profile's
    ``executor`` in the chapter's notebook): ``local`` runs the jobs in a pool of ``workers``
    processes; ``dask`` makes every job (one output file) a task of
    :func:`wmnb.engine.executors.run_tasks` on ``client`` or the ``scheduler`` address (the
    workers write the files themselves, so ``out`` must be a folder they see: a shared file
    system on a cluster).  Every job draws from its own seeds, so the events are the same on
    any executor and any number of workers."""
    t_start = time.perf_counter()
    if seed is not None:
        seed = check_count(seed, "seed", 0)
    if workers is not None:
        workers = check_count(workers, "workers", 1)
    out = check_output_dir(profile, out if out is not None else universe_dir(profile), into_results)
    chosen = universe_settings(profile, settings)
    seed = chosen["seed"] if seed is None else seed
    if truth is None:
        try:
            cards, sources = _universe_cards(profile_truth_card(profile))
        except CardError as err:
            raise CardError(f"profile {profile!r}, key 'truth_card': {err}") from err
    else:
        cards, sources = _universe_cards(truth)
    hashes = {k: card_hash(v) for k, v in cards.items()}
    n_workers = workers if workers is not None else chosen["workers"]
    execution = resolve(executor, scheduler)
    with generation_guard() as guard, task_client(execution.executor, execution.scheduler, client) as cl:
        if cl is not None:
            n_workers = engine_executors.n_workers(cl)
            out = out.absolute()      # the workers write the files: no path relative to this process
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_dirs(out, "samples")
        manifest_path = out / "manifest.json"
        for stale in (manifest_path, out / DATA_CARD_FILE):
            if stale.exists():
                stale.unlink()  # the old manifest and card copy must not describe the new files
        with atomic_dir(out / "samples", guard) as tmp:
            jobs, info = plan_jobs(chosen, cards, hashes, tmp, seed)
            jobs.sort(key=_job_size, reverse=True)
            results = (_execute(jobs, n_workers, progress) if cl is None else
                       list(engine_executors.run_tasks(_run_job, jobs, executor="dask", client=cl, progress=progress,
                                                       desc="universe files")))
            manifest = _manifest(profile, chosen, seed, cards, hashes, results, info, tmp, out)
        manifest["data_card"] = {"file": DATA_CARD_FILE, "sha256": hashes["data"], "source": sources["data"]}
        sizes = sum(f.stat().st_size for f in (out / "samples").rglob("*.root"))
        wall = time.perf_counter() - t_start
        gen = manifest["generation"]
        gen.update({"wall_s": round(wall, 2), "workers": n_workers, "executor": execution.executor,
                    "size_mb": round(sizes / 1e6, 2),
                    "events_per_s": round(gen["n_events_total"] / wall, 1)})
        write_json(out / DATA_CARD_FILE, cards["data"])  # before the manifest, which is written last
        write_json(manifest_path, manifest)
    return manifest


def _stop_pool(ex: cf.ProcessPoolExecutor) -> None:
    """Kill the workers of ``ex`` and wait for them, so none keeps writing into the temporary
    folder that the caller is about to delete (``shutdown`` alone waits for running jobs,
    which can take minutes).  There is no public API for this before Python 3.14."""
    terminate = getattr(ex, "terminate_workers", None)
    if callable(terminate):
        terminate()
        return
    procs = list((getattr(ex, "_processes", None) or {}).values())
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=10)
    ex.shutdown(wait=True, cancel_futures=True)


def _execute(jobs: list[dict[str, Any]], n_workers: int, progress: bool) -> list[dict[str, Any]]:
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(jobs), desc="universe files", unit="job")
        except ImportError:  # pragma: no cover
            bar = None
    results: list[dict[str, Any]] = []
    if n_workers == 1 or len(jobs) == 1:
        for j in jobs:
            results.append(_run_job(j))
            if bar is not None:
                bar.update(1)
    else:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=worker_signals) as ex:
            try:
                futs = [ex.submit(_run_job, j) for j in jobs]
                for f in cf.as_completed(futs):
                    results.append(f.result())
                    if bar is not None:
                        bar.update(1)
            except BaseException:
                _stop_pool(ex)
                raise
    if bar is not None:
        bar.close()
    return results


def _manifest(profile: str, settings: dict[str, Any], seed: int, cards: dict[str, Any],
              hashes: dict[str, str], results: list[dict[str, Any]], info: dict[str, Any],
              tmp: Path, out: Path) -> dict[str, Any]:
    def rel(path: str) -> str:
        return str(Path("samples") / Path(path).relative_to(tmp))

    def simulated(kind: str, processes: tuple[str, ...]) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for p in processes:
            rs = sorted((r for r in results if r["kind"] == kind and r["process"] == p),
                        key=lambda r: int(Path(r["path"]).stem.rsplit("_", 1)[1]))
            n_prod = sum(r["n_produced"] for r in rs)
            n_ev = sum(r["n_events"] for r in rs)
            entries[p] = {"files": [rel(r["path"]) for r in rs], "xsec_pb": cards["nominal"]["physics"]["xsec_pb"][p],
                          "sumw": float(sum(r["sumw"] for r in rs)), "n_events": n_ev, "n_produced": n_prod,
                          "filter_eff": n_ev / n_prod if n_prod else 0.0, "card": "nominal"}
        return entries

    mc = simulated("mc", MC_PROCESSES)
    mc_gen = simulated("gen", INCLUSIVE_GEN)
    sets: dict[str, Any] = {"data": {}, "closure": {}}
    for r in results:
        if r["kind"] != "data":
            continue
        for s, path, n in r["outputs"]:
            entry = sets[s].setdefault(r["stream"], {"files": [], "n_events": 0, "card": s,
                                                     "n_produced": {p: 0 for p in STREAMS[r["stream"]]}})
            entry["files"].append(rel(path))
            entry["n_events"] += n
            for p, c in r["counts"].items():
                entry["n_produced"][p] += c
    for s in sets.values():
        for e in s.values():
            e["files"].sort(key=lambda f: int(Path(f).stem.rsplit("_", 1)[1]))
    t_gen = sum(r["t_gen"] for r in results)
    t_write = sum(r["t_write"] for r in results)
    n_written = (sum(v["n_events"] for v in (*mc.values(), *mc_gen.values()))
                 + sum(e["n_events"] for s in sets.values() for e in s.values()))
    n_generated = (sum(v["n_produced"] for v in (*mc.values(), *mc_gen.values()))
                   + sum(sum(e["n_produced"].values()) for s in sets.values() for e in s.values()))
    cpu = t_gen + t_write
    return {
        "schema_version": SCHEMA_VERSION, "profile": profile, "lumi_pb": LUMI_PB,
        "events_scale": settings["events_scale"], "events_scale_name": settings["events_scale_name"],
        "seed": seed, "mc": mc, "mc_gen": mc_gen, "data": sets["data"], "closure": sets["closure"], "cards": hashes,
        "card_names": {k: v["name"] for k, v in cards.items()},
        "closure_shares_data_physics": info["closure_shares_data_physics"],
        "weight_rule": "genWeight * xsec_pb * lumi_pb / sumw (sumw counts every produced event, "
                       "including those rejected by the generator filter)",
        "generation": {"wmnb_version": __version__, "cpu_s_generate": round(t_gen, 2),
                       "cpu_s_write": round(t_write, 2), "n_events_total": n_written,
                       "n_generated_total": n_generated,
                       # generated (produced) events per CPU-second, writing included: the
                       # generator's speed per core whatever the filters keep
                       "generated_per_cpu_s": round(n_generated / cpu, 1) if cpu else None,
                       "events_per_cpu_s_generate": round(n_written / t_gen, 1) if t_gen else None,
                       "events_per_cpu_s_write": round(n_written / t_write, 1) if t_write else None},
    }


def read_manifest(profile: str, out: Path | str | None = None) -> dict[str, Any]:
    """The manifest of a generated universe (``results/<profile>/00_universe/manifest.json``)."""
    path = (Path(out) if out is not None else universe_dir(profile)) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no universe manifest at {path}: run "
                                f"`wmnb generate --profile {profile}` or generate_universe({profile!r}) first")
    return read_json(path)


def sample_paths(manifest: dict[str, Any], sample_set: str, name: str, root: Path | str) -> list[Path]:
    """Absolute paths of the files of ``manifest[sample_set][name]`` under the universe ``root``."""
    return [Path(root) / f for f in manifest[sample_set][name]["files"]]


def remove_universe(out: Path) -> None:  # pragma: no cover - convenience
    """Delete a generated universe folder."""
    shutil.rmtree(out, ignore_errors=True)


# ------------------------------------------------------------------ one process of a data set

def regenerate_component(profile: str, manifest: Mapping[str, Any], process: str, out: Path | str,
                         sample_set: str = "data", truth: str | os.PathLike = "data") -> list[Path]:
    """Write the events of one ``process`` that the ``sample_set`` (``data`` or ``closure``)
    files of a generated universe hold, and nothing else, as NanoAOD-like files in ``out``.

    Every process of a data file is drawn from its own seed stream (see the module docstring),
    so the events are regenerated exactly: the same generator and detector draws, in the order
    the job made them (the file's shuffle is not applied).  The universe is re-planned from the
    profile and the manifest's seed and events scale; a plan whose produced events per process
    or file list disagree with ``manifest`` raises :class:`GenerateError` (chapter 00 was run
    with other settings: rerun it).  Only the truth gate calls this (for the true nonprompt
    background of the data, :func:`wmnb.truth.data_component_skim`)."""
    if sample_set not in ("data", "closure"):
        raise GenerateError(f"sample_set must be 'data' or 'closure', got {sample_set!r}")
    settings = universe_settings(profile, {"events_scale": manifest.get("events_scale_name")})
    if not math.isclose(settings["events_scale"], float(manifest["events_scale"]), rel_tol=1e-12):
        raise GenerateError(f"profile {profile!r}: events_scale {settings['events_scale']} differs from the "
                            f"universe's {manifest['events_scale']}; rerun chapter 00")
    cards, _ = _universe_cards(truth)
    hashes = {k: card_hash(v) for k, v in cards.items()}
    if hashes != dict(manifest.get("cards", {})):
        raise GenerateError(f"the truth cards changed since chapter 00 generated {profile!r}: rerun chapter 00")
    out = Path(out)
    jobs, info = plan_jobs(settings, cards, hashes, out, int(manifest["seed"]))
    produced = info[f"{sample_set}_produced"]
    streams = [s for s, procs in STREAMS.items() if process in procs]
    if not streams:
        raise GenerateError(f"process {process!r} is in no data stream; streams hold {STREAMS}")
    stream = streams[0]
    recorded = manifest[sample_set][stream]
    if produced.get(process) != recorded["n_produced"].get(process):
        raise GenerateError(f"re-planned {sample_set} yield of {process!r} ({produced.get(process)}) differs from "
                            f"the manifest's ({recorded['n_produced'].get(process)}); rerun chapter 00")
    mine = [j for j in jobs if j["kind"] == "data" and j["stream"] == stream
            and any(o["set"] == sample_set for o in j["outputs"])]
    if len(mine) != len(recorded["files"]):
        raise GenerateError(f"re-planned {len(mine)} {stream} files, the manifest lists {len(recorded['files'])}; "
                            "rerun chapter 00")
    out.mkdir(parents=True, exist_ok=True)
    trig = STREAM_TRIGGERS[stream]
    paths = []
    for job in mine:
        o = next(x for x in job["outputs"] if x["set"] == sample_set)
        seed, k = job["seed"], job["index"]
        path = out / f"{process}_{sample_set}_{k}.root"
        writer = TreeWriter(str(path), job["compression"])
        written = 0
        try:
            total = sum(job["counts"].values())
            n_chunks = max(1, math.ceil(total / job["chunk_size"]))
            for c, nc in enumerate(_split(job["counts"].get(process, 0), n_chunks)):
                if not nc:
                    continue
                t = GENERATORS[process](_rng(seed, job["physics_set"], stream, process, k, c, "physics"), nc,
                                        job["physics"])
                t = t.select(t.passed)
                reco = simulate(t, o["detector"], _rng(seed, o["set"], stream, process, k, c, "detector"), is_data=True)
                sel = reco["keep"] & np.logical_or.reduce([reco["scalars"][h] for h in trig])
                br = assemble(t, reco, sel, False)
                m = n_events(br)
                writer.extend(_with_ids(br, _event_ids(m, written, True, k)))
                written += m
            runs = {"run": np.array([273158 + 53 * k], dtype=np.uint32),
                    "genEventCount": np.array([written], dtype=np.int64),
                    "genEventSumw": np.array([float(written)]), "genEventSumw2": np.array([float(written)])}
            writer.close(runs, {**o["provenance"], "component": process})
        except BaseException:
            writer.abort()
            raise
        paths.append(path)
    return paths
