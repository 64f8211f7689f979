"""`qpipe metrics serve`: the pipeline's Prometheus endpoint (what `make run` and compose start)."""

from __future__ import annotations

import argparse


def _serve(args: argparse.Namespace) -> int:
    from qpipe_dagster.monitoring.server import run

    return run(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    from qpipe_dagster.monitoring.server import add_arguments

    metrics = subparsers.add_parser("metrics", help="pipeline metrics for Prometheus")
    sub = metrics.add_subparsers(dest="metrics_command", metavar="SUBCOMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve /metrics, read from the Dagster instance and qpipe's state at each scrape",
    )
    add_arguments(serve)
    serve.set_defaults(handler=_serve)
