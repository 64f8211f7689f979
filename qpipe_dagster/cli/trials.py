"""`qpipe recommend` and `qpipe trials list|show|promote|reject|similar|ingest`.

Recommendations come from the trial store (`qpipe_dagster.trials`), which `backtest_results`
fills with every parameter set of every sweep. The ranking, filters, relaxations and
tie-breaks are `trials.recommend`'s, documented in docs/trials.md.
"""

from __future__ import annotations

import argparse
import json
import math

from qpipe_dagster.trials.recommend import FAMILIES, OBJECTIVES, STATUSES, Filters

FILL_HINT = (
    "materialize backtest_results for a concept to fill it: the Dagster UI (job "
    "concept_pipeline), or `dagster asset materialize -m qpipe_dagster.definitions "
    "--select market_prices,backtest_results --partition demo`"
)


def _fraction(name: str, low_open: bool) -> object:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = math.isfinite(v) and (0 < v <= 1 if low_open else 0 <= v <= 1)
        if not ok:
            rng = "(0, 1]" if low_open else "[0, 1]"
            raise argparse.ArgumentTypeError(f"{text!r} must be a fraction in {rng}")
        return v

    parse.__name__ = name
    return parse


def _count(low: int, high: int) -> object:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be between {low} and {high}")
        return v

    return parse


def _slug(text: str) -> str:
    from qpipe_dagster.concepts import ConceptError, validate_slug

    try:
        return validate_slug(text)
    except ConceptError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _store():
    from qpipe_dagster.trials.store import TrialStore

    return TrialStore()


def _fmt(v: object, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v * 100:.1f}%" if pct else f"{v:.2f}"
    return str(v)


def _recommend(args: argparse.Namespace) -> int:
    from qpipe_dagster.trials.recommend import recommend

    store = _store()
    df = store.frame(args.concept, family=args.family, symbol=args.symbol)
    filters = Filters(
        require_oos=args.require_oos,
        min_dsr=args.min_dsr,
        min_trades=args.min_trades,
        max_drawdown=args.max_drawdown,
    )
    if df.height == 0:
        what = (
            "is empty"
            if not store.concepts()
            else (
                f"holds no {args.family} trials"
                + (f" for concept {args.concept!r}" if args.concept else "")
                + (f" on {args.symbol}" if args.symbol else "")
            )
        )
        out = {
            "status": "none",
            "reasons": [f"the trial store at {store.root} {what}: {FILL_HINT}"],
            "recommendations": [],
        }
        if args.json:
            print(json.dumps(out))
        else:
            print(f"no recommendation: {out['reasons'][0]}")
        return 1
    rec = recommend(
        df,
        objective=args.objective,
        family=args.family,
        concept=args.concept,
        symbol=args.symbol,
        filters=filters,
        top=args.top,
    )
    if args.json:
        print(json.dumps(rec.as_json(debug=args.debug), default=str))
        return 0 if rec.status != "none" else 1
    print(f"status: {rec.status} ({rec.considered} trials considered)")
    for reason in rec.reasons:
        print(f"  reason: {reason}")
    for i, r in enumerate(rec.recommendations, 1):
        oos = r["oos"]
        print(
            f"{i:>2}. {r['label']}  [{r['id'][:10]}, {r['status']}]\n"
            f"    score ({args.objective}, plateau) {_fmt(r['score'])}  in-sample "
            f"{_fmt(r['in_sample'])}  OOS {_fmt(oos[args.objective])}  OOS return "
            f"{_fmt(oos['total_return'], True)}\n"
            f"    DSR {_fmt(r['dsr'])}  PBO {_fmt(r['pbo'])}  trades {r['trades']}  "
            f"max drawdown {_fmt(r['max_drawdown'], True)}  neighbour drop "
            f"{_fmt(r['stability']['drop'])}"
        )
    if args.debug:
        print(f"filter_rejections: {json.dumps(rec.filter_rejections)}")
        print(f"relaxed_settings: {json.dumps(rec.relaxed_settings)}")
    return 0 if rec.status != "none" else 1


LIST_COLUMNS = ("id", "concept", "symbol", "label", "status", "is_sharpe", "oos_sharpe", "dsr",
                "pbo", "trade_count")  # fmt: skip


