"""Embedding throughput: qpipe's page_embeddings path vs raw SentenceTransformer.encode.

Both run in this process on the same chunk texts with the same loaded model, alternating, best of
--repeats. Chunk texts come from the article dev set in ../shared/data/articles when present
(extracted and chunked as the pipeline does), else from the bundled demo site.
Also prints the work done on re-materialization with 0%, 1% and 100% of pages changed.

    .venv/bin/python bench/embedding.py [--articles DIR] [--repeats 3] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qpipe_dagster.embed.encoder import Encoder  # noqa: E402
from qpipe_dagster.embed.incremental import embed_chunks, explode_chunks  # noqa: E402
from qpipe_dagster.parse.chunk import Chunker  # noqa: E402
from qpipe_dagster.parse.extract import extract_article  # noqa: E402
from qpipe_dagster.parse.table import CHUNK_TYPE, chunk_rows  # noqa: E402


def load_pages(articles: Path) -> list[tuple[str, bytes]]:
    if (articles / "html").is_dir():
        return [
            (p.name, gzip.decompress(p.read_bytes()))
            for p in sorted((articles / "html").glob("*.html.gz"))
        ]
    site = REPO / "qpipe_dagster" / "demo" / "site"
    return [(p.name, p.read_bytes()) for p in sorted(site.glob("*.html"))]


def parsed_table(
    pages: list[tuple[str, bytes]], chunker: Chunker, salt: set[int] = frozenset()
) -> pa.Table:
    rows = []
    for n, (name, html) in enumerate(pages):
        text = extract_article(html, f"https://bench.local/{name}").text
        if n in salt:
            text = (
                text.upper()
            )  # same tokens for the uncased model, so same chunking, but every chunk's hash differs
        chunks = chunk_rows(chunker, text)
        rows.append(
            {
                "url": f"https://bench.local/{name}",
                "title": name,
                "parser_version": "bench",
                "fetched_at": datetime(2026, 1, 1, tzinfo=UTC),
                "chunks": chunks,
            }
        )
    schema = pa.schema(
        [
            ("url", pa.string()),
            ("title", pa.string()),
            ("parser_version", pa.string()),
            ("fetched_at", pa.timestamp("us", tz="UTC")),
            ("chunks", pa.list_(CHUNK_TYPE)),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--articles", type=Path, default=REPO.parent / "shared" / "data" / "articles")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    encoder = Encoder(batch_size=args.batch_size)
    model = encoder.model
    pages = load_pages(args.articles)
    chunker = Chunker(encoder.tokenizer)
    parsed = parsed_table(pages, chunker)
    chunks = explode_chunks(parsed, "bench", encoder.model_id)
    texts = chunks.column("text").to_pylist()
    print(f"{len(pages)} pages -> {len(texts)} chunks; model {encoder.model_id} on {model.device}")

    model.encode(texts[:64], batch_size=args.batch_size)  # warm-up
    raw_best = pipe_best = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        model.encode(
            texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        raw_best = min(raw_best, time.perf_counter() - t)
        t = time.perf_counter()
        first, _ = embed_chunks(explode_chunks(parsed, "bench", encoder.model_id), encoder)
        pipe_best = min(pipe_best, time.perf_counter() - t)
    raw_cps, pipe_cps = len(texts) / raw_best, len(texts) / pipe_best
    print(f"raw encode   {raw_cps:8.1f} chunks/s")
    print(f"page_embeddings path {pipe_cps:8.1f} chunks/s  (ratio {pipe_cps / raw_cps:.3f})")

    incremental = {}
    one_pct = set(range(max(1, round(len(pages) / 100))))
    for label, changed in (("0pct", set()), ("1pct", one_pct), ("100pct", set(range(len(pages))))):
        table = parsed_table(pages, chunker, changed)
        t = time.perf_counter()
        _, stats = embed_chunks(explode_chunks(table, "bench", encoder.model_id), encoder, first)
        incremental[label] = {
            "pages_changed": len(changed),
            "embedded": stats.embedded,
            "reused": stats.reused,
            "seconds": round(time.perf_counter() - t, 3),
        }
        print(
            f"re-run with {label:>6} pages changed: embedded {stats.embedded}, reused {stats.reused}"
        )

    print(
        json.dumps(
            {
                "pages": len(pages),
                "chunks": len(texts),
                "device": str(model.device),
                "raw_chunks_per_s": round(raw_cps, 1),
                "pipeline_chunks_per_s": round(pipe_cps, 1),
                "ratio_vs_raw": round(pipe_cps / raw_cps, 3),
                "incremental": incremental,
            }
        )
    )


if __name__ == "__main__":
    main()
