"""Housekeeping: consumed inbox rows are purged after QPIPE_INBOX_RETENTION_DAYS, and the file
or table is compacted (SQLite VACUUM, PostgreSQL VACUUM ANALYZE), so the inbox stays the size of
its queue instead of every message ever delivered.

Only `consumed` rows older than the retention are removed: pending and deferred messages are the
queue and are never touched, whatever their age. Runs daily from `inbox_housekeeping_schedule`
(QPIPE_HOUSEKEEPING_CRON) or by hand with the `inbox_housekeeping` job.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qpipe_dagster.settings import env_int
from webhook_sensor.inbox import InboxTarget, is_postgres_url

DEFAULT_RETENTION_DAYS = 30


def retention_days(env: Mapping[str, str] | None = None) -> int:
    """QPIPE_INBOX_RETENTION_DAYS (1 to 3650), 30 when unset."""
    value = env_int("QPIPE_INBOX_RETENTION_DAYS", 1, 3650, env)
    return DEFAULT_RETENTION_DAYS if value is None else value


@dataclass(frozen=True)
class PurgeResult:
    target: str
    purged: int
    remaining: int
    bytes_before: int | None  # SQLite file size around the VACUUM (None for PostgreSQL)
    bytes_after: int | None


def purge_consumed(target: InboxTarget, *, before: float) -> PurgeResult:
    """Delete consumed rows whose consumed_at is before `before` (epoch s), then compact."""
    if is_postgres_url(target):
        return _purge_postgres(str(target), before)
    return _purge_sqlite(Path(target), before)


def _purge_sqlite(path: Path, before: float) -> PurgeResult:
    if not path.exists():
        return PurgeResult(str(path), 0, 0, None, None)
    size = path.stat().st_size
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        purged = db.execute(
            "DELETE FROM messages WHERE status = 'consumed' AND consumed_at < ?", (before,)
        ).rowcount
        db.execute("COMMIT")
        if purged:
            db.execute("VACUUM")  # gives the pages back to the filesystem (brief exclusive lock)
        remaining = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    finally:
        db.close()
    return PurgeResult(str(path), purged, remaining, size, path.stat().st_size)


def _purge_postgres(url: str, before: float) -> PurgeResult:
    import psycopg2

    from webhook_sensor.inbox.postgres import TABLE, connect_kwargs, redact

    conn = psycopg2.connect(**connect_kwargs(url))
    try:
        conn.autocommit = True  # VACUUM cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (TABLE,))
            if cur.fetchone()[0] is None:
                return PurgeResult(redact(url), 0, 0, None, None)
            cur.execute(
                f"DELETE FROM {TABLE} WHERE status = 'consumed' AND consumed_at < %s", (before,)
            )
            purged = cur.rowcount
            if purged:
                cur.execute(f"VACUUM (ANALYZE) {TABLE}")
            cur.execute(f"SELECT COUNT(*) FROM {TABLE}")
            remaining = cur.fetchone()[0]
    finally:
        conn.close()
    return PurgeResult(redact(url), purged, int(remaining), None, None)
