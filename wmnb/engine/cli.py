"""``wmnb select --selection S FILE... --out DIR``: one selection on any NanoAOD(-like) files.

Writes ``DIR/<selection>.root`` (TTree ``Skim``, the skim columns) and
``DIR/<selection>.cutflow.json``, and prints the cutflow.  Simulation (files with ``genWeight``)
is weighted by ``genWeight × xsec × lumi / Σ genWeight`` (sum from the ``Runs`` trees; xsec and
lumi default to 1, so the weighted yield is then the fraction selected).

Exit status: 0 done, 1 the output could not be written, 2 bad input (arguments, or an input
file that is missing, a directory, not NanoAOD, truncated or corrupt, given twice, or holds
NaN/inf with ``--nonfinite error``).  Every input is checked before the selection runs, and
``--out`` is checked for writability first, so a bad argument fails in seconds.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from ..artefacts import write_json
from .executors import EXECUTORS
from .nanoaod import NanoAODError, check_distinct, open_tree, runs_sumw
from .selections import SELECTIONS
from .skims import run_selections, write_skim

EXIT_OUTPUT = 1
EXIT_BAD_INPUT = 2


def format_cutflow(cutflow: dict[str, list[float]], title: str = "") -> str:
    """A plain-text cutflow table."""
    lines = [title] if title else []
    first = None
    lines.append(f"{'cut':<46} {'events':>12} {'weighted':>14} {'eff':>8}")
    for name, (n, w) in cutflow.items():
        first = n if first is None else first
        eff = f"{n / first:8.4f}" if first else "     n/a"
        lines.append(f"{name:<46} {int(n):>12d} {w:>14.6g} {eff}")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    """argparse type: a positive integer (the chunk size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer (events per chunk), got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer (events per chunk), got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a finite positive number (cross section, luminosity)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text!r}")
    return value


def check_out_dir(out: Path, selection: str) -> None:
    """Fail (``ValueError`` naming ``--out``) unless the skim and cutflow can be written below
    ``out``: checked before the selection runs, so a bad ``--out`` does not cost the whole run.
    Nothing is created: a missing ``out`` is made only when the results are written."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory: give a directory (it is created if missing)")
    for target in (out / f"{selection}.root", out / f"{selection}.cutflow.json"):
        if target.is_dir():
            raise ValueError(f"--out {out}: {target} is a directory, so the output file cannot be written there")
    parent = out
    while not parent.exists():   # the deepest existing ancestor must be a writable directory
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, so the directory cannot be created")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write in {parent} ({err.strerror or err})") from err


def _normalisation(files: list[str], xsec_pb: float, lumi_pb: float) -> float:
    """``xsec × lumi / Σ genWeight`` for simulation, 1 for data; opening every file checks it."""
    check_distinct(files)
    kinds = set()
    sumw = 0.0
    n_events = 0
    for f in files:
        tree = open_tree(f)
        is_mc = "genWeight" in tree.keys()
        kinds.add(is_mc)
        n_events += int(tree.num_entries)
        if is_mc:
            s = runs_sumw(f)
            sumw += s if s is not None else float(tree["genWeight"].array(library="np").sum())
    if len(kinds) > 1:
        raise NanoAODError("the files mix simulation (with genWeight) and data: select them separately")
    if kinds != {True}:
        return 1.0
    if not (math.isfinite(sumw) and sumw > 0):
        if n_events == 0:
            return 1.0   # nothing to weight
        raise NanoAODError(f"the sum of generator weights of the {len(files)} simulated file(s) is {sumw}: "
                           "the normalisation xsec × lumi / sum is undefined; check the Runs trees")
    return xsec_pb * lumi_pb / sumw


def cli_select(argv: list[str]) -> int:
    """Entry point of ``wmnb select``; returns the exit status (0 ok, 1 output not written, 2 bad input)."""
    ap = argparse.ArgumentParser(prog="wmnb select", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--selection", required=True, choices=SELECTIONS)
    ap.add_argument("files", nargs="+", metavar="FILE")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--executor", default="local", choices=EXECUTORS)
    ap.add_argument("--scheduler", default=None, help="Dask scheduler address (default: a LocalCluster)")
    ap.add_argument("--step", type=_positive_int, default=200_000, help="events per chunk")
    ap.add_argument("--xsec-pb", type=_positive_float, default=1.0)
    ap.add_argument("--lumi-pb", type=_positive_float, default=1.0)
    ap.add_argument("--nonfinite", default="error", choices=("error", "skip"),
                    help="NaN/inf in inputs: stop with an error, or drop those events (counted in the cutflow)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    out = Path(args.out)
    try:
        check_out_dir(out, args.selection)
        norm = _normalisation(args.files, args.xsec_pb, args.lumi_pb)
        res = run_selections(args.files, [args.selection], norm=norm, step=args.step, executor=args.executor,
                             scheduler=args.scheduler, progress=not args.quiet, nonfinite=args.nonfinite)
    except (FileNotFoundError, NanoAODError, ValueError) as err:
        print(f"wmnb select: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    r = res[args.selection]
    n_rows = len(r["columns"]["weight"])
    try:
        path = write_skim(out / f"{args.selection}.root", r["columns"])
        write_json(out / f"{args.selection}.cutflow.json",
                   {"selection": args.selection, "files": [str(f) for f in args.files], "n_rows": n_rows,
                    "norm": norm, "cutflow": r["cutflow"], "notes": r["notes"]})
    except OSError as err:
        print(f"wmnb select: error: cannot write the results to {out} ({err})", file=sys.stderr)
        return EXIT_OUTPUT
    print(format_cutflow(r["cutflow"], f"selection {args.selection}: {len(args.files)} file(s)"))
    for note in r["notes"]:
        print(f"note: {note}")
    print(f"wrote {n_rows} rows to {path}")
    return 0
