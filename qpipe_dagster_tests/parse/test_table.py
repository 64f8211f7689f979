"""The parsed_pages table built by the parse stage itself, without Dagster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from qpipe_dagster.crawl.schema import CRAWLED_PAGES_SCHEMA
from qpipe_dagster.parse.chunk import Chunker
from qpipe_dagster.parse.extract import PARSER_VERSION
from qpipe_dagster.parse.table import (
    PARSED_PAGES_COLUMNS,
    PARSED_PAGES_SCHEMA,
    chunk_rows,
    parse_pages,
    stale_parser_versions,
)
from qpipe_dagster.store.objects import content_hash
from qpipe_dagster_tests.parse.conftest import page_bytes

FETCHED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def crawled(*pages: dict[str, Any]) -> pa.Table:
    base = {"status": 200, "fetched_at": FETCHED, "content_type": "text/html", "depth": 0}
    base |= {"encoding": None, "content_hash": None, "final_url": None, "error": None}
    return pa.Table.from_pylist([base | p for p in pages], schema=CRAWLED_PAGES_SCHEMA)


def test_every_column_has_a_meaning() -> None:
    assert list(PARSED_PAGES_COLUMNS) == PARSED_PAGES_SCHEMA.names


def test_one_row_per_fetched_page_with_its_chunks(tokenizer: Any) -> None:
    chunker = Chunker(tokenizer, max_tokens=40, overlap_tokens=8)
    html = page_bytes("boilerplate.html")
    table = crawled(
        {"url": "https://a.example/x", "final_url": "https://a.example/y", "html": html},
        {"url": "https://a.example/gone", "html": None, "error": "HTTP 404"},
        {"url": "https://a.example/pdf", "html": None, "error": "skipped: not HTML"},
    )
    parsed = parse_pages(table, chunker)
    assert parsed.table.schema.equals(PARSED_PAGES_SCHEMA)
    [row] = parsed.table.to_pylist()
    assert (row["url"], row["final_url"], row["fetched_at"]) == (
        "https://a.example/x",
        "https://a.example/y",
        FETCHED,
    )
    assert row["parser_version"] == PARSER_VERSION and row["text"]
    assert row["content_hash"] == content_hash(row["text"])
    assert (row["chunk_max_tokens"], row["chunk_overlap_tokens"]) == (40, 8)
    assert row["chunks"] == chunk_rows(chunker, row["text"])
    assert [c["index"] for c in row["chunks"]] == list(range(len(row["chunks"])))
    assert all(c["content_hash"] == content_hash(c["text"]) for c in row["chunks"])
    assert (parsed.chunks, parsed.words, parsed.pages_without_text) == (
        len(row["chunks"]),
        row["word_count"],
        0,
    )


def test_a_page_without_text_is_a_row_and_counted(tokenizer: Any) -> None:
    table = crawled({"url": "https://a.example/e", "html": page_bytes("empty_body.html")})
    parsed = parse_pages(table, Chunker(tokenizer))
    assert parsed.table.num_rows == 1 and parsed.pages_without_text == 1
    assert parsed.table.column("chunks").to_pylist() == [[]]


def test_nothing_fetched_is_an_empty_table_of_the_schema(tokenizer: Any) -> None:
    parsed = parse_pages(crawled(), Chunker(tokenizer))
    assert parsed.table.num_rows == 0 and parsed.table.schema.equals(PARSED_PAGES_SCHEMA)
    assert (parsed.chunks, parsed.words, parsed.pages_without_text) == (0, 0, 0)


def test_stale_parser_versions_lists_the_others() -> None:
    versions = pa.table({"parser_version": ["new", "old", None, "new", "old"]})
    assert stale_parser_versions(versions, "new") == ["(none)", "old"]
    assert stale_parser_versions(versions.slice(0, 1), "new") == []
