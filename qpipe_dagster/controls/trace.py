"""`qpipe trace MESSAGE_ID|CONCEPT`: follow one delivery (or a concept's latest runs) end to end.

Reads only what already exists: the inbox row (when received, how often delivered and retried,
its state), the runs tagged with the message (or the concept's partition) and their step
outcomes and asset materializations from the instance's event log, and the vector store's
objects per run (`VectorStore.count_by_run`). An unchanged chunk is not rewritten, so the
objects a run "produced" are those it inserted or changed; the rest still name the run that
last wrote them.

The sensor's decision is rebuilt from the row and the runs: a run tagged with the message
means it was requested (run key = message id); a row kept for a later day was over the daily
cap of new concepts; a consumed row without a run was rejected (the concept rules are checked
again here to say why); a pending row has not been picked up yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from dagster import DagsterEventType, DagsterInstance, RunsFilter

from qpipe_dagster.concepts import ConceptError
from qpipe_dagster.qstash.planning import concept_of
from qpipe_dagster.run_tags import TAG_MESSAGE_ID, TAG_PARTITION, TAG_TRIGGER
from qpipe_dagster.store.base import VectorStore
from webhook_sensor.inbox import InboxMessage, InboxTarget
from webhook_sensor.inbox.readonly import query_inbox

CONCEPT_RUNS = 5  # newest runs shown for a concept
# what each asset's materialization says it produced, in the order a reader follows them
PRODUCED_KEYS = {
    "crawled_pages": ("pages_total", "pages_ok"),
    "parsed_pages": ("pages", "chunks", "pages_without_text"),
    "page_embeddings": ("chunks", "embedded", "reused", "model", "dim"),
    "weaviate_objects": ("inserted", "updated", "unchanged", "deleted", "objects_for_concept"),
    "backtest_results": ("parameter_sets", "trials_stored"),
}


class TraceNotFound(LookupError):
    """Neither a message nor a concept by that name: the message says where it looked."""


@dataclass
class Delivery:
    message_id: str
    concept: str
    received_at: str
    last_delivery_at: str
    deliveries: int  # how many times QStash delivered it (1 + redeliveries)
    # QStash's Upstash-Retried count on the delivery that was stored: attempts it had retried
    # before (the receiver was down, or answered 5xx)
    qstash_retried: int
    status: str  # pending | consumed
    deferred_to: str | None
    consumed_at: str | None
    decision: str = ""


@dataclass
class Step:
    step: str
    status: str
    seconds: float | None
    attempts: int
    error: str | None = None


@dataclass
class RunTrace:
    run_id: str
    job: str
    status: str
    trigger: str | None
    message_id: str | None
    concept: str | None
    started: str | None
    ended: str | None
    steps: list[Step] = field(default_factory=list)
    produced: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects_in_store: int | None = None  # objects of the concept that still name this run


@dataclass
class Trace:
    query: str
    kind: str  # message | concept
    concept: str | None
    deliveries: list[Delivery]
    runs: list[RunTrace]
    store: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


_INBOX_COLUMNS = (
    "id, message_id, slug, concept_name, seed_urls, symbol, retried, received_at, deliveries,"
    " last_delivery_at, status, deferred_day, consumed_at"
)


def read_deliveries(target: InboxTarget, key: str) -> list[tuple[InboxMessage, dict]]:
    """Inbox rows whose message id or concept slug is `key`, oldest first, never writing."""

    def compute(run, table: str, ph: str) -> list:
        sql = (
            f"SELECT {_INBOX_COLUMNS} FROM {table} WHERE message_id = {ph} OR slug = {ph}"
            " ORDER BY id"
        )
        return run(sql, (key, key))

    out = []
    for row in query_inbox(target, compute, []):
        (rid, mid, slug, name, seeds, symbol, retried, received, deliveries, last, status,
         deferred, consumed) = row  # fmt: skip
        urls = json.loads(seeds) if isinstance(seeds, str | bytes) else seeds  # SQLite: text
        msg = InboxMessage(
            id=rid, message_id=mid, slug=slug, concept_name=name,
            seed_urls=tuple(urls or ()), symbol=symbol, retried=int(retried or 0),
            schedule_id=None, caller_ip=None, headers={}, received_at=float(received),
            deliveries=int(deliveries or 1), status=status,
        )  # fmt: skip
        out.append((msg, {"last": last, "deferred": deferred, "consumed": consumed}))
    return out


def decide(msg: InboxMessage, deferred: str | None, run_ids: list[str]) -> str:
    """The sensor's decision for one stored message, from its row state and its runs."""
    if run_ids:
        return f"run requested (run key {msg.message_id}): {', '.join(run_ids)}"
    if msg.status == "pending" and deferred:
        return (
            f"deferred: the daily cap of new concepts (MAX_CONCEPTS_PER_DAY) was reached on "
            f"{deferred}; it waits in the inbox for the next UTC day"
        )
    if msg.status == "pending":
        return (
            "pending: not picked up by qstash_inbox_sensor yet (halted? is the daemon running?"
            " see `qpipe status`)"
        )
    try:
        concept_of(msg)
    except ConceptError as exc:
        return f"skipped: rejected by the concept rules, marked consumed without a run: {exc}"
    return (
        "skipped: consumed without a run (the registry refused the concept, or the run was"
        " deleted); the sensor's tick log names the reason"
    )


