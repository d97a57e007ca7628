"""``wmnb generate``: write a synthetic universe (simulation, data, closure) from a truth card."""
from __future__ import annotations

import argparse
import json
import sys

from .card import CardError


def cli_generate(argv: list[str]) -> int:
    """``wmnb generate --truth CARD --profile P --out DIR [--seed N] [--workers W] [--quiet]``.

    CARD is a shipped card name (``data``, ``nominal``, ``closure``) or a YAML path; it defines
    the data universe (the simulation always uses the ``nominal`` card; the closure set uses
    CARD's physics with the nominal detector).  Prints the manifest's generation summary as JSON."""
    parser = argparse.ArgumentParser(prog="wmnb generate", description=cli_generate.__doc__)
    parser.add_argument("--truth", default="data", help="truth card of the data: shipped name or YAML path (default: data)")
    parser.add_argument("--profile", default="smoke", help="run profile (smoke, default, full or a YAML path)")
    parser.add_argument("--out", default=None, help="output folder (default: results/<profile>/00_universe)")
    parser.add_argument("--seed", type=int, default=None, help="master seed (default: the profile's seed)")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: profile or all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from .generate import generate_universe

    try:
        manifest = generate_universe(args.profile, out=args.out, seed=args.seed, progress=not args.quiet,
                                     truth=args.truth, workers=args.workers)
    except (CardError, FileNotFoundError, ValueError) as err:
        print(f"wmnb generate: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"profile": manifest["profile"], "seed": manifest["seed"], **manifest["generation"]}))
    return 0
