"""`qpipe reembed` and `qpipe models`: rotate the embedding model without mixing vectors."""

from __future__ import annotations

import argparse

from qpipe_dagster.defs.io import asset_storage_dir
from qpipe_dagster.defs.resources import default_resources
from qpipe_dagster.embed.encoder import EmbeddingError, Encoder
from qpipe_dagster.embed.rotation import ModelChoice, active_model, reembed_all, set_active_model


def _reembed(args: argparse.Namespace) -> int:
    from qpipe_dagster.cli import CliError

    if args.truncate_dim is not None and args.truncate_dim < 1:
        raise CliError(f"--truncate-dim must be >= 1, got {args.truncate_dim}")
    try:  # a bad --model or --batch-size is the user's to fix: one line, not a traceback
        encoder = Encoder(
            name=args.model, truncate_dim=args.truncate_dim, batch_size=args.batch_size
        )
        store_resource = default_resources()["vector_store"]
        report = reembed_all(
            encoder,
            lambda model, dim: store_resource.open(model=model, dim=dim),
            asset_storage_dir(),
            concepts=args.concept or None,
        )
    except EmbeddingError as exc:
        raise CliError(str(exc)) from None
    if not report:
        raise CliError("nothing to re-embed: no concept has parsed_pages stored yet")
    if args.no_switch:
        print(f"re-embedded {len(report)} concept(s) into {encoder.model_id}; search not switched")
    else:
        set_active_model(ModelChoice(args.model, args.truncate_dim))
        print(f"re-embedded {len(report)} concept(s); search now uses {encoder.model_id}")
    return 0


def _show(args: argparse.Namespace) -> int:
    choice = active_model()
    print(f"active model: {Encoder(choice.name, truncate_dim=choice.truncate_dim).model_id}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reembed", help="re-embed every stored concept with another model, then switch search to it"
    )
    p.add_argument("--model", required=True, help="sentence-transformers model name or local path")
    p.add_argument("--truncate-dim", type=int, help="Matryoshka truncation, e.g. 256")
    p.add_argument("--concept", action="append", help="only these concepts (repeatable)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--no-switch", action="store_true", help="fill the new collection, keep search as is"
    )
    p.set_defaults(handler=_reembed)
    m = subparsers.add_parser("models", help="show the active embedding model")
    m.set_defaults(handler=_show)
