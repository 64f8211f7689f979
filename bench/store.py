"""Vector-store benchmark: upsert throughput beside a plain LanceDB add, then k=10 query latency
exact vs ANN (IVF_HNSW_SQ) with recall@10 of the ANN results against exact search, then an
incremental phase: into the full store, upsert `--changed` changed chunks (same ids, new text and
vectors) and `--new` new ones, and report the seconds, whether the index was rebuilt (its training
time before and after), recall@10 and latency after, and the same after an explicit
fold-in of those rows into the index as a delta segment.

    .venv/bin/python bench/store.py [--n 100000] [--dim 384] [--batch-size 2000] [--queries 200]
                                    [--data clustered|uniform] [--changed 1000] [--new 1000]

The Weaviate backend is measured the same way when WEAVIATE_URL is set. Last line: one JSON object.
Never fails on speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from qpipe_dagster.store import open_store
from qpipe_dagster.store.lance import IndexInfo, LanceStore
from qpipe_dagster.store.objects import content_hash, object_uuid, objects_schema


def make_vectors(n: int, dim: int, data: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-norm vectors. "clustered": a mixture of topics, like text embeddings (neighbours
    share a region); "uniform": isotropic noise, the worst case for any ANN index."""
    if data == "uniform":
        vectors = rng.standard_normal((n, dim), dtype=np.float32)
    else:
        centers = rng.standard_normal((max(1, n // 50), dim), dtype=np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        topic = rng.integers(0, len(centers), n)
        noise = rng.standard_normal((n, dim), dtype=np.float32) * (0.6 / np.sqrt(dim))
        vectors = centers[topic] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def make_table(
    n: int, dim: int, seed: int = 0, data: str = "clustered"
) -> tuple[pa.Table, np.ndarray]:
    """n unit-norm vectors (like sentence-transformers output) with deterministic ids."""
    rng = np.random.default_rng(seed)
    vectors = make_vectors(n, dim, data, rng)
    concepts = [f"concept{i % 5}" for i in range(n)]
    urls = [f"https://bench.test/{c}/page{i // 8}" for i, c in enumerate(concepts)]
    texts = [f"chunk {i} of a benchmark page about trading" for i in range(n)]
    table = pa.Table.from_arrays(
        [
            pa.array(
                [
                    object_uuid(c, u, i % 8)
                    for i, (c, u) in enumerate(zip(concepts, urls, strict=True))
                ]
            ),
            pa.array(concepts),
            pa.array(urls),
            pa.array([f"Page {i // 8}" for i in range(n)]),
            pa.array(np.arange(n, dtype=np.int32) % 8),
            pa.array(texts, pa.large_string()),
            pa.array([content_hash(t) for t in texts]),
            pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * n, pa.timestamp("us", "UTC")),
            pa.array(["bench"] * n),
            pa.array(["bench-model"] * n),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        ],
        schema=objects_schema(dim),
    )
    return table, vectors


def latencies(fn, queries: np.ndarray) -> tuple[list[float], list]:
    times, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        results.append(fn(q))
        times.append((time.perf_counter() - t0) * 1000)
    return times, results


def pct(values: list[float], p: float) -> float:
    return round(float(np.percentile(values, p)), 3)


def revised_batch(
    table: pa.Table, n_changed: int, n_new: int, dim: int, data: str
) -> tuple[pa.Table, np.ndarray]:
    """The first n_changed stored chunks with new text and vectors, plus n_new new chunks (ids no
    stored chunk has); returns the batch and its vectors (changed first)."""
    fresh, vectors = make_table(n_changed + n_new, dim, seed=1, data=data)
    changed = table.slice(0, n_changed)
    texts = [f"chunk {i} of a benchmark page about trading, revised" for i in range(n_changed)]
    for name, column in (
        ("text", pa.array(texts, pa.large_string())),
        ("content_hash", pa.array([content_hash(t) for t in texts])),
        ("vector", fresh.column("vector").slice(0, n_changed)),
    ):
        i = changed.schema.get_field_index(name)
        changed = changed.set_column(i, changed.schema.field(i), column)
    new = fresh.slice(n_changed, n_new)
    ids = [object_uuid("bench-new", u, i) for i, u in enumerate(new.column("url").to_pylist())]
    new = new.set_column(0, new.schema.field(0), pa.array(ids))
    return pa.concat_tables([changed, new]), vectors


def _same_index(before: IndexInfo | None, after: IndexInfo | None) -> bool:
    """The same trained index (a fold-in keeps trained_at and adds a segment)."""
    return before is not None and after is not None and before.trained_at == after.trained_at


def _ann_phase(store, queries: np.ndarray, exact: list, prefix: str) -> dict:
    ann_t, ann = latencies(lambda q: store.search(q, k=10), queries)
    recall = [
        len({h.id for h in a} & {h.id for h in e}) / 10 for a, e in zip(ann, exact, strict=True)
    ]
    return {
        f"{prefix}query_p50_ms": pct(ann_t, 50),
        f"{prefix}query_p99_ms": pct(ann_t, 99),
        f"{prefix}recall_at_10": round(float(np.mean(recall)), 4),
    }


def bench_incremental(
    store: LanceStore, table: pa.Table, queries: np.ndarray, *, changed: int, new: int, data: str
) -> dict:
    """Upsert changed + new chunks into the indexed store, then fold them into the index."""
    batch, vectors = revised_batch(table, changed, new, store.dim, data)
    before = store.index_info()
    t0 = time.perf_counter()
    counts = store.upsert(batch)
    dt = time.perf_counter() - t0
    assert (counts.updated, counts.inserted) == (changed, new), counts
    after = store.index_info()
    out: dict = {
        "incremental_changed": changed,
        "incremental_new": new,
        "incremental_upsert_s": round(dt, 2),
        "incremental_index_rebuilt": not _same_index(before, after),
        "incremental_unindexed_rows": after.unindexed_rows if after else None,
    }
    _, exact = latencies(lambda q: store.search(q, k=10, exact=True), queries)
    out.update(_ann_phase(store, queries, exact, "incremental_"))
    # each written chunk is its own nearest neighbour, found before any fold-in
    probe = range(0, len(vectors), max(1, len(vectors) // 50))
    ids = batch.column("id").to_pylist()
    found = [store.search(vectors[i], k=1)[0].id == ids[i] for i in probe]
    out["incremental_written_found"] = round(sum(found) / len(found), 3)
    t0 = time.perf_counter()
    store.fold_in()
    out["fold_in_s"] = round(time.perf_counter() - t0, 2)
    folded = store.index_info()
    out["fold_in_index_rebuilt"] = not _same_index(before, folded)
    out["fold_in_segments"] = folded.segments if folded else None
    out["fold_in_unindexed_rows"] = folded.unindexed_rows if folded else None
    out.update(_ann_phase(store, queries, exact, "fold_in_"))
    return out


def bench_store(store, table: pa.Table, queries: np.ndarray, *, lance: bool) -> dict:
    out: dict = {}
    t0 = time.perf_counter()
    counts = store.upsert(table)
    dt = time.perf_counter() - t0
    assert counts.inserted == table.num_rows, counts
    out["upsert_objects_per_s"] = round(table.num_rows / dt)
    t0 = time.perf_counter()
    counts = store.upsert(table)
    assert counts.unchanged == table.num_rows, counts
    out["reupsert_unchanged_per_s"] = round(table.num_rows / (time.perf_counter() - t0))
    if lance:
        exact_t, exact = latencies(lambda q: store.search(q, k=10, exact=True), queries)
        out["query_p50_ms_exact"], out["query_p99_ms_exact"] = pct(exact_t, 50), pct(exact_t, 99)
        t0 = time.perf_counter()
        store.build_index()
        out["index_build_s"] = round(time.perf_counter() - t0, 2)
        out["upsert_incl_index_objects_per_s"] = round(
            table.num_rows / (table.num_rows / out["upsert_objects_per_s"] + out["index_build_s"])
        )
        info = store.index_info()
        out["index_partition_rows"] = store.partition_rows
        out["index_segments"] = info.segments if info else None
        out.update(_ann_phase(store, queries, exact, ""))
    else:
        t_, _ = latencies(lambda q: store.search(q, k=10), queries)
        out["query_p50_ms"], out["query_p99_ms"] = pct(t_, 50), pct(t_, 99)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=2, help="best of N for the write timings")
    ap.add_argument("--changed", type=int, default=1000, help="incremental phase: changed chunks")
    ap.add_argument("--new", type=int, default=1000, help="incremental phase: new chunks")
    ap.add_argument(
        "--data",
        choices=["clustered", "uniform"],
        default="clustered",
        help="clustered ~ text embeddings (default); uniform = worst case for ANN recall",
    )
    args = ap.parse_args()

    import lancedb

    # queries are held-out draws from the same distribution as the stored vectors
    table, vectors = make_table(args.n + args.queries, args.dim, data=args.data)
    queries = vectors[args.n :]
    table = table.slice(0, args.n)
    tmp = tempfile.mkdtemp(prefix="qpipe-bench-store-")
    result: dict = {
        "n": args.n,
        "dim": args.dim,
        "batch_size": args.batch_size,
        "data": args.data,
        "queries": args.queries,
        "load_1min": round(os.getloadavg()[0], 2),
    }
    try:
        # anchor: the same Arrow data through a plain LanceDB add, no checks, no dedup
        # (best of `--repeat` fresh tables for both, so a busy shared CPU skews the ratio less)
        db = lancedb.connect(os.path.join(tmp, "anchor"))
        best = float("inf")
        for i in range(args.repeat):
            anchor = db.create_table(f"anchor{i}", schema=table.schema)
            t0 = time.perf_counter()
            anchor.add(table)
            best = min(best, time.perf_counter() - t0)
        result["anchor_add_per_s"] = round(args.n / best)
        print(f"anchor lancedb table.add: {result['anchor_add_per_s']:,} vectors/s")

        best = float("inf")
        for i in range(args.repeat - 1):
            warm = LanceStore(
                path=os.path.join(tmp, f"warm{i}"),
                model="bench-model",
                dim=args.dim,
                batch_size=args.batch_size,
                index_threshold=args.n + 1,
            )
            t0 = time.perf_counter()
            warm.upsert(table)
            best = min(best, time.perf_counter() - t0)
        store = LanceStore(
            path=os.path.join(tmp, "store"),
            model="bench-model",
            dim=args.dim,
            batch_size=args.batch_size,
            index_threshold=args.n + 1,  # time the index build separately
        )
        result.update(bench_store(store, table, queries, lance=True))
        result["upsert_objects_per_s"] = max(result["upsert_objects_per_s"], round(args.n / best))
        result["ratio_vs_anchor"] = round(
            result["upsert_objects_per_s"] / result["anchor_add_per_s"], 3
        )
        print(
            f"qpipe LanceStore.upsert: {result['upsert_objects_per_s']:,} objects/s "
            f"(x{result['ratio_vs_anchor']} of anchor); unchanged re-upsert "
            f"{result['reupsert_unchanged_per_s']:,}/s; index build {result['index_build_s']} s"
        )
        print(
            f"k=10 exact p50 {result['query_p50_ms_exact']} ms p99 {result['query_p99_ms_exact']} ms;"
            f" ANN p50 {result['query_p50_ms']} ms p99 {result['query_p99_ms']} ms"
            f" recall@10 {result['recall_at_10']}"
        )
        if args.changed or args.new:
            result.update(
                bench_incremental(
                    store, table, queries, changed=args.changed, new=args.new, data=args.data
                )
            )
            print(
                f"incremental upsert of {args.changed} changed + {args.new} new: "
                f"{result['incremental_upsert_s']} s, index rebuilt "
                f"{result['incremental_index_rebuilt']}, recall@10 "
                f"{result['incremental_recall_at_10']}, p50 {result['incremental_query_p50_ms']} ms;"
                f" fold-in {result['fold_in_s']} s (rebuilt {result['fold_in_index_rebuilt']}, "
                f"{result['fold_in_segments']} segments), recall@10 "
                f"{result['fold_in_recall_at_10']}, p50 {result['fold_in_query_p50_ms']} ms"
            )
        result["load_1min_end"] = round(os.getloadavg()[0], 2)
        url = os.environ.get("WEAVIATE_URL")
        if url:
            w = open_store(
                model=f"bench-{os.getpid()}",
                dim=args.dim,
                weaviate_url=url,
                weaviate_api_key=os.environ.get("WEAVIATE_API_KEY"),
                batch_size=args.batch_size,
            )
            try:
                wres = bench_store(w, table, queries, lance=False)
            finally:
                w.drop()
                w.close()
            result.update({f"weaviate_{k}": v for k, v in wres.items()})
            print(f"weaviate: {wres}")
        else:
            print("weaviate: skipped (WEAVIATE_URL not set)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
