"""Vector store for embedded chunks: LanceDB locally, Weaviate when WEAVIATE_URL is set."""

from qpipe_dagster.store.base import VectorStore, open_store
from qpipe_dagster.store.objects import (
    SearchHit,
    UpsertCounts,
    VectorStoreError,
    collection_name,
    content_hash,
    object_uuid,
    objects_schema,
    stored_schema,
    with_trace,
)

__all__ = [
    "SearchHit",
    "UpsertCounts",
    "VectorStore",
    "VectorStoreError",
    "collection_name",
    "content_hash",
    "object_uuid",
    "objects_schema",
    "open_store",
    "stored_schema",
    "with_trace",
]
