"""The ``wmnb`` command.

Each subcommand lives in the module that owns its logic; this file only dispatches, importing
lazily so that ``wmnb status`` does not pay for TensorFlow.

    wmnb generate --truth CARD --profile P --out DIR [--seed N]   synthetic samples (chapter 00)
    wmnb run [--profile P] [--only CHAPTER ...] [--force]         execute chapters with papermill
    wmnb book [--profile P]                                       build the HTML book
    wmnb status [--profile P]                                     state of every chapter
    wmnb clean [--profile P] [--all]                              remove artefacts
    wmnb select --selection S FILE... --out DIR                   one selection on NanoAOD files
    wmnb fit MODEL [--json]                                       fit a saved model
    wmnb coverage [--profile P] [--toys N]                        m_W coverage toys of chapter 08's model
"""
from __future__ import annotations

import importlib
import os
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("wmnb.universe.cli", "generate synthetic NanoAOD-like samples from a truth card"),
    "run": ("wmnb.runner", "execute the chapters with papermill in dependency order"),
    "book": ("wmnb.book", "build the HTML book with jupyter-book"),
    "status": ("wmnb.runner", "show the state of every chapter"),
    "clean": ("wmnb.runner", "remove artefacts of a profile"),
    "select": ("wmnb.engine.cli", "run one event selection on NanoAOD(-like) files"),
    "fit": ("wmnb.fit.cli", "fit a saved binned likelihood model"),
    "coverage": ("wmnb.mw.coverage", "m_W coverage toys of chapter 08's model on a profile"),
}


def _usage() -> str:
    lines = ["usage: wmnb <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {helptext}" for name, (_, helptext) in SUBCOMMANDS.items()]
    lines += ["", "Run 'wmnb <command> --help' for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wmnb`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"wmnb {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"wmnb: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[command][0])
    # each module exposes cli_<command>(argv) -> exit code
    return int(getattr(module, f"cli_{command}")(rest) or 0)


#: subcommands after which the process ends without the interpreter's teardown (see :func:`console`)
FAST_EXIT = ("fit",)


def console() -> None:
    """The ``wmnb`` console script and ``python -m wmnb.cli``: :func:`main`, then exit.  After
    ``wmnb fit`` the process ends at once (``os._exit``, after flushing): TensorFlow's teardown
    alone takes 0.8 s, a tenth of a fit of the paper's size, and everything the command writes is
    written (atomically) and flushed by then."""
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] and argv[0] in FAST_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
