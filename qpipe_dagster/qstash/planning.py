"""One tick of the QStash inbox sensor, planned as plain data (no Dagster, no inbox I/O).

Given the claimed pending messages, the sensor's cursor, today's UTC date, the daily cap of new
concepts and the partitions that already exist, `plan_tick` decides which messages run, which
wait for tomorrow, which are rejected and why, and the cursor to hand back. The sensor only
reads its inputs and applies the plan, so these rules are tested directly with plain values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from qpipe_dagster.concepts import Concept, ConceptError, validate_slug
from webhook_sensor.inbox import InboxMessage

__all__ = [
    "CURSOR_RESET_HINT",
    "PlannedRun",
    "TickCursor",
    "TickPlan",
    "concept_of",
    "plan_tick",
    "tick_day",
]

CURSOR_RESET_HINT = (
    "reset it with `dagster sensor cursor qstash_inbox_sensor --delete` (or the sensor's page in "
    "the UI): messages already run are not run again (their run keys are known), only today's "
    "count of new concepts starts again at 0"
)


@dataclass(frozen=True)
class TickCursor:
    """What one tick hands the next: its UTC day, new concepts that day, run keys it emitted.

    The emitted messages are marked consumed by the next tick, once Dagster has committed the
    cursor, so the cursor is the proof that their run requests were recorded.
    """

    day: str = ""
    new_today: int = 0
    emitted: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: str | None) -> TickCursor:
        """The cursor this sensor wrote. Shapes are checked, not coerced: an "emitted" string used
        to be read as one message id per character, and a negative "new_today" lifted the cap."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError(f"a JSON {type(data).__name__}, not an object")
            day, new_today, emitted = data["day"], data["new_today"], data["emitted"]
            if not isinstance(day, str):
                raise TypeError(f"day is {day!r}, not a date string")
            if isinstance(new_today, bool) or not isinstance(new_today, int) or new_today < 0:
                raise TypeError(f"new_today is {new_today!r}, not a whole number >= 0")
            if not isinstance(emitted, list) or not all(isinstance(m, str) for m in emitted):
                raise TypeError(f"emitted is {str(emitted)[:40]}, not a list of message ids")
        except (ValueError, KeyError, TypeError) as exc:
            reason = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(
                f"qstash_inbox_sensor cursor {raw[:80]!r} is not readable ({reason}): "
                + CURSOR_RESET_HINT
            ) from exc
        return cls(day, new_today, tuple(emitted))

    def to_json(self) -> str:
        """The cursor string Dagster stores (the shape `parse` reads)."""
        return json.dumps(
            {"day": self.day, "new_today": self.new_today, "emitted": list(self.emitted)}
        )

    def new_on(self, today: str) -> int:
        """New concepts already counted on `today`: the count starts at 0 on a new UTC day."""
        return self.new_today if self.day == today else 0


def tick_day(now: datetime) -> str:
    """The UTC day a tick counts new concepts against (ISO date)."""
    return now.date().isoformat()


def concept_of(msg: InboxMessage) -> Concept:
    """The concept a stored message asks for, checked by today's rules (ConceptError says why).

    The receiver validated it when it arrived, but the row may come from an older receiver or a
    hand edit: an unchecked slug became a partition key no asset accepts, and an unchecked seed
    URL was merged into the registry, where every later crawl of the concept refused it.
    """
    if msg.fault:
        raise ConceptError(f"stored row is damaged: {msg.fault}")
    validate_slug(msg.slug)
    if not isinstance(msg.concept_name, str):
        raise ConceptError(f"concept name must be a string, got {type(msg.concept_name).__name__}")
    if isinstance(msg.symbol, (bytes, int, float)):
        raise ConceptError(f"market symbol must be a string, got {type(msg.symbol).__name__}")
    checked = Concept.create(msg.concept_name, msg.seed_urls, msg.symbol)
    return Concept(msg.slug, checked.name, checked.seed_urls, checked.symbol)


@dataclass(frozen=True)
class PlannedRun:
    """One run to request: keyed by the QStash message id, on the concept's partition."""

    message_id: str
    slug: str


@dataclass(frozen=True)
class TickPlan:
    """What a tick does: runs to request, partitions to add, messages to reject or defer."""

    cap: int
    today: str
    runs: list[PlannedRun] = field(default_factory=list)
    new_slugs: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (message id, why)
    new_before: int = 0

    @property
    def rejected_ids(self) -> list[str]:
        return [mid for mid, _ in self.rejected]

    @property
    def cursor(self) -> TickCursor:
        """The cursor to commit with this tick's run requests."""
        return TickCursor(
            self.today,
            self.new_before + len(self.new_slugs),
            tuple(r.message_id for r in self.runs),
        )

    def cap_note(self) -> str:
        """Why messages were kept for tomorrow ('' when none were)."""
        if not self.deferred:
            return ""
        return (
            f"daily cap of {self.cap} new concepts reached (MAX_CONCEPTS_PER_DAY); "
            f"{len(self.deferred)} message(s) kept in the inbox until tomorrow (UTC): "
            + ", ".join(self.deferred[:5])
        )

    def skip_reason(self) -> str:
        """The tick's skip message when it requests no run."""
        notes = []
        if self.rejected:
            ids = self.rejected_ids
            notes.append(
                f"{len(ids)} message(s) rejected, see this tick's log for why: "
                + ", ".join(ids[:5])
            )
        if self.deferred:
            notes.append(self.cap_note())
        return "; ".join(notes) or "no new messages in the inbox"


def plan_tick(
    batch: Sequence[InboxMessage],
    *,
    cursor: TickCursor,
    today: str,
    cap: int,
    known: Collection[str],
    register: Callable[[Concept], object],
) -> TickPlan:
    """Decide each claimed message in order.

    A message today's concept rules refuse, or that `register` (the registry's upsert) refuses
    with ConceptError, is rejected alone. A message for a concept that is neither in `known`
    nor earlier in this batch is new; once `cap` new concepts were counted today, such messages
    are deferred to tomorrow and nothing is registered for them.
    """
    plan = TickPlan(cap=cap, today=today, new_before=cursor.new_on(today))
    for msg in batch:
        try:
            concept = concept_of(msg)
        except ConceptError as exc:
            plan.rejected.append((msg.message_id, str(exc)))
            continue
        is_new = msg.slug not in known and msg.slug not in plan.new_slugs
        if is_new and plan.new_before + len(plan.new_slugs) >= cap:
            plan.deferred.append(msg.message_id)
            continue
        try:
            register(concept)
        except ConceptError as exc:
            plan.rejected.append((msg.message_id, str(exc)))
            continue
        if is_new:
            plan.new_slugs.append(msg.slug)
        plan.runs.append(PlannedRun(msg.message_id, msg.slug))
    return plan
