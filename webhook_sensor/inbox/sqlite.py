"""The SQLite inbox: one file (WAL, synchronous=FULL), the default under DAGSTER_HOME.

De-duplication is the UNIQUE message_id column; a batch is one transaction, committed before the
receiver answers 2xx.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from json.encoder import encode_basestring_ascii as _quote  # json's own C encoder
from pathlib import Path

from qpipe_dagster.storage.sqlite_wal import enable_wal
from webhook_sensor.inbox.records import (
    InboxDataError,
    InboxMessage,
    InboxRecord,
    InboxUnavailable,
    headers_fault,
    seed_urls_fault,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    slug TEXT NOT NULL,
    concept_name TEXT NOT NULL,
    seed_urls TEXT NOT NULL,
    symbol TEXT,
    body BLOB NOT NULL,
    retried INTEGER NOT NULL DEFAULT 0,
    schedule_id TEXT,
    caller_ip TEXT,
    headers TEXT NOT NULL DEFAULT '{}',
    received_at REAL NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    last_delivery_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    deferred_day TEXT,
    consumed_at REAL
);
CREATE INDEX IF NOT EXISTS messages_pending ON messages (status, id);
"""


# What SQLite (and its Python binding) raise for a value rather than for the database.
_SQLITE_DATA_ERRORS = (OverflowError, UnicodeError, sqlite3.DataError, sqlite3.IntegrityError)


MIN_SQLITE = (3, 35, 0)  # INSERT ... RETURNING


def connect(path: Path) -> sqlite3.Connection:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise InboxUnavailable(
            f"the SQLite inbox needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; this"
            f" Python links {sqlite3.sqlite_version} (use a newer Python build, or QPIPE_INBOX_URL)"
        )
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=30000")
    enable_wal(db)
    db.execute("PRAGMA synchronous=FULL")
    return db


_INSERT_COLUMNS = (
    "message_id, slug, concept_name, seed_urls, symbol, body, retried, schedule_id, caller_ip,"
    " headers, received_at, last_delivery_at"
)
# Rows per INSERT statement: 64 x 12 parameters stays under SQLite's oldest variable limit (999).
_ROWS_PER_INSERT = 64


@lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_sql(rows: int) -> str:
    """One INSERT for `rows` records; RETURNING names the ones that were new (SQLite >= 3.35)."""
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    return (
        f"INSERT OR IGNORE INTO messages ({_INSERT_COLUMNS}) VALUES {values} RETURNING message_id"
    )


def _json_strings(items: Sequence[str]) -> str:
    """`json.dumps(list(items))` for strings, without the encoder's Python-level dispatch: this
    runs for every delivery in the writer."""
    return "[" + ", ".join(map(_quote, items)) + "]"


def _json_string_map(mapping: dict[str, str]) -> str:
    """`json.dumps(mapping)` for a str -> str mapping (see `_json_strings`)."""
    return "{" + ", ".join(f"{_quote(k)}: {_quote(v)}" for k, v in mapping.items()) + "}"


