"""Make a vector store hold exactly one concept's current chunks (what weaviate_objects does)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa

from qpipe_dagster.store.base import VectorStore
from qpipe_dagster.store.objects import UpsertCounts


@dataclass(frozen=True)
class ConceptSync:
    counts: UpsertCounts  # what the upsert did
    deleted: int  # objects of chunks that are gone (their page vanished or changed)
    total: int  # objects the concept holds afterwards
    seconds: float  # the upsert and delete; the count after them is not timed

    def figures(self) -> dict[str, int]:
        """What the sync did and the objects the concept holds, as the asset reports them."""
        return {
            "inserted": self.counts.inserted,
            "updated": self.counts.updated,
            "unchanged": self.counts.unchanged,
            "deleted": self.deleted,
            "objects_for_concept": self.total,
        }


def sync_concept(store: VectorStore, table: pa.Table, concept: str) -> ConceptSync:
    """Upsert ``table`` (one concept's chunks, keyed by ``id``) and delete the concept's other
    objects, so the store ends with one object per row of ``table``."""
    started = time.perf_counter()
    counts = store.upsert(table)
    deleted = store.delete_missing(concept, set(table.column("id").to_pylist()))
    seconds = time.perf_counter() - started
    return ConceptSync(counts, deleted, store.count(concept), seconds)
