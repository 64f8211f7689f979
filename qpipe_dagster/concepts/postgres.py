"""The concept registry and the active-model choice in PostgreSQL, used when QPIPE_CONCEPTS_URL
is a postgresql:// URL (tables `qpipe_concepts` and `qpipe_active_model`, created on demand).

Several hosts (code location, daemon, receiver, GPU run containers) must see one registry; a
SQLite file on one host's volume cannot be that. Same contract as the SQLite registry (see
qpipe_dagster_tests/pipeline/test_registry_contract.py, run on both): upsert merges seed URLs,
a name cut to another name's key is refused, damaged rows are named. An upsert holds a
transaction-scoped advisory lock on its slug, so two writers of one concept never lose each
other's seed URLs. Driver: psycopg2, the one qpipe uses everywhere (see pyproject's `prod`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from qpipe_dagster.concepts.active_model import (
    FIX,
    ActiveModelError,
    ModelChoice,
    checked,
    choice_problem,
)
from qpipe_dagster.concepts.model import Concept, RegistryError, merge_for_upsert
from qpipe_dagster.concepts.sqlite import ConceptRegistry
from qpipe_dagster.settings import SettingError, concepts_url
from qpipe_dagster.settings import redact as _redact

ENV_VAR = "QPIPE_CONCEPTS_URL"
TABLE = "qpipe_concepts"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    slug TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    seed_urls TEXT NOT NULL,
    symbol TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
CHOICE_TABLE = "qpipe_active_model"
# one row at most (the key can only be true): the choice is replaced, never appended
_CHOICE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {CHOICE_TABLE} (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    name TEXT NOT NULL,
    truncate_dim INTEGER,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
_SCHEMA_LOCK_KEY = 0x71706963  # "qpic": CREATE TABLE IF NOT EXISTS is not atomic between processes


def redact(url: str) -> str:
    """The URL without its password or query (for messages)."""
    return _redact(url)


def concepts_url_from_env(env: Mapping[str, str]) -> str | None:
    """QPIPE_CONCEPTS_URL validated (settings.concepts_url), or None when unset; a bad value is
    a RegistryError here, the error every registry caller already handles."""
    try:
        return concepts_url(env)
    except SettingError as exc:
        raise RegistryError(str(exc)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


@contextmanager
def _transaction(url: str, what: str) -> Iterator[Any]:
    """A cursor in one transaction; driver errors become RegistryError naming `what`."""
    import psycopg2  # the `prod` extra: a local install never needs it

    try:
        conn = psycopg2.connect(url, connect_timeout=10, application_name="qpipe-concepts")
    except psycopg2.Error as exc:
        raise RegistryError(f"{what} ({ENV_VAR}) cannot be reached: {_first_line(exc)}") from exc
    try:
        with conn, conn.cursor() as cur:
            yield cur
    except psycopg2.Error as exc:
        raise RegistryError(f"{what} ({ENV_VAR}) failed: {_first_line(exc)}") from exc
    finally:
        conn.close()


class PostgresConceptRegistry(ConceptRegistry):
    """ConceptRegistry's contract on a PostgreSQL table (`qpipe_concepts`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = redact(url)  # what messages name
        with self._pg() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            cur.execute(_SCHEMA)

    def _pg(self) -> AbstractContextManager[Any]:
        return _transaction(self.url, f"concept registry {self.path}")

    def upsert(self, concept: Concept) -> Concept:
        with self._pg() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"qpipe:{concept.slug}",))
            cur.execute(
                f"SELECT slug, name, seed_urls, symbol FROM {TABLE} WHERE slug = %s",
                (concept.slug,),
            )
            row = cur.fetchone()
            merged = merge_for_upsert(self._row_to_concept(row) if row else None, concept)
            cur.execute(
                f"INSERT INTO {TABLE} (slug, name, seed_urls, symbol) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (slug) DO UPDATE SET name = excluded.name,"
                " seed_urls = excluded.seed_urls, symbol = excluded.symbol, updated_at = now()",
                (merged.slug, merged.name, json.dumps(list(merged.seed_urls)), merged.symbol),
            )
        return merged

    def get(self, slug: str) -> Concept | None:
        with self._pg() as cur:
            cur.execute(
                f"SELECT slug, name, seed_urls, symbol FROM {TABLE} WHERE slug = %s", (slug,)
            )
            row = cur.fetchone()
        return self._row_to_concept(row) if row else None

    def list(self) -> list[Concept]:
        with self._pg() as cur:
            cur.execute(
                f'SELECT slug, name, seed_urls, symbol FROM {TABLE} ORDER BY slug COLLATE "C"'
            )
            rows = cur.fetchall()
        return [self._row_to_concept(r) for r in rows]

    def remove(self, slug: str) -> bool:
        with self._pg() as cur:
            cur.execute(f"DELETE FROM {TABLE} WHERE slug = %s", (slug,))
            return cur.rowcount > 0

    # -- backups: the registry travels as a SQLite registry file, whichever backend wrote it --

    def rows(self) -> int:
        with self._pg() as cur:
            cur.execute(f"SELECT count(*) FROM {TABLE}")
            return int(cur.fetchone()[0])

    def export_sqlite(self, path: Path) -> None:
        """Write every concept into a new SQLite registry at `path` (the backup format)."""
        with self._pg() as cur:
            cur.execute(
                f"SELECT slug, name, seed_urls, symbol,"
                f" to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
                f' FROM {TABLE} ORDER BY slug COLLATE "C"'
            )
            rows = cur.fetchall()
        ConceptRegistry(path)  # the SQLite registry's own schema
        db = sqlite3.connect(path)
        try:
            with db:
                db.executemany(
                    "INSERT INTO concepts (slug, name, seed_urls, symbol, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
        finally:
            db.close()

    def import_sqlite(self, path: Path) -> None:
        """Insert the concepts of a SQLite registry file (a restore into an empty table)."""
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT slug, name, seed_urls, symbol, updated_at FROM concepts ORDER BY slug"
            ).fetchall()
        finally:
            db.close()
        with self._pg() as cur:
            cur.executemany(
                f"INSERT INTO {TABLE} (slug, name, seed_urls, symbol, updated_at)"
                " VALUES (%s, %s, %s, %s, (%s::timestamp AT TIME ZONE 'UTC'))",
                rows,
            )


