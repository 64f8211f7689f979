"""The `parsed_pages` table: its Arrow schema, what each column means, and how rows are built.

The parse stage owns this shape (the asset only stores it, and benchmarks and tests build the
same rows), so it lives beside the extractor and chunker rather than in the Dagster wiring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from qpipe_dagster.parse.chunk import Chunker
from qpipe_dagster.parse.extract import PARSER_VERSION, extract_article
from qpipe_dagster.store.objects import content_hash

__all__ = [
    "CHUNK_TYPE",
    "PARSED_PAGES_COLUMNS",
    "PARSED_PAGES_SCHEMA",
    "ParsedPages",
    "chunk_rows",
    "parse_pages",
    "stale_parser_versions",
]

CHUNK_TYPE = pa.struct(
    [
        ("index", pa.int32()),
        ("text", pa.large_string()),
        ("token_count", pa.int32()),
        ("content_hash", pa.string()),
    ]
)
PARSED_PAGES_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("final_url", pa.string()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("title", pa.string()),
        ("text", pa.large_string()),
        ("language", pa.string()),
        ("published", pa.string()),
        ("links", pa.list_(pa.string())),
        ("word_count", pa.int32()),
        ("content_hash", pa.string()),
        ("parser_version", pa.string()),
        ("extractor", pa.string()),
        ("error", pa.string()),
        ("chunk_max_tokens", pa.int32()),
        ("chunk_overlap_tokens", pa.int32()),
        ("chunks", pa.list_(CHUNK_TYPE)),
    ]
)

PARSED_PAGES_COLUMNS = {
    "url": "URL as requested (seed or discovered link)",
    "final_url": "URL after redirects",
    "fetched_at": "when the page was fetched (UTC)",
    "title": "article title",
    "text": "main article text, boilerplate removed",
    "language": "detected language code",
    "published": "publication date found in the page, if any",
    "links": "outgoing links found in the page",
    "word_count": "words in text",
    "content_hash": "hash of text; unchanged chunks keep their stored vectors",
    "parser_version": "extractor release that produced the row",
    "extractor": "which extractor produced the text",
    "error": "why no text could be extracted (null when fine)",
    "chunk_max_tokens": "chunking config used",
    "chunk_overlap_tokens": "chunking config used",
    "chunks": "token-aware chunks: index, text, token_count, content_hash",
}


@dataclass(frozen=True)
class ParsedPages:
    """A parsed_pages table and the counts the asset reports about it."""

    table: pa.Table
    pages_without_text: int
    chunks: int
    words: int


def chunk_rows(chunker: Chunker, text: str) -> list[dict[str, Any]]:
    """`text` cut into CHUNK_TYPE rows; the hash lets later runs reuse unchanged vectors."""
    return [
        {
            "index": c.index,
            "text": c.text,
            "token_count": c.token_count,
            "content_hash": content_hash(c.text),
        }
        for c in chunker.chunk(text)
    ]


def parse_pages(crawled_pages: pa.Table, chunker: Chunker) -> ParsedPages:
    """One PARSED_PAGES_SCHEMA row per fetched page of a crawled_pages table.

    Failed or skipped fetches have no row: they stay visible, with their error, in crawled_pages.
    """
    rows = []
    for page in crawled_pages.to_pylist():
        if page["error"] is not None or page["html"] is None:
            continue
        article = extract_article(page["html"], page["final_url"] or page["url"], page["encoding"])
        rows.append(
            {
                "url": page["url"],
                "final_url": page["final_url"],
                "fetched_at": page["fetched_at"],
                "title": article.title,
                "text": article.text,
                "language": article.language,
                "published": article.published,
                "links": list(article.links),
                "word_count": article.word_count,
                "content_hash": content_hash(article.text),
                "parser_version": PARSER_VERSION,
                "extractor": article.extractor,
                "error": article.error,
                "chunk_max_tokens": chunker.max_tokens,
                "chunk_overlap_tokens": chunker.overlap_tokens,
                "chunks": chunk_rows(chunker, article.text),
            }
        )
    return ParsedPages(
        table=pa.Table.from_pylist(rows, schema=PARSED_PAGES_SCHEMA),
        pages_without_text=sum(1 for r in rows if not r["text"]),
        chunks=sum(len(r["chunks"]) for r in rows),
        words=sum(r["word_count"] for r in rows),
    )


def stale_parser_versions(parsed_pages: pa.Table, current: str) -> list[str]:
    """Parser versions in stored parsed_pages other than `current` (rows from an older qpipe)."""
    versions = pc.unique(parsed_pages.column("parser_version")).to_pylist()
    return sorted(v if v is not None else "(none)" for v in versions if v != current)
