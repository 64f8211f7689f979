"""The run and QStash message a step works for, as stored objects and trials record them."""

from __future__ import annotations

from dagster import AssetExecutionContext, DagsterError

from qpipe_dagster.run_tags import TAG_MESSAGE_ID


def trace_ids(context: AssetExecutionContext) -> tuple[str | None, str | None]:
    """(run id, message id); an asset invoked directly (`build_asset_context`) has no run, and a
    run not started by a QStash delivery (UI, CLI, schedule) has no message."""
    try:
        run = context.run
    except DagsterError:  # DagsterInvalidPropertyError, not exported by dagster
        return None, None
    return run.run_id, run.tags.get(TAG_MESSAGE_ID)
