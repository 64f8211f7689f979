"""`qpipe search "query"`: nearest chunks in the vector store, proof the objects are useful."""

from __future__ import annotations

import argparse
import json
import sys

from qpipe_dagster.defs.resources import default_resources
from qpipe_dagster.embed.encoder import EmbeddingError, check_texts

TRIALS_SUFFIX = ":trials"  # backtest trials of a concept (qpipe_dagster.backtest.trials)


def _concept_filter(raw: str | None) -> str | None:
    """--concept as stored: a concept key, or KEY:trials for its backtest trials."""
    from qpipe_dagster.concepts import validate_slug

    if raw is None:
        return None
    base = raw[: -len(TRIALS_SUFFIX)] if raw.endswith(TRIALS_SUFFIX) else raw
    validate_slug(base)  # '' is refused here too: it used to mean "every concept"
    return raw


def _search(args: argparse.Namespace) -> int:
    from qpipe_dagster.cli import CliError

    try:
        check_texts([args.query])
    except EmbeddingError as exc:
        raise CliError(
            "search query is not valid text (bytes that are not UTF-8? check the terminal's "
            f"encoding): {str(exc).split(': ', 1)[-1]}"
        ) from None
    if not args.query.strip():
        raise CliError("search query is empty")
    if args.k < 1 or args.k > 1000:
        raise CliError(f"-k must be between 1 and 1000, got {args.k}")
    concept = _concept_filter(args.concept)
    resources = default_resources()
    encoder = resources["embedder"].encoder()
    # read-only: a store or collection that does not exist is said so, never created empty
    store = resources["vector_store"].open(model=encoder.model_id, dim=encoder.dim, create=False)
    try:
        tokens = len(encoder.tokenizer(args.query, verbose=False)["input_ids"])
        if tokens > encoder.max_seq_length:
            print(
                f"qpipe: note: the query is {tokens} tokens; the model reads only the first "
                f"{encoder.max_seq_length}",
                file=sys.stderr,
            )
        hits = store.search(encoder.encode([args.query])[0], k=args.k, concept=concept)
        empty = not hits and store.count(concept) == 0
    finally:
        store.close()
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], default=str, indent=2))
        return 0
    if empty:
        where = f"concept {concept!r}" if concept else "any concept"
        print(
            f"no results: {store.collection} holds nothing for {where} "
            "(has the concept been materialized?)"
        )
    for rank, h in enumerate(hits, 1):
        snippet = " ".join(h.text.split())[:160]
        print(
            f"{rank:>2}. {h.score:.3f}  {h.title or '(untitled)'}\n    {h.url}  [{h.concept}#{h.chunk_index}]\n    {snippet}"
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("search", help="semantic search over stored chunks")
    p.add_argument("query")
    p.add_argument(
        "--concept", help="only this concept's chunks (KEY:trials for its backtest trials)"
    )
    p.add_argument("-k", type=int, default=5, help="number of results (default 5, at most 1000)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_search)
