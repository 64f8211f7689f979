"""Embedded local vector store on LanceDB: no server, one table per (model, dim) on disk.

Writes are Arrow-in, one atomic Lance commit per batch, so a crash between batches leaves a
store that the next run of the same upsert completes without duplicates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qpipe_dagster.store.objects import (
    HIT_COLUMNS,
    TRACE_COLUMNS,
    SearchHit,
    UpsertCounts,
    VectorStoreError,
    check_concept,
    check_keep_ids,
    check_query,
    collection_name,
    stored_schema,
    trace_fields,
    validate_objects,
    vector_dim,
)

if TYPE_CHECKING:  # lancedb itself is imported when a store opens (a heavy import)
    from lancedb.db import DBConnection
    from lancedb.query import LanceVectorQueryBuilder

INDEX_TYPE = "IVF_HNSW_SQ"  # IVF_PQ without refine measured recall@10 ~0.4: avoid
PARTITION_ROWS = 250_000  # target rows per IVF partition (why: build_index)
FOLD_IN_ROWS = 10_000  # rows left outside the index (scanned exactly) before a fold-in
MAX_INDEX_SEGMENTS = 16  # delta segments before the index is retrained into one
_DELETE_CHUNK = 1000

IndexAction = Literal["none", "build", "fold_in", "retrain"]


@dataclass(frozen=True)
class IndexInfo:
    """The vector index as it stands. `trained_at` (Lance's created_at) changes only when the
    index is built or retrained; a fold-in adds one to `segments` (a delta segment over the new
    rows) and keeps it. (Lance's index_uuid names a segment, so it moves with fold-ins.)"""

    trained_at: datetime | None
    segments: int
    indexed_rows: int
    unindexed_rows: int


def index_action(
    *,
    rows: int,
    index: IndexInfo | None,
    index_threshold: int,
    fold_in_rows: int = FOLD_IN_ROWS,
    max_segments: int = MAX_INDEX_SEGMENTS,
) -> IndexAction:
    """What `maintain_index` does to a table of `rows` rows (the rule docs/stages.md states).

    Training (k-means centroids, the SQ quantiser) is the expensive part and is done only when
    the index does not exist or no longer describes the data: when at least as many rows lie
    outside it as inside (it was trained on under half of today's rows), or when fold-ins have
    piled up `max_segments` delta segments (each is searched on its own). Otherwise new rows
    wait outside the index, found by an exact scan, until there are `fold_in_rows` of them, then
    go into a new delta segment with the existing centroids: seconds, not a rebuild (1M rows:
    0.3 s). So a retrain needs about max_segments x fold_in_rows new rows (160k by default)
    unless the table doubles first; Lance merges the segments itself, resetting the count, when
    a fold-in splits a partition that outgrew its target.
    """
    if rows == 0 or rows < index_threshold:
        return "none"
    if index is None:
        return "build"
    if index.unindexed_rows < fold_in_rows:
        return "none"
    if index.unindexed_rows >= index.indexed_rows or index.segments >= max_segments:
        return "retrain"
    return "fold_in"


def _sql_str(value: str) -> str:
    """A SQL string literal for a LanceDB filter (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


class LanceStore:
    """VectorStore on a local LanceDB directory.

    Below `index_threshold` rows search is exact (a flat scan is both faster and perfect at that
    size); at or above it an IVF_HNSW_SQ cosine index is built and refreshed as rows arrive.
    """

    backend = "lancedb"

    def __init__(
        self,
        *,
        path: str | Path,
        model: str,
        dim: int,
        batch_size: int = 2000,
        index_threshold: int = 50_000,
        ef: int = 64,
        nprobes: int | None = None,
        refine_factor: int | None = 2,
        fold_in_rows: int = FOLD_IN_ROWS,
        partition_rows: int = PARTITION_ROWS,
        max_small_fragments: int = 128,
        create: bool = True,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise VectorStoreError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.dim = dim
        self.collection = collection_name(model, dim)
        self.path = Path(path).expanduser()
        self.batch_size = batch_size
        self.index_threshold = index_threshold
        self.ef = ef
        self.nprobes = nprobes
        self.refine_factor = refine_factor
        self.fold_in_rows = fold_in_rows
        self.partition_rows = partition_rows
        self._nprobes: int | None = None  # search_nprobes, cached per index change
        self.max_small_fragments = max_small_fragments
        self._where = f"LanceDB store {str(self.path)!r} table {self.collection!r}"
        self._schema = stored_schema(dim)
        if create:
            _ensure_writable_dir(self.path)
        elif self.path.exists() and not self.path.is_dir():
            raise VectorStoreError(
                f"LanceDB store path {str(self.path)!r} exists and is not a directory"
            )
        elif not self.path.is_dir():
            raise VectorStoreError(
                f"no local vector store at {str(self.path)!r} yet: nothing has been stored "
                "(materialize weaviate_objects for a concept first)"
            )

        import lancedb

        try:
            # interval 0: every read sees commits made by other processes (a crawl running while
            # `qpipe search` is open); own writes are visible either way
            self._db = lancedb.connect(str(self.path), read_consistency_interval=timedelta(0))
            self._table = self._open_or_create() if create else self._open_existing()
        except VectorStoreError:
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            raise VectorStoreError(f"{self._where}: cannot open: {exc}") from exc
        self._check_existing_schema(writable=create)

    # -- setup ---------------------------------------------------------------------------

    def _open_or_create(self):
        try:
            return self._db.open_table(self.collection)
        except ValueError:  # "Table ... was not found"
            pass
        try:
            return self._db.create_table(self.collection, schema=self._schema)
        except ValueError:  # another process created it meanwhile
            return self._db.open_table(self.collection)

    def _open_existing(self):
        """The table, or VectorStoreError naming the collections that do exist (read-only use:
        `qpipe search` must not create an empty table for a model nothing was stored with)."""
        try:
            return self._db.open_table(self.collection)
        except ValueError:  # "Table ... was not found"
            pass
        names = sorted(_table_names(self._db))
        raise VectorStoreError(
            f"LanceDB store {str(self.path)!r} has no collection {self.collection!r}: nothing has "
            "been stored with this model and dimension yet; collections present: "
            f"{', '.join(names) or 'none'} (another model is active? see `qpipe models`, "
            "QPIPE_EMBED_MODEL and `qpipe reembed`)"
        )

    def _check_existing_schema(self, *, writable: bool) -> None:
        schema = self._table.schema
        if "vector" not in schema.names:
            raise VectorStoreError(f"{self._where}: existing table has no 'vector' column")
        got = vector_dim(schema.field("vector").type)
        if got != self.dim:
            raise VectorStoreError(
                f"{self._where}: dimension mismatch: existing table holds {got}-dim vectors, "
                f"store opened for {self.dim}-dim"
            )
        missing = [n for n in self._schema.names if n not in schema.names]
        trace = [f for f in trace_fields() if f.name in missing]
        if trace and writable:
            # a table written before provenance was recorded: add the columns (all null, a
            # metadata-only change in Lance); its objects keep working and name no run
            try:
                self._table.add_columns(trace)
            except ValueError:  # another process added them meanwhile
                self._table.checkout_latest()
            missing = [n for n in self._schema.names if n not in self._table.schema.names]
        elif trace:  # read-only (search): such a table reads as "no run recorded"
            missing = [n for n in missing if n not in TRACE_COLUMNS]
        if missing:
            raise VectorStoreError(
                f"{self._where}: existing table lacks columns {missing}; "
                "it was not written by this version of qpipe"
            )

    # -- writes --------------------------------------------------------------------------

    def upsert(
        self,
        objects: pa.Table,
        *,
        progress: Callable[[UpsertCounts], None] | None = None,
    ) -> UpsertCounts:
        """Insert new ids, overwrite changed content_hash, skip unchanged; batch by batch.

        The whole table is validated before the first write. `progress` gets the running
        counts after each committed batch (the Dagster asset logs it).
        """
        table = validate_objects(objects, self.dim, self._where)
        counts = UpsertCounts(0, 0, 0)
        if table.num_rows == 0:
            return counts
        self._table.checkout_latest()
        existing = self._existing_hashes()
        # Classify every row once, vectorised: new / changed / unchanged.
        pos = pc.index_in(table.column("id"), value_set=existing.column("id"))
        is_new = pc.is_null(pos)
        old_hash = pc.take(existing.column("content_hash"), pos)
        changed = pc.fill_null(pc.not_equal(old_hash, table.column("content_hash")), False)
        counts.unchanged = table.num_rows - pc.sum(is_new).as_py() - pc.sum(changed).as_py()
        counts.unchanged = int(counts.unchanged)
        write_mask = pc.or_(is_new, changed)
        if counts.unchanged == 0:  # first load / all changed: no 150 MB filter copy
            pending, pending_new = table, is_new
        else:
            pending, pending_new = table.filter(write_mask), is_new.filter(write_mask)
        for start in range(0, pending.num_rows, self.batch_size):
            batch = pending.slice(start, self.batch_size)
            batch_new = pending_new.slice(start, self.batch_size)
            n_fresh = pc.sum(batch_new).as_py() or 0
            if n_fresh == batch.num_rows:
                fresh, stale = batch, batch.slice(0, 0)
            else:
                fresh, stale = batch.filter(batch_new), batch.filter(pc.invert(batch_new))
            try:
                if fresh.num_rows:
                    self._table.add(fresh)
                    counts.inserted += fresh.num_rows
                if stale.num_rows:
                    res = (
                        self._table.merge_insert("id")
                        .when_matched_update_all()
                        .when_not_matched_insert_all()
                        .execute(stale)
                    )
                    counts.updated += res.num_updated_rows
                    counts.inserted += res.num_inserted_rows  # deleted meanwhile: re-insert
            except (OSError, RuntimeError, ValueError) as exc:
                raise VectorStoreError(
                    f"{self._where}: write failed after {counts.inserted} inserted / "
                    f"{counts.updated} updated objects (those are kept; re-run to finish): {exc}"
                ) from exc
            if progress is not None:
                progress(UpsertCounts(counts.inserted, counts.updated, counts.unchanged))
        self.maintain_index()
        return counts

    def delete_missing(self, concept: str, keep_ids: Collection[str]) -> int:
        """Delete the concept's objects not in keep_ids (pages that vanished or shrank)."""
        concept = check_concept(concept, self._where)
        keep = check_keep_ids(keep_ids, self._where)
        self._table.checkout_latest()
        stored = self._ids_array(concept)
        doomed = stored.filter(pc.invert(pc.is_in(stored, value_set=keep)))
        for start in range(0, len(doomed), _DELETE_CHUNK):
            chunk = doomed.slice(start, _DELETE_CHUNK).to_pylist()
            # ids come from the store and are validated UUIDs, so quoting is safe
            in_list = ", ".join(_sql_str(i) for i in chunk)
            self._table.delete(f"id IN ({in_list})")
        return len(doomed)

    # -- index ---------------------------------------------------------------------------

    def has_index(self) -> bool:
        return any(cfg.columns == ["vector"] for cfg in self._table.list_indices())

    def index_info(self) -> IndexInfo | None:
        """The vector index's identity and coverage, or None before it is built."""
        for cfg in self._table.list_indices():
            if cfg.columns == ["vector"]:
                stats = self._table.index_stats(cfg.name)
                if stats is None:
                    return None
                return IndexInfo(
                    trained_at=getattr(cfg, "created_at", None),
                    segments=stats.num_indices or 1,
                    indexed_rows=stats.num_indexed_rows,
                    unindexed_rows=stats.num_unindexed_rows,
                )
        return None

    def maintain_index(self, *, force: bool = False) -> IndexAction:
        """Build, fold into or retrain the ANN index as `index_action` says; returns what it did.

        `force` builds the index even below index_threshold.
        """
        self._compact_if_fragmented()
        rows = self._table.count_rows()
        threshold = min(self.index_threshold, 1) if force else self.index_threshold
        action = index_action(
            rows=rows,
            index=self.index_info(),
            index_threshold=threshold,
            fold_in_rows=self.fold_in_rows,
        )
        if action in ("build", "retrain"):
            self.build_index()
        elif action == "fold_in":
            self.fold_in()
        self._nprobes = None  # rows came or went: the probe count is recomputed on next search
        return action

    def fold_in(self) -> None:
        """Index the rows outside the index as a new delta segment, keeping the trained
        centroids and quantiser (Lance's optimize; it also merges small fragments)."""
        self._table.optimize(cleanup_older_than=timedelta(hours=1))

    def _compact_if_fragmented(self) -> None:
        """Merge small fragments and drop versions older than an hour once runs have piled up
        fragments (one per batch): keeps scans fast and the directory from growing forever."""
        # Annotated as the TableStatistics dataclass; this lancedb returns a plain dict.
        table_stats: Any = self._table.stats()
        stats = table_stats["fragment_stats"]
        if stats["num_small_fragments"] > self.max_small_fragments:
            self._table.optimize(cleanup_older_than=timedelta(hours=1))

    def build_index(self) -> None:
        """(Re)build (train) the cosine IVF_HNSW_SQ index over every row.

        Partitions of ~PARTITION_ROWS rows, and queries probe all of them (`search_nprobes`):
        on clustered 384-dim vectors a topic's chunks scatter over IVF partitions, so probing a
        fraction of many small partitions lost recall (80 x 12.5k rows, nprobes 8: recall@10
        0.83 at 1M), while HNSW inside a partition already scales as log n. The size is given as
        a target, not a count, so Lance's fold-ins keep it and add delta segments; an index
        built with an explicit partition count was rewritten whole by the first fold-in.
        ef_construction 100 keeps the 1M build at ~8 minutes on 2 busy cores. Queries refine
        with exact distances over 2k candidates (refine_factor 2): SQ distances alone were off by
        up to 0.27 in cosine, which would make scores meaningless, and at 1M (4 x 250k) it gave
        recall@10 0.98 against 0.95 with k candidates, at the same latency.
        """
        from lancedb.index import HnswSq

        config = HnswSq(
            distance_type="cosine",
            target_partition_size=self.partition_rows,
            ef_construction=100,
        )
        self._table.create_index("vector", config=config, replace=True)
        self._nprobes = None

    def search_nprobes(self) -> int:
        """IVF partitions a query probes: all of them (estimated from the row count, since
        Lance splits a partition that outgrows its target), or the `nprobes` given."""
        if self.nprobes is not None:
            return self.nprobes
        if self._nprobes is None:
            self._nprobes = max(1, -(-self._table.count_rows() // self.partition_rows))
        return self._nprobes

    def _index_name(self) -> str:
        for cfg in self._table.list_indices():
            if cfg.columns == ["vector"]:
                return cfg.name
        return "vector_idx"

    # -- reads ---------------------------------------------------------------------------

    def search(
        self, vector: np.ndarray, k: int = 10, concept: str | None = None, *, exact: bool = False
    ) -> list[SearchHit]:
        """k nearest by cosine similarity (score = 1 - cosine distance), best first."""
        query = check_query(vector, self.dim, k, self._where)
        concept = check_concept(concept, self._where, optional=True)
        # a vector query on the vector column: the search builder the base class does not name
        vector_query = cast(
            "LanceVectorQueryBuilder", self._table.search(query, vector_column_name="vector")
        )
        present = [c for c in HIT_COLUMNS if c in self._table.schema.names]
        q = vector_query.distance_type("cosine").select([*present, "_distance"]).limit(k)
        if concept is not None:
            q = q.where(f"concept = {_sql_str(concept)}", prefilter=True)
        if exact:
            q = q.bypass_vector_index()
        else:
            q = q.nprobes(self.search_nprobes()).ef(max(self.ef, k))
            if self.refine_factor:
                q = q.refine_factor(self.refine_factor)
        rows = q.to_arrow()
        scores = pc.subtract(1.0, rows.column("_distance")).to_pylist()
        none = [None] * rows.num_rows
        cols = {c: rows.column(c).to_pylist() if c in present else none for c in HIT_COLUMNS}
        return [
            SearchHit(
                id=cols["id"][i],
                concept=cols["concept"][i],
                url=cols["url"][i],
                title=cols["title"][i],
                chunk_index=cols["chunk_index"][i],
                text=cols["text"][i],
                score=float(scores[i]),
                run_id=cols["run_id"][i],
                message_id=cols["message_id"][i],
            )
            for i in range(rows.num_rows)
        ]

    def count(self, concept: str | None = None) -> int:
        concept = check_concept(concept, self._where, optional=True)
        if concept is None:
            return self._table.count_rows()
        return self._table.count_rows(f"concept = {_sql_str(concept)}")

    def ids(self, concept: str) -> set[str]:
        return set(self._ids_array(check_concept(concept, self._where)).to_pylist())

    def count_by_run(self, concept: str) -> dict[str | None, int]:
        concept = check_concept(concept, self._where)
        if "run_id" not in self._table.schema.names:  # an old table opened read-only
            n = self.count(concept)
            return {None: n} if n else {}
        rows = (
            self._table.search()
            .where(f"concept = {_sql_str(concept)}")
            .select(["run_id"])
            .limit(None)
            .to_arrow()
        )
        counts = pc.value_counts(rows.column("run_id").combine_chunks())
        return {
            v["values"].as_py(): v["counts"].as_py()
            for v in counts  # type: ignore[index]
        }

    def drop(self) -> None:
        """Delete the whole table (model retirement, tests); the store is unusable after."""
        self._db.drop_table(self.collection)

    def close(self) -> None:
        """Nothing to release: LanceDB holds no server connection."""

    def __enter__(self) -> LanceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ids_array(self, concept: str) -> pa.Array:
        rows = (
            self._table.search()
            .where(f"concept = {_sql_str(concept)}")
            .select(["id"])
            .limit(None)
            .to_arrow()
        )
        return rows.column("id").combine_chunks()

    def _existing_hashes(self) -> pa.Table:
        rows = self._table.search().select(["id", "content_hash"]).limit(None).to_arrow()
        return rows.combine_chunks()


def _table_names(db: DBConnection) -> list[str]:
    """Every table of a LanceDB connection (list_tables may page; table_names is deprecated)."""
    names: list[str] = []
    token = None
    while True:
        page = db.list_tables(page_token=token)
        names.extend(page.tables)
        token = page.page_token
        if not token:
            return names


def _ensure_writable_dir(path: Path) -> None:
    """Create `path` and prove it is writable now, naming it if not (not mid-run, later)."""
    where = f"LanceDB store path {str(path)!r}"
    if path.exists() and not path.is_dir():
        raise VectorStoreError(f"{where} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError) as exc:
        raise VectorStoreError(f"{where}: a parent is not a directory ({exc})") from None
    except OSError as exc:
        raise VectorStoreError(f"{where}: cannot create it ({exc.strerror or exc})") from None
    probe = path / f".qpipe-write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise VectorStoreError(f"{where} is not writable ({exc.strerror or exc})") from None
