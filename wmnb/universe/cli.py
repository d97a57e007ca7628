"""``wmnb generate``: write a synthetic universe (simulation, data, closure) from a truth card."""
from __future__ import annotations

import argparse
import json
import sys

from .card import CardError
from .staging import INTO_RESULTS_FLAG, GenerateError, GenerationTerminated

#: exit status of bad arguments (argparse's convention, kept for every argument error)
EXIT_USAGE = 2


def _integer(text: str, minimum: int) -> int:
    """argparse type: an integer >= ``minimum`` (argparse adds the option name to the error)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        kind = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
        raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}")
    return value


def _seed(text: str) -> int:
    """``--seed``: numpy seed sequences take non-negative integers only."""
    return _integer(text, 0)


def _workers(text: str) -> int:
    """``--workers``: at least one process."""
    return _integer(text, 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wmnb generate", description=cli_generate.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--truth", default=None,
                        help="truth card of the data: shipped name or YAML path (default: the profile's "
                             "truth_card, else the shipped data card)")
    parser.add_argument("--profile", default="smoke", help="run profile (smoke, default, full or a YAML path)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder, required; it must lie outside the results store (results/), "
                             f"which belongs to the runner, unless {INTO_RESULTS_FLAG} is given")
    parser.add_argument(INTO_RESULTS_FLAG, dest="into_results", action="store_true",
                        help="allow an output folder inside results/; without --out, write "
                             "results/<profile>/00_universe, deliberately replacing the book's universe")
    parser.add_argument("--seed", type=_seed, default=None, help="master seed, >= 0 (default: the profile's seed)")
    parser.add_argument("--workers", type=_workers, default=None,
                        help="parallel processes, >= 1 (default: profile or all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def cli_generate(argv: list[str]) -> int:
    """``wmnb generate --truth CARD --profile P --out DIR [--seed N] [--workers W] [--quiet]``.

    CARD is a shipped card name (``data``, ``nominal``, ``closure``) or a YAML path; it defines
    the data universe (default: the profile's ``truth_card``, else ``data``; the simulation always uses the ``nominal`` card and the closure set the
    shipped ``closure`` card: the simulation with its own m_W).  Prints the manifest's generation
    summary as JSON.

    DIR must lie outside the results store: the book's own universe is made by
    ``wmnb run --only 00_universe``.  ``--into-results`` lifts that rule on purpose (without
    ``--out`` it writes ``results/<profile>/00_universe``).  Bad arguments exit with status 2,
    SIGTERM with 143 after removing the temporary files."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the message (or --help)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.out is None and not args.into_results:
        print(parser.format_usage().rstrip(), file=sys.stderr)
        print(f"wmnb generate: --out DIR is required (a folder outside results/); the book's universe "
              f"is made by `wmnb run --profile {args.profile} --only 00_universe`, and "
              f"{INTO_RESULTS_FLAG} writes results/{args.profile}/00_universe on purpose", file=sys.stderr)
        return EXIT_USAGE
    from .generate import generate_universe

    try:
        manifest = generate_universe(args.profile, out=args.out, seed=args.seed, progress=not args.quiet,
                                     truth=args.truth, workers=args.workers, into_results=args.into_results)
    except GenerationTerminated as err:
        print(f"wmnb generate: {err}; the temporary files of this run were removed", file=sys.stderr)
        return int(err.code)
    except (CardError, GenerateError, FileNotFoundError, ValueError) as err:
        print(f"wmnb generate: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({"profile": manifest["profile"], "seed": manifest["seed"], **manifest["generation"]}))
    return 0
