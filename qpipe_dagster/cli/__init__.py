"""The `qpipe` command: one argparse dispatcher, each command group in its own module.

Each module in COMMAND_MODULES exposes `register(subparsers)`, adding its sub-commands with a
`handler(args) -> int` default. Errors the user can fix raise CliError and print one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "qpipe_dagster.cli.concepts",
    "qpipe_dagster.cli.search",
    "qpipe_dagster.cli.qstash",
    "qpipe_dagster.cli.models",
    "qpipe_dagster.cli.ops",
)


class CliError(Exception):
    """A problem with what the user asked for; printed as `qpipe: error: ...`, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qpipe", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (CliError, ValueError) as exc:
        print(f"qpipe: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
