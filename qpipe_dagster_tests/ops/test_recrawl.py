"""plan_recrawl with plain values: stale concepts oldest first, the cap, busy and seedless ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qpipe_dagster.ops.recrawl import plan_recrawl

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def _plan(crawled: dict, *, per_tick: int = 10, running=(), seedless=(), now=NOW):
    asked: list[str] = []

    def is_running(slug: str) -> bool:
        asked.append(slug)
        return slug in running

    plan = plan_recrawl(
        [*crawled, *seedless],
        now=now,
        max_age=DAY,
        per_tick=per_tick,
        has_seeds=lambda slug: slug not in seedless,
        last_crawled=lambda slug: crawled[slug],  # KeyError: asked about a seedless concept
        is_running=is_running,
    )
    return plan, asked


def test_stale_concepts_run_never_crawled_first_then_oldest() -> None:
    crawled = {"fresh": NOW - timedelta(hours=1), "old": NOW - timedelta(days=3),
               "older": NOW - timedelta(days=5), "never": None}  # fmt: skip
    plan, _ = _plan(crawled, seedless=("ui-only",))
    assert plan.runs == ["never", "older", "old"] and plan.stale == 3
    assert plan.no_seeds == ["ui-only"] and plan.busy == []
    window = int(NOW.timestamp() // DAY.total_seconds())
    assert plan.run_key("old") == f"recrawl:old:{window}"
    assert plan.summary() == "recrawling 3 of 3 stale concept(s): never, older, old"


def test_the_cap_and_running_concepts_and_lazy_checks() -> None:
    crawled = {"a": NOW - timedelta(days=4), "b": NOW - timedelta(days=3), "c": None}
    plan, asked = _plan(crawled, per_tick=1, running=("c",))
    assert plan.runs == ["a"] and plan.busy == ["c"]
    assert asked == ["c", "a"]  # b is never asked about: the tick was full


def test_nothing_stale_says_why_and_a_naive_time_is_utc() -> None:
    crawled = {"a": NOW - timedelta(hours=2), "b": NOW - timedelta(days=2)}
    naive = NOW.replace(tzinfo=None)
    plan, _ = _plan(crawled, running=("b",), seedless=("x", "y"), now=naive)
    assert plan.runs == [] and plan.window == int(NOW.timestamp() // DAY.total_seconds())
    assert plan.skip_reason() == (
        "no concept older than 1 day, 0:00:00; already running: b; skipped without seed URLs: x, y"
    )
