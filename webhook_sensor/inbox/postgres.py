"""The PostgreSQL inbox backend, used when QPIPE_INBOX_URL is a postgresql:// URL.

Same semantics as the SQLite inbox: a batch is committed (synchronous_commit=on, forced per
session so a server default of `off` cannot weaken it) before the receiver answers 2xx;
`INSERT ... ON CONFLICT (message_id) DO NOTHING` de-duplicates even across several receivers,
because a concurrent insert of the same id waits for the first transaction and then does
nothing. Each process keeps one small pool per URL (`postgres_inbox`), so /metrics, /ready and
sensor ticks do not pay a new connection each. Every database error surfaces as
InboxUnavailable naming the server (never the password), so the receiver answers 503 and QStash
retries. Backups of this inbox are PostgreSQL's job (pg_dump / the server's own backups): the
`qpipe backup` snapshot covers only the SQLite inbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from qpipe_dagster.settings import redact
from webhook_sensor.inbox.records import (
    InboxDataError,
    InboxMessage,
    InboxRecord,
    InboxUnavailable,
    headers_fault,
    seed_urls_fault,
)

TABLE = "qpipe_inbox_messages"
POOL_SIZE = 4
ACQUIRE_TIMEOUT_S = 10.0

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    slug TEXT NOT NULL,
    concept_name TEXT NOT NULL,
    seed_urls JSONB NOT NULL,
    symbol TEXT,
    body BYTEA NOT NULL,
    retried INTEGER NOT NULL DEFAULT 0,
    schedule_id TEXT,
    caller_ip TEXT,
    headers JSONB NOT NULL DEFAULT '{{}}',
    received_at DOUBLE PRECISION NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    last_delivery_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    deferred_day TEXT,
    consumed_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS {TABLE}_pending ON {TABLE} (status, id);
"""
# Serialises CREATE TABLE IF NOT EXISTS between processes starting together (it is not atomic).
_SCHEMA_LOCK_KEY = 0x71706970  # "qpip"

_COLUMNS = (
    "id, message_id, slug, concept_name, seed_urls, symbol, retried, schedule_id, caller_ip,"
    " headers, received_at, deliveries, status"
)

T = TypeVar("T")


def _psycopg2() -> Any:
    try:
        import psycopg2
        import psycopg2.errors
        import psycopg2.extras
    except ImportError as exc:  # only the prod extra pulls it in
        raise InboxUnavailable(
            "QPIPE_INBOX_URL is a PostgreSQL URL but psycopg2 is not installed:"
            " pip install 'qpipe[prod]' (or psycopg2-binary)"
        ) from exc
    return psycopg2


