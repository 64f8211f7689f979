"""Explode parsed pages into chunk rows and embed only what changed since the last run.

A chunk's vector is reused when the previous run stored the same chunk text (content hash) with
the same model id, so re-materializing a concept with one page changed costs O(changed chunks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qpipe_dagster.embed.encoder import Encoder
from qpipe_dagster.store.objects import object_uuid, objects_schema


@dataclass(frozen=True)
class EmbedStats:
    chunks: int
    embedded: int
    reused: int
    nan_rows: int


def explode_chunks(parsed: pa.Table, concept: str, model: str) -> pa.Table:
    """One row per chunk with the object columns except `vector` (Arrow kernels, no row loop)."""
    chunks = parsed.column("chunks").combine_chunks()
    parent = pc.list_parent_indices(chunks)
    flat = pc.list_flatten(chunks)
    n = len(flat)
    urls = parsed.column("url").take(parent)
    index = flat.field("index")
    ids = [
        object_uuid(concept, u, i) for u, i in zip(urls.to_pylist(), index.to_pylist(), strict=True)
    ]
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "concept": pa.array([concept] * n, pa.string()),
            "url": urls,
            "title": parsed.column("title").take(parent),
            "chunk_index": index.cast(pa.int32()),
            "text": flat.field("text").cast(pa.large_string()),
            "content_hash": flat.field("content_hash"),
            "fetched_at": parsed.column("fetched_at").take(parent),
            "parser_version": parsed.column("parser_version").take(parent),
            "model": pa.array([model] * n, pa.string()),
        }
    )


def vectors_of(table: pa.Table) -> np.ndarray:
    """The `vector` column as an (n, dim) float32 view, without a Python-level copy."""
    column = table.column("vector").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size)


def reusable_vectors(previous: pa.Table | None, model: str, dim: int) -> dict[str, np.ndarray]:
    """content_hash -> vector of the previous run's rows that can stand for a fresh encode.

    Reuse only saves work, so a previous table it cannot trust (written by another version:
    missing columns, another vector type) is ignored, and so is a vector holding NaN/inf: reused,
    it would stay in page_embeddings run after run, and the store refuses it.
    """
    if previous is None or previous.num_rows == 0:
        return {}
    names = set(previous.column_names)
    if not {"vector", "model", "content_hash"} <= names:
        return {}
    vtype = previous.schema.field("vector").type
    if not pa.types.is_fixed_size_list(vtype) or vtype.list_size != dim:
        return {}
    if not pa.types.is_float32(vtype.value_type):
        return {}
    vectors = vectors_of(previous)
    finite = np.asarray(np.isfinite(vectors).all(axis=1))
    models = previous.column("model").to_pylist()
    hashes = previous.column("content_hash").to_pylist()
    return {
        h: vectors[i]
        for i, (m, h) in enumerate(zip(models, hashes, strict=True))
        if m == model and h is not None and finite[i]
    }


def embed_chunks(
    chunks: pa.Table, encoder: Encoder, previous: pa.Table | None = None
) -> tuple[pa.Table, EmbedStats]:
    """Add the `vector` column, encoding only chunks without a reusable vector."""
    dim = encoder.dim
    cached = reusable_vectors(previous, encoder.model_id, dim)
    hashes = chunks.column("content_hash").to_pylist()
    vectors = np.empty((len(hashes), dim), dtype=np.float32)
    todo = []
    for i, h in enumerate(hashes):
        hit = cached.get(h)
        if hit is None:
            todo.append(i)
        else:
            vectors[i] = hit
    if todo:
        texts = chunks.column("text").take(pa.array(todo)).to_pylist()
        vectors[todo] = encoder.encode(texts)
    schema = objects_schema(dim)
    vector_col = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    table = chunks.append_column(schema.field("vector"), vector_col)
    table = table.select(schema.names).cast(schema)
    nan_rows = int(np.isnan(vectors).any(axis=1).sum())
    return table, EmbedStats(len(hashes), len(todo), len(hashes) - len(todo), nan_rows)
