"""`qpipe status`: one screen (or one JSON object) an operator reads first.

Halted or not, the queue, runs running and failed in the last 24 h, caps, the last backup, store
counts and breakers, read from the same sources as the metrics endpoint. Each part that cannot
be read says why instead of failing the whole screen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from qpipe_dagster.controls.state import read_halt

ACTIVE = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def _part(read: Callable[[], dict]) -> dict:
    try:
        return read()
    except Exception as exc:  # one unreadable store must not hide the rest
        return {"error": f"{type(exc).__name__}: {exc}"}


def gather(instance: DagsterInstance, env: Mapping[str, str], now: float | None = None) -> dict:
    from qpipe_dagster.monitoring import instance as reads
    from qpipe_dagster.monitoring import state
    from qpipe_dagster.monitoring.collector import DEFAULT_MAX_CONCEPTS_PER_DAY, _limit
    from qpipe_dagster.qstash.ledger import published_today
    from qpipe_dagster.resilience.breakers import breaker_db, by_system, read_states
    from webhook_sensor.settings import inbox_target_from_env

    now = time.time() if now is None else now
    since = datetime.fromtimestamp(now, UTC) - timedelta(days=1)
    today = datetime.fromtimestamp(now, UTC).date().isoformat()

    def halt() -> dict:
        record = read_halt(instance)
        if record is None:
            return {"halted": False}
        return {
            "halted": True,
            "reason": record.reason,
            "since": datetime.fromtimestamp(record.halted_at, UTC).isoformat(timespec="seconds"),
            "by": record.by,
            "stopped": record.stopped_sensors + record.stopped_schedules,
        }

    def inbox() -> dict:
        s = state.inbox_summary(inbox_target_from_env(env), now)
        return {
            "pending": s.by_status.get("pending", 0),
            "deferred_by_cap": s.deferred,
            "oldest_pending_age_s": round(s.oldest_pending_age_s, 1),
            "deliveries_today": s.deliveries_today,
            "by_status": s.by_status,
        }

    def runs() -> dict:
        failed = instance.get_run_records(
            RunsFilter(statuses=[DagsterRunStatus.FAILURE], updated_after=since), limit=1000
        )
        return {
            "queued": instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.QUEUED])),
            "running": instance.get_runs_count(RunsFilter(statuses=ACTIVE)),
            "failed_24h": len(failed),
            "succeeded_24h": instance.get_runs_count(
                RunsFilter(statuses=[DagsterRunStatus.SUCCESS], updated_after=since)
            ),
            "recent_failures": [
                {
                    "run_id": r.dagster_run.run_id,
                    "job": r.dagster_run.job_name,
                    "concept": r.dagster_run.tags.get("dagster/partition"),
                }
                for r in failed[:5]
            ],
        }

    def caps() -> dict:
        concepts_cap = _limit(env, "MAX_CONCEPTS_PER_DAY", DEFAULT_MAX_CONCEPTS_PER_DAY, 0)
        qstash_cap = _limit(env, "QSTASH_DAILY_LIMIT", None, 1)
        delivered = state.inbox_summary(inbox_target_from_env(env), now).deliveries_today
        return {
            "MAX_CONCEPTS_PER_DAY": {
                "used": reads.new_concepts_today(instance, today),
                "limit": concepts_cap,
            },
            "QSTASH_DAILY_LIMIT": {
                "used": max(delivered, published_today(env, now)),
                "limit": qstash_cap,
            },
        }

    def backup() -> dict:
        s = state.backup_summary(env)
        return {
            "target": s.target,
            "count": s.count,
            "last": s.last_id,
            "age_h": round((now - s.last_time) / 3600, 1) if s.last_time else None,
            "bytes": s.last_bytes,
        }

    def stores() -> dict:
        paths = state.state_paths(env)
        return {
            "concepts": state.registry_concepts(paths["concepts"]),
            "partitions": len(instance.get_dynamic_partitions("concepts")),
        }

    def breakers() -> dict:
        stored = by_system(read_states(breaker_db(env)))
        return {
            system: (stored[system].state if system in stored else "closed")
            for system in sorted({*state.SYSTEMS, *stored})
        }

    return {
        "at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "halt": _part(halt),
        "queue": _part(inbox),
        "runs": _part(runs),
        "caps": _part(caps),
        "backup": _part(backup),
        "stores": _part(stores),
        "breakers": _part(breakers),
    }


def _cap(c: dict) -> str:
    if c.get("limit") is None:
        return f"{c['used']} (no limit)"
    pct = 100.0 * c["used"] / c["limit"] if c["limit"] else 100.0
    return f"{c['used']} / {c['limit']} ({pct:.0f} %)"


def render(status: dict) -> str:
    """The one screen."""
    lines = [f"qpipe status at {status['at']}"]

    def section(title: str, part: dict, body: Callable[[dict], list[str]]) -> None:
        if "error" in part:
            lines.append(f"  {title:<9} unreadable: {part['error']}")
        else:
            first, *rest = body(part) or [""]
            lines.append(f"  {title:<9} {first}")
            lines.extend(f"  {'':<9} {line}" for line in rest)

    section(
        "halted",
        status["halt"],
        lambda h: (
            [
                f"YES since {h['since']} by {h['by']}: {h['reason']}",
                f"stopped: {', '.join(h['stopped']) or 'nothing'}",
            ]
            if h["halted"]
            else ["no"]
        ),
    )
    section(
        "queue",
        status["queue"],
        lambda q: [
            f"{q['pending']} pending (oldest {q['oldest_pending_age_s']:.0f} s,"
            f" {q['deferred_by_cap']} held by the daily cap)"
        ],
    )
    section(
        "runs",
        status["runs"],
        lambda r: [
            f"{r['running']} running, {r['queued']} queued; last 24 h: {r['succeeded_24h']}"
            f" succeeded, {r['failed_24h']} failed",
            *(
                f"failed: {f['run_id']} {f['job']} {f['concept'] or ''}".rstrip()
                for f in r["recent_failures"]
            ),
        ],
    )
    section(
        "caps",
        status["caps"],
        lambda c: [f"{name} {_cap(v)}" for name, v in c.items()],
    )
    section(
        "backup",
        status["backup"],
        lambda b: [
            f"{b['last']} ({b['age_h']} h old) on {b['target']}"
            if b["last"]
            else f"none yet on {b['target']}"
        ],
    )
    section(
        "stores",
        status["stores"],
        lambda s: [f"{s['concepts']} concepts registered, {s['partitions']} partitions"],
    )
    section(
        "breakers",
        status["breakers"],
        lambda b: [", ".join(f"{k} {v}" for k, v in b.items())],
    )
    return "\n".join(lines)
