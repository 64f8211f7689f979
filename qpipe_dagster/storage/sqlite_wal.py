"""Switching a SQLite file to WAL when several processes may open it for the first time at once."""

from __future__ import annotations

import sqlite3
import time

WAL_SWITCH_TIMEOUT_S = 30.0


def enable_wal(db: sqlite3.Connection, timeout_s: float = WAL_SWITCH_TIMEOUT_S) -> None:
    """Put the database file in WAL mode, waiting out other connections doing the same.

    WAL is a property of the file, so only the first open of a new file changes anything. That
    change needs the file to itself, and SQLite answers "database is locked" at once, without
    its busy timeout, when another connection is switching or writing at that moment: two
    receivers (or the receiver and the sensor) opening a new inbox together hit it. Retry with
    a short backoff instead of failing an open that would succeed a millisecond later.
    """
    (mode,) = db.execute("PRAGMA journal_mode").fetchall()[0]
    if str(mode).lower() == "wal":
        return
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        try:
            (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchall()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            continue
        if str(mode).lower() != "wal":  # e.g. an in-memory database: nothing to retry
            raise sqlite3.OperationalError(f"cannot switch {db!r} to WAL: journal_mode={mode}")
        return
