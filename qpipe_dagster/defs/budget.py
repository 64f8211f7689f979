"""Thin Dagster side of the per-concept budgets (qpipe_dagster.controls.budget)."""

from __future__ import annotations

import time

from dagster import AssetExecutionContext, Failure

from qpipe_dagster.controls.budget import Budget, BudgetExceeded
from qpipe_dagster.settings import SettingError


def _budget() -> Budget:
    try:
        return Budget.from_env()
    except SettingError as exc:
        raise Failure(description=str(exc)) from None


def enforce_pages(
    context: AssetExecutionContext, requested: int, crawled: int | None = None
) -> None:
    try:
        _budget().check_pages(context.partition_key, requested, crawled)
    except BudgetExceeded as exc:
        raise Failure(description=str(exc)) from None


def enforce_compute(context: AssetExecutionContext, step: str) -> None:
    """Fails the step when the run, from its start to now, is over the compute budget."""
    record = context.instance.get_run_record_by_id(context.run_id)
    started = record.start_time if record is not None else None
    if started is None:
        return  # an in-process run without a recorded start (tests): nothing to measure
    try:
        _budget().check_compute(context.partition_key, step, time.time() - started)
    except BudgetExceeded as exc:
        raise Failure(description=str(exc)) from None
