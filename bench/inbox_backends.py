"""Inbox backends: PostgreSQL beside the SQLite anchor, same writer and same sensor reads.

Both run with real durability (SQLite WAL synchronous=FULL; PostgreSQL fsync=on and
synchronous_commit=on). Write: `--concurrency` deliveries in flight at a time through
`ProcessCommitWriter` (the receiver's path; each resolves after its COMMIT), `--messages` in all,
10% of them redeliveries. Read: the sensor's tick (pending batch of 100 + mark_consumed) until
drained. PostgreSQL: QPIPE_BENCH_PG_URL (an empty database), else a throwaway local cluster
(Debian's postgresql package). Last line: one JSON object with the figures.

    .venv/bin/python bench/inbox_backends.py [--messages 2000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from webhook_sensor.inbox import InboxRecord, InboxTarget, open_inbox  # noqa: E402
from webhook_sensor.inbox.process import ProcessCommitWriter  # noqa: E402


def _record(i: int) -> InboxRecord:
    return InboxRecord(
        message_id=f"msg_{i:08d}",
        body=b'{"concept": "Bench Concept", "urls": ["https://example.com/a"]}',
        slug=f"bench-{i % 50}",
        concept_name="Bench Concept",
        seed_urls=("https://example.com/a",),
        symbol="BTC-USD",
        retried=0,
        schedule_id="scd_bench",
        caller_ip="127.0.0.1",
        headers={"upstash-retried": "0", "user-agent": "Upstash-QStash"},
    )


async def _write(target: InboxTarget, n: int, concurrency: int) -> tuple[float, int]:
    ids = list(range(n)) + list(range(0, n, 10))  # 10% redeliveries
    writer = ProcessCommitWriter(target)
    sem = asyncio.Semaphore(concurrency)
    new = 0

    async def one(i: int) -> None:
        nonlocal new
        async with sem:
            is_new = await writer.submit(_record(i))
        new += is_new  # not `new += await ...`: that reads `new` before awaiting

    try:
        await writer.submit(_record(n + 1))  # open the connection and schema outside the clock
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in ids))
        return len(ids) / (time.perf_counter() - started), new
    finally:
        await writer.aclose()


def _drain(target: InboxTarget) -> float:
    inbox = open_inbox(target)
    started = time.perf_counter()
    ticks, emitted = 0, []
    while True:
        inbox.mark_consumed(emitted)
        batch = inbox.pending(100, skip_deferred_on="2026-11-23", exclude=emitted)
        emitted = [m.message_id for m in batch]
        ticks += 1
        if not batch:
            break
    return (time.perf_counter() - started) / ticks * 1000


@contextlib.contextmanager
def _postgres() -> Iterator[tuple[str, str]]:
    url = os.environ.get("QPIPE_BENCH_PG_URL", "").strip()
    if url:
        yield url, "QPIPE_BENCH_PG_URL"
        return
    from qpipe_dagster_tests.postgres_cluster import throwaway_cluster

    with throwaway_cluster(fsync=True) as cluster:
        yield cluster.new_database(), "throwaway local cluster, fsync=on"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    figures: dict = {"messages": args.messages, "concurrency": args.concurrency}
    with tempfile.TemporaryDirectory() as tmp, _postgres() as (pg_url, pg_source):
        figures["postgres"] = pg_source
        for name, target in (("sqlite", Path(tmp) / "inbox.sqlite"), ("postgres", pg_url)):
            rate, new = asyncio.run(_write(target, args.messages, args.concurrency))
            assert new == args.messages, f"{name}: {new} new of {args.messages}"
            tick_ms = _drain(target)
            assert open_inbox(target).depth() == 0
            figures[f"{name}_writes_per_s"] = round(rate)
            figures[f"{name}_sensor_tick_ms"] = round(tick_ms, 2)
            print(f"{name:9s} {rate:8.0f} durable deliveries/s   sensor tick {tick_ms:6.2f} ms")
    figures["postgres_vs_sqlite_writes"] = round(
        figures["postgres_writes_per_s"] / figures["sqlite_writes_per_s"], 2
    )
    figures["postgres_vs_sqlite_tick"] = round(
        figures["postgres_sensor_tick_ms"] / figures["sqlite_sensor_tick_ms"], 2
    )
    print(
        f"postgres/sqlite: writes x{figures['postgres_vs_sqlite_writes']},"
        f" sensor tick time x{figures['postgres_vs_sqlite_tick']}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
