"""``wmnb select --selection S FILE... --out DIR``: one selection on any NanoAOD(-like) files.

Writes ``DIR/<selection>.root`` (TTree ``Skim``, the skim columns) and
``DIR/<selection>.cutflow.json``, and prints the cutflow.  Simulation (files with ``genWeight``)
is weighted by ``genWeight × xsec × lumi / Σ genWeight`` (sum from the ``Runs`` trees; xsec and
lumi default to 1, so the weighted yield is then the fraction selected).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..artefacts import write_json
from .executors import EXECUTORS
from .nanoaod import NanoAODError, open_tree, runs_sumw
from .selections import SELECTIONS
from .skims import run_selections, write_skim


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


def cli_select(argv: list[str]) -> int:
    """Entry point of ``wmnb select``."""
    ap = argparse.ArgumentParser(prog="wmnb select", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--selection", required=True, choices=SELECTIONS)
    ap.add_argument("files", nargs="+", metavar="FILE")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--executor", default="local", choices=EXECUTORS)
    ap.add_argument("--scheduler", default=None, help="Dask scheduler address (default: a LocalCluster)")
    ap.add_argument("--step", type=int, default=200_000, help="events per chunk")
    ap.add_argument("--xsec-pb", type=float, default=1.0)
    ap.add_argument("--lumi-pb", type=float, default=1.0)
    ap.add_argument("--nonfinite", default="error", choices=("error", "skip"),
                    help="NaN/inf in inputs: stop with an error, or drop those events (counted in the cutflow)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        kinds = set()
        sumw = 0.0
        for f in args.files:
            tree = open_tree(f)
            is_mc = "genWeight" in tree.keys()
            kinds.add(is_mc)
            if is_mc:
                s = runs_sumw(f)
                sumw += s if s is not None else float(tree["genWeight"].array(library="np").sum())
        if len(kinds) > 1:
            raise NanoAODError("the files mix simulation (with genWeight) and data: select them separately")
        norm = args.xsec_pb * args.lumi_pb / sumw if (kinds == {True} and sumw > 0) else 1.0
        res = run_selections(args.files, [args.selection], norm=norm, step=args.step, executor=args.executor,
                             scheduler=args.scheduler, progress=not args.quiet, nonfinite=args.nonfinite)
    except (FileNotFoundError, NanoAODError, ValueError) as err:
        print(f"wmnb select: error: {err}", file=sys.stderr)
        return 1
    r = res[args.selection]
    out = Path(args.out)
    path = write_skim(out / f"{args.selection}.root", r["columns"])
    n_rows = len(r["columns"]["weight"])
    write_json(out / f"{args.selection}.cutflow.json",
               {"selection": args.selection, "files": [str(f) for f in args.files], "n_rows": n_rows,
                "norm": norm, "cutflow": r["cutflow"], "notes": r["notes"]})
    print(format_cutflow(r["cutflow"], f"selection {args.selection}: {len(args.files)} file(s)"))
    for note in r["notes"]:
        print(f"note: {note}")
    print(f"wrote {n_rows} rows to {path}")
    return 0
