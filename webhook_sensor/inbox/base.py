"""The inbox interface (`InboxStore`, `BatchSink`) and `open_inbox`, which picks the backend:
a SQLite file (WAL, synchronous=FULL; the default, under DAGSTER_HOME) or PostgreSQL when the
target is a `postgresql://` URL. psycopg2 itself is imported only when a PostgreSQL inbox opens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from webhook_sensor.inbox.postgres import postgres_inbox, redact
from webhook_sensor.inbox.records import InboxMessage, InboxRecord, InboxTarget, is_postgres_url
from webhook_sensor.inbox.sqlite import Inbox


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


def describe_target(target: InboxTarget) -> str:
    """`target` as it is safe to log: a PostgreSQL URL loses its password."""
    if is_postgres_url(target):
        return redact(str(target))
    return str(target)


def open_inbox(target: InboxTarget) -> InboxStore:
    """The inbox at `target`: a SQLite file path, or a postgresql:// URL (pooled, per process)."""
    if is_postgres_url(target):
        return postgres_inbox(str(target))
    return Inbox(Path(target))
