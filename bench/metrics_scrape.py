"""Scrape time of the pipeline metrics endpoint on a large instance (target: < 1 s per scrape).

Builds a real temporary Dagster instance (SQLite, as `make run` has) with --runs finished and
running runs of three jobs, each with its start and end recorded through the run storage's own
event handling, --concepts concepts in the registry and as dynamic partitions, one
materialization per concept of each metadata asset (crawled_pages, page_embeddings,
weaviate_objects, backtest_results) and an inbox of --concepts messages, then starts `qpipe
metrics serve`'s server on a free loopback port and times HTTP GETs of /metrics: the first
(cold: every counter is read from the event log) and the median of --scrapes warm ones.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _populate(instance, home: Path, runs: int, concepts: int, api_runs: int) -> dict:
    from dagster import (
        AssetKey,
        AssetMaterialization,
        DagsterEvent,
        DagsterEventType,
        MetadataValue,
    )
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
    from dagster._core.utils import make_new_run_id

    from qpipe_dagster.concepts import Concept, ConceptRegistry
    from webhook_sensor.inbox import InboxRecord, open_inbox

    rng = random.Random(7)
    started = time.perf_counter()
    jobs = ["concept_pipeline"] * 8 + ["daily_report", "nightly_backup"]
    finals = (
        [DagsterEventType.RUN_SUCCESS] * 90
        + [DagsterEventType.RUN_FAILURE] * 8
        + [DagsterEventType.RUN_CANCELED] * 2
    )
    # Runs: the first --api-runs through the run storage's own API (add_run + the start and end
    # events it handles), the rest written in one transaction in the same shape (a per-run
    # fsync would make building 10,000 runs take most of an hour on this machine).
    import sqlalchemy as sa
    from dagster._core.storage.runs.schema import RunsTable
    from dagster._serdes import serialize_value

    storage = instance.run_storage
    now = time.time()
    rows = []
    for i in range(runs):
        job = rng.choice(jobs)
        run_id = make_new_run_id()
        t0 = now - rng.uniform(60, 30 * 86400)
        final = None if i % 200 == 0 else rng.choice(finals)  # a few still running
        t1 = t0 + rng.uniform(5, 900)
        if i < api_runs:
            instance.add_run(
                DagsterRun(job_name=job, run_id=run_id, status=DagsterRunStatus.NOT_STARTED)
            )
            storage.handle_run_event(
                run_id,
                DagsterEvent(DagsterEventType.RUN_START.value, job),
                datetime.fromtimestamp(t0, UTC),
            )
            if final is not None:
                storage.handle_run_event(
                    run_id, DagsterEvent(final.value, job), datetime.fromtimestamp(t1, UTC)
                )
            continue
        status = (
            DagsterRunStatus.STARTED
            if final is None
            else {
                DagsterEventType.RUN_SUCCESS: DagsterRunStatus.SUCCESS,
                DagsterEventType.RUN_FAILURE: DagsterRunStatus.FAILURE,
                DagsterEventType.RUN_CANCELED: DagsterRunStatus.CANCELED,
            }[final]
        )
        run = DagsterRun(job_name=job, run_id=run_id, status=status)
        ended = datetime.fromtimestamp(t1 if final is not None else t0, UTC).replace(tzinfo=None)
        rows.append(
            {
                "run_id": run_id,
                "pipeline_name": job,
                "status": status.value,
                "run_body": serialize_value(run),
                "create_timestamp": datetime.fromtimestamp(t0, UTC).replace(tzinfo=None),
                "update_timestamp": ended,
                "start_time": t0,
                "end_time": t1 if final is not None else None,
            }
        )
    with storage.connect() as conn:
        conn.execute(sa.insert(RunsTable), rows)
    runs_s = time.perf_counter() - started

    started = time.perf_counter()
    registry = ConceptRegistry(home / "qpipe" / "concepts.sqlite")
    slugs = [f"concept-{i:04d}" for i in range(concepts)]
    for slug in slugs:
        registry.upsert(Concept.create(slug, [f"https://example.com/{slug}"], "BTC-USD"))
    instance.add_dynamic_partitions("concepts", slugs)
    for slug in slugs:
        failed = rng.randint(0, 3)
        for key, md in (
            (
                "crawled_pages",
                {
                    "pages_ok": 20,
                    "pages_failed": failed,
                    "pages_skipped": 1,
                    "pages_failed_by_class": MetadataValue.json({"http_4xx": failed}),
                },
            ),
            ("page_embeddings", {"embedded": 40, "reused": 160}),
            (
                "weaviate_objects",
                {"backend": "lancedb", "inserted": 40, "updated": 0, "deleted": 2},
            ),
            (
                "backtest_results",
                {"backend": "cpu", "parameter_sets": 4851, "compute_seconds": 0.25},
            ),
        ):
            instance.report_runless_asset_event(
                AssetMaterialization(AssetKey(key), partition=slug, metadata=md)
            )
    inbox = open_inbox(home / "qpipe" / "inbox.sqlite")
    for i, slug in enumerate(slugs):
        body = json.dumps({"concept": slug, "urls": [f"https://example.com/{slug}"]}).encode()
        inbox.append(
            InboxRecord(
                message_id=f"msg_{i:05d}",
                slug=slug,
                concept_name=slug,
                seed_urls=(f"https://example.com/{slug}",),
                symbol=None,
                body=body,
                retried=0,
                schedule_id=None,
                caller_ip="127.0.0.1",
                headers={},
            )
        )
    inbox.mark_consumed([f"msg_{i:05d}" for i in range(concepts - 20)])
    return {
        "populate_runs_s": round(runs_s, 1),
        "populate_rest_s": round(time.perf_counter() - started, 1),
    }


def _get(url: str) -> tuple[float, bytes, float]:
    """(wall seconds, body, CPU seconds of this process: the server thread's work included,
    so it shows the scrape's cost apart from what other jobs on the machine take)."""
    c0, t0 = time.process_time(), time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = resp.read()
    return time.perf_counter() - t0, body, time.process_time() - c0


def _behind(body: bytes) -> bool:
    return any(
        line.startswith("qpipe_metrics_backlog{") and not line.endswith(" 0.0")
        for line in body.decode().splitlines()
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--concepts", type=int, default=1_000)
    ap.add_argument("--scrapes", type=int, default=10)
    ap.add_argument(
        "--dir",
        default=None,
        help="where the temp instance lives (default /dev/shm when writable: building it on"
        " disk fsyncs every event; scrapes read from the page cache either way)",
    )
    ap.add_argument("--api-runs", type=int, default=200, help="runs made through the API")
    args = ap.parse_args()
    shm = Path("/dev/shm")
    parent = args.dir or (str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None)
    with tempfile.TemporaryDirectory(prefix="qpipe-bench-metrics-", dir=parent) as tmp:
        home = Path(tmp)
        (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
        os.environ["DAGSTER_HOME"] = str(home)
        for name in [k for k in os.environ if k.startswith(("QPIPE_", "QSTASH_", "WEAVIATE_"))]:
            del os.environ[name]
        from dagster import DagsterInstance

        from qpipe_dagster.monitoring.collector import PipelineCollector
        from qpipe_dagster.monitoring.server import build_registry, serve

        with DagsterInstance.get() as instance:
            figures: dict = {"runs": args.runs, "concepts": args.concepts}
            figures.update(_populate(instance, home, args.runs, args.concepts, args.api_runs))
            assert instance.get_runs_count() == args.runs
            collector = PipelineCollector(instance)
            port = _free_port()
            server, _thread = serve("127.0.0.1", port, build_registry(collector))
            url = f"http://127.0.0.1:{port}/metrics"
            try:
                cold, body, cold_cpu = _get(url)
                cold_sources = dict(collector.last_source_seconds)
                catch_up = [(cold, body, cold_cpu)]
                while _behind(catch_up[-1][1]) and len(catch_up) < 500:
                    catch_up.append(_get(url))  # until every counter has read the event log
                catching = len(catch_up)
                steady = [_get(url) for _ in range(args.scrapes)]
                warm = [w for w, _b, _c in steady]
            finally:
                server.shutdown()
            text = body.decode()
            completed = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("qpipe_runs_completed_total{")
            )
            active = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("qpipe_runs_active{")
            )
            assert completed + active == args.runs, (completed, active)
            assert f"qpipe_concepts {float(args.concepts)}" in text
            figures.update(
                cold_scrape_s=round(cold, 3),
                cold_scrape_cpu_s=round(cold_cpu, 3),
                scrapes_to_catch_up=catching,
                catch_up_scrape_max_s=round(max(w for w, _b, _c in catch_up), 3),
                warm_scrape_cpu_median_s=round(statistics.median(c for _w, _b, c in steady), 3),
                warm_scrape_median_s=round(statistics.median(warm), 3),
                warm_scrape_max_s=round(max(warm), 3),
                slowest_sources={
                    k: round(v, 3)
                    for k, v in sorted(
                        collector.last_source_seconds.items(), key=lambda kv: -kv[1]
                    )[:4]
                },
                cold_slowest_sources={
                    k: round(v, 3)
                    for k, v in sorted(cold_sources.items(), key=lambda kv: -kv[1])[:4]
                },
                body_bytes=len(body),
                steady_under_1s=max(warm) < 1.0,
            )
    print(
        f"{args.runs} runs, {args.concepts} concepts: cold scrape {figures['cold_scrape_s']} s,"
        f" {catching} scrape(s) to read the event log; then median {figures['warm_scrape_median_s']}"
        f" s (max {figures['warm_scrape_max_s']} s, CPU {figures['warm_scrape_cpu_median_s']} s)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