def connect_kwargs(url: str) -> dict[str, Any]:
    """libpq parameters for `url`, with our session settings appended to any `options` given."""
    psycopg2 = _psycopg2()
    try:
        params = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError as exc:
        raise InboxUnavailable(f"QPIPE_INBOX_URL {redact(url)} is not a valid URL: {exc}") from exc
    ours = "-c synchronous_commit=on -c statement_timeout=30000"
    params["options"] = f"{params['options']} {ours}" if params.get("options") else ours
    params.setdefault("connect_timeout", "5")
    params.setdefault("application_name", "qpipe-inbox")
    return params


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Pool:
    """A blocking pool of at most `size` connections; broken ones are dropped, not reused."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.kwargs = connect_kwargs(url)
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def connect(self) -> Any:
        psycopg2 = _psycopg2()
        try:
            return psycopg2.connect(**self.kwargs)
        except psycopg2.Error as exc:
            raise InboxUnavailable(
                f"cannot connect to inbox {redact(self.url)}: {_first_line(exc)}"
            ) from exc

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        if not self._slots.acquire(timeout=ACQUIRE_TIMEOUT_S):
            raise InboxUnavailable(f"inbox {redact(self.url)}: all connections busy")
        conn = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = self.connect()
            yield conn
        except BaseException:
            if conn is not None:
                conn.close()  # state unknown after an error: never hand it out again
                conn = None
            raise
        finally:
            if conn is not None:
                with self._lock:
                    self._idle.append(conn)
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            for conn in self._idle:
                conn.close()
            self._idle.clear()


def _message(row: Sequence) -> InboxMessage:
    # JSONB comes back decoded; a hand-edited number or string is reported, not iterated
    fault = seed_urls_fault(row[4]) or headers_fault(row[9])
    return InboxMessage(
        id=row[0],
        message_id=row[1],
        slug=row[2],
        concept_name=row[3],
        seed_urls=() if fault else tuple(row[4]),
        symbol=row[5],
        retried=row[6],
        schedule_id=row[7],
        caller_ip=row[8],
        headers={} if fault else dict(row[9]),
        received_at=row[10],
        deliveries=row[11],
        status=row[12],
        fault=fault,
    )


def _write_batch(conn: Any, records: Sequence[InboxRecord]) -> list[bool]:
    """Insert new ids, count redeliveries of known ones; one transaction, two statements."""
    psycopg2 = _psycopg2()
    now = time.time()
    with conn, conn.cursor() as cur:
        inserted = psycopg2.extras.execute_values(
            cur,
            f"INSERT INTO {TABLE} (message_id, slug, concept_name, seed_urls, symbol, body,"
            " retried, schedule_id, caller_ip, headers, received_at, last_delivery_at)"
            " VALUES %s ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
            [
                (
                    r.message_id,
                    r.slug,
                    r.concept_name,
                    json.dumps(list(r.seed_urls)),
                    r.symbol,
                    psycopg2.Binary(r.body),
                    r.retried,
                    r.schedule_id,
                    r.caller_ip,
                    json.dumps(r.headers),
                    now,
                    now,
                )
                for r in records
            ],
            page_size=max(len(records), 1),
            fetch=True,
        )
        new_ids = {row[0] for row in inserted}
        results, seen = [], set()
        for r in records:
            results.append(r.message_id in new_ids and r.message_id not in seen)
            seen.add(r.message_id)
        repeats = Counter(r.message_id for r, new in zip(records, results, strict=True) if not new)
        if repeats:
            cur.execute(
                f"UPDATE {TABLE} AS m SET deliveries = m.deliveries + c.n, last_delivery_at = %s"
                " FROM unnest(%s::text[], %s::integer[]) AS c(message_id, n)"
                " WHERE m.message_id = c.message_id",
                (now, list(repeats), list(repeats.values())),
            )
    return results


class _PostgresSink:
    """The receiver's writer connection: one dedicated connection, outside the pool."""

    def __init__(self, conn: Any, where: str) -> None:
        self.conn = conn
        self.where = where

    def write(self, records: Sequence[InboxRecord]) -> list[bool]:
        psycopg2 = _psycopg2()
        try:
            return _write_batch(self.conn, records)
        except (psycopg2.DataError, psycopg2.IntegrityError, UnicodeError) as exc:
            # SQLSTATE classes 22/23, or text the client cannot encode: a value, not the server.
            raise InboxDataError(f"inbox {self.where}: {_first_line(exc)}") from exc
        except psycopg2.Error as exc:
            raise InboxUnavailable(f"inbox {self.where}: {_first_line(exc)}") from exc

    def close(self) -> None:
        self.conn.close()


