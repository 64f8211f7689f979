"""What an inbox holds and what it raises, whatever the backend: records, messages, errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# A SQLite file path, or a postgresql:// URL (see `is_postgres_url`).
InboxTarget = Path | str


class InboxUnavailable(RuntimeError):
    """The inbox cannot be written right now; the delivery must be retried (HTTP 503)."""


class InboxDataError(InboxUnavailable):
    """The store refused a record's values (an integer out of range, text it cannot encode),
    not the connection. The writer then retries its batch record by record, so one record the
    store cannot hold fails alone instead of failing every delivery committed beside it."""


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


def is_postgres_url(target: InboxTarget) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))
