"""The shape of a stored chunk, shared by every vector-store backend.

Kept free of Dagster and of any backend so the asset, the CLI and both stores agree on one
schema, one id scheme and one collection-naming rule.
"""

from __future__ import annotations

import hashlib
import numbers
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Fixed forever: changing it would re-key every stored object and duplicate the whole store.
QPIPE_NAMESPACE = uuid.UUID("5b1e6f0a-8d3c-4c2e-9a57-3f0d2b8e71c4")

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# Which Dagster run last wrote an object and the QStash message that caused that run (None:
# a run from the UI, CLI or a schedule, or an object stored before these were recorded). An
# unchanged chunk is not rewritten, so it names the run that last inserted or changed it.
TRACE_COLUMNS = ("run_id", "message_id")

# Columns a SearchHit carries back (everything but the vector and bookkeeping columns).
HIT_COLUMNS = ("id", "concept", "url", "title", "chunk_index", "text", *TRACE_COLUMNS)


class VectorStoreError(RuntimeError):
    """A store problem a user can act on; the message names the path/URL/collection at fault."""


@dataclass
class UpsertCounts:
    """What an upsert did; re-running the same objects must give inserted == updated == 0."""

    inserted: int
    updated: int
    unchanged: int

    def __iadd__(self, other: UpsertCounts) -> UpsertCounts:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        return self


@dataclass
class SearchHit:
    """One search result; score is cosine similarity in [-1, 1], higher = closer."""

    id: str
    concept: str
    url: str
    title: str | None
    chunk_index: int
    text: str
    score: float
    run_id: str | None = None
    message_id: str | None = None


def object_uuid(concept: str, url: str, chunk_index: int) -> str:
    """Deterministic id of a chunk, so re-crawling the same page updates instead of duplicating."""
    return str(uuid.uuid5(QPIPE_NAMESPACE, f"{concept}\x1f{url}\x1f{int(chunk_index)}"))


