"""Schedules evaluated against a real Dagster instance; backup job and report run in-process."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    DagsterRunStatus,
    RunRequest,
    build_schedule_context,
    materialize,
)
from dagster._core.test_utils import create_run_for_test

from qpipe_dagster.concepts import Concept, default_registry
from qpipe_dagster.defs import operations
from qpipe_dagster.defs.partitions import concepts_partitions
from qpipe_dagster.ops.targets import LocalTarget
from qpipe_dagster_tests.ops.helpers import fill_stores


@pytest.fixture
def instance(dagster_home: Path):
    with DagsterInstance.get() as inst:
        yield inst


def _concepts(instance: DagsterInstance, *slugs: str, seeds: bool = True) -> None:
    registry = default_registry()
    for slug in slugs:
        urls = (f"https://example.com/{slug}",) if seeds else ()
        registry.upsert(Concept(slug, slug, urls))
    instance.add_dynamic_partitions(concepts_partitions.name, list(slugs))


def _crawled(instance: DagsterInstance, slug: str) -> None:
    instance.report_runless_asset_event(
        AssetMaterialization(asset_key="crawled_pages", partition=slug)
    )


def _repository(*schedules):
    """The project's real Definitions with the schedules under test in place of its own."""
    from dagster import Definitions

    from qpipe_dagster.definitions import defs

    return Definitions(
        assets=defs.assets,
        jobs=defs.jobs,
        sensors=defs.sensors,
        resources=defs.resources,
        schedules=list(schedules),
    ).get_repository_def()


def _evaluate(schedule, instance, at: datetime):
    with build_schedule_context(
        instance=instance, scheduled_execution_time=at, repository_def=_repository(schedule)
    ) as ctx:
        return schedule.evaluate_tick(ctx)


