"""The inbox sensor's tick rules as plain data: messages, cap, today's count, clock (no Dagster).

The sensor tests (webhook_sensor/test_sensor.py) run the same rules through a real instance and
inbox; these pin each decision directly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from qpipe_dagster.concepts import Concept, ConceptError
from qpipe_dagster.qstash.planning import (
    CURSOR_RESET_HINT,
    PlannedRun,
    TickCursor,
    concept_of,
    plan_tick,
    tick_day,
)
from webhook_sensor.inbox import InboxMessage

TODAY = "2026-11-23"


def msg(mid: str, slug: str, urls=("https://example.com/a",), symbol=None, **kw) -> InboxMessage:
    fields = {
        "id": 0,
        "message_id": mid,
        "slug": slug,
        "concept_name": slug.replace("-", " ").title(),
        "seed_urls": tuple(urls),
        "symbol": symbol,
        "retried": 0,
        "schedule_id": None,
        "caller_ip": None,
        "headers": {},
        "received_at": 0.0,
        "deliveries": 1,
        "status": "pending",
    }
    return InboxMessage(**(fields | kw))


class Registry:
    """Records upserts; refuses the slugs it is told to, as the registry refuses a collision."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.refuse = refuse or {}
        self.upserted: list[Concept] = []

    def __call__(self, concept: Concept) -> None:
        if concept.slug in self.refuse:
            raise ConceptError(self.refuse[concept.slug])
        self.upserted.append(concept)


def plan(batch, *, cursor=None, today=TODAY, cap=10, known=(), register=None):
    return plan_tick(
        batch,
        cursor=cursor or TickCursor(),
        today=today,
        cap=cap,
        known=set(known),
        register=register or Registry(),
    )


def test_every_message_runs_keyed_by_its_id_and_new_concepts_are_counted() -> None:
    registry = Registry()
    p = plan([msg("m1", "btc"), msg("m2", "eth"), msg("m3", "btc")], register=registry)
    assert p.runs == [PlannedRun("m1", "btc"), PlannedRun("m2", "eth"), PlannedRun("m3", "btc")]
    assert p.new_slugs == ["btc", "eth"] and not p.deferred and not p.rejected
    assert [c.slug for c in registry.upserted] == ["btc", "eth", "btc"]
    assert p.cursor == TickCursor(TODAY, 2, ("m1", "m2", "m3"))


def test_known_concepts_are_not_new() -> None:
    p = plan([msg("m1", "btc")], known={"btc"})
    assert p.runs == [PlannedRun("m1", "btc")] and p.new_slugs == []
    assert p.cursor.new_today == 0


def test_over_the_cap_new_concepts_wait_and_known_ones_still_run() -> None:
    registry = Registry()
    p = plan(
        [msg("m1", "a"), msg("m2", "b"), msg("m3", "c"), msg("m4", "old"), msg("m5", "a")],
        cap=2,
        known={"old"},
        register=registry,
    )
    assert [r.message_id for r in p.runs] == ["m1", "m2", "m4", "m5"]
    assert p.deferred == ["m3"] and p.new_slugs == ["a", "b"]
    assert "c" not in [c.slug for c in registry.upserted]  # nothing registered for a deferred one
    assert p.cap_note() == (
        "daily cap of 2 new concepts reached (MAX_CONCEPTS_PER_DAY); 1 message(s) kept in the "
        "inbox until tomorrow (UTC): m3"
    )


def test_todays_count_comes_from_the_cursor_and_restarts_on_a_new_day() -> None:
    earlier = TickCursor(TODAY, 2, ("x",))
    assert plan([msg("m1", "a")], cursor=earlier, cap=2).deferred == ["m1"]
    tomorrow = tick_day(datetime(2026, 11, 24, 0, 5, tzinfo=UTC))
    p = plan([msg("m1", "a")], cursor=earlier, today=tomorrow, cap=2)
    assert p.runs == [PlannedRun("m1", "a")] and p.cursor == TickCursor(tomorrow, 1, ("m1",))


def test_a_zero_cap_says_why_in_the_skip_message() -> None:
    p = plan([msg("m1", "a")], cap=0)
    assert not p.runs and "daily cap of 0 new concepts" in p.skip_reason()


def test_refused_rows_are_rejected_alone_with_the_reason() -> None:
    registry = Registry(refuse={"taken": "name collides with concept 'taken'"})
    p = plan(
        [
            msg("r1", "ok-1"),
            msg("r2", "Bad Slug"),
            msg("r3", "ok-1", urls=("ftp://example.com/x",)),
            msg("r4", "bad-symbol", symbol="BTC USD!"),
            msg("r5", "damaged", fault="seed_urls is str, not a list of URLs"),
            msg("r6", "taken"),
            msg("r7", "ok-2"),
        ],
        register=registry,
    )
    assert p.runs == [PlannedRun("r1", "ok-1"), PlannedRun("r7", "ok-2")]
    assert p.new_slugs == ["ok-1", "ok-2"]  # a refused upsert does not use the cap
    assert p.rejected_ids == ["r2", "r3", "r4", "r5", "r6"]
    reasons = dict(p.rejected)
    assert "'Bad Slug' is not a valid concept" in reasons["r2"]
    assert "ftp://example.com/x" in reasons["r3"]
    assert "market symbol 'BTC USD!'" in reasons["r4"]
    assert reasons["r5"] == "stored row is damaged: seed_urls is str, not a list of URLs"
    assert reasons["r6"] == "name collides with concept 'taken'"
    assert [c.slug for c in registry.upserted] == ["ok-1", "ok-2"]


def test_skip_reasons() -> None:
    assert plan([]).skip_reason() == "no new messages in the inbox"
    only_bad = plan([msg("only-bad", "Only Bad")])
    assert only_bad.skip_reason() == (
        "1 message(s) rejected, see this tick's log for why: only-bad"
    )
    both = plan([msg("bad", "Bad One"), msg("m1", "a")], cap=0)
    assert both.skip_reason().startswith("1 message(s) rejected, see this tick's log for why: bad")
    assert both.skip_reason().endswith("; " + both.cap_note())


def test_concept_of_keeps_the_stored_slug() -> None:
    concept = concept_of(msg("m1", "btc-halving", symbol="btc-usd"))
    assert concept.slug == "btc-halving" and concept.seed_urls == ("https://example.com/a",)
    assert concept.symbol == "BTC-USD"
    with pytest.raises(ConceptError, match="concept name must be a string, got int"):
        concept_of(msg("m1", "x", concept_name=5))


def test_cursor_round_trip_and_refusals() -> None:
    cursor = TickCursor(TODAY, 3, ("m1", "m2"))
    assert TickCursor.parse(cursor.to_json()) == cursor
    assert json.loads(cursor.to_json()) == {"day": TODAY, "new_today": 3, "emitted": ["m1", "m2"]}
    assert TickCursor.parse(None) == TickCursor.parse("") == TickCursor()
    for raw, reason in [
        ("garbage", "Expecting value"),
        ("[]", "a JSON list, not an object"),
        ('{"day": "", "new_today": 0}', "no 'emitted'"),
        ('{"day": "", "new_today": -1, "emitted": []}', "new_today is -1"),
        ('{"day": "", "new_today": true, "emitted": []}', "new_today is True"),
        ('{"day": "", "new_today": 0, "emitted": "m1"}', "emitted is m1, not a list"),
        ('{"day": 1, "new_today": 0, "emitted": []}', "day is 1, not a date string"),
    ]:
        with pytest.raises(ValueError) as info:
            TickCursor.parse(raw)
        assert reason in str(info.value) and str(info.value).endswith(CURSOR_RESET_HINT)
