"""The `qpipe` command: one argparse dispatcher, each command group in its own module.

Each module in COMMAND_MODULES exposes `register(subparsers)`, adding its sub-commands with a
`handler(args) -> int` default. Errors the user can fix raise CliError and print one line.

Handlers import the stage code they run inside themselves, on purpose: every command module is
loaded to build the parser, and `qpipe concepts list` must not pay for Dagster, torch, Scrapy or
the vector stores (seconds each). These are the package's deliberate function-level imports.
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
    "qpipe_dagster.cli.trials",
    "qpipe_dagster.cli.monitoring",
    "qpipe_dagster.cli.controls",
    "qpipe_dagster.cli.trace",
)


class CliError(Exception):
    """A problem with what the user asked for; printed as `qpipe: error: ...`, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qpipe", description=(__doc__ or "").partition("\n")[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already says what to fix: printed as one line, never a traceback
    (a bad QPIPE_* variable, an unusable vector store or model, DAGSTER_HOME that is a file)."""
    from qpipe_dagster.embed.encoder import EmbeddingError
    from qpipe_dagster.paths import QpipeHomeError
    from qpipe_dagster.store.objects import VectorStoreError

    return (CliError, ValueError, EmbeddingError, VectorStoreError, QpipeHomeError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Ctrl-C exits 130 with one line (it used to print a traceback from
    wherever it landed, e.g. a retry's sleep); what was printed before it stands."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        user_errors = _user_errors()
        try:
            return int(args.handler(args) or 0)
        except user_errors as exc:
            print(f"qpipe: error: {exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        print("qpipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
