"""Real stores with real content for the operations tests (LanceDB on disk, SQLite inbox)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from qpipe_dagster.concepts import Concept, ConceptRegistry
from qpipe_dagster.store import content_hash, object_uuid, objects_schema
from qpipe_dagster.store.lance import LanceStore
from webhook_sensor.inbox import Inbox, InboxRecord

DIM = 16
MODEL = "all-MiniLM-L6-v2"


def objects(concept: str, n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    texts = [f"{concept} chunk {i} seed {seed}" for i in range(n)]
    url = f"https://example.com/{concept}"
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return pa.table(
        {
            "id": [object_uuid(concept, url, i) for i in range(n)],
            "concept": [concept] * n,
            "url": [url] * n,
            "title": [f"Title {i}" if i % 2 else None for i in range(n)],
            "chunk_index": pa.array(range(n), pa.int32()),
            "text": pa.array(texts, pa.large_string()),
            "content_hash": [content_hash(t) for t in texts],
            "fetched_at": pa.array(
                [datetime(2026, 1, 1, tzinfo=UTC)] * n, pa.timestamp("us", "UTC")
            ),
            "parser_version": ["1"] * n,
            "model": [MODEL] * n,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        },
        schema=objects_schema(DIM),
    )


def fill_stores(home: Path) -> dict[str, int]:
    """Two concepts in LanceDB, three inbox messages (one consumed), two registry concepts."""
    qhome = home / "qpipe"
    store = LanceStore(path=qhome / "vectors", model=MODEL, dim=DIM)
    store.upsert(objects("btc-halving", 40, seed=1))
    store.upsert(objects("eth-merge", 25, seed=2))
    inbox = Inbox(qhome / "inbox.sqlite")
    for i in range(3):
        inbox.append(
            InboxRecord(
                message_id=f"msg_{i}",
                body=b'{"concept": "btc halving", "urls": ["https://example.com/a"]}\xff',
                slug="btc-halving",
                concept_name="btc halving",
                seed_urls=("https://example.com/a",),
                symbol="BTC-USD",
                headers={"upstash-retried": str(i)},
            )
        )
    inbox.mark_consumed(["msg_0"])
    registry = ConceptRegistry(qhome / "concepts.sqlite")
    registry.upsert(Concept("btc-halving", "btc halving", ("https://example.com/a",), "BTC-USD"))
    registry.upsert(Concept("eth-merge", "eth merge", ("https://example.com/b",), None))
    return {"objects": 65, "messages": 3, "concepts": 2}
