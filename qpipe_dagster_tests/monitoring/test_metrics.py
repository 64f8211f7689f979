"""The pipeline metrics endpoint, scraped over HTTP from a real instance and real qpipe state.

Everything the exporter reads is made through the components' own APIs (runs through the run
storage, materializations through the instance, messages through the inbox, concepts through
the registry, breaker state through a real pybreaker breaker), on a pinned clock.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pybreaker
import pytest
import time_machine
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    MetadataValue,
)
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.utils import make_new_run_id
from prometheus_client.parser import text_string_to_metric_families

from qpipe_dagster.concepts import Concept, ConceptRegistry
from qpipe_dagster.controls.state import HaltRecord, write_halt
from qpipe_dagster.crawl.outcomes import error_class, failed_by_class
from qpipe_dagster.monitoring import instance as reads
from qpipe_dagster.monitoring.collector import PipelineCollector
from qpipe_dagster.monitoring.server import build_registry, serve
from qpipe_dagster.qstash.ledger import PublishLedger, ledger_path
from qpipe_dagster.resilience.breakers import breaker
from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    postgres_cluster,
)
from webhook_sensor.inbox import InboxRecord, open_inbox

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[DagsterInstance]:
    with DagsterInstance.get() as inst:
        yield inst


def _scrape(collector: PipelineCollector) -> dict[tuple[str, tuple], float]:
    port = _free_port()
    server, _ = serve("127.0.0.1", port, build_registry(collector))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            assert resp.status == 200
            text = resp.read().decode()
    finally:
        server.shutdown()
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _run(instance: DagsterInstance, job: str, start: float, end: float | None, final) -> str:
    run_id = make_new_run_id()
    instance.add_run(DagsterRun(job_name=job, run_id=run_id, status=DagsterRunStatus.NOT_STARTED))
    storage = instance.run_storage
    storage.handle_run_event(
        run_id,
        DagsterEvent(DagsterEventType.RUN_START.value, job),
        datetime.fromtimestamp(start, UTC),
    )
    if end is not None:
        storage.handle_run_event(
            run_id, DagsterEvent(final.value, job), datetime.fromtimestamp(end, UTC)
        )
    return run_id


def _record(message_id: str, slug: str) -> InboxRecord:
    body = json.dumps({"concept": slug, "urls": [f"https://example.com/{slug}"]}).encode()
    return InboxRecord(message_id, body, slug, slug, (f"https://example.com/{slug}",), None)


def test_scrape_reports_runs_assets_inbox_caps_backups_breakers_and_halt(
    dagster_home: Path, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = NOW.timestamp()
    monkeypatch.setenv("QSTASH_DAILY_LIMIT", "450")
    monkeypatch.setenv("MAX_CONCEPTS_PER_DAY", "10")
    _run(instance, "concept_pipeline", now - 600, now - 480, DagsterEventType.RUN_SUCCESS)
    _run(instance, "concept_pipeline", now - 300, now - 290, DagsterEventType.RUN_FAILURE)
    _run(instance, "daily_report", now - 100, None, None)
    for slug, failed in (("alpha", 2), ("beta", 1)):
        instance.report_runless_asset_event(
            AssetMaterialization(
                AssetKey("crawled_pages"),
                partition=slug,
                metadata={
                    "pages_ok": 10,
                    "pages_failed": failed,
                    "pages_skipped": 1,
                    "pages_failed_by_class": MetadataValue.json({"http_5xx": failed}),
                },
            )
        )
    instance.report_runless_asset_event(
        AssetMaterialization(
            AssetKey("page_embeddings"), partition="alpha", metadata={"embedded": 7, "reused": 30}
        )
    )
    instance.report_runless_asset_event(
        AssetMaterialization(
            AssetKey("weaviate_objects"),
            partition="alpha",
            metadata={"backend": "lancedb", "inserted": 5, "updated": 2, "deleted": 3},
        )
    )
    instance.report_runless_asset_event(
        AssetMaterialization(
            AssetKey("backtest_results"),
            partition="alpha",
            metadata={"backend": "cpu", "parameter_sets": 4851, "compute_seconds": 0.5},
        )
    )
    registry = ConceptRegistry(dagster_home / "qpipe" / "concepts.sqlite")
    for slug in ("alpha", "beta", "gamma"):
        registry.upsert(Concept.create(slug, [f"https://example.com/{slug}"]))
    inbox = open_inbox(dagster_home / "qpipe" / "inbox.sqlite")
    with time_machine.travel(NOW.timestamp() - 1200, tick=False):
        inbox.append(_record("m-old", "alpha"))
    with time_machine.travel(NOW.timestamp() - 60, tick=False):
        inbox.append(_record("m-new", "beta"))
        inbox.append(_record("m-done", "gamma"))
    inbox.mark_consumed(["m-done"])
    PublishLedger(ledger_path()).reserve(3, 450, now)
    backup = dagster_home / "qpipe" / "backups" / "qpipe-20261206-060000"
    backup.mkdir(parents=True)
    (backup / "manifest.json").write_text("{}")
    (backup / "inbox.sqlite").write_bytes(b"x" * 10_000)
    weaviate = breaker("weaviate")
    for _ in range(5):
        with pytest.raises((ConnectionRefusedError, pybreaker.CircuitBreakerError)):
            weaviate.call(_refused)
    write_halt(instance, HaltRecord(reason="maintenance", halted_at=now, by="test"))

    got = _scrape(PipelineCollector(instance, clock=lambda: now))

    def v(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert v("qpipe_runs_completed_total", dagster_job="concept_pipeline", status="SUCCESS") == 1
    assert v("qpipe_runs_completed_total", dagster_job="concept_pipeline", status="FAILURE") == 1
    assert v("qpipe_runs_active", dagster_job="daily_report", status="STARTED") == 1
    assert (
        v("qpipe_run_duration_seconds_count", dagster_job="concept_pipeline", status="SUCCESS") == 1
    )
    assert (
        v("qpipe_run_duration_seconds_sum", dagster_job="concept_pipeline", status="SUCCESS") == 120
    )
    assert (
        v(
            "qpipe_run_duration_seconds_bucket",
            dagster_job="concept_pipeline",
            status="FAILURE",
            le="10.0",
        )
        == 1
    )
    assert v("qpipe_pages_crawled_total", outcome="ok") == 20
    assert v("qpipe_pages_crawled_total", outcome="failed") == 3
    assert v("qpipe_pages_failed_total", error_class="http_5xx") == 3
    assert v("qpipe_chunks_total", outcome="embedded") == 7
    assert v("qpipe_chunks_total", outcome="reused") == 30
    assert v("qpipe_store_objects_total", backend="lancedb", operation="deleted") == 3
    assert v("qpipe_store_objects_total", backend="lancedb", operation="inserted") == 5
    assert v("qpipe_backtest_parameter_sets_total", backend="cpu") == 4851
    assert v("qpipe_backtest_parameter_sets_per_second", backend="cpu") == 9702
    assert v("qpipe_inbox_messages", status="pending") == 2
    assert v("qpipe_inbox_messages", status="consumed") == 1
    assert v("qpipe_inbox_oldest_pending_age_seconds") == 1200
    assert v("qpipe_cap_limit", cap="QSTASH_DAILY_LIMIT") == 450
    assert v("qpipe_cap_used", cap="QSTASH_DAILY_LIMIT") == 3  # 3 published > 2 delivered
    assert v("qpipe_cap_limit", cap="MAX_CONCEPTS_PER_DAY") == 10
    assert v("qpipe_concepts") == 3
    assert v("qpipe_backups") == 1
    assert v("qpipe_backup_last_success_age_seconds") == 6 * 3600
    assert v("qpipe_backup_last_size_bytes") >= 10_000
    assert v("qpipe_circuit_breaker_state", system="weaviate", state="open") == 1
    assert v("qpipe_circuit_breaker_state", system="postgres", state="closed") == 1
    assert v("qpipe_halted") == 1
    assert v("qpipe_state_path_bytes", path="inbox") > 0
    assert 0 < v("qpipe_filesystem_used_ratio", path="dagster_home") < 1
    assert 0 < v("qpipe_host_memory_used_ratio") < 1
    assert not any(name.startswith("qpipe_gpu_") for name, _ in got) or _has_gpu()
    assert all(val == 1 for (name, _), val in got.items() if name == "qpipe_metrics_source_up")


def _refused() -> None:
    raise ConnectionRefusedError(111, "Connection refused")


def _has_gpu() -> bool:
    from qpipe_dagster.monitoring.state import gpu_devices

    return bool(gpu_devices())


def test_a_broken_source_is_reported_and_the_rest_still_exported(
    dagster_home: Path, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inbox that cannot be read (here: a folder where the SQLite file should be) must not
    hide the run metrics: its source is 0, the others are 1."""
    (dagster_home / "qpipe" / "inbox.sqlite").mkdir(parents=True)
    got = _scrape(PipelineCollector(instance, clock=lambda: NOW.timestamp()))
    assert got[("qpipe_metrics_source_up", (("source", "inbox"),))] == 0
    assert got[("qpipe_metrics_source_up", (("source", "runs"),))] == 1
    assert (
        "qpipe_runs_completed_total",
        (("dagster_job", "concept_pipeline"), ("status", "FAILURE")),
    ) in got


