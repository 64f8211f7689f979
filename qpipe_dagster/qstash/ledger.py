"""QSTASH_DAILY_LIMIT where messages are published: a per-UTC-day count shared by every process.

QStash bills (and its free plan stops) per message per day, so the count is taken *before* a
message leaves: `reserve(n)` adds n to today's count in one transaction and refuses, naming the
count and the limit, when that would pass the limit. A refusal publishes nothing, so nothing that
QStash already accepted is lost; a message that then fails to publish is released again.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from qpipe_dagster.paths import state_paths
from qpipe_dagster.storage.sqlite_wal import enable_wal

_SCHEMA = "CREATE TABLE IF NOT EXISTS publishes (day TEXT PRIMARY KEY, count INTEGER NOT NULL)"


class DailyLimitReached(RuntimeError):
    """Publishing would pass QSTASH_DAILY_LIMIT; the message says today's count and the limit."""

    def __init__(self, used: int, wanted: int, limit: int, day: str) -> None:
        self.used, self.wanted, self.limit, self.day = used, wanted, limit, day
        super().__init__(
            f"QSTASH_DAILY_LIMIT={limit} reached: {used} message(s) already published on {day}"
            f" (UTC), {wanted} more refused; nothing was published. Wait for 00:00 UTC or raise"
            " QSTASH_DAILY_LIMIT"
        )


def ledger_path(env: Mapping[str, str] | None = None) -> Path:
    """QPIPE_PUBLISH_LEDGER, else $DAGSTER_HOME/qpipe/publishes.sqlite (`paths.state_paths`)."""
    return state_paths(env).publishes


def daily_limit(env: Mapping[str, str] | None = None) -> int | None:
    """QSTASH_DAILY_LIMIT (a whole number >= 1), None when unset or blank."""
    from qpipe_dagster.settings import env_int

    return env_int("QSTASH_DAILY_LIMIT", 1, 10**12, env)


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).date().isoformat()


class PublishLedger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        enable_wal(db)
        db.execute(_SCHEMA)
        return db

    def reserve(self, n: int, limit: int | None, now: float) -> int:
        """Count n publishes for today, or raise DailyLimitReached; returns today's new count."""
        day = _day(now)
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")  # check and add in one step across processes
            row = db.execute("SELECT count FROM publishes WHERE day = ?", (day,)).fetchone()
            used = int(row[0]) if row else 0
            if limit is not None and used + n > limit:
                db.execute("ROLLBACK")
                raise DailyLimitReached(used, n, limit, day)
            db.execute(
                "INSERT INTO publishes (day, count) VALUES (?, ?)"
                " ON CONFLICT(day) DO UPDATE SET count = count + excluded.count",
                (day, n),
            )
            db.execute("COMMIT")
            return used + n
        finally:
            db.close()

    def release(self, n: int, now: float) -> None:
        """Give back a reservation whose publish failed (QStash did not take the message)."""
        db = self._connect()
        try:
            db.execute(
                "UPDATE publishes SET count = MAX(0, count - ?) WHERE day = ?", (n, _day(now))
            )
        finally:
            db.close()

    def used(self, now: float) -> int:
        if not self.path.exists():
            return 0
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT count FROM publishes WHERE day = ?", (_day(now),)).fetchone()
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()
        return int(row[0]) if row else 0


def published_today(env: Mapping[str, str] | None, now: float) -> int:
    return PublishLedger(ledger_path(env)).used(now)


@contextmanager
def counted_publish(n: int = 1, env: Mapping[str, str] | None = None) -> Iterator[int | None]:
    """Reserve n of today's publishes for the block when QSTASH_DAILY_LIMIT is set
    (DailyLimitReached before anything is sent); a block that raises gives them back, since
    nothing was published. Without a limit nothing is counted here (the metrics then count
    QStash's deliveries to the inbox)."""
    limit = daily_limit(env)
    if limit is None:
        yield None
        return
    now = time.time()
    ledger = PublishLedger(ledger_path(env))
    used = ledger.reserve(n, limit, now)
    try:
        yield used
    except BaseException:
        ledger.release(n, now)
        raise
