"""`run_failure_webhook`: tells a chat channel (QPIPE_ALERT_WEBHOOK_URL) that a run failed.

Thin: building and posting the message lives in qpipe_dagster.monitoring.webhook. It is not
one of the automation sensors `qpipe halt` stops: alerts matter most while the pipeline is
halted or failing.
"""

from __future__ import annotations

from dagster import (
    DefaultSensorStatus,
    RunFailureSensorContext,
    SkipReason,
    run_failure_sensor,
)

from qpipe_dagster.monitoring.webhook import (
    RunFailure,
    alert_webhook_url,
    post_alert,
    run_failure_body,
)
from qpipe_dagster.run_tags import TAG_MESSAGE_ID
from qpipe_dagster.settings import env_value


@run_failure_sensor(
    name="run_failure_webhook",
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    monitor_all_code_locations=True,
    description="Posts each failed run to QPIPE_ALERT_WEBHOOK_URL (Slack-compatible JSON).",
)
def run_failure_webhook(context: RunFailureSensorContext) -> SkipReason | None:
    url = alert_webhook_url()
    if url is None:
        return SkipReason("QPIPE_ALERT_WEBHOOK_URL is not set: failed runs are not posted")
    run = context.dagster_run
    failure = context.failure_event
    reason = failure.message or ""
    error = getattr(failure.event_specific_data, "error", None)
    if error is not None and getattr(error, "message", None):
        reason = f"{reason}\n{error.message}".strip()
    post_alert(
        url,
        run_failure_body(
            RunFailure(
                job=run.job_name,
                run_id=run.run_id,
                partition=run.tags.get("dagster/partition"),
                message_id=run.tags.get(TAG_MESSAGE_ID),
                reason=reason,
                ui_url=env_value("QPIPE_UI_URL"),
            )
        ),
    )
    return None