def content_hash(text: str) -> str:
    """sha256 of a chunk's text: lets a store tell an unchanged chunk from an updated one."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def objects_schema(dim: int) -> pa.Schema:
    """The Arrow schema every backend accepts from `upsert`."""
    if not isinstance(dim, int) or dim <= 0:
        raise VectorStoreError(f"embedding dimension must be a positive integer, got {dim!r}")
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("concept", pa.string(), nullable=False),
            pa.field("url", pa.string(), nullable=False),
            pa.field("title", pa.string(), nullable=True),
            pa.field("chunk_index", pa.int32(), nullable=False),
            pa.field("text", pa.large_string(), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("parser_version", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


def trace_fields() -> list[pa.Field]:
    """The provenance columns (TRACE_COLUMNS) every stored object has, both nullable."""
    return [pa.field(name, pa.string(), nullable=True) for name in TRACE_COLUMNS]


def stored_schema(dim: int) -> pa.Schema:
    """What a store holds: `objects_schema` plus the provenance columns. `upsert` accepts a
    table with or without them (stage code builds chunks; the asset that stores them adds
    who wrote them with `with_trace`)."""
    base = objects_schema(dim)
    return pa.schema([*base, *trace_fields()])


def with_trace(table: pa.Table, *, run_id: str | None, message_id: str | None) -> pa.Table:
    """`table` with its provenance columns set to this run and message (replaced if present)."""
    for name, value in zip(TRACE_COLUMNS, (run_id, message_id), strict=True):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise VectorStoreError(f"{name} must be a non-empty string or None, got {value!r}")
        column = pa.array([value] * table.num_rows, pa.string())
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, column)
        else:
            table = table.append_column(pa.field(name, pa.string()), column)
    return table


def collection_name(model: str, dim: int) -> str:
    """Table/collection name for one (model, dim), so rotated models never share vectors.

    Pass the model *name* (e.g. "all-MiniLM-L6-v2"), not a local path: the name must not change
    when the install moves. Valid as both a LanceDB table and a Weaviate class name.
    """
    if not isinstance(model, str) or not model.strip():
        raise VectorStoreError(f"model name must be a non-empty string, got {model!r}")
    if not isinstance(dim, int) or dim <= 0:
        raise VectorStoreError(f"embedding dimension must be a positive integer, got {dim!r}")
    slug = re.sub(r"[^0-9a-z]+", "_", model.strip().lower()).strip("_") or "model"
    if len(slug) > 60:  # keep names short but still unique
        slug = f"{slug[:50]}_{hashlib.sha256(model.encode()).hexdigest()[:8]}"
    return f"Chunks_{slug}_d{dim}"


def vector_dim(type_: pa.DataType) -> int | None:
    """The fixed size of a vector column type, or None when it is not a fixed-size float list."""
    if pa.types.is_fixed_size_list(type_) and pa.types.is_floating(type_.value_type):
        return type_.list_size
    return None


_KIND_HINT = {
    ("integer", "time"): " (a bare number is not a time: its unit and epoch are unknown)",
    ("float", "time"): " (a bare number is not a time: its unit and epoch are unknown)",
    ("text", "time"): " (convert the text to timestamps before storing)",
}


def _kind(type_: pa.DataType) -> str:
    """Coarse family of an Arrow type: casts are only made within one family.

    Arrow casts int64 to a timestamp by reading it as microseconds and numbers to text by
    printing them, so an epoch-seconds `fetched_at` would land as 1970 and a numeric `title`
    as "123" without a word; within a family (int64 -> int32, string -> large_string,
    ns -> us, float64 lists -> float32 vectors) a cast keeps the meaning.
    """
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_):
        return "time"
    if pa.types.is_integer(type_):
        return "integer"
    if pa.types.is_floating(type_):
        return "float"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return "text"
    if (
        pa.types.is_list(type_)
        or pa.types.is_large_list(type_)
        or pa.types.is_fixed_size_list(type_)
    ):
        return "list"
    return str(type_)


def validate_objects(table: pa.Table, dim: int, where: str) -> pa.Table:
    """Check `table` against objects_schema(dim) and return it as stored_schema(dim), in
    canonical column order and types (provenance columns it lacks are null).

    Everything is checked before anything is written, so a bad table never half-lands.
    `where` names the store (path/URL + collection) for the error messages.
    """
    if not isinstance(table, pa.Table):
        raise VectorStoreError(
            f"{where}: upsert expects a pyarrow.Table, got {type(table).__name__}"
        )
    required = objects_schema(dim)
    schema = stored_schema(dim)
    names = set(table.column_names)
    missing = [f.name for f in required if f.name not in names]
    extra = sorted(names - set(schema.names))
    if missing or extra:
        raise VectorStoreError(
            f"{where}: objects table does not match the store schema: "
            f"missing columns {missing}, unexpected columns {extra}"
        )
    if len(table.column_names) != len(names):
        raise VectorStoreError(f"{where}: objects table has duplicate column names")
    got_dim = vector_dim(table.schema.field("vector").type)
    if got_dim is None and not pa.types.is_list(table.schema.field("vector").type):
        raise VectorStoreError(
            f"{where}: column 'vector' must be fixed_size_list<float32>[{dim}], "
            f"got {table.schema.field('vector').type}"
        )
    if got_dim is not None and got_dim != dim:
        raise VectorStoreError(
            f"{where}: vector dimension mismatch: store holds {dim}-dim vectors, "
            f"objects have {got_dim}-dim vectors"
        )
    columns = []
    for field in schema:
        if field.name not in names:  # a provenance column: unknown for these objects
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        if col.type != field.type:
            if not pa.types.is_null(col.type) and _kind(col.type) != _kind(field.type):
                raise VectorStoreError(
                    f"{where}: column {field.name!r} has type {col.type}, expected {field.type}"
                    + _KIND_HINT.get((_kind(col.type), _kind(field.type)), "")
                )
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise VectorStoreError(
                    f"{where}: column {field.name!r} has type {table.schema.field(field.name).type}, "
                    f"expected {field.type}: {exc}"
                ) from None
        if not field.nullable and col.null_count:
            raise VectorStoreError(
                f"{where}: column {field.name!r} has {col.null_count} null value(s); it must not"
            )
        columns.append(col)
    out = pa.Table.from_arrays(columns, schema=schema)
    if out.num_rows == 0:
        return out
    _check_ids(out, where)
    _check_vectors(out, dim, where)
    return out


def _check_ids(table: pa.Table, where: str) -> None:
    ids = table.column("id")
    bad = pc.invert(pc.match_substring_regex(ids, UUID_PATTERN))
    if pc.any(bad).as_py():
        first = ids.filter(bad)[0].as_py()
        raise VectorStoreError(
            f"{where}: column 'id' must hold lowercase UUID strings (see object_uuid), got {first!r}"
        )
    if pc.count_distinct(ids).as_py() != table.num_rows:
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise VectorStoreError(f"{where}: duplicate id {dup!r} in one upsert; ids must be unique")


# Squared norms a store can take: the cosine distance divides by the norm in float32, so a
# vector whose squared norm overflows (values ~1e20 and up) or underflows (~1e-19 and below)
# scores as 0 or infinity against everything instead of its real similarity.
_MIN_SQ_NORM = float(np.finfo(np.float32).tiny)
_MAX_SQ_NORM = float(np.finfo(np.float32).max)


def _check_vectors(table: pa.Table, dim: int, where: str) -> None:
    """Reject NaN/inf, all-zero and out-of-range vectors: cosine similarity is undefined (or
    computed as garbage) for them."""
    matrix = vectors_as_numpy(table.column("vector"), dim)
    norms = np.einsum("ij,ij->i", matrix, matrix)  # NaN/inf in a row make its norm NaN/inf
    bad = ~((norms >= _MIN_SQ_NORM) & (norms <= _MAX_SQ_NORM))
    if not bad.any():
        return
    row = int(np.argmax(bad))
    uid = table.column("id")[row].as_py()
    if not np.isfinite(matrix[row]).all():
        why = "holds NaN or infinity"
    elif not matrix[row].any():
        why = "is all zeros (cosine similarity is undefined for it)"
    else:
        why = (
            f"has a length of {np.linalg.norm(matrix[row].astype(np.float64)):.3g}, outside "
            "what float32 cosine similarity can handle; store unit vectors (normalize them)"
        )
    raise VectorStoreError(f"{where}: vector of id {uid!r} {why}")


def vectors_as_numpy(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """Zero-copy-where-possible (n, dim) float32 view of a fixed-size-list column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(-1, dim).astype(np.float32, copy=False)


