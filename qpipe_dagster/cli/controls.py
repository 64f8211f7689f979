"""`qpipe halt`, `qpipe resume` and `qpipe status`: stop the pipeline's automation at once,
restart exactly what was stopped, and see the whole state on one screen.

All three work on the instance DAGSTER_HOME points at (local SQLite or PostgreSQL through its
dagster.yaml). Deliveries keep being stored while halted, so nothing is lost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from qpipe_dagster.cli import CliError
from qpipe_dagster.cli.progress import meters
from qpipe_dagster.settings import env_value


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _halt(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from qpipe_dagster.controls.halt import halt

    reason = (args.reason or "").strip() or "halted with `qpipe halt`"
    with DagsterInstance.get() as instance:
        result = halt(
            instance, reason=reason, terminate=args.terminate, progress=_say, meter=meters()
        )
    r = result.record
    if result.already:
        _say(f"already halted since {r.by}'s halt ({r.reason}); canceled what was new since")
    stopped = [*r.stopped_sensors, *r.stopped_schedules]
    print(
        f"halted: {reason if not result.already else r.reason}. Stopped {', '.join(stopped) or 'nothing'};"
        f" canceled {len(r.canceled_runs)} queued run(s)"
        + (f", terminated {len(r.terminated_runs)} running" if args.terminate else "")
        + ". Deliveries are still stored. `qpipe resume` restarts what was stopped."
    )
    return 0


def _resume(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from qpipe_dagster.controls.halt import resume

    with DagsterInstance.get() as instance:
        result = resume(instance, progress=_say)
    if result.record is None:
        print("not halted: nothing to resume")
        return 0
    started = [*result.started_sensors, *result.started_schedules]
    print(f"resumed: started {', '.join(started) or 'nothing (the halt stopped nothing)'}")
    if result.missing:
        _say(f"no longer defined, not started: {', '.join(result.missing)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from qpipe_dagster.controls.status import gather, render

    try:
        instance_cm = DagsterInstance.get()
    except Exception as exc:
        raise CliError(
            f"cannot open the Dagster instance at DAGSTER_HOME={env_value('DAGSTER_HOME')!r}: {exc}"
        ) from None
    with instance_cm as instance:
        status = gather(instance, os.environ)
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else render(status))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "halt",
        help="stop sensors and schedules and cancel queued runs (--terminate: running ones too)",
    )
    p.add_argument("--terminate", action="store_true", help="also terminate running runs")
    p.add_argument("--reason", help="why, shown by `qpipe status` and kept with the halt")
    p.set_defaults(handler=_halt)
    p = subparsers.add_parser("resume", help="restart exactly what `qpipe halt` stopped")
    p.set_defaults(handler=_resume)
    p = subparsers.add_parser(
        "status", help="halted?, queue, runs, caps, last backup, stores and breakers"
    )
    p.add_argument("--json", action="store_true", help="one JSON object instead of the screen")
    p.set_defaults(handler=_status)
