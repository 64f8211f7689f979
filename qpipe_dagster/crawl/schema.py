"""The Arrow schema of the `crawled_pages` table: one row per requested URL.

Failures are rows too (with `error` set), so downstream stages and humans can see what
was *not* fetched and why, instead of pages silently going missing.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["CRAWLED_PAGES_SCHEMA", "SKIPPED_PREFIX"]

SKIPPED_PREFIX = "skipped: "
"""`error` values starting with this mark deliberate skips (non-HTML, too large)."""

CRAWLED_PAGES_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("url", pa.string(), nullable=False),  # the requested URL
        pa.field("final_url", pa.string()),  # after redirects; null on failure
        pa.field("status", pa.int32()),  # HTTP status; null when no response
        pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("content_type", pa.string()),
        pa.field("encoding", pa.string()),  # charset from the HTTP Content-Type header only
        pa.field("html", pa.large_binary()),  # raw body of HTML pages; null otherwise
        pa.field("content_hash", pa.string()),  # sha256 hex of `html`; null when no body
        pa.field("depth", pa.int32(), nullable=False),
        pa.field("error", pa.string()),  # null on success; short reason otherwise
    ]
)
