"""`qstash_inbox_sensor`: turns messages the receiver stored into concept partitions and runs.

Each tick: messages requested in the previous tick are marked consumed (the cursor we are handed
is only committed once Dagster has recorded that tick's run requests), then a bounded batch of
pending messages becomes registry upserts, new dynamic partitions and one run per message with
run_key = the QStash message id, so a redelivered or re-evaluated message never runs twice.
New concepts are capped per UTC day; over the cap a message stays in the inbox and is retried
the next day, and the tick reports why. A stored message that today's concept rules refuse (an
older receiver's row, a hand edit) is rejected alone: marked consumed so it is not retried every
tick, and logged with its message id and reason; the rest of the batch goes on.

Those decisions are `qstash.planning.plan_tick` (plain data, tested directly); this module
reads the tick's inputs (cursor, inbox claims, partitions) and applies the plan.
"""

from __future__ import annotations

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

from qpipe_dagster.concepts import default_registry
from qpipe_dagster.defs.partitions import CONCEPTS_PARTITIONS, concepts_partitions
from qpipe_dagster.qstash.planning import TickCursor, TickPlan, plan_tick, tick_day
from qpipe_dagster.run_tags import TAG_CONCEPT, TAG_MESSAGE_ID, TAG_TRIGGER
from qpipe_dagster.settings import cap, env_value
from webhook_sensor.claims import claim
from webhook_sensor.inbox import InboxMessage, InboxStore, InboxTarget, open_inbox
from webhook_sensor.settings import default_inbox_target

DEFAULT_MAX_CONCEPTS_PER_DAY = 50
DEFAULT_BATCH_SIZE = 100
CLAIM_LOOKAHEAD = 4  # pending ids offered per claim, in batches: others may hold some


def max_concepts_per_day() -> int:
    """MAX_CONCEPTS_PER_DAY (0 pauses new concepts), by the start-up check's rule: ASCII digits
    only ('²' passed str.isdigit() and then crashed int() with a bare ValueError)."""
    found = cap("MAX_CONCEPTS_PER_DAY", 0)
    return DEFAULT_MAX_CONCEPTS_PER_DAY if found is None else found


def claim_owner() -> str:
    """Who claims inbox messages: one name per deployment (host and DAGSTER_HOME), so a tick
    re-evaluated after a failed submission renews its own claims instead of waiting them out."""
    return f"{socket.gethostname()}:{env_value('DAGSTER_HOME') or ''}"


def claimed_batch(
    context: SensorEvaluationContext,
    inbox: InboxStore,
    target: InboxTarget,
    cursor: TickCursor,
    today: str,
    batch_size: int,
) -> list[InboxMessage]:
    """Pending messages this deployment claims, oldest first, at most `batch_size`.

    Another deployment's sensor may read this inbox too: only what this one claims runs here.
    """
    try:
        batch = inbox.pending(
            batch_size * CLAIM_LOOKAHEAD, skip_deferred_on=today, exclude=list(cursor.emitted)
        )
    except (ValueError, TypeError) as exc:  # a damaged JSON column comes back as msg.fault;
        # this is the last line of defence for anything the inbox backend itself cannot read
        raise ValueError(
            f"qstash_inbox_sensor cannot read the pending messages of inbox "
            f"{inbox.describe()}: a stored row is damaged ({type(exc).__name__}: {exc}); no "
            "message runs until that row is repaired or marked consumed"
        ) from exc
    offered = [m.message_id for m in batch]
    won = claim(target, offered, claim_owner(), limit=batch_size)
    batch = [m for m in batch if m.message_id in won]
    if offered and not batch:
        context.log.info(
            f"{len(offered)} pending message(s) are claimed by another deployment's sensor "
            "(qpipe_inbox_claims); they run there"
        )
    return batch


def apply_plan(context: SensorEvaluationContext, inbox: InboxStore, plan: TickPlan) -> SensorResult:
    """Do what the plan says to the inbox, log why, and give Dagster the tick's result."""
    for mid, reason in plan.rejected:
        context.log.warning(f"message {mid} rejected (marked consumed, no run): {reason}")
    if plan.rejected:
        inbox.mark_consumed(plan.rejected_ids)
    if plan.deferred:
        inbox.defer(plan.deferred, plan.today)
        context.log.warning(plan.cap_note())
    cursor = plan.cursor.to_json()
    if not plan.runs:
        return SensorResult(skip_reason=plan.skip_reason(), cursor=cursor)
    context.log.info(
        f"{len(plan.runs)} run(s) for {len(set(r.slug for r in plan.runs))} concept(s); "
        f"new partitions: {plan.new_slugs or 'none'}"
    )
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=r.message_id,
                partition_key=r.slug,
                tags={TAG_MESSAGE_ID: r.message_id, TAG_CONCEPT: r.slug, TAG_TRIGGER: "qstash"},
            )
            for r in plan.runs
        ],
        dynamic_partitions_requests=(
            [concepts_partitions.build_add_request(plan.new_slugs)] if plan.new_slugs else []
        ),
        cursor=cursor,
    )


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
        cursor = TickCursor.parse(context.cursor)
        inbox.mark_consumed(list(cursor.emitted))
        today = tick_day(clock())
        known = set(context.instance.get_dynamic_partitions(CONCEPTS_PARTITIONS))
        registry = default_registry()
        batch = claimed_batch(context, inbox, target, cursor, today, batch_size)
        plan = plan_tick(
            batch, cursor=cursor, today=today, cap=cap, known=known, register=registry.upsert
        )
        return apply_plan(context, inbox, plan)

    return _sensor


qstash_inbox_sensor = build_qstash_inbox_sensor()