def _steps(instance: DagsterInstance, run_id: str) -> list[Step]:
    errors: dict[str, str] = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data = getattr(event, "event_specific_data", None) if event else None
        error = getattr(data, "error", None)
        if event is not None and event.step_key and error is not None:
            errors[event.step_key] = str(error.message).strip().splitlines()[0][:300]
    out = []
    for s in instance.get_run_step_stats(run_id):
        seconds = round(s.end_time - s.start_time, 3) if s.start_time and s.end_time else None
        status = s.status.value if s.status is not None else "IN_PROGRESS"
        out.append(Step(s.step_key, status, seconds, int(s.attempts or 0), errors.get(s.step_key)))
    return out


def _produced(instance: DagsterInstance, run_id: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.asset_materialization
        if mat is None:
            continue
        name = mat.asset_key.to_user_string()
        values = {k: v.value for k, v in mat.metadata.items()}
        keys = PRODUCED_KEYS.get(name, ())
        out[name] = {k: values[k] for k in keys if k in values}
    return out


def _run_trace(instance: DagsterInstance, record) -> RunTrace:
    run = record.dagster_run
    return RunTrace(
        run_id=run.run_id,
        job=run.job_name,
        status=run.status.value,
        trigger=run.tags.get(TAG_TRIGGER),
        message_id=run.tags.get(TAG_MESSAGE_ID),
        concept=run.tags.get(TAG_PARTITION),
        started=_iso(record.start_time),
        ended=_iso(record.end_time),
        steps=_steps(instance, run.run_id),
        produced=_produced(instance, run.run_id),
    )


def trace(
    instance: DagsterInstance,
    inbox: InboxTarget,
    key: str,
    *,
    open_store: Callable[[str, int], VectorStore] | None = None,
) -> Trace:
    """Everything known about message `key`, else about concept `key`; TraceNotFound if
    neither the inbox, the runs nor the instance's partitions know it. `open_store(model,
    dim)` opens the vector store read-only (None: store counts are left out)."""
    if not isinstance(key, str) or not key.strip():
        raise TraceNotFound("give a QStash message id or a concept slug, got an empty string")
    key = key.strip()
    rows = read_deliveries(inbox, key)
    by_message = [r for r in rows if r[0].message_id == key]
    runs = instance.get_run_records(RunsFilter(tags={TAG_MESSAGE_ID: key}))
    if by_message or runs:
        kind, concept = "message", (by_message[0][0].slug if by_message else None)
        rows = by_message
        concept = concept or runs[0].dagster_run.tags.get(TAG_PARTITION)
    else:
        kind, concept = "concept", key
        runs = instance.get_run_records(RunsFilter(tags={TAG_PARTITION: key}), limit=CONCEPT_RUNS)
        known = key in instance.get_dynamic_partitions("concepts")
        if not rows and not runs and not known:
            raise TraceNotFound(
                f"no QStash message or concept {key!r}: not in the inbox ({inbox}), no run is "
                f"tagged {TAG_MESSAGE_ID}={key} or {TAG_PARTITION}={key}, and no concept "
                "partition has that name (`qpipe concepts list` shows the concepts)"
            )
    traces = [_run_trace(instance, r) for r in runs]
    deliveries = []
    for msg, extra in rows:
        mine = [t.run_id for t in traces if t.message_id == msg.message_id]
        if not mine:  # a concept trace shows only its newest runs; ask the instance
            found = instance.get_run_records(RunsFilter(tags={TAG_MESSAGE_ID: msg.message_id}))
            mine = [r.dagster_run.run_id for r in found]
        deliveries.append(
            Delivery(
                message_id=msg.message_id,
                concept=msg.slug,
                received_at=_iso(msg.received_at) or "",
                last_delivery_at=_iso(extra["last"]) or "",
                deliveries=msg.deliveries,
                qstash_retried=msg.retried,
                status=msg.status,
                deferred_to=extra["deferred"],
                consumed_at=_iso(extra["consumed"]),
                decision=decide(msg, extra["deferred"], mine),
            )
        )
    result = Trace(key, kind, concept, deliveries, traces)
    if open_store is not None and concept:
        result.store = _store_counts(traces, concept, open_store)
    return result


def _store_counts(
    traces: list[RunTrace], concept: str, open_store: Callable[[str, int], VectorStore]
) -> dict[str, Any]:
    """The concept's objects per run, opened with the model and dimension a run embedded with."""
    embedded = [t.produced["page_embeddings"] for t in traces if "page_embeddings" in t.produced]
    model = next((e for e in embedded if "model" in e and "dim" in e), None)
    if model is None:
        return {"note": "no run of this trace embedded chunks: no collection to count"}
    try:
        store = open_store(str(model["model"]), int(model["dim"]))
    except Exception as exc:  # a trace still shows the runs when the store is away
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        by_run = store.count_by_run(concept)
        info = {"backend": store.backend, "collection": store.collection}
    finally:
        store.close()
    for t in traces:
        t.objects_in_store = by_run.get(t.run_id, 0)
    return {
        **info,
        "objects_for_concept": sum(by_run.values()),
        "objects_by_run": {
            str(k) if k is not None else "(not recorded)": v for k, v in by_run.items()
        },
    }


def render(t: Trace) -> str:
    """The trace as a screen: delivery, decision, runs and steps, what they produced."""
    lines = [f"trace of {t.kind} {t.query}" + (f" (concept {t.concept})" if t.concept else "")]
    if not t.deliveries:
        lines.append("delivery: none in the inbox (purged after retention, or launched by hand)")
    for d in t.deliveries:
        lines += [
            f"delivery {d.message_id}: received {d.received_at}, delivered {d.deliveries}x"
            f" (redelivered {d.deliveries - 1}x; QStash had retried {d.qstash_retried}x before"
            f" it was stored), last"
            f" {d.last_delivery_at}; {d.status}"
            + (f" at {d.consumed_at}" if d.consumed_at else ""),
            f"  sensor: {d.decision}",
        ]
    if not t.runs:
        lines.append("runs: none")
    for r in t.runs:
        lines.append(
            f"run {r.run_id} ({r.job}, {r.trigger or 'launched by hand'}): {r.status},"
            f" {r.started or '?'} -> {r.ended or '...'}"
            + (
                f"; {r.objects_in_store} objects in the store name it"
                if r.objects_in_store is not None
                else ""
            )
        )
        for s in r.steps:
            took = f" in {s.seconds:.1f}s" if s.seconds is not None else ""
            retried = f", {s.attempts} attempts" if s.attempts > 1 else ""
            lines.append(f"  step {s.step}: {s.status}{took}{retried}")
            if s.error:
                lines.append(f"    error: {s.error}")
        for asset, values in r.produced.items():
            shown = ", ".join(f"{k} {v}" for k, v in values.items())
            lines.append(f"  produced {asset}: {shown or 'materialized'}")
    if t.store:
        if "error" in t.store or "note" in t.store:
            lines.append(f"store: {t.store.get('error') or t.store.get('note')}")
        else:
            lines.append(
                f"store: {t.store['backend']} {t.store['collection']}:"
                f" {t.store['objects_for_concept']} objects for {t.concept}, by run:"
                f" {json.dumps(t.store['objects_by_run'])}"
            )
    return "\n".join(lines)
