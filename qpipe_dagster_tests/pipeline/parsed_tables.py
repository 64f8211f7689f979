"""Stored parsed_pages tables for the rotation tests: what `qpipe reembed` reads, without a crawl."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from qpipe_dagster.parse.table import PARSED_PAGES_SCHEMA
from qpipe_dagster.storage.arrow_files import write_table
from qpipe_dagster.store import content_hash


def store_parsed_pages(assets: Path, concept: str, chunks: int = 3) -> None:
    """One page of `chunks` short chunks under assets/parsed_pages/<concept>."""
    texts = [f"{concept} note {i}: the block reward halves every four years" for i in range(chunks)]
    row = {
        "url": f"https://example.com/{concept}",
        "fetched_at": datetime(2026, 1, 1, tzinfo=UTC),
        "title": concept,
        "text": " ".join(texts),
        "parser_version": "test",
        "chunks": [
            {"index": i, "text": t, "token_count": 12, "content_hash": content_hash(t)}
            for i, t in enumerate(texts)
        ],
    }
    table = pa.Table.from_pylist([row], schema=PARSED_PAGES_SCHEMA)
    write_table(table, assets / "parsed_pages" / concept)