def test_recrawl_requests_only_stale_concepts_oldest_first(instance) -> None:
    _concepts(instance, "fresh", "old", "never")
    _concepts(instance, "ui-only", seeds=False)
    _crawled(instance, "old")
    time.sleep(0.05)
    _crawled(instance, "fresh")
    sched = operations.build_recrawl_schedule({"QPIPE_RECRAWL_MAX_AGE_HOURS": "24"})
    assert sched.cron_schedule == "*/15 * * * *"
    now = datetime.now(UTC)

    result = _evaluate(sched, instance, now + timedelta(hours=1))
    assert [r.partition_key for r in result.run_requests] == ["never"]

    later = now + timedelta(hours=25)
    result = _evaluate(sched, instance, later)
    keys = [r.partition_key for r in result.run_requests]
    assert keys == ["never", "old", "fresh"]  # never crawled first, then oldest
    window = int(later.timestamp() // (24 * 3600))
    assert result.run_requests[1].run_key == f"recrawl:old:{window}"
    assert result.run_requests[1].tags["qpipe/trigger"] == "recrawl"

    # cap per tick, and no second run for a concept that is already running
    capped = operations.build_recrawl_schedule({"QPIPE_RECRAWL_MAX_PER_TICK": "1"})
    create_run_for_test(
        instance,
        job_name="concept_pipeline",
        status=DagsterRunStatus.STARTED,
        tags={"dagster/partition": "never"},
    )
    result = _evaluate(capped, instance, later)
    assert [r.partition_key for r in result.run_requests] == ["old"]


def test_recrawl_skips_with_reason_when_all_fresh(instance) -> None:
    _concepts(instance, "a")
    _concepts(instance, "ui-only", seeds=False)
    _crawled(instance, "a")
    sched = operations.build_recrawl_schedule({})
    result = _evaluate(sched, instance, datetime.now(UTC) + timedelta(minutes=15))
    assert not result.run_requests
    assert "no concept older than 1 day" in result.skip_message
    assert "skipped without seed URLs: ui-only" in result.skip_message


def _statements(fn) -> int:
    """SQL statements the Dagster instance's engines send while `fn` runs."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    sent = []
    listener = lambda *_: sent.append(1)  # noqa: E731
    event.listen(Engine, "before_cursor_execute", listener)
    try:
        fn()
    finally:
        event.remove(Engine, "before_cursor_execute", listener)
    return len(sent)


def test_recrawl_tick_queries_do_not_grow_with_concepts(instance) -> None:
    """One history query per concept made a 1,000-concept tick take 4.7 s (issue 18)."""
    sched = operations.build_recrawl_schedule({"QPIPE_RECRAWL_MAX_PER_TICK": "1"})
    crawled_at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # the events' timestamps
    at = crawled_at + timedelta(hours=1)  # within the 24 h window: crawled concepts are fresh
    counts = []
    for batch in (["c0", "c1", "c2"], [f"c{i}" for i in range(3, 40)]):
        _concepts(instance, *batch)
        with time_machine.travel(crawled_at, tick=True):
            for slug in batch[1:]:  # the first of each batch was never crawled: stale
                _crawled(instance, slug)
        counts.append(_statements(lambda: _evaluate(sched, instance, at)))
    result = _evaluate(sched, instance, at)
    assert [r.partition_key for r in result.run_requests] == ["c0"]  # never crawled, first
    assert counts[0] == counts[1], counts


def test_schedule_env_errors_name_the_variable() -> None:
    with pytest.raises(ValueError, match=r"QPIPE_RECRAWL_CRON='every 5 min'.*fields"):
        operations.build_recrawl_schedule({"QPIPE_RECRAWL_CRON": "every 5 min"})
    with pytest.raises(ValueError, match="QPIPE_RECRAWL_MAX_AGE_HOURS='soon' is not a number"):
        operations.build_recrawl_schedule({"QPIPE_RECRAWL_MAX_AGE_HOURS": "soon"})
    with pytest.raises(ValueError, match=r"QPIPE_BACKUP_CRON='0 25 \* \* \*'.*hour"):
        operations.build_nightly_backup_schedule({"QPIPE_BACKUP_CRON": "0 25 * * *"})
    with pytest.raises(ValueError, match="QPIPE_BACKUP_RETENTION_DAYS='0' must be at least 1"):
        operations.build_nightly_backup_schedule({"QPIPE_BACKUP_RETENTION_DAYS": "0"})
    assert operations.build_recrawl_schedule({"QPIPE_RECRAWL_CRON": "0 */2 * * 1-5"})


def test_nightly_backup_schedule_and_job(instance, dagster_home: Path, tmp_path: Path) -> None:
    sched = operations.build_nightly_backup_schedule({"QPIPE_BACKUP_RETENTION_DAYS": "3"})
    assert sched.cron_schedule == "0 3 * * *"
    at = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    result = _evaluate(sched, instance, at)
    (request,) = result.run_requests
    assert isinstance(request, RunRequest)
    assert request.run_key == "backup:2026-11-23"
    assert request.run_config["ops"]["backup_stores"]["config"]["retention_days"] == 3

    fill_stores(dagster_home)
    run_config = {
        "ops": {
            "backup_stores": {"config": {"target_url": str(tmp_path / "bk"), "retention_days": 3}}
        }
    }
    out = operations.nightly_backup_job.execute_in_process(instance=instance, run_config=run_config)
    assert out.success
    (backup_id,) = LocalTarget(tmp_path / "bk").list_ids()
    obs = [
        e.event_specific_data.asset_observation
        for e in out.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert obs[0].metadata["backup_id"].value == backup_id


def test_nightly_backup_job_fails_with_the_target_named(instance, tmp_path: Path) -> None:
    run_config = {"ops": {"backup_stores": {"config": {"target_url": "ftp://nowhere/x"}}}}
    out = operations.nightly_backup_job.execute_in_process(
        instance=instance, run_config=run_config, raise_on_error=False
    )
    assert not out.success
    failure = out.failure_data_for_node("backup_stores")
    assert "unsupported scheme 'ftp'" in str(failure.error)


def test_daily_report(instance, dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSTASH_DAILY_LIMIT", "3")  # fill_stores received 3 deliveries
    monkeypatch.setenv("MAX_CONCEPTS_PER_DAY", "10")
    fill_stores(dagster_home)
    create_run_for_test(
        instance,
        job_name="concept_pipeline",
        status=DagsterRunStatus.SUCCESS,
        tags={"dagster/partition": "btc-halving", "qpipe/trigger": "qstash"},
    )
    create_run_for_test(
        instance,
        job_name="concept_pipeline",
        status=DagsterRunStatus.FAILURE,
        tags={"dagster/partition": "eth-merge", "qpipe/trigger": "qstash"},
    )
    for slug, sharpe in (("btc-halving", 1.7), ("eth-merge", 0.4)):
        instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key="backtest_results",
                partition=slug,
                metadata={"best_sharpe": sharpe, "best_total_return": 0.1, "best_fast": 5,
                          "best_slow": 20},
            )
        )  # fmt: skip
    result = materialize(operations.OPERATIONS_ASSETS, instance=instance)
    assert result.success
    mat = result.asset_materializations_for_node("daily_ops_report")[0]
    report = mat.metadata["json"].value
    assert report["runs"]["succeeded"] == 1 and report["runs"]["failed"] == 1
    assert report["concepts_processed"] == ["btc-halving"]
    assert report["messages"]["received"] == 3
    assert report["messages"]["runs_failed_from_qstash"] == 1
    assert report["caps"]["QSTASH_DAILY_LIMIT"] == {
        "used": 3,
        "limit": 3,
        "percent": 100.0,
        "over": True,
    }
    # the cap counts what the QStash sensor let through today (none here: no tick ran); it used
    # to count every concept with a run, recrawls included, and showed a false OVER CAP
    assert report["caps"]["MAX_CONCEPTS_PER_DAY"]["used"] == 0
    assert [b["concept"] for b in report["top_backtests"]] == ["btc-halving", "eth-merge"]
    assert "OVER CAP" in mat.metadata["report"].value


def test_definitions_load_with_operations() -> None:
    """The shipped Definitions carry the operations schedules, jobs and report asset."""
    from qpipe_dagster.definitions import defs

    repo = defs.get_repository_def()
    names = {s.name for s in repo.schedule_defs}
    assert names == {
        "recrawl_schedule",
        "nightly_backup_schedule",
        "daily_report_schedule",
        "inbox_housekeeping_schedule",
    }
    assert repo.has_job("nightly_backup") and repo.has_job("daily_report")


@pytest.mark.parametrize(
    ("build", "name", "value", "message"),
    [
        # old: truncated silently to 2 while the start-up check called it invalid
        ("recrawl", "QPIPE_RECRAWL_MAX_PER_TICK", "2.5", "must be a whole number"),
        ("backup", "QPIPE_BACKUP_RETENTION_DAYS", "2.5", "must be a whole number"),
        ("backup", "QPIPE_BACKUP_RETENTION_DAYS", "1e1", "must be a whole number"),
        # old: OverflowError / ValueError 'cannot convert float ... to integer'
        ("recrawl", "QPIPE_RECRAWL_MAX_AGE_HOURS", "inf", r">= 0.01 and <= 1000000 \(hours\)"),
        ("recrawl", "QPIPE_RECRAWL_MAX_PER_TICK", "nan", "must be a whole number"),
        # old: DagsterInvalidDefinitionError naming the schedule, not the variable
        ("backup", "QPIPE_BACKUP_CRON", "0 3 * * 1/0", "a step of 0 selects nothing"),
        ("report", "QPIPE_REPORT_CRON", "30 6 30 2 *", "never occurs in month field '2'"),
    ],
)
def test_schedule_settings_are_read_as_the_startup_check_reads_them(
    build: str, name: str, value: str, message: str
) -> None:
    from qpipe_dagster.ops.env import env_problems

    builder = {
        "recrawl": operations.build_recrawl_schedule,
        "backup": operations.build_nightly_backup_schedule,
        "report": operations.build_daily_report_schedule,
    }[build]
    with pytest.raises(ValueError, match=rf"^{name}={re.escape(repr(value))} .*{message}"):
        builder({name: value})
    assert [p for p in env_problems("local", {name: value}) if p.startswith(f"{name}=")]


def test_caps_read_at_run_time_follow_the_startup_rule(
    instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qpipe_dagster.defs.triggers import max_concepts_per_day

    monkeypatch.setenv("MAX_CONCEPTS_PER_DAY", "²")  # old: bare "invalid literal for int()"
    with pytest.raises(ValueError, match=r"^MAX_CONCEPTS_PER_DAY='²' must be a whole number"):
        max_concepts_per_day()
    monkeypatch.setenv("MAX_CONCEPTS_PER_DAY", " 0 ")  # 0 pauses new concepts
    assert max_concepts_per_day() == 0

    # old: QSTASH_DAILY_LIMIT=0 passed here (the start-up check refuses it) and showed a cap
    # of 0 that was never "over"
    monkeypatch.setenv("QSTASH_DAILY_LIMIT", "0")
    result = materialize(operations.OPERATIONS_ASSETS, instance=instance, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("daily_ops_report")
    assert "QSTASH_DAILY_LIMIT='0' must be a whole number >= 1" in str(failure.error)
