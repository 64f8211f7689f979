"""Durable inbox: accepted deliveries are committed to disk before the receiver answers 2xx.

Two backends behind one interface (`InboxStore`), picked by `open_inbox(target)`: a SQLite file
(WAL, synchronous=FULL; the default, under DAGSTER_HOME) or PostgreSQL when the target is a
`postgresql://` URL (`webhook_sensor.inbox_postgres`). The receiver writes through
`inbox_process.ProcessCommitWriter`, whose child process commits all deliveries waiting at that
moment in one transaction (group commit) so throughput does not cost durability. The sensor reads and marks rows through
the store. De-duplication is the UNIQUE message_id column.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from json.encoder import encode_basestring_ascii as _quote  # json's own C encoder
from pathlib import Path
from typing import Protocol

from qpipe_dagster.storage.sqlite_wal import enable_wal

# A SQLite file path, or a postgresql:// URL (see `is_postgres_url`).
InboxTarget = Path | str

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


class InboxUnavailable(RuntimeError):
    """The inbox cannot be written right now; the delivery must be retried (HTTP 503)."""


class InboxDataError(InboxUnavailable):
    """The store refused a record's values (an integer out of range, text it cannot encode),
    not the connection. The writer then retries its batch record by record, so one record the
    store cannot hold fails alone instead of failing every delivery committed beside it."""


# What SQLite (and its Python binding) raise for a value rather than for the database.
_SQLITE_DATA_ERRORS = (OverflowError, UnicodeError, sqlite3.DataError, sqlite3.IntegrityError)


@dataclass(frozen=True)
class InboxRecord:
    """One accepted delivery, as the receiver stores it."""

    message_id: str
    body: bytes
    slug: str
    concept_name: str
    seed_urls: tuple[str, ...]
    symbol: str | None
    retried: int = 0
    schedule_id: str | None = None
    caller_ip: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InboxMessage:
    """A stored message as the sensor sees it."""

    id: int
    message_id: str
    slug: str
    concept_name: str
    seed_urls: tuple[str, ...]
    symbol: str | None
    retried: int
    schedule_id: str | None
    caller_ip: str | None
    headers: dict[str, str]
    received_at: float
    deliveries: int
    status: str
    # Why a stored row could not be read back whole (a hand edit, a damaged file), else None.
    # Such a message comes back with empty seed_urls/headers so one bad row never blocks the
    # inbox; the sensor rejects it alone, naming the message id and this reason.
    fault: str | None = None


def seed_urls_fault(value: object) -> str | None:
    """Why a decoded `seed_urls` value is not a list of strings, or None."""
    if not isinstance(value, list):
        return f"seed_urls is {type(value).__name__}, not a list of URLs"
    for i, url in enumerate(value):
        if not isinstance(url, str):
            return f"seed_urls[{i}] is {type(url).__name__}, not a URL string"
    return None


def headers_fault(value: object) -> str | None:
    """Why a decoded `headers` value is not an object of strings, or None."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return f"headers is {type(value).__name__}, not an object of strings"
    return None


class BatchSink(Protocol):
    """One writer connection: commits a batch atomically (all or nothing) before returning."""

    def write(self, records: Sequence[InboxRecord]) -> list[bool]: ...

    def close(self) -> None: ...


class InboxStore(Protocol):
    """What the receiver, the sensor and operators need from an inbox, whatever the backend."""

    @property
    def target(self) -> InboxTarget: ...

    def describe(self) -> str:
        """Where the inbox lives, safe to log (no password)."""
        ...

    def append(self, record: InboxRecord) -> bool: ...

    def append_many(self, records: Sequence[InboxRecord]) -> list[bool]: ...

    def get(self, message_id: str) -> InboxMessage | None: ...

    def pending(
        self, limit: int, *, skip_deferred_on: str | None = None, exclude: Iterable[str] = ()
    ) -> list[InboxMessage]: ...

    def mark_consumed(self, message_ids: Iterable[str]) -> int: ...

    def defer(self, message_ids: Iterable[str], day: str) -> None: ...

    def depth(self) -> int: ...

    def count(self) -> int: ...

    def check_writable(self) -> None: ...

    def open_writer(self) -> BatchSink: ...


def is_postgres_url(target: InboxTarget) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def describe_target(target: InboxTarget) -> str:
    """`target` as it is safe to log: a PostgreSQL URL loses its password."""
    if is_postgres_url(target):
        from webhook_sensor.inbox_postgres import redact

        return redact(str(target))
    return str(target)


def open_inbox(target: InboxTarget) -> InboxStore:
    """The inbox at `target`: a SQLite file path, or a postgresql:// URL (pooled, per process)."""
    if is_postgres_url(target):
        from webhook_sensor.inbox_postgres import postgres_inbox

        return postgres_inbox(str(target))
    return Inbox(Path(target))


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

    def open_writer(self) -> BatchSink:
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


class Committer:
    """Commits batches to one inbox target (in the child of `inbox_process.ProcessCommitWriter`).

    The store is opened on first use and reopened after a failure, so a transient problem heals
    without a restart. A batch whose values the store refuses is retried record by record, so
    only the record it cannot hold fails.
    """

    def __init__(self, target: InboxTarget) -> None:
        self.target: InboxTarget = target if is_postgres_url(target) else Path(target)
        self._sink: BatchSink | None = None

    def _open(self) -> BatchSink:
        if self._sink is None:
            # Creates the file/table if needed, or raises InboxUnavailable.
            self._sink = open_inbox(self.target).open_writer()
        return self._sink

    def _drop_sink(self) -> None:
        if self._sink is not None:
            # A broken connection may fail to close; it is dropped either way.
            with contextlib.suppress(Exception):
                self._sink.close()
            self._sink = None

    def close(self) -> None:
        self._drop_sink()

    def _write(self, records: list[InboxRecord]) -> tuple[list, list]:
        """(results, errors) per record; a failed write commits nothing of what it was given."""
        try:
            return self._open().write(records), [None] * len(records)
        except Exception as exc:
            if not isinstance(exc, InboxDataError):  # after a refused value it rolled back: keep it
                self._drop_sink()
            error = exc if isinstance(exc, InboxUnavailable) else InboxUnavailable(str(exc))
            return [None] * len(records), [error] * len(records)

    def commit(self, records: list[InboxRecord]) -> list[tuple[bool | None, Exception | None]]:
        """(stored new?, error) per record, in order."""
        results, errors = self._write(records)
        if len(records) > 1 and isinstance(errors[0], InboxDataError):
            # Some record's values were refused: commit them one by one, so only that one fails.
            # Stop at the first failure that is not about data (the store itself is in trouble).
            results, errors = [], []
            for i, rec in enumerate(records):
                result, error = self._write([rec])
                if error[0] is not None and not isinstance(error[0], InboxDataError):
                    results += [None] * (len(records) - i)
                    errors += [error[0]] * (len(records) - i)
                    break
                results += result
                errors += error
        return list(zip(results, errors, strict=True))
