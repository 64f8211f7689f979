"""Crawl throughput: qpipe's Scrapy crawl beside a sequential stdlib (urllib) crawler.

Both crawl the same loopback site: an index page linking the 61 real news pages from
`../shared/data/articles/html/*.html.gz` (synthetic pages when that folder is absent),
served with a simulated per-request latency (a stand-in for network round trips). The
anchor fetches index + links one by one with the same link rules; the stage is
`crawl_in_this_process` with concurrency_per_domain=4, AutoThrottle off, robots obeyed.
Both must fetch the same URLs with byte-identical bodies. Last line: one JSON object.

    .venv/bin/python bench/crawl.py [--latency-ms 50] [--articles DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sys
import tempfile
import time
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.loopback_site import serve_routes  # noqa: E402
from qpipe_dagster.crawl.runner import crawl_in_this_process, read_crawled_pages  # noqa: E402
from qpipe_dagster.crawl.settings import CrawlSettings  # noqa: E402
from qpipe_dagster.crawl.urls import filter_links, site_of  # noqa: E402

DEFAULT_ARTICLES = REPO_ROOT.parent / "shared" / "data" / "articles"
_HREF = re.compile(rb"""<a\s[^>]*href=["']([^"']+)["']""", re.I)


def load_pages(folder: Path) -> tuple[dict[str, bytes], str]:
    """path -> body for the article pages, and where they came from."""
    files = sorted((folder / "html").glob("*.html.gz")) if folder.is_dir() else []
    if files:
        pages = {f"/a/{f.name[:16]}.html": gzip.decompress(f.read_bytes()) for f in files}
        return pages, f"{len(files)} real pages from {folder}"
    filler = "<p>" + "momentum breakout mean reversion " * 400 + "</p>"
    pages = {f"/a/{i}.html": f"<html><body>{filler}</body></html>".encode() for i in range(61)}
    return pages, "61 synthetic pages (articles folder not found)"


def serve(pages: dict[str, bytes], latency_s: float) -> tuple[ThreadingHTTPServer, str]:
    index = "".join(f'<a href="{p}">{p}</a>\n' for p in pages).encode()
    routes = {"/": b"<html><body>" + index + b"</body></html>", **pages}

    return serve_routes(routes, latency_s)


def anchor_crawl(seed: str, ua: str) -> dict[str, str]:
    """Sequential depth-1 crawl with urllib: url -> sha256 of the body."""

    def get(url: str) -> bytes:
        req = urllib.request.Request(url, headers={"User-Agent": ua})
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.read()

    get(seed.rstrip("/") + "/robots.txt")  # the same politeness fetch the stage makes
    root = get(seed)
    hashes = {seed: hashlib.sha256(root).hexdigest()}
    hrefs = [m.decode() for m in _HREF.findall(root)]
    for url in filter_links(hrefs, seed, site_of(seed)):
        if url not in hashes:
            hashes[url] = hashlib.sha256(get(url)).hexdigest()
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--articles", type=Path, default=DEFAULT_ARTICLES)
    args = parser.parse_args()
    if args.latency_ms < 0:
        sys.exit("error: --latency-ms must be >= 0")

    pages, source = load_pages(args.articles)
    server, seed = serve(pages, args.latency_ms / 1000)
    settings = CrawlSettings(max_depth=1, max_pages=500, autothrottle=False, retries=0)
    print(f"site: {source}, latency {args.latency_ms:g} ms/request")

    t0 = time.perf_counter()
    anchor = anchor_crawl(seed, settings.user_agent)
    anchor_s = time.perf_counter() - t0
    print(f"anchor (sequential urllib): {len(anchor)} pages in {anchor_s:.2f}s")

    import scrapy.crawler  # noqa: F401  (import cost is not crawl cost)

    import qpipe_dagster.crawl.spider  # noqa: F401

    first_row: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pages.arrow"
        t0 = time.perf_counter()
        summary = crawl_in_this_process(
            [seed],
            settings,
            out,
            on_row=lambda _r: first_row.append(time.perf_counter() - t0) if not first_row else None,
        )
        stage_s = time.perf_counter() - t0
        table = read_crawled_pages(out)
    server.shutdown()
    stage = dict(zip(table["url"].to_pylist(), table["content_hash"].to_pylist(), strict=True))
    identical = stage == anchor
    print(f"stage (qpipe scrapy crawl, 4/domain): {len(stage)} pages in {stage_s:.2f}s")
    print(f"speed-up stage vs anchor: {anchor_s / stage_s:.2f}x; identical bodies: {identical}")
    mb = summary["bytes"] / 1e6
    print(
        json.dumps(
            {
                "bench": "crawl",
                "source": source,
                "latency_ms": args.latency_ms,
                "pages": len(stage),
                "mb": round(mb, 3),
                "anchor_s": round(anchor_s, 3),
                "stage_s": round(stage_s, 3),
                "anchor_pages_per_s": round(len(anchor) / anchor_s, 2),
                "stage_pages_per_s": round(len(stage) / stage_s, 2),
                "speedup": round(anchor_s / stage_s, 2),
                "stage_first_page_s": round(first_row[0], 3) if first_row else None,
                "identical_bodies": identical,
                "pages_ok": summary["pages_ok"],
                "pages_failed": summary["pages_failed"],
            }
        )
    )


if __name__ == "__main__":
    main()
