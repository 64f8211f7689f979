"""`qpipe concepts add|list|remove`: manage concepts (registry + Dagster partitions)."""

from __future__ import annotations

import argparse

from qpipe_dagster.concepts import Concept, default_registry


def add_partition(slug: str) -> None:
    """Make the concept a partition in the Dagster instance under DAGSTER_HOME."""
    from dagster import DagsterInstance

    from qpipe_dagster.defs.partitions import CONCEPTS_PARTITIONS

    with DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition(CONCEPTS_PARTITIONS, slug):
            instance.add_dynamic_partitions(CONCEPTS_PARTITIONS, [slug])


def _add(args: argparse.Namespace) -> int:
    concept = default_registry().upsert(Concept.create(args.name, args.url, args.symbol))
    add_partition(concept.slug)
    print(
        f"{concept.slug}\t{concept.symbol or '-'}\t{' '.join(concept.seed_urls) or '(no seed URLs)'}"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    for c in default_registry().list():
        print(f"{c.slug}\t{c.symbol or '-'}\t{' '.join(c.seed_urls)}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from qpipe_dagster.cli import CliError

    if not default_registry().remove(args.slug):
        raise CliError(f"no concept {args.slug!r}")
    print(f"removed {args.slug} (its Dagster partition and stored objects are kept)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    concepts = subparsers.add_parser("concepts", help="add, list or remove concepts")
    sub = concepts.add_subparsers(dest="concepts_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="register a concept and its seed URLs")
    add.add_argument("name", help="free-form concept name; its slug becomes the partition key")
    add.add_argument("--url", action="append", default=[], help="seed URL (repeatable)")
    add.add_argument("--symbol", help="market symbol for the backtest, e.g. BTC-USD")
    add.set_defaults(handler=_add)
    sub.add_parser("list", help="list registered concepts").set_defaults(handler=_list)
    rm = sub.add_parser("remove", help="forget a concept")
    rm.add_argument("slug")
    rm.set_defaults(handler=_remove)
