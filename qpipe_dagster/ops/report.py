"""The daily operations report, built from plain data so it is testable without Dagster.

Answers what an operator reads each morning: what ran, what QStash delivered and what failed,
how close we are to the cost caps (MAX_CONCEPTS_PER_DAY, QSTASH_DAILY_LIMIT), and the best
backtests.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    concept: str | None
    status: str  # Dagster run status name: SUCCESS, FAILURE, ...
    trigger: str | None  # qpipe/trigger tag: qstash, recrawl, ...


@dataclass(frozen=True)
class BacktestBest:
    concept: str
    best_sharpe: float
    best_total_return: float
    best_fast: int
    best_slow: int


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
    from webhook_sensor.inbox import is_postgres_url

    if is_postgres_url(target):
        import psycopg2

        from webhook_sensor.inbox_postgres import TABLE

        conn = psycopg2.connect(str(target), connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s)", (TABLE,))
                if cur.fetchone()[0] is None:
                    return InboxStats()

                def run(sql: str, params: tuple) -> list:
                    cur.execute(sql, params)
                    return cur.fetchall()

                return _stats_from(run, TABLE, "%s", since)
        finally:
            conn.close()
    path = Path(target)
    if not path.exists():
        return InboxStats()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return _stats_from(
            lambda sql, params: db.execute(sql, params).fetchall(), "messages", "?", since
        )
    except sqlite3.OperationalError:  # no messages table yet
        return InboxStats()
    finally:
        db.close()


def build_report(
    *,
    day: str,
    runs: Sequence[RunSummary],
    inbox: InboxStats,
    backtests: Sequence[BacktestBest],
    max_concepts_per_day: int,
    qstash_daily_limit: int | None,
    top: int = 5,
) -> dict:
    """One JSON-able dict; `report_markdown` renders it for the Dagster UI."""
    processed = sorted({r.concept for r in runs if r.concept and r.status == "SUCCESS"})
    failed = [r for r in runs if r.status == "FAILURE"]
    concepts_touched = len({r.concept for r in runs if r.concept})

    def usage(used: int, limit: int | None) -> dict:
        pct = round(100.0 * used / limit, 1) if limit else None
        return {"used": used, "limit": limit, "percent": pct, "over": bool(limit and used >= limit)}

    best = sorted(backtests, key=lambda b: b.best_sharpe, reverse=True)[:top]
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
            "MAX_CONCEPTS_PER_DAY": usage(concepts_touched, max_concepts_per_day),
            "QSTASH_DAILY_LIMIT": usage(inbox.deliveries, qstash_daily_limit),
        },
        "top_backtests": [asdict(b) for b in best],
    }


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
        lines += ["", "| concept | sharpe | total return | fast | slow |", "|---|---|---|---|---|"]
        lines += [
            f"| {b['concept']} | {b['best_sharpe']:.3f} | {b['best_total_return']:.2%} | "
            f"{b['best_fast']} | {b['best_slow']} |"
            for b in report["top_backtests"]
        ]
    return "\n".join(lines) + "\n"
