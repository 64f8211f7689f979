"""Chunking speed: qpipe's Chunker beside a per-sentence tokenizing packer (the common recipe).

Both pack sentences into chunks of at most ``--max-tokens`` model tokens with the packaged
all-MiniLM-L6-v2 tokenizer. The anchor tokenizes every sentence with its own tokenizer call;
qpipe tokenizes each text once and cuts by offsets. Texts: the hand-labelled article bodies in
``--articles`` (default ``../shared/data/articles``) or, if absent, the test pages' text.
The last printed line is one JSON object with the figures.

    .venv/bin/python bench/chunking.py [--articles DIR] [--max-tokens 200] [--overlap 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from qpipe_dagster.parse.chunk import Chunker, default_tokenizer, sentence_spans  # noqa: E402
from qpipe_dagster.parse.extract import extract_article  # noqa: E402

DEFAULT_ARTICLES = REPO_ROOT.parent / "shared" / "data" / "articles"
TEST_PAGES = REPO_ROOT / "qpipe_dagster_tests" / "parse" / "pages"


def load_texts(folder: Path) -> tuple[list[str], str]:
    truth = folder / "ground-truth.json"
    if truth.is_file():
        data = json.loads(truth.read_text(encoding="utf-8"))
        return [v["articleBody"] for v in data.values() if v.get("articleBody")], str(folder)
    texts = [
        extract_article(p.read_bytes(), "https://example.com/").text
        for p in TEST_PAGES.glob("*.html")
    ]
    return [t for t in texts if t] * 20, f"{TEST_PAGES} (x20; {folder} not found)"


def anchor_chunks(tokenizer: Any, text: str, max_tokens: int) -> list[str]:
    """Per-sentence tokenizer calls, greedy packing; long sentences cut by decoded token ids."""
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for start, end in sentence_spans(text):
        sentence = text[start:end]
        ids = tokenizer(sentence, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) > max_tokens:
            if current:
                chunks.append(" ".join(current))
                current, used = [], 0
            for i in range(0, len(ids), max_tokens):
                chunks.append(tokenizer.decode(ids[i : i + max_tokens]))
            continue
        if used + len(ids) > max_tokens and current:
            chunks.append(" ".join(current))
            current, used = [], 0
        current.append(sentence)
        used += len(ids)
    if current:
        chunks.append(" ".join(current))
    return chunks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=Path, default=DEFAULT_ARTICLES)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--overlap", type=int, default=32)
    args = parser.parse_args(argv)
    texts, source = load_texts(args.articles.resolve())
    tokenizer = default_tokenizer()
    chunker = Chunker(tokenizer, max_tokens=args.max_tokens, overlap_tokens=args.overlap)
    chars = sum(map(len, texts))

    for text in texts[:3]:  # warm-up
        chunker.chunk(text)
        anchor_chunks(tokenizer, text, args.max_tokens)
    start = time.perf_counter()
    ours = [chunker.chunk(text) for text in texts]
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    anchor = [anchor_chunks(tokenizer, text, args.max_tokens) for text in texts]
    anchor_s = time.perf_counter() - start

    our_chunks = [c for chunks in ours for c in chunks]
    longest = max(c.token_count for c in our_chunks)
    anchor_lengths = [
        len(ids)
        for ids in tokenizer(
            [c for chunks in anchor for c in chunks], add_special_tokens=False, verbose=False
        )["input_ids"]
    ]
    print(f"{len(texts)} texts, {chars:,} chars from {source}")
    print(f"{'chunker':<10}{'chunks':>8}{'texts/s':>10}{'MB/s':>8}{'max tokens':>12}")
    for name, n, seconds, top in (
        ("qpipe", len(our_chunks), ours_s, longest),
        ("anchor", len(anchor_lengths), anchor_s, max(anchor_lengths)),
    ):
        print(
            f"{name:<10}{n:>8}{len(texts) / seconds:>10.1f}{chars / seconds / 1e6:>8.2f}{top:>12}"
        )
    print(
        f"speed ratio qpipe/anchor: x{anchor_s / ours_s:.2f} (qpipe also computes {args.overlap}-token overlaps)"
    )
    print(
        json.dumps(
            {
                "texts": len(texts),
                "chars": chars,
                "max_tokens": args.max_tokens,
                "overlap_tokens": args.overlap,
                "chunks": len(our_chunks),
                "texts_per_s": round(len(texts) / ours_s, 1),
                "mb_per_s": round(chars / ours_s / 1e6, 3),
                "max_chunk_tokens": longest,
                "anchor": "per-sentence tokenizer calls, greedy packing, no overlap",
                "anchor_texts_per_s": round(len(texts) / anchor_s, 1),
                "anchor_max_chunk_tokens": max(anchor_lengths),
                "speed_ratio": round(anchor_s / ours_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
