"""What Dagster's instance knows, read for metrics: runs, step times, asset metadata, the sensor.

Run counts and run durations are one SQL query each over the run storage (SQLite or
PostgreSQL), so a scrape costs the same with ten runs or ten thousand. Step durations and
asset metadata (pages, chunks, objects, parameter sets) are read incrementally: each scrape
reads only what was recorded since the last one, at most a bounded batch, and adds it to
counters held by the exporter, so the first scrape of a large instance never blocks.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

TERMINAL = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
ACTIVE = ("QUEUED", "STARTING", "STARTED", "CANCELING")  # always exported, 0 when none
RUN_BUCKETS_S = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
STEP_BUCKETS_S = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# Asset metadata read into counters (asset key -> how to read one materialization)
TRIAL_ACTIONS = ("inserted", "updated", "skipped", "archived", "unarchived", "error")
METADATA_ASSETS = ("crawled_pages", "page_embeddings", "weaviate_objects", "backtest_results")
EVENTS_PER_SCRAPE = 25  # per asset and batch
CATCH_UP_BUDGET_S = 0.25  # more batches per scrape while behind, for at most this long
RUNS_PER_SCRAPE = 20  # finished runs whose step stats are read per scrape
STEP_LOOKBACK_S = 3600.0  # at start, step times of runs finished this long before are counted


def run_counts(instance: DagsterInstance) -> dict[tuple[str, str], int]:
    """(job, status) -> runs, one GROUP BY over the runs table."""
    from dagster._core.storage.runs.schema import RunsTable
    from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

    storage = instance.run_storage
    if isinstance(storage, SqlRunStorage):
        import sqlalchemy as sa

        query = sa.select(RunsTable.c.pipeline_name, RunsTable.c.status, sa.func.count()).group_by(
            RunsTable.c.pipeline_name, RunsTable.c.status
        )
        with storage.connect() as conn:
            return {(str(j), str(s)): int(n) for j, s, n in conn.execute(query).fetchall()}
    counts: dict[tuple[str, str], int] = {}  # any other storage: one count per status
    for record in instance.get_run_records(limit=100_000):
        run = record.dagster_run
        key = (run.job_name, run.status.value)
        counts[key] = counts.get(key, 0) + 1
    return counts


def run_duration_histograms(instance: DagsterInstance) -> dict[tuple[str, str], Histogram]:
    """(job, status) -> histogram of finished runs' wall time, bucketed by the database (one
    row per job and status comes back, however many runs there are)."""
    from dagster._core.storage.runs.schema import RunsTable
    from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

    storage = instance.run_storage
    if not isinstance(storage, SqlRunStorage):
        return {}
    import sqlalchemy as sa

    seconds = RunsTable.c.end_time - RunsTable.c.start_time
    columns = [sa.func.sum(sa.case((seconds <= bound, 1), else_=0)) for bound in RUN_BUCKETS_S]
    query = (
        sa.select(
            RunsTable.c.pipeline_name,
            RunsTable.c.status,
            sa.func.count(),
            sa.func.sum(seconds),
            *columns,
        )
        .where(
            RunsTable.c.status.in_(sorted(TERMINAL)),
            RunsTable.c.start_time.is_not(None),
            RunsTable.c.end_time.is_not(None),
        )
        .group_by(RunsTable.c.pipeline_name, RunsTable.c.status)
    )
    out: dict[tuple[str, str], Histogram] = {}
    with storage.connect() as conn:
        for row in conn.execute(query).fetchall():
            job, status, n, total, *counts = tuple(row)
            out[(str(job), str(status))] = Histogram(
                RUN_BUCKETS_S, [int(c or 0) for c in counts], float(total or 0.0), int(n)
            )
    return out


@dataclass
class Histogram:
    """Cumulative bucket counts, as Prometheus wants them."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.n += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def samples(self) -> list[tuple[str, float]]:
        from prometheus_client.utils import floatToGoString

        pairs = zip(self.buckets, self.counts, strict=True)
        return [*((floatToGoString(b), c) for b, c in pairs), ("+Inf", self.n)]