class PostgresInbox:
    """The PostgreSQL backend of `InboxStore`; thread-safe, one pool per instance."""

    def __init__(self, url: str, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self._pool = _Pool(url, pool_size)
        self._run(_create_schema)

    @property
    def target(self) -> str:
        return self.url

    def describe(self) -> str:
        return redact(self.url)

    def _run(self, work: Callable[[Any], T]) -> T:
        """`work(cursor)` through this database's circuit breaker, transient errors (server
        down or restarting) retried with backoff and jitter: a PostgreSQL restart costs the
        sensor a few seconds, not a failed tick. An open breaker is InboxUnavailable at once."""
        from urllib.parse import urlsplit

        from qpipe_dagster.resilience.guard import CircuitOpenError, guarded_call

        parts = urlsplit(self.url)
        where = f"{parts.hostname}:{parts.port or 5432}{parts.path}"
        try:
            return guarded_call(f"postgres@{where}", self._run_once, work)
        except CircuitOpenError as exc:
            raise InboxUnavailable(f"inbox {self.describe()}: {exc}") from None

    def _run_once(self, work: Callable[[Any], T]) -> T:
        """`work(cursor)` in one transaction; database errors become InboxUnavailable."""
        psycopg2 = _psycopg2()
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn, conn, conn.cursor() as cur:
                    return work(cur)
            except psycopg2.errors.UndefinedTable as exc:
                if attempt == 2:
                    raise InboxUnavailable(f"inbox {self.describe()}: {_first_line(exc)}") from exc
                # dropped under us (a restore, an operator): recreate
                self._run_once(_create_schema)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                # A pooled connection the server dropped (restart, idle timeout): retry once on
                # a fresh one. Every `work` here is a read or an idempotent update.
                if attempt == 2:
                    raise InboxUnavailable(f"inbox {self.describe()}: {_first_line(exc)}") from exc
            except psycopg2.Error as exc:
                raise InboxUnavailable(f"inbox {self.describe()}: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    def open_writer(self) -> _PostgresSink:
        """A dedicated writer connection; (re)creates the table, as a reopened SQLite file would."""
        psycopg2 = _psycopg2()
        conn = self._pool.connect()
        try:
            with conn, conn.cursor() as cur:
                _create_schema(cur)
        except psycopg2.Error as exc:
            conn.close()
            raise InboxUnavailable(f"inbox {self.describe()}: {_first_line(exc)}") from exc
        return _PostgresSink(conn, self.describe())

    def append(self, record: InboxRecord) -> bool:
        """Store one delivery; True if new, False if this message id was already stored."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[InboxRecord]) -> list[bool]:
        if not records:
            return []
        psycopg2 = _psycopg2()
        try:
            with self._pool.connection() as conn:
                return _write_batch(conn, records)
        except psycopg2.Error as exc:
            raise InboxUnavailable(f"inbox {self.describe()}: {_first_line(exc)}") from exc

    def get(self, message_id: str) -> InboxMessage | None:
        def work(cur: Any) -> InboxMessage | None:
            cur.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE message_id = %s", (message_id,))
            row = cur.fetchone()
            return _message(row) if row else None

        return self._run(work)

    def pending(
        self, limit: int, *, skip_deferred_on: str | None = None, exclude: Iterable[str] = ()
    ) -> list[InboxMessage]:
        """Oldest pending messages first, leaving out those deferred on `skip_deferred_on`."""
        excluded = list(exclude)

        def work(cur: Any) -> list[InboxMessage]:
            cur.execute(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE status = 'pending'"
                " AND (%(day)s::text IS NULL OR deferred_day IS NULL OR deferred_day <> %(day)s)"
                " AND NOT (message_id = ANY(%(excluded)s::text[]))"
                " ORDER BY id LIMIT %(limit)s",
                {"day": skip_deferred_on, "excluded": excluded, "limit": int(limit)},
            )
            return [_message(r) for r in cur.fetchall()]

        return self._run(work)

    def mark_consumed(self, message_ids: Iterable[str]) -> int:
        ids = list(message_ids)
        if not ids:
            return 0

        def work(cur: Any) -> int:
            cur.execute(
                f"UPDATE {TABLE} SET status = 'consumed', consumed_at = %s"
                " WHERE message_id = ANY(%s::text[]) AND status = 'pending'",
                (time.time(), ids),
            )
            return cur.rowcount

        return self._run(work)

    def defer(self, message_ids: Iterable[str], day: str) -> None:
        """Keep messages pending but skip them for the rest of `day` (the daily cap is full)."""
        ids = list(message_ids)
        if ids:
            self._run(
                lambda cur: cur.execute(
                    f"UPDATE {TABLE} SET deferred_day = %s"
                    " WHERE message_id = ANY(%s::text[]) AND status = 'pending'",
                    (day, ids),
                )
            )

    def depth(self) -> int:
        return self._scalar(f"SELECT COUNT(*) FROM {TABLE} WHERE status = 'pending'")

    def count(self) -> int:
        return self._scalar(f"SELECT COUNT(*) FROM {TABLE}")

    def _scalar(self, sql: str) -> int:
        def work(cur: Any) -> int:
            cur.execute(sql)
            return int(cur.fetchone()[0])

        return self._run(work)

    def check_writable(self) -> None:
        """Fails on a read-only server (a standby) or a table locked against writers for 5 s."""

        def work(cur: Any) -> None:
            cur.execute("SHOW transaction_read_only")  # a standby, or default_transaction_read_only
            if cur.fetchone()[0] == "on":
                raise InboxUnavailable(f"inbox {self.describe()}: the database is read-only")
            cur.execute("SET LOCAL lock_timeout = '5s'")
            cur.execute(f"LOCK TABLE {TABLE} IN ROW EXCLUSIVE MODE")
            cur.connection.rollback()

        self._run(work)

    def close(self) -> None:
        """Close the idle pooled connections (the next call opens fresh ones)."""
        self._pool.close()


def _create_schema(cur: Any) -> None:
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
    cur.execute(_SCHEMA)


_instances: dict[tuple[str, int], PostgresInbox] = {}
_instances_lock = threading.Lock()


def postgres_inbox(url: str) -> PostgresInbox:
    """The process's inbox for `url` (its pool is shared by every caller; a fork gets its own)."""
    key = (url, os.getpid())
    with _instances_lock:
        inbox = _instances.get(key)
    if inbox is None:
        inbox = PostgresInbox(url)  # outside the lock: connecting may take seconds
        with _instances_lock:
            inbox = _instances.setdefault(key, inbox)
    return inbox