def test_counters_catch_up_on_a_large_event_log_in_bounded_batches(
    instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first scrape of a big instance reads a bounded number of events per asset, says it
    is catching up, and later scrapes add the rest; nothing is counted twice."""
    monkeypatch.setattr(reads, "EVENTS_PER_SCRAPE", 4)
    monkeypatch.setattr(reads, "CATCH_UP_BUDGET_S", 0.0)  # one batch per scrape
    for i in range(10):
        instance.report_runless_asset_event(
            AssetMaterialization(
                AssetKey("page_embeddings"),
                partition=f"c{i}",
                metadata={"embedded": 1, "reused": 2},
            )
        )
    collector = PipelineCollector(instance, clock=lambda: NOW.timestamp())
    seen = []
    for _ in range(4):
        got = _scrape(collector)
        seen.append(
            (
                got[("qpipe_chunks_total", (("outcome", "embedded"),))],
                got[("qpipe_metrics_backlog", (("reader", "page_embeddings"),))],
            )
        )
    assert seen == [(4, 1), (8, 1), (10, 0), (10, 0)]


def test_step_durations_come_from_finished_runs_step_stats(instance: DagsterInstance) -> None:
    """A real (in-process) run of a two-step job: its steps' times land in the histogram."""
    from dagster import Definitions, asset, define_asset_job

    @asset
    def first() -> int:
        return 1

    @asset
    def second(first: int) -> int:
        return first + 1

    job = Definitions(assets=[first, second], jobs=[define_asset_job("two_steps")]).resolve_job_def(
        "two_steps"
    )
    assert job.execute_in_process(instance=instance).success
    got = _scrape(PipelineCollector(instance))
    for step in ("first", "second"):
        assert (
            got[("qpipe_step_duration_seconds_count", (("asset", step), ("outcome", "success")))]
            == 1
        )
    assert (
        got[("qpipe_runs_completed_total", (("dagster_job", "two_steps"), ("status", "SUCCESS")))]
        == 1
    )


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        (None, None),
        ("skipped: non-HTML content type image/png", None),
        ("HTTP 404", "http_4xx"),
        ("HTTP 503", "http_5xx"),
        ("HTTP 301 without a Location header", "http_3xx"),
        ("timeout after 5.0s (3 attempts)", "timeout"),
        ("DNS lookup failed", "dns"),
        ("connection refused", "connection"),
        ("robots.txt disallows this URL", "robots"),
        ("TLS error: bad certificate", "tls"),
        ("something new", "other"),
    ],
)
def test_error_classes_are_few_and_stable(error: str | None, cls: str | None) -> None:
    assert error_class(error) == cls


