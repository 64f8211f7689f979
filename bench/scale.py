"""Scale curves: how a concept's cost grows with its pages, and a tick's with registered concepts.

1. Pages per concept (`--pages`): one loopback site per size N (an index linking N - 1 pages: the
   61 dev-set articles from `../shared/data/articles`, rotated, each with a per-page marker so
   every page's text is distinct; the demo site's pages when that folder is absent), run through
   the stage code of a concept run, in this process: the crawl (`crawl_subprocess`, the crawl's
   child, with max_pages = N), parse (`parse_pages`), embed (`embed_chunks`, the offline model
   loaded once beforehand, as `bench/embedding.py` does) and store (`sync_concept` into a fresh
   temp LanceDB store). Seconds per stage and per page, and the growth exponent between sizes,
   log(t2/t1) / log(n2/n1): 1.0 is linear; a stage above 1.1 is flagged. The crawl includes its
   child's start-up (about a second), which pulls its exponent below 1 at small N.
2. Registered concepts (`--concepts`): per size n, a temp DAGSTER_HOME with a real
   DagsterInstance, n concepts in the registry and as dynamic partitions, two thirds of them with
   a `crawled_pages` materialization (the rest never crawled, so stale), and one pending inbox
   message per concept (written through the inbox's batch writer, the receiver's path). Timed:
   one evaluation of `qstash_inbox_sensor` and one of `recrawl_schedule` (an hour later), with the
   project's Definitions, and the SQL statements each sent to the Dagster instance.

Loopback only; never fails on speed. Last line: one JSON object.

    .venv/bin/python bench/scale.py [--pages 12,100,500] [--concepts 10,100,1000] [--articles DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.e2e import _LINK, DEFAULT_ARTICLES, article_pages, serve_sites  # noqa: E402

STAGES = ("crawl", "parse", "embed", "store")
FLAG_EXPONENT = 1.1
_FIRST_P = re.compile(rb"<p(\s[^>]*)?>", re.I)


def sizes(text: str) -> list[int]:
    """'12,100,500' -> [12, 100, 500]; '' -> [] (that curve is skipped)."""
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if any(v < 2 for v in values):
        raise argparse.ArgumentTypeError("sizes must be at least 2")
    return values


def exponents(rows: list[dict], size_key: str, keys: tuple[str, ...]) -> list[dict]:
    """Growth exponent of each timed key between consecutive sizes (1.0 = linear)."""
    out = []
    for a, b in itertools.pairwise(rows):
        ratio = math.log(b[size_key] / a[size_key])
        row: dict = {"from": a[size_key], "to": b[size_key]}
        for key in keys:
            t1, t2 = a[key], b[key]
            row[key] = round(math.log(t2 / t1) / ratio, 2) if t1 > 0 and t2 > 0 else None
        out.append(row)
    return out


def flagged(curve: list[dict], keys: tuple[str, ...]) -> list[str]:
    return sorted(
        {k for row in curve for k in keys if row[k] is not None and row[k] > FLAG_EXPONENT}
    )


# --- 1. pages per concept ----------------------------------------------------------------------


def source_pages(articles: Path) -> tuple[list[bytes], str]:
    """The dev-set articles (links disabled, as bench/e2e.py serves them), else the demo site."""
    pages = article_pages(articles)
    if pages:
        return pages, f"{len(pages)} dev-set articles from {articles}"
    site = REPO_ROOT / "qpipe_dagster" / "demo" / "site"
    demo = [
        _LINK.sub(rb"<a\1 data-href=", p.read_bytes())
        for p in sorted(site.glob("*.html"))
        if p.name != "index.html"
    ]
    return demo, f"{len(demo)} demo-site pages (articles folder not found)"


def spread(pages: list[bytes]) -> list[bytes]:
    """The pages in an order whose every prefix samples small and large pages alike (van der
    Corput over their size ranks), so 11 pages weigh about what 499 weigh, page for page."""

    def radical_inverse(i: int) -> float:
        out, base = 0.0, 0.5
        while i:
            out, i, base = out + base * (i & 1), i >> 1, base / 2
        return out

    by_size = sorted(pages, key=len)
    return [by_size[i] for i in sorted(range(len(by_size)), key=radical_inverse)]


def marked(pages: list[bytes], count: int) -> list[bytes]:
    """`count` pages rotating through `pages`, each with its own sentence in its first
    paragraph, so no two pages have the same text (and the same chunks)."""
    out = []
    for j in range(count):
        html = pages[j % len(pages)]
        note = f"Bench page {j} of {count}, copy {j // len(pages)}. ".encode()
        m = _FIRST_P.search(html)
        out.append(html[: m.end()] + note + html[m.end() :] if m else html + b"<p>" + note)
    return out


def warm_up(pages: list[bytes], encoder, tmp: Path) -> None:
    """First-call costs (imports, extractor and store set-up) outside every timed stage."""
    from qpipe_dagster.embed.incremental import embed_chunks, explode_chunks
    from qpipe_dagster.parse.chunk import Chunker
    from qpipe_dagster.parse.table import parse_pages
    from qpipe_dagster.store import open_store
    from qpipe_dagster.store.sync import sync_concept

    crawled = crawled_table(pages[:1])
    chunker = Chunker(encoder.tokenizer, model_max_seq_length=encoder.max_seq_length)
    parsed = parse_pages(crawled, chunker).table.slice(0, 1)
    table, _ = embed_chunks(explode_chunks(parsed, "warm-up", encoder.model_id), encoder)
    store = open_store(model=encoder.model_id, dim=encoder.dim, lance_path=tmp / "warm-up")
    try:
        sync_concept(store, table.slice(0, 2), "warm-up")
    finally:
        store.close()


def crawled_table(pages: list[bytes]):
    """A crawled_pages table of these pages, as if fetched (for the warm-up only)."""
    import pyarrow as pa

    from qpipe_dagster.crawl.schema import CRAWLED_PAGES_SCHEMA

    now = datetime.now(UTC)
    rows = [
        {name: None for name in CRAWLED_PAGES_SCHEMA.names}
        | {
            "url": f"http://127.0.0.1/w{i}",
            "final_url": f"http://127.0.0.1/w{i}",
            "fetched_at": now,
            "html": html,
            "encoding": "utf-8",
            "status": 200,
            "depth": 0,
        }
        for i, html in enumerate(pages)
    ]
    return pa.Table.from_pylist(rows, schema=CRAWLED_PAGES_SCHEMA)


def one_size(n: int, pages: list[bytes], encoder, tmp: Path) -> dict:
    """Crawl, parse, embed and store one concept of `n` pages; seconds per stage."""
    from qpipe_dagster.crawl.runner import crawl_subprocess
    from qpipe_dagster.crawl.settings import CrawlSettings
    from qpipe_dagster.embed.incremental import embed_chunks, explode_chunks
    from qpipe_dagster.parse.chunk import Chunker
    from qpipe_dagster.parse.table import parse_pages
    from qpipe_dagster.store import open_store
    from qpipe_dagster.store.objects import with_trace
    from qpipe_dagster.store.sync import sync_concept

    concept = f"scale-{n}"
    server, base = serve_sites(marked(pages, n - 1), 1, n)
    try:
        t0 = time.perf_counter()
        crawled = crawl_subprocess(
            [f"{base}/c0/"], CrawlSettings(max_pages=n), tmp / f"crawl-{n}.arrow"
        )
        t1 = time.perf_counter()
    finally:
        server.shutdown()
        server.server_close()
    chunker = Chunker(encoder.tokenizer, model_max_seq_length=encoder.max_seq_length)
    parsed = parse_pages(crawled, chunker)
    t2 = time.perf_counter()
    table, stats = embed_chunks(explode_chunks(parsed.table, concept, encoder.model_id), encoder)
    t3 = time.perf_counter()
    store = open_store(model=encoder.model_id, dim=encoder.dim, lance_path=tmp / f"lance-{n}")
    try:
        synced = sync_concept(
            store, with_trace(table, run_id="bench-scale", message_id=None), concept
        )
    finally:
        store.close()
    t4 = time.perf_counter()
    fetched = sum(1 for e in crawled.column("error").to_pylist() if e is None)
    row = {
        "pages": n,
        "fetched": fetched,
        "chunks": stats.chunks,
        "stored": synced.total,
        **{
            s: round(b - a, 3)
            for s, a, b in zip(STAGES, (t0, t1, t2, t3), (t1, t2, t3, t4), strict=True)
        },
    }
    row["total"] = round(t4 - t0, 3)
    row["ms_per_page"] = round(1000 * row["total"] / max(fetched, 1), 1)
    row["embed_ms_per_chunk"] = round(1000 * row["embed"] / max(stats.chunks, 1), 1)
    return row


def pages_curve(ns: list[int], articles: Path) -> dict:
    from qpipe_dagster.embed.encoder import Encoder

    pages, source = source_pages(articles)
    pages = spread(pages)
    encoder = Encoder()
    rows = []
    with tempfile.TemporaryDirectory(prefix="qpipe-scale-") as tmp:
        warm_up(pages, encoder, Path(tmp))
        for n in ns:
            row = one_size(n, pages, encoder, Path(tmp))
            print(f"pages {n:>4}: " + ", ".join(f"{k} {row[k]}" for k in row if k != "pages"))
            rows.append(row)
    keys = (*STAGES, "total")
    curve = exponents(rows, "pages", keys)
    per_chunk = exponents(rows, "chunks", keys)
    for label, c in (("pages", curve), ("chunks", per_chunk)):
        for row in c:
            print(
                f"exponent vs {label} {row['from']}->{row['to']}: "
                + ", ".join(f"{k} {row[k]}" for k in keys)
            )
    # superlinear only when it is so against both pages and chunks (page sizes vary)
    worse = sorted(set(flagged(curve, STAGES)) & set(flagged(per_chunk, STAGES)))
    return {
        "source": source,
        "model": encoder.model_id,
        "device": str(encoder.model.device),
        "rows": rows,
        "exponents": curve,
        "exponents_vs_chunks": per_chunk,
        "flagged": worse,
    }


# --- 2. registered concepts --------------------------------------------------------------------


@contextmanager
def sql_statements() -> Iterator[Callable[[], int]]:
    """Counts the SQL statements any SQLAlchemy engine (the Dagster instance's) sends."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    count = 0

    def seen(*_args: object) -> None:
        nonlocal count
        count += 1

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield lambda: count
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


def timed(fn: Callable[[], object]) -> tuple[object, float, int]:
    with sql_statements() as statements:
        t = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - t, statements()


def one_registry(n: int, home: Path, repo) -> dict:
    """n registered concepts with history and pending messages; one sensor and one recrawl tick."""
    from dagster import (
        AssetMaterialization,
        DagsterInstance,
        build_schedule_context,
        build_sensor_context,
    )

    from qpipe_dagster.concepts import Concept, default_registry
    from qpipe_dagster.defs.operations import recrawl_schedule
    from qpipe_dagster.defs.partitions import CONCEPTS_PARTITIONS
    from qpipe_dagster.defs.triggers import qstash_inbox_sensor
    from webhook_sensor.inbox import InboxRecord, open_inbox
    from webhook_sensor.settings import default_inbox_target

    home.mkdir(parents=True)
    os.environ["DAGSTER_HOME"] = str(home)
    slugs = [f"concept-{i:05d}" for i in range(n)]
    t = time.perf_counter()
    registry = default_registry()
    for slug in slugs:
        registry.upsert(Concept(slug, slug, (f"https://example.com/{slug}/",)))
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(CONCEPTS_PARTITIONS, slugs)
        for i, slug in enumerate(slugs):
            if i % 3:  # every third concept was never crawled: stale at any time
                instance.report_runless_asset_event(
                    AssetMaterialization(asset_key="crawled_pages", partition=slug)
                )
        sink = open_inbox(default_inbox_target()).open_writer()
        try:
            sink.write(
                [
                    InboxRecord(
                        message_id=f"msg-{slug}",
                        body=b"{}",
                        slug=slug,
                        concept_name=slug,
                        seed_urls=(f"https://example.com/{slug}/",),
                        symbol=None,
                    )
                    for slug in slugs
                ]
            )
        finally:
            sink.close()
        setup_s = time.perf_counter() - t

        def sensor_tick():
            with build_sensor_context(
                instance=instance, instance_ref=instance.get_ref(), repository_def=repo
            ) as ctx:
                return qstash_inbox_sensor.evaluate_tick(ctx)

        def recrawl_tick():
            at = datetime.now(UTC) + timedelta(hours=1)
            with build_schedule_context(
                instance=instance, scheduled_execution_time=at, repository_def=repo
            ) as ctx:
                return recrawl_schedule.evaluate_tick(ctx)

        sensed, sensor_s, sensor_sql = timed(sensor_tick)
        recrawled, recrawl_s, recrawl_sql = timed(recrawl_tick)
    return {
        "concepts": n,
        "setup_s": round(setup_s, 2),
        "sensor_s": round(sensor_s, 4),
        "sensor_sql": sensor_sql,
        "sensor_runs": len(getattr(sensed, "run_requests", None) or []),
        "recrawl_s": round(recrawl_s, 4),
        "recrawl_sql": recrawl_sql,
        "recrawl_runs": len(getattr(recrawled, "run_requests", None) or []),
    }


def concepts_curve(ns: list[int]) -> dict:
    from qpipe_dagster.definitions import defs

    repo = defs.get_repository_def()
    rows = []
    previous = os.environ.get("DAGSTER_HOME")
    try:
        with tempfile.TemporaryDirectory(prefix="qpipe-scale-home-") as tmp:
            for n in ns:
                row = one_registry(n, Path(tmp) / f"n{n}", repo)
                print(
                    f"concepts {n:>5}: "
                    + ", ".join(f"{k} {row[k]}" for k in row if k != "concepts")
                )
                rows.append(row)
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
    keys = ("sensor_s", "recrawl_s")
    curve = exponents(rows, "concepts", keys)
    for row in curve:
        print(f"exponent {row['from']}->{row['to']}: " + ", ".join(f"{k} {row[k]}" for k in keys))
    return {"rows": rows, "exponents": curve, "flagged": flagged(curve, keys)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--pages", type=sizes, default=[12, 100, 500], help="page counts, e.g. 12,100,500"
    )
    ap.add_argument("--concepts", type=sizes, default=[10, 100, 1000], help="e.g. 10,100,1000")
    ap.add_argument("--articles", type=Path, default=DEFAULT_ARTICLES)
    args = ap.parse_args()
    result: dict = {"load": os.getloadavg()[0]}
    if args.concepts:
        result["concepts"] = concepts_curve(args.concepts)
    if args.pages:
        result["pages"] = pages_curve(args.pages, args.articles)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
