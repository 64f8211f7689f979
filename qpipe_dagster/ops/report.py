"""The daily operations report, built from plain data so it is testable without Dagster.

Answers what an operator reads each morning: what ran, what QStash delivered and what failed,
how close we are to the cost caps (MAX_CONCEPTS_PER_DAY, QSTASH_DAILY_LIMIT), and the best
backtests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from webhook_sensor.inbox.readonly import query_inbox


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    concept: str | None
    status: str  # Dagster run status name: SUCCESS, FAILURE, ...
    trigger: str | None  # qpipe/trigger tag: qstash, recrawl, ...


@dataclass(frozen=True)
class BacktestBest:
    concept: str
    best_sharpe: float | None  # None: not finite (a segment without variance), stored as "n/a"
    best_total_return: float | None
    strategy: str  # the winning set in words, e.g. "rsi window=14 lower=30 upper=70"


def metric_value(value: object) -> float | None:
    """A stored figure as a finite float; None for the text "n/a" (how the backtest stores a
    non-finite value), a missing one or anything else that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        out = float(value)
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def best_from_metadata(concept: str, md: dict) -> BacktestBest | None:
    """The best set of one backtest_results materialization, whatever family won: the
    `best_strategy` description (every family), else the MA pair older runs stored."""
    if "best_sharpe" not in md:
        return None
    strategy = md.get("best_strategy")
    if not isinstance(strategy, str) or not strategy.strip():
        params = [f"{k[5:]}={md[k]}" for k in ("best_fast", "best_slow") if k in md]
        strategy = " ".join(["ma_crossover", *params]) if params else "unknown"
    return BacktestBest(
        concept,
        metric_value(md.get("best_sharpe")),
        metric_value(md.get("best_total_return")),
        strategy,
    )


def latest_bests(
    materializations: Iterable[tuple[str | None, Mapping[str, object]]],
) -> list[BacktestBest]:
    """The best set of each concept's latest backtest_results materialization.

    ``materializations`` are (partition, metadata) pairs, newest first; one without a best set
    is skipped, so an older one of the same concept may stand in for it."""
    best: dict[str, BacktestBest] = {}
    for partition, metadata in materializations:
        if partition in best:
            continue
        found = best_from_metadata(partition or "-", dict(metadata))
        if found is not None:
            best[found.concept] = found
    return list(best.values())


@dataclass
class InboxStats:
    received: int = 0  # distinct messages first received in the window
    deliveries: int = 0  # including QStash redeliveries of the same message
    by_status: dict[str, int] = field(default_factory=dict)
    deferred: int = 0  # held back by the daily concept cap


def _stats_from(cursor_execute, table: str, mark: str, since: float) -> InboxStats:
    """The same three queries on either backend (they share the inbox's columns)."""
    received, deliveries = cursor_execute(
        f"SELECT COUNT(*), COALESCE(SUM(deliveries), 0) FROM {table} WHERE received_at >= {mark}",
        (since,),
    )[0]
    by_status = dict(
        cursor_execute(
            f"SELECT status, COUNT(*) FROM {table} WHERE received_at >= {mark} GROUP BY status",
            (since,),
        )
    )
    deferred = cursor_execute(
        f"SELECT COUNT(*) FROM {table} WHERE status = 'pending' AND deferred_day IS NOT NULL", ()
    )[0][0]
    return InboxStats(int(received), int(deliveries), by_status, int(deferred))


def inbox_stats(target: Path | str, since: float) -> InboxStats:
    """Read the receiver's inbox (SQLite file or PostgreSQL URL); an absent inbox is all zeros."""
    return query_inbox(
        target,
        lambda run, table, ph: _stats_from(run, table, ph, since),
        InboxStats(),
        timeout_s=30.0,
    )


def build_report(
    *,
    day: str,
    runs: Sequence[RunSummary],
    inbox: InboxStats,
    backtests: Sequence[BacktestBest],
    max_concepts_per_day: int,
    qstash_daily_limit: int | None,
    new_concepts_today: int,
    top: int = 5,
) -> dict:
    """One JSON-able dict; `report_markdown` renders it for the Dagster UI.

    `new_concepts_today` is the count MAX_CONCEPTS_PER_DAY limits (the QStash sensor's own,
    for today UTC): counting every concept with a run also counted recrawls of old concepts
    and showed OVER CAP when nothing was capped."""
    processed = sorted({r.concept for r in runs if r.concept and r.status == "SUCCESS"})
    failed = [r for r in runs if r.status == "FAILURE"]

    def usage(used: int, limit: int | None) -> dict:
        pct = round(100.0 * used / limit, 1) if limit else None
        return {"used": used, "limit": limit, "percent": pct, "over": bool(limit and used >= limit)}

    # finite Sharpe ratios first, best first; "n/a" ones after them
    best = sorted(
        backtests,
        key=lambda b: (b.best_sharpe is not None, b.best_sharpe or 0.0),
        reverse=True,
    )[:top]
    return {
        "day": day,
        "runs": {
            "total": len(runs),
            "succeeded": sum(r.status == "SUCCESS" for r in runs),
            "failed": len(failed),
            "failed_run_ids": [r.run_id for r in failed][:20],
        },
        "concepts_processed": processed,
        "messages": {
            "received": inbox.received,
            "deliveries": inbox.deliveries,
            "by_status": inbox.by_status,
            "deferred_by_cap": inbox.deferred,
            "runs_failed_from_qstash": sum(r.trigger == "qstash" for r in failed),
        },
        "caps": {
            "MAX_CONCEPTS_PER_DAY": usage(new_concepts_today, max_concepts_per_day),
            "QSTASH_DAILY_LIMIT": usage(inbox.deliveries, qstash_daily_limit),
        },
        "top_backtests": [asdict(b) for b in best],
    }


def cap_warnings(report: dict) -> list[str]:
    """One line per cost cap the report shows as reached."""
    return [
        f"{name} reached: {usage['used']} / {usage['limit']}"
        for name, usage in report["caps"].items()
        if usage["over"]
    ]


def report_markdown(report: dict) -> str:
    caps = report["caps"]
    lines = [
        f"### qpipe daily report — {report['day']}",
        "",
        f"- runs: {report['runs']['total']} ({report['runs']['succeeded']} succeeded, "
        f"{report['runs']['failed']} failed)",
        f"- concepts processed: {len(report['concepts_processed'])}",
        f"- messages received: {report['messages']['received']} "
        f"({report['messages']['deliveries']} deliveries), deferred by cap: "
        f"{report['messages']['deferred_by_cap']}",
    ]
    for name, u in caps.items():
        limit = u["limit"] if u["limit"] is not None else "unset"
        flag = " **OVER CAP**" if u["over"] else ""
        lines.append(f"- {name}: {u['used']} / {limit}{flag}")
    if report["top_backtests"]:
        lines += ["", "| concept | sharpe | total return | best set |", "|---|---|---|---|"]
        lines += [
            f"| {b['concept']} | {_figure(b['best_sharpe'], '.3f')} | "
            f"{_figure(b['best_total_return'], '.2%')} | {b['strategy']} |"
            for b in report["top_backtests"]
        ]
    return "\n".join(lines) + "\n"


def _figure(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)
