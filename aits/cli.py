"""The ``aits`` command: ``aits train|simulate|evaluate [options]``.

Each subcommand hands the rest of the command line to the ``main(argv)`` of
:mod:`aits.train`, :mod:`aits.simulate` or :mod:`aits.evaluate`, so
``aits simulate --help`` shows the same options as ``python -m aits.simulate --help``.
The tool modules (and torch) are imported only once a subcommand runs, which
keeps ``aits --help`` fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from aits import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

#: subcommand -> (module whose main(argv) runs it, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("aits.train", "learn the time step of an N-body system (energy-gated training)"),
    "simulate": ("aits.simulate", "run a system forward with a time-step policy"),
    "evaluate": ("aits.evaluate", "compare policies at equal accuracy across scenarios"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: ``--help``, ``--version`` and the list of subcommands."""
    parser = argparse.ArgumentParser(
        prog="aits",
        description="Learned time steps for gravitational N-body leapfrog integration.",
        epilog="Run 'aits COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"aits {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, summary) in COMMANDS.items():
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``aits`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[args[0]][0])
        return module.main(args[1:])
    parser = build_parser()
    parser.parse_args(args)  # --help and --version exit here, a bad command is an error
    parser.error("put the command first: aits COMMAND [options]")


if __name__ == "__main__":
    sys.exit(main())
