"""The pipeline's Prometheus metrics, computed when Prometheus scrapes (a custom Collector).

Each source (runs, steps, assets, inbox, caps, backups, disk, host, GPU, breakers, controls) is
read on its own: one that fails is reported by `qpipe_metrics_source_up{source}` = 0 and the
rest are still exported, so a down inbox database never hides the run metrics.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# imported here, not at the first scrape: a cold import on a loaded host took 0.5 s of it
from qpipe_dagster.controls.state import read_halt
from qpipe_dagster.monitoring import instance as dagster_reads
from qpipe_dagster.monitoring import state
from qpipe_dagster.qstash.ledger import published_today
from qpipe_dagster.resilience.breakers import breaker_db, by_system, read_states

if TYPE_CHECKING:  # Dagster is imported at the first scrape that needs the instance
    from dagster import DagsterInstance
from qpipe_dagster.settings import SettingError, cap
from webhook_sensor.settings import inbox_target_from_env

log = logging.getLogger(__name__)

DEFAULT_MAX_CONCEPTS_PER_DAY = 50  # the sensor's default (defs.triggers)
SLOW_TTL_S = 60.0  # folder sizes, backup listing: at most once a minute
GPU_TTL_S = 10.0


def _limit(env: Mapping[str, str], name: str, default: int | None, minimum: int) -> int | None:
    """A cap from the environment by the start-up check's rule; a bad value counts as unset here
    (the exporter reports, the start-up check refuses)."""
    try:
        found = cap(name, minimum, env)
    except SettingError:
        return default
    return default if found is None else found


class PipelineCollector(Collector):
    """Reads Dagster's instance and qpipe's state on every `collect()`."""

    def __init__(
        self,
        instance: Callable[[], DagsterInstance] | DagsterInstance | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._instance_arg = instance
        self._instance: DagsterInstance | None = None
        self._env = env
        self._clock = clock
        self._lock = threading.Lock()  # the HTTP server answers scrapes on several threads
        self._reader = dagster_reads.IncrementalReader(now=clock())
        self._slow = state.TtlCache(SLOW_TTL_S)
        self._gpu = state.TtlCache(GPU_TTL_S)
        self.last_source_seconds: dict[str, float] = {}

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self._env is None else self._env

    def instance(self) -> DagsterInstance:
        if self._instance is None:
            arg = self._instance_arg
            if arg is None:
                from dagster import DagsterInstance

                self._instance = DagsterInstance.get()
            else:
                self._instance = arg() if callable(arg) else arg
        return self._instance

    def describe(self) -> list[Metric]:
        return []  # no scrape at registration time: reading the instance is the expensive part

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            up = GaugeMetricFamily(
                "qpipe_metrics_source_up",
                "1 if the source was read in this scrape",
                labels=["source"],
            )
            took = GaugeMetricFamily(
                "qpipe_metrics_source_seconds", "Time to read the source", labels=["source"]
            )
            families: list[Metric] = []
            for name, read in self._sources():
                started = time.perf_counter()
                try:
                    families.extend(read())
                    ok = 1.0
                except Exception as exc:  # one broken source must not hide the others
                    log.warning("metrics source %s failed: %s: %s", name, type(exc).__name__, exc)
                    ok = 0.0
                seconds = time.perf_counter() - started
                self.last_source_seconds[name] = seconds
                up.add_metric([name], ok)
                took.add_metric([name], seconds)
            yield from families
            yield up
            yield took

    def _sources(self) -> list[tuple[str, Callable[[], list[Metric]]]]:
        return [
            ("runs", self._runs),
            ("assets", self._assets),
            ("steps", self._steps),
            ("inbox", self._inbox),
            ("caps", self._caps),
            ("backups", self._backups),
            ("disk", self._disk),
            ("host", self._host),
            ("gpu", self._gpus),
            ("breakers", self._breakers),
            ("controls", self._controls),
            ("trials", self._trials),
        ]

    # -- Dagster -------------------------------------------------------------------------------

    def _runs(self) -> list[Metric]:
        inst = self.instance()
        done = CounterMetricFamily(
            "qpipe_runs_completed",
            "Runs that finished, by job and final status (SUCCESS, FAILURE, CANCELED)",
            labels=["dagster_job", "status"],
        )
        active = GaugeMetricFamily(
            "qpipe_runs_active",
            "Runs not finished yet, by job and status (QUEUED, STARTING, STARTED, CANCELING...)",
            labels=["dagster_job", "status"],
        )
        counts = dagster_reads.run_counts(inst)
        # every job's finished counters exist from its first run on, at 0 until used: increase()
        # sees a failure only as a step from an earlier sample
        jobs = {job for job, _ in counts} | {"concept_pipeline"}
        for job in sorted(jobs):
            for status in sorted(dagster_reads.TERMINAL):
                done.add_metric([job, status], counts.get((job, status), 0))
        for job in sorted(jobs):  # the same for what is queued and running: 0 until used
            for status in dagster_reads.ACTIVE:
                active.add_metric([job, status], counts.get((job, status), 0))
        for (job, status), n in sorted(counts.items()):
            if status not in dagster_reads.TERMINAL and status not in dagster_reads.ACTIVE:
                active.add_metric([job, status], n)
        hists = dagster_reads.run_duration_histograms(inst)
        duration = HistogramMetricFamily(
            "qpipe_run_duration_seconds",
            "Wall time of finished runs (start to end), by job and final status",
            labels=["dagster_job", "status"],
        )
        for (job, status), hist in sorted(hists.items()):
            duration.add_metric([job, status], hist.samples(), sum_value=hist.total)
        return [done, active, duration]

    def _steps(self) -> list[Metric]:
        self._reader.read_steps(self.instance())
        duration = HistogramMetricFamily(
            "qpipe_step_duration_seconds",
            "Step wall time by asset (step key) and outcome, for runs finished since the"
            " exporter started (and the hour before)",
            labels=["asset", "outcome"],
        )
        for (step, outcome), hist in sorted(self._reader.steps.items()):
            duration.add_metric([step, outcome], hist.samples(), sum_value=hist.total)
        return [duration]

    def _assets(self) -> list[Metric]:
        self._reader.read_assets(self.instance())
        t = self._reader.totals
        pages = CounterMetricFamily(
            "qpipe_pages_crawled", "Pages requested by crawls, by outcome", labels=["outcome"]
        )
        for outcome in ("ok", "failed", "skipped"):
            pages.add_metric([outcome], t.pages[outcome])
        failed = CounterMetricFamily(
            "qpipe_pages_failed", "Failed page fetches by error class", labels=["error_class"]
        )
        for cls, n in sorted(t.pages_failed_by_class.items()):
            failed.add_metric([cls], n)
        chunks = CounterMetricFamily(
            "qpipe_chunks", "Chunks embedded anew or reused unchanged", labels=["outcome"]
        )
        for outcome in ("embedded", "reused"):
            chunks.add_metric([outcome], t.chunks[outcome])
        objects = CounterMetricFamily(
            "qpipe_store_objects",
            "Vector store objects written (inserted, updated) and deleted",
            labels=["backend", "operation"],
        )
        for (backend, op), n in sorted(t.objects.items()):
            objects.add_metric([backend, op], n)
        sets = CounterMetricFamily(
            "qpipe_backtest_parameter_sets", "Backtest parameter sets evaluated", labels=["backend"]
        )
        secs = CounterMetricFamily(
            "qpipe_backtest_compute_seconds", "Backtest kernel seconds", labels=["backend"]
        )
        for backend in sorted(t.param_sets):
            sets.add_metric([backend], t.param_sets[backend])
            secs.add_metric([backend], t.compute_s[backend])
        rate = GaugeMetricFamily(
            "qpipe_backtest_parameter_sets_per_second",
            "Parameter sets per second of the latest backtest, by backend",
            labels=["backend"],
        )
        for backend, value in sorted(t.last_rate.items()):
            rate.add_metric([backend], value)
        backlog = GaugeMetricFamily(
            "qpipe_metrics_backlog",
            "1 while older events are still being read into the counters (catching up)",
            labels=["reader"],
        )
        for asset, more in sorted(self._reader.backlog.items()):
            backlog.add_metric([asset], float(more))
        backlog.add_metric(["steps"], float(self._reader.steps_backlog))
        trials = CounterMetricFamily(
            "qpipe_trials_ingested",
            "Backtest trials ingested into the trial store, by action",
            labels=["action"],
        )
        for action in dagster_reads.TRIAL_ACTIONS:
            trials.add_metric([action], t.trials[action])
        return [pages, failed, chunks, objects, sets, secs, rate, backlog, trials]

    def _trials(self) -> list[Metric]:
        """Review decisions from the trial store's status history (small: one row per change)."""
        from qpipe_dagster.trials.store import TrialStore

        history = TrialStore().history()
        changes = CounterMetricFamily(
            "qpipe_trial_status_changes",
            "Trial status changes (promote, reject, archive, unarchive), by new status",
            labels=["to_status"],
        )
        counts = dict(history.group_by("to_status").len().iter_rows()) if history.height else {}
        for status in ("promoted", "rejected", "archived", "candidate"):
            changes.add_metric([status], int(counts.get(status, 0)))
        return [changes]

    # -- qpipe state ---------------------------------------------------------------------------

    def _inbox(self) -> list[Metric]:
        summary = state.inbox_summary(inbox_target_from_env(self.env), self._clock())
        self._inbox_summary = summary
        messages = GaugeMetricFamily(
            "qpipe_inbox_messages", "Inbox rows by status (pending = the queue)", labels=["status"]
        )
        for status in sorted({"pending", "consumed", *summary.by_status}):
            messages.add_metric([status], summary.by_status.get(status, 0))
        deferred = GaugeMetricFamily(
            "qpipe_inbox_deferred",
            "Pending messages held back until tomorrow by MAX_CONCEPTS_PER_DAY",
            value=summary.deferred,
        )
        oldest = GaugeMetricFamily(
            "qpipe_inbox_oldest_pending_age_seconds",
            "Age of the oldest pending message not held back by the daily cap (0 when none)",
            value=summary.oldest_pending_age_s,
        )
        return [messages, deferred, oldest]

    def _caps(self) -> list[Metric]:
        env = self.env
        now = self._clock()
        today = datetime.fromtimestamp(now, UTC).date().isoformat()
        summary = getattr(self, "_inbox_summary", None) or state.inbox_summary(
            inbox_target_from_env(env), now
        )
        used = GaugeMetricFamily(
            "qpipe_cap_used", "Today's (UTC) use of each daily cap", labels=["cap"]
        )
        limit = GaugeMetricFamily(
            "qpipe_cap_limit", "Each daily cap (absent when unset)", labels=["cap"]
        )
        concepts_cap = _limit(env, "MAX_CONCEPTS_PER_DAY", DEFAULT_MAX_CONCEPTS_PER_DAY, 0)
        used.add_metric(
            ["MAX_CONCEPTS_PER_DAY"], dagster_reads.new_concepts_today(self.instance(), today)
        )
        limit.add_metric(["MAX_CONCEPTS_PER_DAY"], float(concepts_cap or 0))
        used.add_metric(
            ["QSTASH_DAILY_LIMIT"], max(summary.deliveries_today, published_today(env, now))
        )
        qstash_cap = _limit(env, "QSTASH_DAILY_LIMIT", None, 1)
        if qstash_cap is not None:
            limit.add_metric(["QSTASH_DAILY_LIMIT"], float(qstash_cap))
        concepts = GaugeMetricFamily(
            "qpipe_concepts",
            "Concepts in the registry",
            value=state.registry_concepts(Path(state.state_paths(env)["concepts"])),
        )
        return [used, limit, concepts]

    def _backups(self) -> list[Metric]:
        summary = self._slow.get("backups", lambda: state.backup_summary(self.env))
        count = GaugeMetricFamily(
            "qpipe_backups", "Complete backups on the target", value=summary.count
        )
        out: list[Metric] = [count]
        if summary.last_time is not None:
            out.append(
                GaugeMetricFamily(
                    "qpipe_backup_last_success_timestamp_seconds",
                    "When the newest complete backup was taken (epoch seconds)",
                    value=summary.last_time,
                )
            )
            out.append(
                GaugeMetricFamily(
                    "qpipe_backup_last_success_age_seconds",
                    "Age of the newest complete backup",
                    value=max(0.0, self._clock() - summary.last_time),
                )
            )
        if summary.last_bytes is not None:
            out.append(
                GaugeMetricFamily(
                    "qpipe_backup_last_size_bytes",
                    "Size of the newest complete backup (local targets)",
                    value=summary.last_bytes,
                )
            )
        return out

    def _disk(self) -> list[Metric]:
        paths = state.state_paths(self.env)
        sizes = self._slow.get(
            "sizes", lambda: {name: state.tree_bytes(path) for name, path in paths.items()}
        )
        used_bytes = GaugeMetricFamily(
            "qpipe_state_path_bytes", "Bytes used by each qpipe state path", labels=["path"]
        )
        fs_used = GaugeMetricFamily(
            "qpipe_filesystem_used_ratio",
            "Used fraction of the filesystem holding each state path",
            labels=["path"],
        )
        fs_size = GaugeMetricFamily(
            "qpipe_filesystem_size_bytes",
            "Size of the filesystem holding each state path",
            labels=["path"],
        )
        for name, path in sorted(paths.items()):
            used_bytes.add_metric([name], sizes.get(name, 0))
            usage = state.filesystem_usage(path)
            if usage is not None and usage[1] > 0:
                fs_used.add_metric([name], usage[0] / usage[1])
                fs_size.add_metric([name], usage[1])
        return [used_bytes, fs_used, fs_size]

    def _host(self) -> list[Metric]:
        used, total = state.host_memory()
        return [
            GaugeMetricFamily(
                "qpipe_host_memory_used_ratio",
                "Used fraction of this host's memory (total - available)",
                value=used / total if total else 0.0,
            ),
            GaugeMetricFamily("qpipe_host_memory_total_bytes", "Host memory", value=total),
        ]

    def _gpus(self) -> list[Metric]:
        devices = self._gpu.get("gpus", state.gpu_devices)
        if not devices:
            return []  # no GPU: no series, and no alert can fire on a made-up 0
        labels = ["gpu", "name"]
        used = GaugeMetricFamily("qpipe_gpu_memory_used_bytes", "GPU memory in use", labels=labels)
        total = GaugeMetricFamily("qpipe_gpu_memory_total_bytes", "GPU memory", labels=labels)
        util = GaugeMetricFamily(
            "qpipe_gpu_utilization_ratio", "GPU busy fraction (nvidia-smi)", labels=labels
        )
        for d in devices:
            used.add_metric([d.index, d.name], d.memory_used_bytes)
            total.add_metric([d.index, d.name], d.memory_total_bytes)
            util.add_metric([d.index, d.name], d.utilization_ratio)
        return [used, total, util]

    def _breakers(self) -> list[Metric]:
        stored = by_system(read_states(breaker_db(self.env)))
        st = GaugeMetricFamily(
            "qpipe_circuit_breaker_state",
            "1 for each outside system's current breaker state (closed, half-open, open)",
            labels=["system", "state"],
        )
        failures = GaugeMetricFamily(
            "qpipe_circuit_breaker_failures",
            "Consecutive failures counted by each breaker",
            labels=["system"],
        )
        for system in sorted({*state.SYSTEMS, *stored}):
            found = stored.get(system)
            current = found.state if found else "closed"
            for name in ("closed", "half-open", "open"):
                st.add_metric([system, name], float(current == name))
            failures.add_metric([system], found.fail_counter if found else 0)
        return [st, failures]

    def _controls(self) -> list[Metric]:
        halt = read_halt(self.instance())
        return [
            GaugeMetricFamily(
                "qpipe_halted", "1 while `qpipe halt` is in force", value=float(halt is not None)
            )
        ]
