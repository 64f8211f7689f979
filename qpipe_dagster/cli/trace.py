"""`qpipe trace MESSAGE_ID|CONCEPT`: a delivery (or a concept) from QStash to stored objects.

Reads the instance DAGSTER_HOME points at, the inbox the sensor reads and the vector store,
never writing to any of them (see qpipe_dagster.controls.trace).
"""

from __future__ import annotations

import argparse

from qpipe_dagster.cli import CliError


def _trace(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from qpipe_dagster.controls.trace import TraceNotFound, render, trace
    from qpipe_dagster.defs.resources import default_resources
    from webhook_sensor.settings import default_inbox_target

    store = default_resources()["vector_store"]
    with DagsterInstance.get() as instance:
        try:
            found = trace(
                instance,
                default_inbox_target(),
                args.key,
                open_store=lambda model, dim: store.open(model=model, dim=dim, create=False),
            )
        except TraceNotFound as exc:
            raise CliError(str(exc)) from None
    print(found.to_json() if args.json else render(found))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "trace",
        help="a QStash message (or a concept) end to end: delivery, sensor, run, steps, objects",
    )
    p.add_argument("key", metavar="MESSAGE_ID|CONCEPT")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the screen")
    p.set_defaults(handler=_trace)
