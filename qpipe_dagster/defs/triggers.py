"""`qstash_inbox_sensor`: turns messages the receiver stored into concept partitions and runs.

Each tick: messages requested in the previous tick are marked consumed (the cursor we are handed
is only committed once Dagster has recorded that tick's run requests), then a bounded batch of
pending messages becomes registry upserts, new dynamic partitions and one run per message with
run_key = the QStash message id, so a redelivered or re-evaluated message never runs twice.
New concepts are capped per UTC day; over the cap a message stays in the inbox and is retried
the next day, and the tick reports why. A stored message that today's concept rules refuse (an
older receiver's row, a hand edit) is rejected alone: marked consumed so it is not retried every
tick, and logged with its message id and reason; the rest of the batch goes on.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from qpipe_dagster.concepts import (
    Concept,
    ConceptError,
    default_registry,
    validate_slug,
)
from qpipe_dagster.defs.partitions import CONCEPTS_PARTITIONS, concepts_partitions
from qpipe_dagster.ops.env import whole
from webhook_sensor.claims import claim
from webhook_sensor.inbox import InboxMessage, InboxTarget, open_inbox
from webhook_sensor.settings import default_inbox_target

DEFAULT_MAX_CONCEPTS_PER_DAY = 50
DEFAULT_BATCH_SIZE = 100
CLAIM_LOOKAHEAD = 4  # pending ids offered per claim, in batches: others may hold some
TAG_MESSAGE_ID = "qpipe/message_id"
TAG_CONCEPT = "qpipe/concept"
TAG_TRIGGER = "qpipe/trigger"


def max_concepts_per_day() -> int:
    """MAX_CONCEPTS_PER_DAY (0 pauses new concepts), by the start-up check's rule: ASCII digits
    only ('²' passed str.isdigit() and then crashed int() with a bare ValueError)."""
    raw = os.environ.get("MAX_CONCEPTS_PER_DAY", "").strip()
    if not raw:
        return DEFAULT_MAX_CONCEPTS_PER_DAY
    value = whole(raw)
    if value is None:
        raise ValueError(f"MAX_CONCEPTS_PER_DAY={raw!r} must be a whole number >= 0")
    return value


CURSOR_RESET_HINT = (
    "reset it with `dagster sensor cursor qstash_inbox_sensor --delete` (or the sensor's page in "
    "the UI): messages already run are not run again (their run keys are known), only today's "
    "count of new concepts starts again at 0"
)


def _read_cursor(raw: str | None) -> dict:
    """The cursor this sensor wrote. Shapes are checked, not coerced: an "emitted" string used to
    be read as one message id per character, and a negative "new_today" lifted the daily cap."""
    if not raw:
        return {"day": "", "new_today": 0, "emitted": []}
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
    return {"day": day, "new_today": new_today, "emitted": emitted}


def claim_owner() -> str:
    """Who claims inbox messages: one name per deployment (host and DAGSTER_HOME), so a tick
    re-evaluated after a failed submission renews its own claims instead of waiting them out."""
    return f"{socket.gethostname()}:{os.environ.get('DAGSTER_HOME', '')}"


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


def build_qstash_inbox_sensor(
    *,
    name: str = "qstash_inbox_sensor",
    inbox_path: InboxTarget | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    daily_cap: int | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    minimum_interval_seconds: int = 2,  # a tick is one indexed query: a burst starts promptly
) -> SensorDefinition:
    """The sensor, with knobs for tests (inbox location, batch size, cap, clock).

    `inbox_path` is a SQLite file or a postgresql:// URL; None reads QPIPE_INBOX_URL or
    QPIPE_INBOX_PATH (default $DAGSTER_HOME/qpipe/inbox.sqlite) at each tick.
    """

    @sensor(
        name=name,
        job_name="concept_pipeline",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Starts a concept_pipeline run for each concept message QStash delivered.",
    )
    def _sensor(context: SensorEvaluationContext) -> SensorResult:
        cap = max_concepts_per_day() if daily_cap is None else daily_cap
        target = inbox_path or default_inbox_target()
        inbox = open_inbox(target)
        state = _read_cursor(context.cursor)
        inbox.mark_consumed(state["emitted"])
        today = clock().date().isoformat()
        new_today = state["new_today"] if state["day"] == today else 0

        known = set(context.instance.get_dynamic_partitions(CONCEPTS_PARTITIONS))
        registry = default_registry()
        new_slugs: list[str] = []
        runs: list[RunRequest] = []
        deferred: list[str] = []
        rejected: list[str] = []
        try:
            batch = inbox.pending(
                batch_size * CLAIM_LOOKAHEAD, skip_deferred_on=today, exclude=state["emitted"]
            )
        except (ValueError, TypeError) as exc:  # a damaged JSON column comes back as msg.fault;
            # this is the last line of defence for anything the inbox backend itself cannot read
            raise ValueError(
                f"qstash_inbox_sensor cannot read the pending messages of inbox "
                f"{inbox.describe()}: a stored row is damaged ({type(exc).__name__}: {exc}); no "
                "message runs until that row is repaired or marked consumed"
            ) from exc
        # Another deployment's sensor may read this inbox too: run only what this one claims.
        offered = [m.message_id for m in batch]
        won = claim(target, offered, claim_owner(), limit=batch_size)
        batch = [m for m in batch if m.message_id in won]
        if offered and not batch:
            context.log.info(
                f"{len(offered)} pending message(s) are claimed by another deployment's sensor "
                "(qpipe_inbox_claims); they run there"
            )
        for msg in batch:
            try:
                concept = concept_of(msg)
            except ConceptError as exc:
                rejected.append(msg.message_id)
                context.log.warning(
                    f"message {msg.message_id} rejected (marked consumed, no run): {exc}"
                )
                continue
            is_new = msg.slug not in known and msg.slug not in new_slugs
            if is_new and new_today + len(new_slugs) >= cap:
                deferred.append(msg.message_id)
                continue
            try:
                registry.upsert(concept)
            except ConceptError as exc:
                rejected.append(msg.message_id)
                context.log.warning(
                    f"message {msg.message_id} rejected (marked consumed, no run): {exc}"
                )
                continue
            if is_new:
                new_slugs.append(msg.slug)
            runs.append(
                RunRequest(
                    run_key=msg.message_id,
                    partition_key=msg.slug,
                    tags={
                        TAG_MESSAGE_ID: msg.message_id,
                        TAG_CONCEPT: msg.slug,
                        TAG_TRIGGER: "qstash",
                    },
                )
            )
        notes = []
        if rejected:
            inbox.mark_consumed(rejected)
            notes.append(
                f"{len(rejected)} message(s) rejected, see this tick's log for why: "
                + ", ".join(rejected[:5])
            )
        cap_note = ""
        if deferred:
            inbox.defer(deferred, today)
            cap_note = (
                f"daily cap of {cap} new concepts reached (MAX_CONCEPTS_PER_DAY); "
                f"{len(deferred)} message(s) kept in the inbox until tomorrow (UTC): "
                + ", ".join(deferred[:5])
            )
            context.log.warning(cap_note)
        cursor = json.dumps(
            {
                "day": today,
                "new_today": new_today + len(new_slugs),
                "emitted": [r.run_key for r in runs],
            }
        )
        if not runs:
            return SensorResult(
                skip_reason="; ".join([*notes, cap_note] if cap_note else notes)
                or "no new messages in the inbox",
                cursor=cursor,
            )
        context.log.info(
            f"{len(runs)} run(s) for {len(set(r.partition_key for r in runs))} concept(s); "
            f"new partitions: {new_slugs or 'none'}"
        )
        return SensorResult(
            run_requests=runs,
            dynamic_partitions_requests=(
                [concepts_partitions.build_add_request(new_slugs)] if new_slugs else []
            ),
            cursor=cursor,
        )

    return _sensor


qstash_inbox_sensor = build_qstash_inbox_sensor()
