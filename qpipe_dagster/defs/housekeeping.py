"""`inbox_housekeeping`: the daily purge of consumed inbox rows (thin: qpipe_dagster.ops.housekeeping)."""

import time
from collections.abc import Mapping

from dagster import (
    DefaultScheduleStatus,
    Failure,
    OpExecutionContext,
    ScheduleDefinition,
    job,
    op,
)

from qpipe_dagster.defs.operations import schedule_cron
from qpipe_dagster.ops.housekeeping import purge_consumed, retention_days
from qpipe_dagster.settings import SettingError

DEFAULT_HOUSEKEEPING_CRON = "15 4 * * *"  # after the nightly backup (03:00 UTC default)


@op(description="Delete consumed inbox rows older than QPIPE_INBOX_RETENTION_DAYS; VACUUM.")
def purge_inbox(context: OpExecutionContext) -> None:
    from webhook_sensor.settings import default_inbox_target

    try:
        days = retention_days()
    except SettingError as exc:
        raise Failure(description=str(exc)) from None
    result = purge_consumed(default_inbox_target(), before=time.time() - days * 86_400)
    sizes = (
        f"; file {result.bytes_before} -> {result.bytes_after} bytes"
        if result.bytes_before is not None
        else ""
    )
    context.log.info(
        f"inbox {result.target}: purged {result.purged} consumed row(s) older than {days} day(s),"
        f" {result.remaining} row(s) remain{sizes}"
    )


@job(name="inbox_housekeeping", description="Purge consumed inbox rows past retention.")
def inbox_housekeeping_job() -> None:
    purge_inbox()


def build_housekeeping_schedule(env: Mapping[str, str] | None = None) -> ScheduleDefinition:
    return ScheduleDefinition(
        name="inbox_housekeeping_schedule",
        cron_schedule=schedule_cron("QPIPE_HOUSEKEEPING_CRON", DEFAULT_HOUSEKEEPING_CRON, env),
        job=inbox_housekeeping_job,
        default_status=DefaultScheduleStatus.RUNNING,
        execution_timezone="UTC",
    )


inbox_housekeeping_schedule = build_housekeeping_schedule()