def _write_batch(db: sqlite3.Connection, records: Sequence[InboxRecord]) -> list[bool]:
    """Commit `records` in one transaction; True for each one stored new, False for a repeat.

    One multi-row statement per 64 records rather than one per record: a handful of calls into
    SQLite per batch instead of two per row.
    """
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    try:
        inserted: set[str] = set()
        for start in range(0, len(records), _ROWS_PER_INSERT):
            chunk = records[start : start + _ROWS_PER_INSERT]
            params: list = []
            for rec in chunk:
                params += (
                    rec.message_id, rec.slug, rec.concept_name, _json_strings(rec.seed_urls),
                    rec.symbol, rec.body, rec.retried, rec.schedule_id, rec.caller_ip,
                    _json_string_map(rec.headers), now, now,
                )  # fmt: skip
            inserted.update(row[0] for row in db.execute(_insert_sql(len(chunk)), params))
        results = []
        repeats = []
        for rec in records:
            if rec.message_id in inserted:
                inserted.discard(rec.message_id)  # a second copy in this batch is a repeat
                results.append(True)
            else:
                results.append(False)
                repeats.append((now, rec.message_id))
        if repeats:
            db.executemany(
                "UPDATE messages SET deliveries = deliveries + 1, last_delivery_at = ?"
                " WHERE message_id = ?",
                repeats,
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return results


_COLUMNS = (
    "id, message_id, slug, concept_name, seed_urls, symbol, retried, schedule_id, caller_ip,"
    " headers, received_at, deliveries, status"
)


def _json_column(name: str, raw: object, check: Callable[[object], str | None]) -> tuple:
    """(value, fault) for a JSON text column; a damaged value is reported, never raised."""
    try:
        value = json.loads(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:  # not text, not JSON, bad UTF-8
        return None, f"{name} is not valid JSON ({type(exc).__name__}: {exc})"[:300]
    return value, check(value)


def _row(row: Sequence) -> InboxMessage:
    seed_urls, fault = _json_column("seed_urls", row[4], seed_urls_fault)
    headers, headers_bad = _json_column("headers", row[9], headers_fault)
    fault = fault or headers_bad
    return InboxMessage(
        id=row[0],
        message_id=row[1],
        slug=row[2],
        concept_name=row[3],
        seed_urls=() if fault else tuple(seed_urls),
        symbol=row[5],
        retried=row[6],
        schedule_id=row[7],
        caller_ip=row[8],
        headers={} if fault else headers,
        received_at=row[10],
        deliveries=row[11],
        status=row[12],
        fault=fault,
    )


class Inbox:
    """The SQLite backend: safe across processes (WAL); each call opens its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise InboxUnavailable(f"cannot open inbox {self.path}: {exc}") from exc

    @property
    def target(self) -> Path:
        return self.path

    def describe(self) -> str:
        return str(self.path)

    def _db(self) -> _Conn:
        return _Conn(self.path)

    def open_writer(self) -> _SqliteSink:
        return _SqliteSink(connect(self.path), self.path)

    def append(self, record: InboxRecord) -> bool:
        """Store one delivery; True if new, False if this message id was already stored."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[InboxRecord]) -> list[bool]:
        with self._db() as db:
            return _write_batch(db, records)

    def get(self, message_id: str) -> InboxMessage | None:
        with self._db() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE message_id = ?", (message_id,)
            ).fetchone()
        return _row(row) if row else None

    def pending(
        self, limit: int, *, skip_deferred_on: str | None = None, exclude: Iterable[str] = ()
    ) -> list[InboxMessage]:
        """Oldest pending messages first, leaving out those deferred on `skip_deferred_on`."""
        excluded = list(exclude)
        marks = ",".join("?" * len(excluded))
        sql = f"SELECT {_COLUMNS} FROM messages WHERE status = 'pending'"
        params: list = []
        if skip_deferred_on is not None:
            sql += " AND (deferred_day IS NULL OR deferred_day != ?)"
            params.append(skip_deferred_on)
        if excluded:
            sql += f" AND message_id NOT IN ({marks})"
            params.extend(excluded)
        sql += " ORDER BY id LIMIT ?"
        params.append(int(limit))
        with self._db() as db:
            return [_row(r) for r in db.execute(sql, params).fetchall()]

    def mark_consumed(self, message_ids: Iterable[str]) -> int:
        ids = list(message_ids)
        if not ids:
            return 0
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            n = sum(
                db.execute(
                    "UPDATE messages SET status = 'consumed', consumed_at = ?"
                    " WHERE message_id = ? AND status = 'pending'",
                    (time.time(), mid),
                ).rowcount
                for mid in ids
            )
            db.execute("COMMIT")
        return n

    def defer(self, message_ids: Iterable[str], day: str) -> None:
        """Keep messages pending but skip them for the rest of `day` (the daily cap is full)."""
        with self._db() as db:
            db.executemany(
                "UPDATE messages SET deferred_day = ? WHERE message_id = ? AND status = 'pending'",
                [(day, mid) for mid in message_ids],
            )

    def depth(self) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM messages WHERE status = 'pending'").fetchone()[
                0
            ]

    def count(self) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    def check_writable(self) -> None:
        """Take and release the write lock: proves the file is writable and not wedged."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _SqliteSink:
    """The writer's connection. An open SQLite connection keeps writing to its file after the
    file is deleted or replaced (a restore, an operator's `rm`): those deliveries would be
    acknowledged yet land where no sensor reads. So after each commit the path must still be
    the file that was opened; if not, the batch fails (503, QStash redelivers) and the writer
    reopens the path for the next one."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self.file_id = _file_id(path)

    def write(self, records: Sequence[InboxRecord]) -> list[bool]:
        try:
            results = _write_batch(self.db, records)
        except _SQLITE_DATA_ERRORS as exc:
            raise InboxDataError(f"{type(exc).__name__}: {exc}") from exc
        if _file_id(self.path) != self.file_id:
            raise InboxUnavailable(
                f"inbox {self.path} was deleted or replaced while the receiver had it open; "
                "this batch went to the old file and will be redelivered, the next one opens "
                "the new file"
            )
        return results

    def close(self) -> None:
        self.db.close()


class _Conn:
    def __init__(self, path: Path) -> None:
        self.db = connect(path)

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()