def _list(args: argparse.Namespace) -> int:
    import polars as pl

    store = _store()
    df = store.frame(args.concept)
    if df.height == 0:
        print(f"the trial store at {store.root} is empty: {FILL_HINT}")
        return 0
    for col, value in (("family", args.family), ("status", args.status), ("symbol", args.symbol)):
        if value:
            df = df.filter(pl.col(col) == value)
    if args.min_dsr is not None:
        df = df.filter(pl.col("dsr").fill_nan(None) >= args.min_dsr)
    if args.max_pbo is not None:
        df = df.filter(pl.col("pbo").fill_nan(None) <= args.max_pbo)
    df = df.sort(["plateau_sharpe", "id"], descending=[True, False], nulls_last=True)
    shown = df.head(args.limit).select([c for c in LIST_COLUMNS if c in df.columns])
    if args.json:
        print(json.dumps(shown.to_dicts(), default=str))
        return 0
    print(f"{df.height} trial(s); best {shown.height} by plateau in-sample Sharpe")
    for r in shown.iter_rows(named=True):
        print(
            f"{r['id'][:12]}  {r['concept']}/{r['symbol']}  {r['label']:<40} {r['status']:<9} "
            f"IS {_fmt(r.get('is_sharpe'))} OOS {_fmt(r.get('oos_sharpe'))} "
            f"DSR {_fmt(r['dsr'])} PBO {_fmt(r['pbo'])} trades {r['trade_count']}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    store = _store()
    row = store.find(args.id)
    history = store.history(row["id"]).to_dicts()
    if args.json:
        print(json.dumps({"trial": row, "history": history}, default=str))
        return 0
    for k, v in row.items():
        print(f"{k:>24}: {_fmt(v)}")
    print("history:" if history else "history: none")
    for h in history:
        print(
            f"  {h['at']}  {h['from_status']} -> {h['to_status']}  by {h['actor']}: {h['reason']}"
        )
    return 0


def _set_status(status: str):
    def handler(args: argparse.Namespace) -> int:
        event = _store().set_status(args.id, status, reason=args.reason, actor=args.actor)
        print(f"{event['trial_id']}: {event['from_status']} -> {event['to_status']} "
              f"(by {event['actor']}: {event['reason']})")  # fmt: skip
        return 0

    return handler


def _similar(args: argparse.Namespace) -> int:
    from qpipe_dagster.defs.resources import default_resources
    from qpipe_dagster.trials.vectors import similar

    store = _store()
    row = store.find(args.id)
    resources = default_resources()
    encoder = resources["embedder"].encoder()
    vectors = resources["vector_store"].open(model=encoder.model_id, dim=encoder.dim, create=False)
    try:
        hits = similar(row, vectors, encoder.encode, k=args.k)
    finally:
        vectors.close()
    df = store.frame()
    labels = dict(df.select("id", "label").iter_rows()) if df.height else {}
    if args.json:
        print(json.dumps([{"id": i, "label": labels.get(i), "score": s} for i, s in hits]))
        return 0
    if not hits:
        print(f"no similar trials stored for concept {row['concept']!r} (materialize "
              "backtest_results with trials_top_n > 0)")  # fmt: skip
    for i, s in hits:
        print(f"{s:.3f}  {i[:12]}  {labels.get(i, '(not in the trial store)')}")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from qpipe_dagster.cli import CliError

    try:
        table = pq.read_table(args.path)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read trials file {args.path!r}: {exc}") from None
    counts = _store().ingest(table, dry_run=args.dry_run, actor=args.actor or "ingest")
    word = "would be" if args.dry_run else "were"
    print(f"{table.num_rows} trial(s) {word} ingested: "
          + ", ".join(f"{k} {v}" for k, v in counts.as_dict().items()))  # fmt: skip
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    r = subparsers.add_parser(
        "recommend",
        help="robust parameter sets from the trial store, with their overfitting evidence",
        description="Strict filters first, then named relaxations in a fixed order "
        "(min_trades, max_drawdown, require_oos, min_dsr); see docs/trials.md.",
    )
    r.add_argument("--family", required=True, choices=FAMILIES)
    r.add_argument("--objective", required=True, choices=OBJECTIVES)
    r.add_argument("--concept", type=_slug, help="only this concept's trials")
    r.add_argument("--symbol", help="only trials on this market symbol, e.g. BTC-USD")
    r.add_argument(
        "--require-oos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="need an out-of-sample trade and a positive OOS objective (default: on)",
    )
    r.add_argument("--max-drawdown", type=_fraction("max_drawdown", True), metavar="X",
                   help="at most this fall from a peak, e.g. 0.3 = 30%% (default: none)")  # fmt: skip
    r.add_argument("--min-trades", type=_count(1, 10**9), default=10, metavar="N",
                   help="at least N trades over the whole period (default 10)")  # fmt: skip
    r.add_argument("--min-dsr", type=_fraction("min_dsr", False), default=0.95, metavar="X",
                   help="deflated Sharpe ratio at least X (default 0.95)")  # fmt: skip
    r.add_argument("--top", type=_count(1, 100), default=5, metavar="K",
                   help="how many sets (default 5)")  # fmt: skip
    r.add_argument("--json", action="store_true", help="one JSON object")
    r.add_argument("--debug", action="store_true",
                   help="add filter_rejections and the relaxed settings")  # fmt: skip
    r.set_defaults(handler=_recommend)

    t = subparsers.add_parser("trials", help="list, inspect and review stored backtest trials")
    sub = t.add_subparsers(dest="trials_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="stored trials, best plateau Sharpe first")
    ls.add_argument("--concept", type=_slug)
    ls.add_argument("--family", choices=FAMILIES)
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--symbol")
    ls.add_argument("--min-dsr", type=_fraction("min_dsr", False), metavar="X")
    ls.add_argument("--max-pbo", type=_fraction("max_pbo", False), metavar="X")
    ls.add_argument("--limit", type=_count(1, 10**6), default=20)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_list)
    sh = sub.add_parser("show", help="one trial with its status history")
    sh.add_argument("id", help="trial id or a unique prefix of at least 6 characters")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(handler=_show)
    for name, status, need in (("promote", "promoted", False), ("reject", "rejected", True)):
        p = sub.add_parser(name, help=f"mark a trial {status} (recorded with actor and reason)")
        p.add_argument("id")
        p.add_argument("--reason", required=need, default="promoted after review",
                       help="why, for the history" + (" (required)" if need else ""))  # fmt: skip
        p.add_argument("--actor", help="who (default $QPIPE_ACTOR or the login name)")
        p.set_defaults(handler=_set_status(status))
    si = sub.add_parser("similar", help="trials like this one, via the vector store")
    si.add_argument("id")
    si.add_argument("-k", type=_count(1, 100), default=5)
    si.add_argument("--json", action="store_true")
    si.set_defaults(handler=_similar)
    ig = sub.add_parser("ingest", help="ingest a trials Parquet file (idempotent)")
    ig.add_argument("path")
    ig.add_argument("--dry-run", action="store_true", help="count what would change, write nothing")
    ig.add_argument("--actor")
    ig.set_defaults(handler=_ingest)