def test_failed_by_class_counts_only_failures() -> None:
    assert failed_by_class(
        [None, "HTTP 404", "HTTP 410", "skipped: too large", "DNS lookup failed"]
    ) == {
        "dns": 1,
        "http_4xx": 2,
    }


def test_inbox_on_postgres_is_read_the_same_way(postgres_cluster) -> None:  # noqa: F811
    """The PostgreSQL inbox (several receivers) gives the same queue figures as SQLite."""
    from qpipe_dagster.monitoring.state import inbox_summary

    url = postgres_cluster.new_database()
    assert inbox_summary(url, NOW.timestamp()).by_status == {}  # no table yet: all zeros
    inbox = open_inbox(url)
    with time_machine.travel(NOW.timestamp() - 1000, tick=False):
        inbox.append(_record("pg-old", "alpha"))
    with time_machine.travel(NOW.timestamp() - 10, tick=False):
        inbox.append(_record("pg-new", "beta"))
    inbox.mark_consumed(["pg-new"])
    summary = inbox_summary(url, NOW.timestamp())
    assert summary.by_status == {"pending": 1, "consumed": 1}
    assert summary.oldest_pending_age_s == pytest.approx(1000, abs=1)
    assert summary.deliveries_today == 2


def test_new_concepts_today_is_the_sensors_stored_count(instance: DagsterInstance) -> None:
    """The MAX_CONCEPTS_PER_DAY figure (metrics, status, daily report) is the count the QStash
    sensor stored in its cursor for today, read back from the instance as the daemon left it."""
    from qpipe_dagster.controls.halt import code_location

    with code_location(instance) as repo:
        sensor = repo.get_sensor("qstash_inbox_sensor")
        # running by default, so nothing is stored yet: stop and start it to store a state
        instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
        state = instance.start_sensor(sensor)
    cursor = json.dumps({"day": "2026-12-06", "new_today": 7, "emitted": ["m1"]})
    instance.update_instigator_state(state.with_data(state.instigator_data._replace(cursor=cursor)))
    assert reads.new_concepts_today(instance, "2026-12-06") == 7
    assert reads.new_concepts_today(instance, "2026-12-07") == 0  # a new UTC day starts at 0
    got = _scrape(PipelineCollector(instance, clock=lambda: NOW.timestamp()))
    assert got[("qpipe_cap_used", (("cap", "MAX_CONCEPTS_PER_DAY"),))] == 7
