"""The concept registry in one SQLite file (WAL), shared by the UI, the sensor and the CLI."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from qpipe_dagster.concepts.model import (
    Concept,
    RegistryError,
    merge_for_upsert,
)
from qpipe_dagster.storage.sqlite_wal import enable_wal


class ConceptRegistry:
    """SQLite-backed registry of concepts, safe to share between processes (WAL).

    `default_registry()` is this file under $DAGSTER_HOME/qpipe, or, when QPIPE_CONCEPTS_URL is
    set, the PostgreSQL registry (`qpipe_dagster.concepts.postgres`) that several hosts share.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(
                f"concept registry {self.path}: cannot create its folder: {exc}"
            ) from exc
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS concepts (slug TEXT PRIMARY KEY, name TEXT NOT NULL,"
                " seed_urls TEXT NOT NULL, symbol TEXT,"
                " updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction; SQLite's errors ('file is not a database', 'no such
        column: symbol') name no file, so they are raised as RegistryError naming it."""
        try:
            db = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise RegistryError(f"concept registry {self.path} cannot be opened: {exc}") from exc
        try:
            with db:
                enable_wal(db)
                yield db
        except sqlite3.Error as exc:
            raise RegistryError(
                f"concept registry {self.path} is not a usable concepts database ({exc}): "
                "restore it from a backup, or move it aside to start an empty registry"
            ) from exc
        finally:
            db.close()

    def upsert(self, concept: Concept) -> Concept:
        """Store a concept, merging seed URLs with what is already registered
        (see merge_for_upsert). Read and write are one write transaction (BEGIN IMMEDIATE):
        two processes adding seeds to one concept used to lose one of them."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT slug, name, seed_urls, symbol FROM concepts WHERE slug = ?",
                (concept.slug,),
            ).fetchone()
            merged = merge_for_upsert(self._row_to_concept(row) if row else None, concept)
            db.execute(
                "INSERT INTO concepts (slug, name, seed_urls, symbol) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(slug) DO UPDATE SET name=excluded.name, seed_urls=excluded.seed_urls,"
                " symbol=excluded.symbol, updated_at=CURRENT_TIMESTAMP",
                (merged.slug, merged.name, json.dumps(list(merged.seed_urls)), merged.symbol),
            )
        return merged

    def get(self, slug: str) -> Concept | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT slug, name, seed_urls, symbol FROM concepts WHERE slug = ?", (slug,)
            ).fetchone()
        return self._row_to_concept(row) if row else None

    def list(self) -> list[Concept]:
        with self._connect() as db:
            rows = db.execute("SELECT slug, name, seed_urls, symbol FROM concepts ORDER BY slug")
            return [self._row_to_concept(r) for r in rows.fetchall()]

    def remove(self, slug: str) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM concepts WHERE slug = ?", (slug,)).rowcount > 0

    def _row_to_concept(self, row: Sequence) -> Concept:
        slug, name, urls, symbol = row
        try:
            seed_urls = json.loads(urls)
            if not isinstance(seed_urls, list) or not all(isinstance(u, str) for u in seed_urls):
                raise ValueError("not a JSON list of strings")
        except (TypeError, ValueError) as exc:
            raise RegistryError(
                f"concept registry {self.path}: the seed_urls of concept {slug!r} are damaged "
                f"({exc}; stored {str(urls)[:80]!r}): remove it with `qpipe concepts remove "
                f"{slug}` and add it again, or restore the registry from a backup"
            ) from None
        return Concept(slug=slug, name=name, seed_urls=tuple(seed_urls), symbol=symbol)