class PostgresActiveModel:
    """The active-model choice as the one row of `qpipe_active_model`, beside the registry's
    table, so every host that shares the registry searches the same collection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = f"table {CHOICE_TABLE} at {redact(url)}"
        with self._pg() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            cur.execute(_CHOICE_SCHEMA)

    def _pg(self) -> AbstractContextManager[Any]:
        return _transaction(self.url, f"active model choice ({self.where})")

    def get(self) -> ModelChoice | None:
        with self._pg() as cur:
            cur.execute(f"SELECT name, truncate_dim FROM {CHOICE_TABLE}")
            row = cur.fetchone()
        if row is None:
            return None
        name, truncate_dim = row
        why = choice_problem(name, truncate_dim)
        if why:
            raise ActiveModelError(
                f"the active model choice in {self.where} ({ENV_VAR}) is not valid ({why}); "
                + FIX.format(reset=f"delete the row (DELETE FROM {CHOICE_TABLE})")
            )
        return ModelChoice(name, truncate_dim)

    def set(self, choice: ModelChoice) -> None:
        """One statement in one transaction: readers see the old choice or the new one."""
        checked(choice)
        with self._pg() as cur:
            cur.execute(
                f"INSERT INTO {CHOICE_TABLE} (name, truncate_dim) VALUES (%s, %s)"
                " ON CONFLICT (only_row) DO UPDATE SET name = excluded.name,"
                " truncate_dim = excluded.truncate_dim, updated_at = now()",
                (choice.name, choice.truncate_dim),
            )
