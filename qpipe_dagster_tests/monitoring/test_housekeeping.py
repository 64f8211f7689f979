"""Housekeeping on real inboxes (SQLite and a throwaway PostgreSQL), on a pinned clock: only
consumed rows past retention go; the queue stays. And `qpipe doctor`'s disk check."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from dagster import DagsterInstance

from qpipe_dagster.ops.housekeeping import purge_consumed, retention_days
from qpipe_dagster.settings import SettingError
from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    postgres_cluster,
    postgres_url,
)
from webhook_sensor.inbox import InboxRecord, open_inbox

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()
DAY = 86_400.0


def _record(message_id: str) -> InboxRecord:
    body = json.dumps({"concept": message_id, "urls": ["https://example.com/a"]}).encode()
    return InboxRecord(message_id, body, message_id, message_id, ("https://example.com/a",), None)


def _fill(target) -> None:
    inbox = open_inbox(target)
    with time_machine.travel(NOW - 40 * DAY, tick=False):
        for mid in ("old-done", "old-pending", "old-deferred"):
            inbox.append(_record(mid))
        inbox.mark_consumed(["old-done"])  # consumed 40 days ago
        inbox.defer(["old-deferred"], "2026-10-27")
    with time_machine.travel(NOW - 2 * DAY, tick=False):
        inbox.append(_record("new-done"))
        inbox.mark_consumed(["new-done"])  # consumed 2 days ago


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_only_consumed_rows_past_retention_are_purged(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    target = (
        request.getfixturevalue("postgres_url") if backend == "postgres" else tmp_path / "i.sqlite"
    )
    _fill(target)
    result = purge_consumed(target, before=NOW - 30 * DAY)
    assert (result.purged, result.remaining) == (1, 3)
    inbox = open_inbox(target)
    assert inbox.get("old-done") is None
    for kept in ("old-pending", "old-deferred", "new-done"):  # the queue, and recent history
        assert inbox.get(kept) is not None, kept
    assert purge_consumed(target, before=NOW - 30 * DAY).purged == 0  # idempotent
    if backend == "sqlite":
        assert result.bytes_after is not None and result.bytes_before is not None


def test_the_housekeeping_job_runs_against_the_configured_inbox(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qpipe_dagster.defs.housekeeping import inbox_housekeeping_job

    monkeypatch.delenv("QPIPE_INBOX_URL", raising=False)
    monkeypatch.delenv("QPIPE_INBOX_PATH", raising=False)
    monkeypatch.setenv("QPIPE_INBOX_RETENTION_DAYS", "7")
    _fill(dagster_home / "qpipe" / "inbox.sqlite")
    with time_machine.travel(NOW, tick=False), DagsterInstance.get() as instance:
        result = inbox_housekeeping_job.execute_in_process(instance=instance)
    assert result.success
    inbox = open_inbox(dagster_home / "qpipe" / "inbox.sqlite")
    assert inbox.get("old-done") is None and inbox.get("new-done") is not None
    assert inbox.count() == 3


def test_retention_setting_is_checked() -> None:
    assert retention_days({}) == 30
    with pytest.raises(SettingError, match=r"QPIPE_INBOX_RETENTION_DAYS='0' is invalid"):
        retention_days({"QPIPE_INBOX_RETENTION_DAYS": "0"})


def test_doctor_reports_disk_use_against_thresholds(dagster_home: Path) -> None:
    from qpipe_dagster.monitoring.state import filesystem_usage
    from qpipe_dagster.ops.doctor import FAIL, OK, WARN, check_disk

    used, total = filesystem_usage(dagster_home)
    pct = int(100 * used / total)
    env = {"DAGSTER_HOME": str(dagster_home)}
    assert check_disk({**env, "QPIPE_DISK_WARN_PERCENT": "100"}).status == OK
    warn = check_disk(
        {**env, "QPIPE_DISK_WARN_PERCENT": str(max(1, pct)), "QPIPE_DISK_FAIL_PERCENT": "100"}
    )
    assert warn.status == WARN
    assert f"warn at {max(1, pct)}%, fail at 100%" in warn.detail and "assets " in warn.detail
    fail = check_disk(
        {**env, "QPIPE_DISK_WARN_PERCENT": "1", "QPIPE_DISK_FAIL_PERCENT": str(max(1, pct))}
    )
    assert fail.status == FAIL