def _meta(record) -> dict:
    mat = record.asset_materialization
    if mat is None:
        return {}
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _num(value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return out if out == out and out not in (float("inf"), float("-inf")) else 0.0


def _tally() -> dict[Any, float]:
    """A Counter: sums metadata numbers (floats) and reads a missing key as 0. typeshed types a
    Counter's values as int, so it is declared as the mapping it is used as."""
    return cast("dict[Any, float]", Counter())


@dataclass
class AssetTotals:
    """Counters summed over every materialization read so far."""

    pages: dict[str, float] = field(default_factory=_tally)  # ok / failed / skipped
    pages_failed_by_class: dict[str, float] = field(default_factory=_tally)
    chunks: dict[str, float] = field(default_factory=_tally)  # embedded / reused
    # (backend, inserted|updated|deleted)
    objects: dict[tuple[str, str], float] = field(default_factory=_tally)
    param_sets: dict[str, float] = field(default_factory=_tally)  # backend -> parameter sets
    compute_s: dict[str, float] = field(default_factory=_tally)  # backend -> compute seconds
    last_rate: dict[str, float] = field(default_factory=dict)  # backend -> sets/s, latest run
    trials: Counter = field(default_factory=Counter)  # trial-store ingest action -> trials
    materializations: Counter = field(default_factory=Counter)  # asset -> events read

    def add(self, asset: str, md: dict) -> None:
        self.materializations[asset] += 1
        if asset == "crawled_pages":
            for outcome in ("ok", "failed", "skipped"):
                self.pages[outcome] += _num(md.get(f"pages_{outcome}"))
            by_class = md.get("pages_failed_by_class")
            if isinstance(by_class, str):
                with contextlib.suppress(ValueError):
                    by_class = json.loads(by_class)
            if isinstance(by_class, dict):
                for cls, n in by_class.items():
                    self.pages_failed_by_class[str(cls)] += _num(n)
            elif _num(md.get("pages_failed")):
                self.pages_failed_by_class["unclassified"] += _num(md.get("pages_failed"))
        elif asset == "page_embeddings":
            self.chunks["embedded"] += _num(md.get("embedded"))
            self.chunks["reused"] += _num(md.get("reused"))
        elif asset == "weaviate_objects":
            backend = str(md.get("backend") or "unknown")
            for what in ("inserted", "updated", "deleted"):
                self.objects[(backend, what)] += _num(md.get(what))
        elif asset == "backtest_results":
            backend = str(md.get("backend") or "unknown")
            sets, seconds = _num(md.get("parameter_sets")), _num(md.get("compute_seconds"))
            self.param_sets[backend] += sets
            self.compute_s[backend] += seconds
            if seconds > 0:
                self.last_rate[backend] = sets / seconds
            for action in TRIAL_ACTIONS:
                self.trials[action] += int(_num(md.get(f"trials_{action}")))


class IncrementalReader:
    """Asset metadata and step durations, read a bounded batch per scrape and kept."""

    def __init__(self, *, now: float | None = None) -> None:
        self.totals = AssetTotals()
        self.steps: dict[tuple[str, str], Histogram] = {}  # (step, outcome)
        self._cursors: dict[str, str | None] = {a: None for a in METADATA_ASSETS}
        self.backlog: dict[str, bool] = {a: False for a in METADATA_ASSETS}
        self._runs_after = (time.time() if now is None else now) - STEP_LOOKBACK_S
        self._runs_seen: set[str] = set()
        self.steps_backlog = False

    def read_assets(self, instance: DagsterInstance) -> None:
        """One batch per asset, then more batches while some asset is behind and the budget
        lasts: a scrape of an instance with years of events stays short, and the counters catch
        up over the next scrapes (`qpipe_metrics_backlog` says so meanwhile)."""
        deadline = time.monotonic() + CATCH_UP_BUDGET_S
        for asset in METADATA_ASSETS:
            self._read_batch(instance, asset)
        while time.monotonic() < deadline and any(self.backlog.values()):
            for asset in [a for a, more in self.backlog.items() if more]:
                self._read_batch(instance, asset)

    def _read_batch(self, instance: DagsterInstance, asset: str) -> None:
        result = instance.fetch_materializations(
            AssetKey(asset), limit=EVENTS_PER_SCRAPE, cursor=self._cursors[asset], ascending=True
        )
        for record in result.records:
            self.totals.add(asset, _meta(record))
        if result.records:
            self._cursors[asset] = result.cursor
        self.backlog[asset] = bool(result.has_more)

    def read_steps(self, instance: DagsterInstance) -> None:
        """Step durations of runs that finished since the last scrape (oldest first)."""
        from datetime import UTC, datetime

        records = instance.get_run_records(
            RunsFilter(
                statuses=[DagsterRunStatus(s) for s in sorted(TERMINAL)],
                updated_after=datetime.fromtimestamp(self._runs_after, UTC),
            ),
            limit=RUNS_PER_SCRAPE + len(self._runs_seen) + 1,
            order_by="update_timestamp",
            ascending=True,
        )
        fresh = [r for r in records if r.dagster_run.run_id not in self._runs_seen]
        self.steps_backlog = len(fresh) > RUNS_PER_SCRAPE
        shard = getattr(instance.event_log_storage, "path_for_shard", None)
        for record in fresh[:RUNS_PER_SCRAPE]:
            run_id = record.dagster_run.run_id
            # SQLite keeps one file per run: a run without one recorded no steps, and asking
            # for its stats would create the file (the exporter must only read)
            has_events = shard is None or Path(shard(run_id)).exists()
            for stat in instance.get_run_step_stats(run_id) if has_events else ():
                if stat.start_time is None or stat.end_time is None or stat.status is None:
                    continue
                key = (stat.step_key, stat.status.value.lower())
                hist = self.steps.setdefault(key, Histogram(STEP_BUCKETS_S))
                hist.observe(max(0.0, stat.end_time - stat.start_time))
            self._runs_seen.add(run_id)
            self._runs_after = max(self._runs_after, record.update_timestamp.timestamp() - 1)
        # forget ids that can no longer come back (updated well before the window)
        if len(self._runs_seen) > 10 * RUNS_PER_SCRAPE:
            self._runs_seen = {r.dagster_run.run_id for r in records}


def sensor_cursor(instance: DagsterInstance, name: str) -> dict | None:
    """The stored cursor of a sensor, by name (None when it never ticked)."""
    from dagster._core.scheduler.instigation import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name != name:
            continue
        data = state.instigator_data
        raw = getattr(data, "cursor", None)
        if raw:
            with contextlib.suppress(ValueError):
                found = json.loads(raw)
                return found if isinstance(found, dict) else None
    return None


def new_concepts_today(instance: DagsterInstance, today: str) -> int:
    """New concepts the QStash sensor let through today (UTC): its cap counter."""
    cursor = sensor_cursor(instance, "qstash_inbox_sensor") or {}
    if cursor.get("day") != today:
        return 0
    value = cursor.get("new_today")
    return value if isinstance(value, int) and value >= 0 else 0
