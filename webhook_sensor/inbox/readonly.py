"""Read-only queries over the inbox for reports and metrics, on either backend.

The exporter and the daily report read the inbox while the receiver writes it: SQLite is opened
read-only (no lock on the writer), PostgreSQL with a short connect timeout. An inbox that does
not exist yet, or has no table yet, reads as `empty`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from webhook_sensor.inbox.records import InboxTarget, is_postgres_url

T = TypeVar("T")
Run = Callable[[str, tuple], list]
"""Runs one SQL statement with its parameters and returns every row."""
Compute = Callable[[Run, str, str], T]
"""(run, table name, parameter placeholder) -> the answer."""

SQLITE_TABLE = "messages"


def query_inbox(target: InboxTarget, compute: Compute[T], empty: T, timeout_s: float = 5.0) -> T:
    """`compute(run, table, placeholder)` against the inbox at `target`, never writing."""
    if is_postgres_url(target):
        import psycopg2  # the PostgreSQL driver only where that backend is configured

        from webhook_sensor.inbox.postgres import TABLE

        conn = psycopg2.connect(str(target), connect_timeout=max(1, round(timeout_s)))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s)", (TABLE,))
                (regclass,) = cur.fetchone() or (None,)  # one row: NULL when there is no table
                if regclass is None:
                    return empty

                def run(sql: str, params: tuple) -> list:
                    cur.execute(sql, params)
                    return cur.fetchall()

                return compute(run, TABLE, "%s")
        finally:
            conn.close()
    path = Path(target)
    if not path.exists():
        return empty
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s)
    try:
        return compute(lambda sql, params: db.execute(sql, params).fetchall(), SQLITE_TABLE, "?")
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return empty
        raise
    finally:
        db.close()