MAX_K = 10_000  # Weaviate's default QUERY_MAXIMUM_RESULTS; LanceDB overflows past 2**63


def check_query(vector: object, dim: int, k: int, where: str) -> np.ndarray:
    """Validate a search query vector and k; returns the query as a flat float32 unit vector.

    Cosine similarity does not depend on the query's length, so scaling it to length 1 (in
    float64) changes no score, and a query of tiny or huge values still ranks correctly (in
    float32 its squared norm under- or overflowed: every score came back inf or 0).
    """
    try:
        arr = np.asarray(vector, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise VectorStoreError(f"{where}: query vector is not numeric: {exc}") from None
    if arr.shape[0] != dim:
        raise VectorStoreError(
            f"{where}: query vector has {arr.shape[0]} dimensions, the store holds {dim}-dim vectors"
        )
    if not np.isfinite(arr).all() or not np.any(arr):
        raise VectorStoreError(f"{where}: query vector must be finite and not all zeros")
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise VectorStoreError(
            f"{where}: k must be a positive integer of at most {MAX_K}, got {k!r}"
        )
    arr = arr / np.abs(arr).max()  # first into [-1, 1], so the norm cannot overflow
    return (arr / np.linalg.norm(arr)).astype(np.float32)


@overload
def check_concept(concept: object, where: str, *, optional: Literal[False] = False) -> str: ...


@overload
def check_concept(concept: object, where: str, *, optional: bool) -> str | None: ...


def check_concept(concept: object, where: str, *, optional: bool = False) -> str | None:
    """A concept name as stores filter on it: a str of valid Unicode (None when optional)."""
    if concept is None and optional:
        return None
    if not isinstance(concept, str):
        raise VectorStoreError(f"{where}: concept must be a str, got {type(concept).__name__}")
    if not concept.isascii():
        try:
            concept.encode("utf-8")
        except UnicodeEncodeError:
            raise VectorStoreError(
                f"{where}: concept {concept!r} is not valid Unicode (a lone surrogate, e.g. "
                "bytes that were not UTF-8)"
            ) from None
    return concept


def check_keep_ids(keep_ids: object, where: str) -> pa.Array:
    """keep_ids as an Arrow string array; a bare string is refused (it would iterate as
    characters and make delete_missing wipe the whole concept)."""
    if isinstance(keep_ids, str | bytes) or not isinstance(keep_ids, Iterable):
        raise VectorStoreError(
            f"{where}: keep_ids must be a collection of id strings, got {type(keep_ids).__name__}"
        )
    try:
        return pa.array(list(keep_ids), pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise VectorStoreError(f"{where}: keep_ids must hold id strings: {exc}") from None
