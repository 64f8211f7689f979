"""`qpipe reembed` and `qpipe models`: rotate the embedding model without mixing vectors."""

from __future__ import annotations

import argparse
import json

from qpipe_dagster.cli.progress import Meter, meters
from qpipe_dagster.defs.io import asset_storage_dir
from qpipe_dagster.defs.resources import default_resources
from qpipe_dagster.embed.encoder import EmbeddingError, Encoder
from qpipe_dagster.embed.rotation import ModelChoice, active_model, reembed_all, set_active_model


def _reembed(args: argparse.Namespace) -> int:
    from qpipe_dagster.cli import CliError

    if args.truncate_dim is not None and args.truncate_dim < 1:
        raise CliError(f"--truncate-dim must be >= 1, got {args.truncate_dim}")
    factory = meters(json_mode=args.json)
    meter: Meter | None = None

    def progress(done: int, total: int, note: str) -> None:
        nonlocal meter
        if meter is None:  # the total is known once the stored concepts are listed
            meter = factory(total=total, desc="re-embedding", unit="concept")
            meter.write(f"re-embedding {total} concept(s) {note}")
        if done:
            meter.advance(note=note)

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
            progress=progress,
        )
        trials = _reembed_trials(encoder, store_resource, args.concept or None)
    except EmbeddingError as exc:
        raise CliError(str(exc)) from None
    finally:
        if meter is not None:
            meter.close()
    if not report and not trials:
        raise CliError(
            "nothing to re-embed: no concept has parsed_pages or embedded trials stored yet"
        )
    if not args.no_switch:  # only now, with every concept re-embedded, does search move
        set_active_model(ModelChoice(args.model, args.truncate_dim))
    if args.json:
        summary = {
            "model": encoder.model_id,
            "switched": not args.no_switch,
            "concepts": report,
            "trials": trials,
        }
        print(json.dumps(summary, indent=2, sort_keys=True))
    elif args.no_switch:
        print(f"re-embedded {len(report)} concept(s) into {encoder.model_id}; search not switched")
    else:
        print(f"re-embedded {len(report)} concept(s); search now uses {encoder.model_id}")
    return 0


def _reembed_trials(encoder: Encoder, store_resource: object, concepts: list[str] | None) -> dict:
    """Trial objects too (`trials.vectors.reembed_trials`), so trial search survives rotation."""
    from qpipe_dagster.trials.store import TrialStore
    from qpipe_dagster.trials.vectors import reembed_trials

    trial_store = TrialStore()
    if not trial_store.concepts():
        return {}
    store = store_resource.open(model=encoder.model_id, dim=encoder.dim)  # type: ignore[attr-defined]
    try:
        return reembed_trials(encoder, store, trial_store, concepts=concepts)
    finally:
        store.close()


def _drop(args: argparse.Namespace) -> int:
    """Drop the collection of a model that is no longer used (after `qpipe reembed`)."""
    from qpipe_dagster.cli import CliError
    from qpipe_dagster.embed.encoder import model_id

    dim = args.dim or args.truncate_dim
    if dim is None or dim < 1:
        raise CliError("--dim is required (the old model's vector size, e.g. 384) and must be >= 1")
    old = model_id(args.model, args.truncate_dim)
    choice = active_model()
    if old == model_id(choice.name, choice.truncate_dim):
        raise CliError(
            f"--model {args.model!r} is the active model ({old}): search reads its collection; "
            "rotate first with `qpipe reembed --model NEW`, then drop the old one"
        )
    store = default_resources()["vector_store"].open(model=old, dim=dim, create=False)
    try:
        n = store.count()
        if not args.yes:
            print(f"would drop {store.backend} collection {store.collection} ({n} objects); "
                  "run again with --yes to drop it")  # fmt: skip
            return 0
        store.drop()  # type: ignore[attr-defined]
    finally:
        store.close()
    print(f"dropped {store.backend} collection {store.collection} ({n} objects)")
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
    p.add_argument(
        "--json", action="store_true", help="print the report as JSON; progress as plain lines"
    )
    p.set_defaults(handler=_reembed)
    m = subparsers.add_parser("models", help="show the active embedding model, drop old ones")
    m.set_defaults(handler=_show)
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    d = msub.add_parser("drop", help="drop an old model's collection (never the active one)")
    d.add_argument("--model", required=True, help="the old model's name, as given to reembed")
    d.add_argument("--truncate-dim", type=int, help="its Matryoshka truncation, if any")
    d.add_argument("--dim", type=int, help="its vector size (default: --truncate-dim)")
    d.add_argument("--yes", action="store_true", help="really drop (default: say what would go)")
    d.set_defaults(handler=_drop)
