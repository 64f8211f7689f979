"""Which concepts one tick of the recrawl schedule re-runs, planned as plain data (no Dagster).

A concept is stale when its pages were last crawled longer ago than the freshness window (or
never). Stale concepts run oldest first, at most ``per_tick`` per tick, never while the concept
already has a run queued or in progress, and never without seed URLs. The run key holds the
freshness window, so a failed recrawl is retried once per window, not every tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class RecrawlPlan:
    """The concepts to run this tick and, for the log or the skip reason, those left out."""

    runs: list[str]  # oldest first
    stale: int  # stale concepts found, the ones run included
    busy: list[str]  # stale, but a run of theirs is queued or in progress
    no_seeds: list[str]  # not crawlable: unknown to the registry or without seed URLs
    window: int  # index of the freshness window `now` falls in
    max_age: timedelta

    def run_key(self, slug: str) -> str:
        return f"recrawl:{slug}:{self.window}"

    def skip_reason(self) -> str:
        """Why nothing runs this tick."""
        why = f"no concept older than {self.max_age}"
        if self.busy:
            why += f"; already running: {', '.join(self.busy)}"
        if self.no_seeds:
            why += f"; skipped without seed URLs: {', '.join(self.no_seeds[:5])}"
        return why

    def summary(self) -> str:
        return f"recrawling {len(self.runs)} of {self.stale} stale concept(s): " + ", ".join(
            self.runs
        )


def plan_recrawl(
    slugs: Iterable[str],
    *,
    now: datetime,
    max_age: timedelta,
    per_tick: int,
    has_seeds: Callable[[str], bool],
    last_crawled: Callable[[str], datetime | None],
    is_running: Callable[[str], bool],
) -> RecrawlPlan:
    """Plan one tick at ``now`` (a naive time is read as UTC). The callables are asked lazily:
    ``last_crawled`` only for concepts with seeds, ``is_running`` only until the tick is full."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    stale: list[tuple[float, str]] = []
    no_seeds: list[str] = []
    for slug in slugs:
        if not has_seeds(slug):
            no_seeds.append(slug)
            continue
        last = last_crawled(slug)
        age = (now - last).total_seconds() if last else float("inf")
        if age > max_age.total_seconds():
            stale.append((age, slug))
    stale.sort(key=lambda item: (-item[0], item[1]))
    runs: list[str] = []
    busy: list[str] = []
    for _age, slug in stale:
        if len(runs) >= per_tick:
            break
        (busy if is_running(slug) else runs).append(slug)
    window = int(now.timestamp() // max_age.total_seconds())
    return RecrawlPlan(runs, len(stale), busy, no_seeds, window, max_age)
