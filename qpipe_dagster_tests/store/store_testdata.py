"""Deterministic chunk tables for the store tests (shared with the crash-writer child)."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from qpipe_dagster.store.objects import content_hash, object_uuid, objects_schema


def make_objects(
    concept: str,
    n: int,
    dim: int,
    *,
    seed: int = 0,
    version: str = "v1",
    start: int = 0,
    model: str = "test-model",
) -> pa.Table:
    """n chunks of one concept; `version` changes text (hence content_hash) and vectors."""
    rng = np.random.default_rng(zlib.crc32(f"{concept}|{seed}|{version}".encode()))
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    idx = np.arange(start, start + n)
    urls = [f"https://example.test/{concept}/page{i // 4}" for i in idx]
    chunk = [int(i % 4) for i in idx]
    texts = [f"{concept} chunk {i} {version}" for i in idx]
    return pa.Table.from_arrays(
        [
            pa.array([object_uuid(concept, u, c) for u, c in zip(urls, chunk, strict=True)]),
            pa.array([concept] * n),
            pa.array(urls),
            pa.array([None if i % 5 == 0 else f"Page {i // 4}" for i in idx], pa.string()),
            pa.array(chunk, pa.int32()),
            pa.array(texts, pa.large_string()),
            pa.array([content_hash(t) for t in texts]),
            pa.array([datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)] * n, pa.timestamp("us", "UTC")),
            pa.array(["trafilatura-2.3.1"] * n),
            pa.array([model] * n),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        ],
        schema=objects_schema(dim),
    )
