"""Vector-store benchmark: upsert throughput beside a plain LanceDB add, then k=10 query latency
exact vs ANN (IVF_HNSW_SQ) with recall@10 of the ANN results against exact search.

    .venv/bin/python bench/store.py [--n 100000] [--dim 384] [--batch-size 2000] [--queries 200]
                                    [--data clustered|uniform]

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
from qpipe_dagster.store.lance import LanceStore
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
        ann_t, ann = latencies(lambda q: store.search(q, k=10), queries)
        out["query_p50_ms"], out["query_p99_ms"] = pct(ann_t, 50), pct(ann_t, 99)
        recall = [
            len({h.id for h in a} & {h.id for h in e}) / 10 for a, e in zip(ann, exact, strict=True)
        ]
        out["recall_at_10"] = round(float(np.mean(recall)), 4)
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
