"""Which sensor works on which inbox message: a claim with a lease, in the inbox's PostgreSQL.

Two deployments (two daemons' worth of qstash_inbox_sensor) reading one PostgreSQL inbox both
see the same pending messages until one of them marks them consumed, one tick later; Dagster's
run-key check does not span deployments and is not atomic within one. Before a tick turns a
message into a run it claims it: one `INSERT ... ON CONFLICT ... WHERE` per batch, which
PostgreSQL applies row by row under the row lock, so of two concurrent claimers exactly one gets
each message. The sensor offers a few batches' worth of pending ids and takes up to one batch of
those no one else holds, so two sensors split a burst instead of queueing behind one another. A
claim lasts `lease_s` (database clock, so hosts' clocks do not matter); the
owner may renew it, and anyone may take it once it has run out, so the messages of a deployment
that died between claiming and running are picked up by another after the lease.

A SQLite inbox lives on one host with one daemon: every message counts as claimed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_LEASE_S = 300.0
TABLE = "qpipe_inbox_claims"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    message_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    claimed_until TIMESTAMPTZ NOT NULL
)"""
_CLAIM = f"""
WITH free AS (
    SELECT w.m FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS w(m, ord)
    LEFT JOIN {TABLE} c ON c.message_id = w.m
    WHERE c.message_id IS NULL OR c.owner = %(owner)s OR c.claimed_until < now()
    ORDER BY w.ord
    LIMIT %(limit)s
)
INSERT INTO {TABLE} (message_id, owner, claimed_until)
SELECT m, %(owner)s, now() + make_interval(secs => %(lease)s) FROM free
ON CONFLICT (message_id) DO UPDATE
    SET owner = EXCLUDED.owner, claimed_until = EXCLUDED.claimed_until
    WHERE {TABLE}.owner = EXCLUDED.owner OR {TABLE}.claimed_until < now()
RETURNING message_id"""
# claims of consumed messages are only history after their lease; a day keeps the table small
_SWEEP = f"DELETE FROM {TABLE} WHERE claimed_until < now() - interval '1 day'"


class ClaimError(RuntimeError):
    """The claims table could not be used; names the database (no password) and the cause."""


def _is_postgres(target: Path | str) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}"


def claim(
    target: Path | str,
    message_ids: Sequence[str],
    owner: str,
    *,
    limit: int,
    lease_s: float = DEFAULT_LEASE_S,
) -> set[str]:
    """Up to `limit` of `message_ids`, first ones first, that `owner` now holds: those free or
    already its own (for a SQLite inbox simply the first `limit`). Ids another owner holds are
    passed over, so a sensor handed more ids than it may run still finds work."""
    if not message_ids or not _is_postgres(target):
        return set(message_ids[:limit])
    if not owner or lease_s <= 0:
        raise ValueError(f"a claim needs an owner and a positive lease, got {owner!r}, {lease_s}")
    import psycopg2

    try:
        conn = psycopg2.connect(str(target), connect_timeout=10)
    except psycopg2.Error as exc:
        raise ClaimError(f"inbox claims at {_where(str(target))}: cannot connect ({exc})") from None
    try:
        with conn, conn.cursor() as cur:
            # two first ticks at once would race CREATE TABLE IF NOT EXISTS (pg_type clash)
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
            cur.execute(_SCHEMA)
            cur.execute(_SWEEP)
            cur.execute(
                _CLAIM,
                {"ids": list(message_ids), "owner": owner, "lease": lease_s, "limit": limit},
            )
            return {row[0] for row in cur.fetchall()}
    except psycopg2.Error as exc:
        raise ClaimError(f"inbox claims at {_where(str(target))}: {exc}".strip()) from None
    finally:
        conn.close()


def holders(target: str, message_ids: Iterable[str]) -> dict[str, str]:
    """message id -> owner of its claim (expired or not), for operators and tests."""
    import psycopg2

    conn = psycopg2.connect(target, connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_SCHEMA)
            cur.execute(
                f"SELECT message_id, owner FROM {TABLE} WHERE message_id = ANY(%s)",
                (list(message_ids),),
            )
            return dict(cur.fetchall())
    finally:
        conn.close()
