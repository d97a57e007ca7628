"""Benchmark of the chapter-01 engine: selection + histogramming rates, side by side.

    python benchmarks/bench_engine.py [--profile default] [--max-files 1] [--rdf-python /tmp/rootvenv/bin/python]
    python benchmarks/bench_engine.py --generate /tmp/wmnb_bench      # no universe: make one default-size file

Work measured, on the W→μν simulation (``wplus_munu``) of a profile, single process, one core:

(a) the W selection (trigger, medium muon, trigger match, vetoes, m_T, final cuts) and a nominal
    3-D histogram (30 pT × 48 eta × 2 charge), *including* reading and decompressing the ROOT files;
(b) the same with 146 weight variations (8 μR/μF, 40 PDF Hessian members, 2 prefiring, 96
    eta-binned efficiency-like up/down variations) filled in the same pass.

Implementations: the engine (``wmnb.engine.histogram_files``); a straightforward baseline with
plain awkward + ``hist`` (one ``fill`` per variation); ROOT RDataFrame (``Histo3D`` with
``Vary``, single-threaded) when a Python with the ``ROOT`` wheel is given; and the ideal
in-memory limit: ``np.bincount`` on the selected columns already in memory (the histogram step
only).  Rates are events per CPU second of the process (= per core); times are reported, not
asserted.  Results are printed as a table and written to JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import awkward as ak
import hist
import numpy as np
import uproot

from wmnb.engine import histogram_files, preset_variations
from wmnb.engine.histogram import fill

N_ETA_VAR = 48


def axes3d() -> list:
    return [hist.axis.Regular(30, 26, 56, name="pt"), hist.axis.Regular(48, -2.4, 2.4, name="eta"),
            hist.axis.IntCategory([-1, 1], name="charge")]


FIELDS = ["mu_pt", "mu_eta", "mu_charge"]


def many_variations(cols: dict, w: np.ndarray) -> dict[str, np.ndarray]:
    """146 variations: presets (prefire, μR/μF, PDF) + 2 × 48 eta-binned ±1 % factors."""
    out, _ = preset_variations(cols, w, ["prefire", "lhe_scale", "lhe_pdf"])
    ieta = np.clip(((np.asarray(cols["mu_eta"], np.float64) + 2.4) / 0.1).astype(np.int64), 0, N_ETA_VAR - 1)
    for k in range(N_ETA_VAR):
        f = np.where(ieta == k, 0.01, 0.0)
        out[f"eff{k}Up"] = w * (1 + f)
        out[f"eff{k}Down"] = w * (1 - f)
    return out


def timed(fn, *args, **kwargs):
    c0, t0 = time.process_time(), time.perf_counter()
    res = fn(*args, **kwargs)
    return res, time.process_time() - c0, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# the baseline: plain awkward + hist

BRANCHES = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_pfRelIso04_all", "Muon_dxy", "Muon_looseId",
            "Muon_mediumId", "Muon_triggerMatch", "Electron_pt", "Electron_eta", "Electron_cutBased", "MET_pt",
            "MET_phi", "HLT_IsoMu24", "HLT_IsoTkMu24", "genWeight", "L1PreFiringWeight_Nom"]
VAR_BRANCHES = ["L1PreFiringWeight_Up", "L1PreFiringWeight_Dn", "LHEScaleWeight", "LHEPdfWeight"]


def baseline(files: list[str], with_variations: bool) -> hist.Hist:
    """The straightforward way: awkward selections, ``hist.fill`` per variation."""
    names = None
    h = None
    branches = BRANCHES + (VAR_BRANCHES if with_variations else [])
    for ev in uproot.iterate([f"{f}:Events" for f in files], branches, step_size=500_000):
        mu_good = ((ev.Muon_mediumId) & (abs(ev.Muon_eta) < 2.4) & (ev.Muon_pt > 20) & (abs(ev.Muon_dxy) < 0.05)
                   & ev.Muon_triggerMatch)
        pt_good = ak.where(mu_good, ev.Muon_pt, -1.0)
        best = ak.argmax(pt_good, axis=1, keepdims=True)
        has = ak.fill_none(ak.firsts(pt_good[best]), -1.0) > 0
        trig = ev.HLT_IsoMu24 | ev.HLT_IsoTkMu24
        pt = ak.fill_none(ak.firsts(ev.Muon_pt[best]), 0.0)
        eta = ak.fill_none(ak.firsts(ev.Muon_eta[best]), 0.0)
        phi = ak.fill_none(ak.firsts(ev.Muon_phi[best]), 0.0)
        q = ak.fill_none(ak.firsts(ev.Muon_charge[best]), 0)
        iso = ak.fill_none(ak.firsts(ev.Muon_pfRelIso04_all[best]), 9.0)
        loose = ev.Muon_looseId & (ev.Muon_pt > 15) & (abs(ev.Muon_eta) < 2.4)
        best_loose = ak.fill_none(ak.firsts(loose[best]), False)
        n_extra = ak.sum(loose, axis=1) - best_loose
        n_ele = ak.sum((ev.Electron_pt > 10) & (abs(ev.Electron_eta) < 2.5) & (ev.Electron_cutBased >= 1), axis=1)
        mt = np.sqrt(2 * pt * ev.MET_pt * (1 - np.cos(phi - ev.MET_phi)))
        sel = trig & has & (n_extra == 0) & (n_ele == 0) & (pt > 26) & (pt < 56) & (iso < 0.15) & (mt > 40)
        w = ak.to_numpy(ev.genWeight * ev.L1PreFiringWeight_Nom)[ak.to_numpy(sel)].astype(np.float64)
        cols = {"mu_pt": ak.to_numpy(pt[sel]), "mu_eta": ak.to_numpy(eta[sel]), "mu_charge": ak.to_numpy(q[sel])}
        variations: dict[str, np.ndarray] = {}
        if with_variations:
            nom = ak.to_numpy(ev.L1PreFiringWeight_Nom[sel])
            cols["prefire_up"] = ak.to_numpy(ev.L1PreFiringWeight_Up[sel]) / nom
            cols["prefire_dn"] = ak.to_numpy(ev.L1PreFiringWeight_Dn[sel]) / nom
            cols["lhe_scale"] = ak.to_numpy(ev.LHEScaleWeight[sel])
            cols["lhe_pdf"] = ak.to_numpy(ev.LHEPdfWeight[sel])
            variations = many_variations(cols, w)
        if h is None:
            names = ["nominal", *variations]
            h = hist.Hist(*axes3d(), hist.axis.StrCategory(names, name="syst"), storage=hist.storage.Weight())
        h.fill(cols["mu_pt"], cols["mu_eta"], cols["mu_charge"], syst="nominal", weight=w)
        for name, wv in variations.items():
            h.fill(cols["mu_pt"], cols["mu_eta"], cols["mu_charge"], syst=name, weight=wv)
    return h


# ---------------------------------------------------------------------------------------------
# the ideal in-memory limit of the histogram step

def bincount_limit(cols: dict, weights: list[np.ndarray]) -> np.ndarray:
    """Bin index by arithmetic + one ``np.bincount`` (values and squares) per weight array."""
    ipt = np.floor(cols["mu_pt"] - 26.0).astype(np.int64)
    ieta = np.floor((cols["mu_eta"] + 2.4) / 0.1).astype(np.int64)
    iq = (cols["mu_charge"] > 0).astype(np.int64)
    ok = (ipt >= 0) & (ipt < 30) & (ieta >= 0) & (ieta < 48)
    idx = ((ipt * 48 + ieta) * 2 + iq)[ok]
    out = np.empty((len(weights), 2, 2880))
    for i, w in enumerate(weights):
        out[i, 0] = np.bincount(idx, weights=w[ok], minlength=2880)
        out[i, 1] = np.bincount(idx, weights=w[ok] ** 2, minlength=2880)
    return out


# ---------------------------------------------------------------------------------------------
# ROOT RDataFrame, in a separate Python that has the ROOT wheel

RDF_SCRIPT = r'''
import json, sys, time
import ROOT
files, with_var = json.loads(sys.argv[1]), sys.argv[2] == "1"
ROOT.gInterpreter.Declare("""
using RVecF = ROOT::RVec<float>; using RVecB = ROOT::RVec<bool>; using RVecI = ROOT::RVec<int>;
int leading(const RVecF& pt, const RVecF& eta, const RVecF& dxy, const RVecB& med, const RVecB& tm) {
  int best = -1;
  for (size_t i = 0; i < pt.size(); ++i)
    if (med[i] && std::abs(eta[i]) < 2.4f && pt[i] > 20.f && std::abs(dxy[i]) < 0.05f && tm[i] && (best < 0 || pt[i] > pt[best])) best = i;
  return best;
}
int nextra(const RVecF& pt, const RVecF& eta, const RVecB& loose, int best) {
  int n = 0;
  for (size_t i = 0; i < pt.size(); ++i) if ((int)i != best && loose[i] && pt[i] > 15.f && std::abs(eta[i]) < 2.4f) ++n;
  return n;
}
ROOT::RVecD variations(double w, float up, float dn, float nom, const RVecF& scale, const RVecF& pdf, float eta) {
  ROOT::RVecD out; out.reserve(146);
  out.push_back(w * up / nom); out.push_back(w * dn / nom);
  for (int i = 0; i < 9; ++i) if (i != 4) out.push_back(w * scale[i]);
  double c = pdf[0] != 0 ? pdf[0] : 1.;
  for (size_t k = 0; 2 * k + 2 < pdf.size() + 0; ++k) { out.push_back(w * pdf[1 + 2 * k] / c); out.push_back(w * pdf[2 + 2 * k] / c); }
  int ie = std::min(47, std::max(0, (int)((eta + 2.4) / 0.1)));
  for (int k = 0; k < 48; ++k) { double f = (k == ie) ? 0.01 : 0.; out.push_back(w * (1 + f)); out.push_back(w * (1 - f)); }
  return out;
}
""")
def run(df):
    df = (df.Filter("HLT_IsoMu24 || HLT_IsoTkMu24")
        .Define("best", "leading(Muon_pt, Muon_eta, Muon_dxy, Muon_mediumId, Muon_triggerMatch)")
        .Filter("best >= 0")
        .Define("pt", "Muon_pt[best]").Define("eta", "Muon_eta[best]").Define("q", "Muon_charge[best]")
        .Define("iso", "Muon_pfRelIso04_all[best]")
        .Define("mt", "std::sqrt(2 * pt * MET_pt * (1 - std::cos(Muon_phi[best] - MET_phi)))")
        .Define("next", "nextra(Muon_pt, Muon_eta, Muon_looseId, best)")
        .Define("nele", "Sum(Electron_pt > 10.f && abs(Electron_eta) < 2.5f && Electron_cutBased >= 1)")
        .Filter("next == 0 && nele == 0 && pt > 26 && pt < 56 && iso < 0.15 && mt > 40")
        .Define("w", "(double)genWeight * L1PreFiringWeight_Nom"))
    if with_var:
        df = df.Vary("w", "variations(w, L1PreFiringWeight_Up, L1PreFiringWeight_Dn, L1PreFiringWeight_Nom, LHEScaleWeight, LHEPdfWeight, eta)", 146, "syst")
    model = ROOT.RDF.TH3DModel("h", "", 30, 26, 56, 48, -2.4, 2.4, 2, -2, 2)
    h = df.Histo3D(model, "pt", "eta", "q", "w")
    if with_var:
        hs = ROOT.RDF.Experimental.VariationsFor(h)
        return hs["nominal"].GetSumOfWeights(), len(hs.GetKeys())
    return h.GetSumOfWeights(), 1

# first a 1000-event run: just-in-time compilation of the graph, reported separately
c0, t0 = time.process_time(), time.perf_counter()
run(ROOT.RDataFrame("Events", files).Range(1000))
jit_cpu, jit_wall = time.process_time() - c0, time.perf_counter() - t0
c0, t0 = time.process_time(), time.perf_counter()
total, nvar = run(ROOT.RDataFrame("Events", files))
print(json.dumps({"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0, "sum": total,
                  "n_hists": nvar, "warmup_cpu_s": jit_cpu, "warmup_wall_s": jit_wall}))
'''


def run_rdf(python: str, files: list[str], with_var: bool) -> dict | None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(RDF_SCRIPT)
        script = f.name
    try:
        r = subprocess.run([python, script, json.dumps(files), "1" if with_var else "0"], capture_output=True,
                           text=True, timeout=1800, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        os.unlink(script)
    if r.returncode != 0:
        print(f"RDataFrame failed: {r.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------

def input_files(args: argparse.Namespace) -> list[str]:
    if args.files:
        return args.files
    if args.generate:
        return [generate_default_file(Path(args.generate))]
    from wmnb.engine.skims import load_manifest
    from wmnb.paths import universe_dir

    man = load_manifest(args.profile)
    files = [str(universe_dir(args.profile) / f) for f in man["mc"]["wplus_munu"]["files"]]
    return files[: args.max_files]


def generate_default_file(d: Path) -> str:
    """One default-profile ``wplus_munu`` file via chapter 00's job machinery (cached in ``d``)."""
    from wmnb.universe import card_hash, load_card, universe_settings
    from wmnb.universe.generate import plan_jobs, run_mc_job

    path = d / "mc" / "wplus_munu" / "wplus_munu_0.root"
    if path.is_file():
        return str(path)
    settings = universe_settings("default")
    cards = {n: load_card(n) for n in ("nominal", "data", "closure")}
    hashes = {n: card_hash(c) for n, c in cards.items()}
    jobs, _ = plan_jobs(settings, cards, hashes, d, settings["seed"])
    job = next(j for j in jobs if j.get("process") == "wplus_munu" and j["index"] == 0)
    run_mc_job(job)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--files", nargs="*", help="explicit input files instead of the profile's wplus_munu")
    ap.add_argument("--generate", help="generate one default-size wplus_munu file into this directory")
    ap.add_argument("--max-files", type=int, default=1)
    ap.add_argument("--rdf-python", default="/tmp/rootvenv/bin/python",
                    help="a Python with the ROOT wheel (skipped if it does not exist)")
    ap.add_argument("--out", default="benchmarks/out/bench_engine.json")
    args = ap.parse_args(argv)

    files = input_files(args)
    n_events = sum(uproot.open(f)["Events"].num_entries for f in files)
    size_mb = sum(Path(f).stat().st_size for f in files) / 1e6
    print(f"input: {len(files)} file(s), {n_events:,} events, {size_mb:.0f} MB")
    rows = []

    def add(name, work, cpu, wall, h=None, note=""):
        rows.append({"implementation": name, "work": work, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                     "events_per_cpu_s": round(n_events / cpu) if cpu > 0 else None,
                     "sum_nominal": (float(h[..., "nominal"].sum().value) if h is not None else None), "note": note})
        print(f"{name:<28} {work:<14} cpu {cpu:8.2f} s  wall {wall:8.2f} s  {n_events / cpu / 1e6:7.3f} M ev/s/core")

    # the fixed cost of opening a file (uproot parses the metadata of every branch), paid by all
    _, c_open, t_open = timed(lambda: [uproot.open(f)["Events"].num_entries for f in files])
    rows.append({"implementation": "uproot open", "work": "metadata", "cpu_s": round(c_open, 3),
                 "wall_s": round(t_open, 3), "note": "included in every implementation's time"})
    print(f"{'uproot open (metadata)':<28} {'':<14} cpu {c_open:8.3f} s  wall {t_open:8.3f} s")
    # warm-up (imports, page cache) so that every implementation reads from the same cache state
    from wmnb.engine import nanoaod

    histogram_files(files, "w", axes3d(), FIELDS, progress=False)
    nanoaod._TREE_CACHE.clear()      # every implementation opens the files inside its timing
    h_a, c, t = timed(histogram_files, files, "w", axes3d(), FIELDS, progress=False)
    add("engine", "(a) nominal", c, t, h_a)
    nanoaod._TREE_CACHE.clear()
    h_b, c, t = timed(histogram_files, files, "w", axes3d(), FIELDS, progress=False, variations=many_variations)
    add("engine", f"(b) {h_b.axes['syst'].size - 1} vars", c, t, h_b)
    b_a, c, t = timed(baseline, files, False)
    add("awkward + hist", "(a) nominal", c, t, b_a)
    b_b, c, t = timed(baseline, files, True)
    add("awkward + hist", f"(b) {b_b.axes['syst'].size - 1} vars", c, t, b_b)
    for name in ("nominal", "eff10Up", "pdf3Down"):
        if not np.allclose(h_b[..., name].values(), b_b[..., name].values(), rtol=1e-9):
            print(f"WARNING: engine and baseline differ for {name}", file=sys.stderr)

    # histogram step alone on in-memory columns: engine fill vs the bincount limit
    from wmnb.engine.histogram import process_columns
    from wmnb.engine.nanoaod import load_chunk, open_tree, selection_branches
    from wmnb.engine.selections import select

    tree = open_tree(files[0])
    req, opt = selection_branches("w", set(tree.keys()), True, files[0])
    chunk = load_chunk(files[0], 0, tree.num_entries, req, optional=tuple(b for b in opt if not b.startswith(("GenPart", "GenV"))))
    cols, _ = select(chunk, "w", 1.0, gen=False)
    cols, w, var_w, _ = process_columns("w", "mc", cols, variations=many_variations)
    n_sel = w.size
    n_file = tree.num_entries
    for label, vw in (("(a) nominal", {}), (f"(b) {len(var_w)} vars", var_w)):
        _, c_e, t_e = timed(fill, cols, axes3d(), FIELDS, w, vw)
        _, c_l, t_l = timed(bincount_limit, cols, [w, *vw.values()])
        rows.append({"implementation": "histogram step", "work": label, "engine_fill_cpu_s": round(c_e, 4),
                     "bincount_limit_cpu_s": round(c_l, 4), "ratio": round(c_e / c_l, 2), "n_selected": int(n_sel),
                     "n_file_events": int(n_file)})
        print(f"{'histogram step':<28} {label:<14} engine fill {c_e:7.3f} s  bincount limit {c_l:7.3f} s  ratio {c_e / c_l:5.2f}")

    if Path(args.rdf_python).is_file():
        for with_var, label in ((False, "(a) nominal"), (True, "(b) 146 vars")):
            r = run_rdf(args.rdf_python, files, with_var)
            if r is not None:
                rows.append({"implementation": "ROOT RDataFrame", "work": label, "cpu_s": round(r["cpu_s"], 3),
                             "wall_s": round(r["wall_s"], 3), "events_per_cpu_s": round(n_events / r["cpu_s"]),
                             "sum_nominal": r["sum"], "warmup_cpu_s": round(r["warmup_cpu_s"], 3),
                             "note": f"{r['n_hists']} histograms, single-threaded; JIT of the graph "
                                     f"(1000-event warm-up run, {r['warmup_cpu_s']:.1f} s) not included"})
                print(f"{'ROOT RDataFrame':<28} {label:<14} cpu {r['cpu_s']:8.2f} s  wall {r['wall_s']:8.2f} s  "
                      f"{n_events / r['cpu_s'] / 1e6:7.3f} M ev/s/core   (sum {r['sum']:.6g} vs engine {h_a[..., 'nominal'].sum().value:.6g})")
    else:
        print(f"ROOT RDataFrame skipped: {args.rdf_python} not found")

    doc = {"files": files, "n_events": n_events, "size_mb": round(size_mb, 1), "rows": rows,
           "cpu": os.cpu_count(), "python": sys.version.split()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
