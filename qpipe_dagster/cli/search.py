"""`qpipe search "query"`: nearest chunks in the vector store, proof the objects are useful."""

from __future__ import annotations

import argparse
import json

from qpipe_dagster.defs.resources import default_resources


def _search(args: argparse.Namespace) -> int:
    from qpipe_dagster.cli import CliError
    from qpipe_dagster.concepts import validate_slug

    if not args.query.strip():
        raise CliError("search query is empty")
    if args.k < 1 or args.k > 1000:
        raise CliError(f"-k must be between 1 and 1000, got {args.k}")
    concept = validate_slug(args.concept) if args.concept else None
    resources = default_resources()
    encoder = resources["embedder"].encoder()
    store = resources["vector_store"].open(model=encoder.model_id, dim=encoder.dim)
    try:
        hits = store.search(encoder.encode([args.query])[0], k=args.k, concept=concept)
    finally:
        store.close()
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], default=str, indent=2))
        return 0
    if not hits:
        print("no results (has the concept been materialized?)")
    for rank, h in enumerate(hits, 1):
        snippet = " ".join(h.text.split())[:160]
        print(
            f"{rank:>2}. {h.score:.3f}  {h.title or '(untitled)'}\n    {h.url}  [{h.concept}#{h.chunk_index}]\n    {snippet}"
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("search", help="semantic search over stored chunks")
    p.add_argument("query")
    p.add_argument("--concept", help="only this concept's chunks")
    p.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_search)
