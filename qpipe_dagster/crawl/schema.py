"""The Arrow schema of the `crawled_pages` table: one row per requested URL.

Failures are rows too (with `error` set), so downstream stages and humans can see what
was *not* fetched and why, instead of pages silently going missing.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["CRAWLED_PAGES_SCHEMA", "SKIPPED_PREFIX", "empty_crawl_reason"]

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


def empty_crawl_reason(table: pa.Table, *, examples: int = 3) -> str:
    """Why a crawl fetched no page, for the failed run's message: the commonest row errors.

    A run that stored 0 pages used to end green; the blocking `crawl_not_empty` check fails
    it with this text, so the reason (e.g. a refused private address) is on the run itself.
    """
    if table.num_rows == 0:
        return "no page was fetched: the crawl requested no URL"
    counts: dict[str, int] = {}
    for error in table.column("error").to_pylist():
        counts[error or "no error"] = counts.get(error or "no error", 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:examples]
    listed = "; ".join(f"{n} x {error}" for error, n in top)
    more = f" (and {len(counts) - examples} other errors)" if len(counts) > examples else ""
    return f"no page was fetched: {table.num_rows} URLs requested, {listed}{more}"
