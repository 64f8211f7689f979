"""Production vector store on a Weaviate server (weaviate-client v4).

Same contract as the LanceDB store: one collection per (model, dim), deterministic UUIDs so
re-runs overwrite instead of duplicating, cosine distance, content_hash to skip unchanged chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import ParamSpec, TypeVar
from urllib.parse import SplitResult, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qpipe_dagster.settings import SettingError, weaviate_grpc_port, weaviate_url
from qpipe_dagster.store.objects import (
    HIT_COLUMNS,
    MAX_K,
    TRACE_COLUMNS,
    SearchHit,
    UpsertCounts,
    VectorStoreError,
    check_concept,
    check_keep_ids,
    check_query,
    collection_name,
    validate_objects,
    vectors_as_numpy,
)

P = ParamSpec("P")
T = TypeVar("T")

# Stored as properties; `id` becomes the object UUID and `vector` the object's vector.
PROPERTY_COLUMNS = (
    "concept",
    "url",
    "title",
    "chunk_index",
    "text",
    "content_hash",
    "fetched_at",
    "parser_version",
    "model",
)
_LOOKUP_CHUNK = 1000  # ids per filter; well under Weaviate's QUERY_MAXIMUM_RESULTS (10k)
_CLOUD_SUFFIXES = (".weaviate.cloud", ".weaviate.network", ".weaviate.io")


class _BatchUnavailable(VectorStoreError):
    """A batch whose every object failed because the server could not be reached: transient, so
    the guard sends the batch again (its UUIDs are deterministic: nothing is duplicated)."""

    transient = True


def _text(value: object) -> str:
    """A TEXT property of this store's schema, as the client returns it (typed as any field)."""
    if not isinstance(value, str):
        raise VectorStoreError(f"Weaviate returned a {type(value).__name__} for a text property")
    return value


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _whole(value: object) -> int:
    """The INT property chunk_index, as the client returns it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VectorStoreError(f"Weaviate returned a {type(value).__name__} for chunk_index")
    return int(value)


def _distance(value: float | None) -> float:
    if value is None:  # asked for with MetadataQuery(distance=True): always there
        raise VectorStoreError("Weaviate returned a hit without its distance")
    return value


def parse_weaviate_url(url: str) -> SplitResult:
    """`url` split, or VectorStoreError saying what WEAVIATE_URL must look like.

    The start-up check (`python -m qpipe_dagster.ops.env`) uses this too, so both accept the
    same URLs: http:// or https://, a host, and a port (when given) from 1 to 65535.
    """
    try:
        return urlsplit(weaviate_url(url if isinstance(url, str) else ""))
    except ValueError as exc:
        raise VectorStoreError(f"WEAVIATE_URL {url!r} {exc}") from None


def _connect(url: str, api_key: str | None, grpc_port: int | None):
    """Client for `url`: Weaviate Cloud by hostname, else a custom host (gRPC on grpc_port)."""
    parts = parse_weaviate_url(url)
    if grpc_port is None:
        try:
            grpc_port = weaviate_grpc_port()
        except SettingError as exc:
            raise VectorStoreError(str(exc)) from None

    import weaviate
    from weaviate.auth import Auth
    from weaviate.config import AdditionalConfig, Timeout

    url = url.strip()
    secure = parts.scheme.lower() == "https"
    config = AdditionalConfig(timeout=Timeout(init=10, query=60, insert=120))
    host = parts.hostname or ""  # parse_weaviate_url refused a URL without one
    # skip_init_checks=True: the client's init checks are the server's gRPC health check, an
    # OIDC discovery (without a key) and a version check against pypi.org. The last one is a
    # request to the internet on every store open: on a host without internet access it waits out
    # Timeout.init (10 s) per attempt, and tests must not leave loopback. So all are skipped here
    # and the two server checks are made again in _check_server; /v1/meta is fetched either way.
    if host.endswith(_CLOUD_SUFFIXES):
        if not api_key:
            raise VectorStoreError(f"Weaviate Cloud URL {url!r} needs an API key")
        client = weaviate.connect_to_weaviate_cloud(
            cluster_url=url,
            auth_credentials=Auth.api_key(api_key),
            additional_config=config,
            skip_init_checks=True,
        )
    else:
        client = weaviate.connect_to_custom(
            http_host=host,
            http_port=parts.port or (443 if secure else 8080),
            http_secure=secure,
            grpc_host=host,
            grpc_port=grpc_port,
            grpc_secure=secure,
            auth_credentials=Auth.api_key(api_key) if api_key else None,
            additional_config=config,
            skip_init_checks=True,
        )
    try:
        _check_server(client, url, with_key=bool(api_key))
    except BaseException:
        client.close()
        raise
    return client


def _check_server(client, url: str, *, with_key: bool) -> None:
    """The server checks of the client's init checks (all but pypi.org's version check): the
    gRPC port answers its health check (searches and batches use it), and a server that asks
    for OIDC login is refused here, not at the first write."""
    conn = client._connection  # weaviate-client v4.23: no public call for either check
    if not with_key and conn.get_open_id_configuration() is not None:
        raise VectorStoreError(
            f"Weaviate server {url!r} requires OIDC login; qpipe signs in with an API key: set "
            "WEAVIATE_API_KEY"
        )
    conn._ping_grpc("sync")  # WeaviateGRPCUnavailableError when it does not answer SERVING


class WeaviateStore:
    """VectorStore on a Weaviate collection; close() (or `with`) releases the connection."""

    backend = "weaviate"

    def __init__(
        self,
        *,
        url: str,
        model: str,
        dim: int,
        api_key: str | None = None,
        batch_size: int = 2000,
        grpc_port: int | None = None,
        concurrent_requests: int = 2,
        create: bool = True,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise VectorStoreError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.dim = dim
        self.collection = collection_name(model, dim)
        self.url = url
        self.batch_size = batch_size
        self.concurrent_requests = concurrent_requests
        self._create = create
        self._trace: set[str] = set()  # the provenance properties the collection has
        self._where = f"Weaviate {url!r} collection {self.collection!r}"
        # one breaker per server, like postgres@host and qstash@host; reports group by system
        self._system = f"weaviate@{parse_weaviate_url(url).netloc}"
        from weaviate.exceptions import WeaviateBaseError

        try:
            self._client = self._call(_connect, url, api_key, grpc_port)
        except WeaviateBaseError as exc:
            raise VectorStoreError(f"Weaviate server {url!r} is unreachable: {exc}") from None
        except OSError as exc:
            raise VectorStoreError(f"Weaviate server {url!r} is unreachable: {exc}") from None
        try:
            self._col = self._call(self._open_collection)
        except WeaviateBaseError as exc:
            self._client.close()
            raise VectorStoreError(f"{self._where}: cannot open collection: {exc}") from None
        except BaseException:
            self._client.close()
            raise

    # -- setup ---------------------------------------------------------------------------

    def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """fn through this server's breaker, transient errors (refused, timeouts, 5xx/429, gRPC
        UNAVAILABLE) retried with backoff: a Weaviate restart costs seconds, not a failed run,
        and a server that stays down is refused at once. Every fn here is a read or idempotent
        (deterministic UUIDs overwrite), so a retry cannot duplicate anything."""
        from qpipe_dagster.resilience.guard import CircuitOpenError, guarded_call

        try:
            return guarded_call(self._system, fn, *args, **kwargs)
        except CircuitOpenError as exc:
            raise VectorStoreError(f"Weaviate server {self.url!r}: {exc}") from None

    def _open_collection(self):
        from weaviate.classes.config import (
            Configure,
            DataType,
            Property,
            Tokenization,
            VectorDistances,
        )

        if not self._client.collections.exists(self.collection):
            if not self._create:
                raise VectorStoreError(
                    f"Weaviate {self.url!r} has no collection {self.collection!r}: nothing has "
                    "been stored with this model and dimension yet (another model is active? "
                    "see `qpipe models`, QPIPE_EMBED_MODEL and `qpipe reembed`)"
                )
            text = {"data_type": DataType.TEXT, "tokenization": Tokenization.FIELD}
            self._client.collections.create(
                self.collection,
                description=f"qpipe chunks embedded with a {self.dim}-dim model",
                vector_config=Configure.Vectors.self_provided(
                    vector_index_config=Configure.VectorIndex.hnsw(
                        distance_metric=VectorDistances.COSINE
                    )
                ),
                properties=[
                    Property(name="concept", **text),
                    Property(name="url", **text),
                    Property(name="title", data_type=DataType.TEXT),
                    Property(name="chunk_index", data_type=DataType.INT),
                    Property(name="text", data_type=DataType.TEXT),
                    Property(name="content_hash", **text),
                    Property(name="fetched_at", data_type=DataType.DATE),
                    Property(name="parser_version", **text),
                    Property(name="model", **text),
                    *[Property(name=name, **text) for name in TRACE_COLUMNS],
                ],
            )
        col = self._client.collections.get(self.collection)
        self._check_existing(col)
        return col

    def _add_trace_properties(self, col, have: set[str]) -> set[str]:
        """A collection written before provenance was recorded gets the two properties (its
        objects read as "no run recorded"); read-only, nothing is changed. Returns the trace
        properties the collection has."""
        from weaviate.classes.config import DataType, Property, Tokenization

        missing = [n for n in TRACE_COLUMNS if n not in have]
        if missing and self._create:
            for name in missing:
                col.config.add_property(
                    Property(name=name, data_type=DataType.TEXT, tokenization=Tokenization.FIELD)
                )
            return set(TRACE_COLUMNS)
        return {n for n in TRACE_COLUMNS if n in have}

    def _check_existing(self, col) -> None:
        """Refuse a collection whose properties or stored vector size disagree with ours."""
        config = col.config.get()
        have = {p.name for p in config.properties}
        missing = [p for p in PROPERTY_COLUMNS if p not in have]
        if missing:
            raise VectorStoreError(
                f"{self._where}: existing collection lacks properties {missing}; "
                "it was not written by qpipe"
            )
        self._trace = self._add_trace_properties(col, have)
        sample = col.query.fetch_objects(limit=1, include_vector=True).objects
        if sample:
            vec = sample[0].vector
            vec = next(iter(vec.values())) if isinstance(vec, dict) else vec
            if vec is not None and len(vec) != self.dim:
                raise VectorStoreError(
                    f"{self._where}: dimension mismatch: existing collection holds "
                    f"{len(vec)}-dim vectors, store opened for {self.dim}-dim"
                )

    # -- writes --------------------------------------------------------------------------

    def upsert(
        self,
        objects: pa.Table,
        *,
        progress: Callable[[UpsertCounts], None] | None = None,
    ) -> UpsertCounts:
        """Insert new, overwrite changed (by content_hash), skip unchanged; batch by batch."""
        table = validate_objects(objects, self.dim, self._where)
        counts = UpsertCounts(0, 0, 0)
        for start in range(0, table.num_rows, self.batch_size):
            batch = table.slice(start, self.batch_size)
            existing = self._call(self._existing_hashes, batch.column("id").to_pylist())
            known = pa.array(list(existing), pa.string())
            old = pa.array([existing.get(i) for i in batch.column("id").to_pylist()], pa.string())
            is_new = pc.invert(pc.is_in(batch.column("id"), value_set=known))
            changed = pc.fill_null(pc.not_equal(old, batch.column("content_hash")), False)
            write = batch.filter(pc.or_(is_new, changed))
            n_new = pc.sum(is_new).as_py() or 0
            n_changed = pc.sum(changed).as_py() or 0
            if write.num_rows:
                self._call(self._write, write, counts)
            counts.inserted += n_new
            counts.updated += n_changed
            counts.unchanged += batch.num_rows - n_new - n_changed
            if progress is not None:
                progress(UpsertCounts(counts.inserted, counts.updated, counts.unchanged))
        return counts

    def _write(self, rows: pa.Table, counts: UpsertCounts) -> None:
        from qpipe_dagster.resilience.transient import weaviate_batch_failure_transient

        vectors = vectors_as_numpy(rows.column("vector"), self.dim)
        props = rows.select([*PROPERTY_COLUMNS, *TRACE_COLUMNS]).to_pylist()
        ids = rows.column("id").to_pylist()
        with self._col.batch.fixed_size(
            batch_size=min(self.batch_size, 500), concurrent_requests=self.concurrent_requests
        ) as batch:
            for uid, prop, vec in zip(ids, props, vectors, strict=True):
                for name in ("title", *TRACE_COLUMNS):  # Weaviate stores no nulls
                    if prop[name] is None:
                        del prop[name]
                batch.add_object(properties=prop, uuid=uid, vector=vec.tolist())
        failed = self._col.batch.failed_objects
        if failed:
            first = failed[0]
            if weaviate_batch_failure_transient([f.message for f in failed]):
                raise _BatchUnavailable(
                    f"{self._where}: {len(failed)} of {rows.num_rows} objects in a batch could not "
                    f"be sent (the server is down or restarting?): {first.message}"
                )
            raise VectorStoreError(
                f"{self._where}: {len(failed)} of {rows.num_rows} objects in a batch failed "
                f"(earlier batches are kept: {counts.inserted} inserted / {counts.updated} "
                f"updated; re-run to finish); first error: {first.message}"
            )

    def delete_missing(self, concept: str, keep_ids: Collection[str]) -> int:
        """Delete the concept's objects not in keep_ids (pages that vanished or shrank)."""
        from weaviate.classes.query import Filter

        concept = check_concept(concept, self._where)
        keep = set(check_keep_ids(keep_ids, self._where).to_pylist())
        doomed = sorted(self.ids(concept) - keep)
        for start in range(0, len(doomed), _LOOKUP_CHUNK):
            chunk = doomed[start : start + _LOOKUP_CHUNK]
            res = self._call(self._col.data.delete_many, where=Filter.by_id().contains_any(chunk))
            if res.failed:
                raise VectorStoreError(
                    f"{self._where}: deleting {len(chunk)} stale objects of concept {concept!r}: "
                    f"{res.failed} failed"
                )
        return len(doomed)

    # -- reads ---------------------------------------------------------------------------

    def search(
        self, vector: np.ndarray, k: int = 10, concept: str | None = None
    ) -> list[SearchHit]:
        """k nearest by cosine similarity (score = 1 - cosine distance), best first."""
        from weaviate.classes.query import Filter, MetadataQuery

        query = check_query(vector, self.dim, k, self._where)
        concept = check_concept(concept, self._where, optional=True)
        res = self._call(
            self._col.query.near_vector,
            near_vector=query.tolist(),
            limit=k,
            filters=Filter.by_property("concept").equal(concept) if concept is not None else None,
            return_metadata=MetadataQuery(distance=True),
            return_properties=[
                c for c in HIT_COLUMNS if c != "id" and (c not in TRACE_COLUMNS or c in self._trace)
            ],
        )
        return [
            SearchHit(
                id=str(o.uuid),
                concept=_text(o.properties["concept"]),
                url=_text(o.properties["url"]),
                title=_optional_text(o.properties.get("title")),
                chunk_index=_whole(o.properties["chunk_index"]),
                text=_text(o.properties["text"]),
                score=1.0 - float(_distance(o.metadata.distance)),
                run_id=_optional_text(o.properties.get("run_id")),
                message_id=_optional_text(o.properties.get("message_id")),
            )
            for o in res.objects
        ]

    def count(self, concept: str | None = None) -> int:
        from weaviate.classes.query import Filter

        concept = check_concept(concept, self._where, optional=True)
        filters = Filter.by_property("concept").equal(concept) if concept is not None else None
        total = self._call(self._col.aggregate.over_all, total_count=True, filters=filters)
        total = total.total_count
        if total is None:  # asked for with total_count=True: always there
            raise VectorStoreError(f"{self._where}: the count came back empty")
        return int(total)

    def ids(self, concept: str) -> set[str]:
        # The cursor API takes no filter, so walk the collection reading only `concept`.
        concept = check_concept(concept, self._where)
        return self._call(lambda: {uid for uid, c in self._iter_concepts() if c == concept})

    def count_by_run(self, concept: str) -> dict[str | None, int]:
        from weaviate.classes.aggregate import GroupByAggregate
        from weaviate.classes.query import Filter

        concept = check_concept(concept, self._where)
        total = self.count(concept)
        if "run_id" not in self._trace:
            return {None: total} if total else {}
        res = self._call(
            self._col.aggregate.over_all,
            filters=Filter.by_property("concept").equal(concept),
            group_by=GroupByAggregate(prop="run_id", limit=MAX_K),
            total_count=True,
        )
        out: dict[str | None, int] = {}
        for group in res.groups:
            out[_text(group.grouped_by.value)] = int(group.total_count or 0)
        unrecorded = total - sum(out.values())  # Weaviate groups no missing value
        if unrecorded:
            out[None] = unrecorded
        return out

    def drop(self) -> None:
        """Delete the whole collection (model retirement, tests)."""
        self._call(self._client.collections.delete, self.collection)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> WeaviateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _iter_concepts(self) -> Iterator[tuple[str, str | None]]:
        for obj in self._col.iterator(return_properties=["concept"]):
            yield str(obj.uuid), _optional_text(obj.properties.get("concept"))

    def _existing_hashes(self, ids: list[str]) -> dict[str, str | None]:
        from weaviate.classes.query import Filter

        found: dict[str, str | None] = {}
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            res = self._col.query.fetch_objects(
                filters=Filter.by_id().contains_any(chunk),
                limit=len(chunk),
                return_properties=["content_hash"],
            )
            for o in res.objects:
                found[str(o.uuid)] = _optional_text(o.properties.get("content_hash"))
        return found
