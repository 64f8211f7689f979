"""The inbox contract, run against both backends (SQLite file and a real PostgreSQL), through
the store and through the receiver's writer (`ProcessCommitWriter`, commits in a child)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest

from webhook_sensor.inbox import (
    InboxRecord,
    InboxUnavailable,
    is_postgres_url,
    open_inbox,
)
from webhook_sensor.inbox.process import ProcessCommitWriter


def rec(mid: str, slug: str = "alpha", **kw) -> InboxRecord:
    return InboxRecord(
        message_id=mid,
        body=b'{"concept": "' + slug.encode() + b'"}',
        slug=slug,
        concept_name=slug.title(),
        seed_urls=kw.pop("seed_urls", ("https://example.com/a", "https://example.com/b")),
        symbol=kw.pop("symbol", None),
        **kw,
    )


def test_stores_headers_and_deduplicates(inbox_target):
    inbox = open_inbox(inbox_target)
    first = rec(
        "m1", symbol="BTC-USD", retried=2, schedule_id="scd_1", caller_ip="10.0.0.7",
        headers={"upstash-retried": "2", "user-agent": "Upstash-QStash"},
    )  # fmt: skip
    assert inbox.append(first) is True
    assert inbox.append(rec("m1", "changed-on-redelivery")) is False
    got = inbox.get("m1")
    assert got is not None
    assert (got.slug, got.symbol, got.retried, got.schedule_id, got.caller_ip) == (
        "alpha", "BTC-USD", 2, "scd_1", "10.0.0.7",
    )  # fmt: skip
    assert got.seed_urls == ("https://example.com/a", "https://example.com/b")
    assert got.headers == {"upstash-retried": "2", "user-agent": "Upstash-QStash"}
    assert got.deliveries == 2 and got.status == "pending" and got.received_at > 0
    assert inbox.get("nope") is None
    assert (inbox.count(), inbox.depth()) == (1, 1)


def test_batch_with_repeats_inside_it(inbox_target):
    inbox = open_inbox(inbox_target)
    assert inbox.append_many([rec("a"), rec("b"), rec("a"), rec("a")]) == [True, True, False, False]
    assert inbox.append_many([rec("b"), rec("c")]) == [False, True]
    assert inbox.get("a").deliveries == 3 and inbox.get("b").deliveries == 2
    assert [m.message_id for m in inbox.pending(10)] == ["a", "b", "c"]


def test_pending_is_a_bounded_oldest_first_batch(inbox_target):
    inbox = open_inbox(inbox_target)
    inbox.append_many([rec(f"m{i}") for i in range(6)])
    assert [m.message_id for m in inbox.pending(3)] == ["m0", "m1", "m2"]
    assert [m.message_id for m in inbox.pending(3, exclude=["m0", "m2"])] == ["m1", "m3", "m4"]
    inbox.defer(["m1", "m3"], "2026-11-23")
    same_day = inbox.pending(10, skip_deferred_on="2026-11-23")
    assert [m.message_id for m in same_day] == ["m0", "m2", "m4", "m5"]
    next_day = inbox.pending(10, skip_deferred_on="2026-11-24")
    assert len(next_day) == 6 and len(inbox.pending(10)) == 6


def test_consumed_marking_is_idempotent(inbox_target):
    inbox = open_inbox(inbox_target)
    inbox.append_many([rec("m1"), rec("m2"), rec("m3")])
    assert inbox.mark_consumed([]) == 0
    assert inbox.mark_consumed(["m1", "m2", "unknown"]) == 2
    assert inbox.mark_consumed(["m1"]) == 0  # a re-run tick changes nothing
    assert inbox.get("m1").status == "consumed"
    assert [m.message_id for m in inbox.pending(10)] == ["m3"]
    inbox.defer(["m1"], "2026-11-23")  # consumed messages are not pulled back
    assert (inbox.depth(), inbox.count()) == (1, 3)
    inbox.check_writable()


def test_two_writers_racing_on_the_same_ids_store_each_once(inbox_target):
    """Two writers (two connections, like two receiver processes) deliver the same 40 ids."""
    ids = [f"race{i}" for i in range(40)]
    writers = [ProcessCommitWriter(inbox_target), ProcessCommitWriter(inbox_target)]
    results: dict[int, list[bool]] = {}

    def deliver(n: int) -> None:
        async def go() -> list[bool]:
            return list(await asyncio.gather(*(writers[n].submit(rec(m)) for m in ids)))

        results[n] = asyncio.run(go())

    threads = [threading.Thread(target=deliver, args=(n,)) for n in (0, 1)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        for w in writers:
            w.close()
    assert all(a != b for a, b in zip(results[0], results[1], strict=True))  # exactly one new
    inbox = open_inbox(inbox_target)
    assert inbox.count() == 40
    assert {inbox.get(m).deliveries for m in ids} == {2}


def test_writers_opening_a_new_inbox_together_all_succeed(inbox_target, request, tmp_path):
    """Receivers (and the sensor) starting at once each open a brand-new inbox and write to it.

    For SQLite this used to fail now and then with "database is locked": switching a new file
    to WAL does not wait for the busy timeout. Many rounds, since one round only sometimes races.
    """
    rounds = 40 if not is_postgres_url(inbox_target) else 3
    for n in range(rounds):
        if is_postgres_url(inbox_target):
            target = (
                request.getfixturevalue("postgres_cluster").new_database() if n else inbox_target
            )
        else:
            target = tmp_path / f"inbox{n}.sqlite"
        errors: list[BaseException] = []
        gate = threading.Barrier(4)

        def open_and_write(i: int, target=target, gate=gate, errors=errors) -> None:
            try:
                gate.wait(timeout=30)
                open_inbox(target).append(rec(f"open{i}"))
            except BaseException as exc:  # reported below, with its round
                errors.append(exc)

        threads = [threading.Thread(target=open_and_write, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, f"round {n}: {errors[0]!r}"
        assert open_inbox(target).count() == 4


def test_submit_returns_after_commit(inbox_target):
    """Once `submit` returns, another connection already sees the row (it was committed)."""
    writer = ProcessCommitWriter(inbox_target)
    other = open_inbox(inbox_target)
    try:

        async def go() -> None:
            flags = await asyncio.gather(*(writer.submit(rec(f"c{i}")) for i in range(100)))
            assert all(flags) and other.count() == 100
            assert await writer.submit(rec("c5")) is False
            assert other.get("c5").deliveries == 2

        asyncio.run(go())
    finally:
        writer.close()


def test_one_unstorable_record_fails_alone_not_its_whole_batch(inbox_target):
    """A value the store refuses (2**70 fits neither SQLite's nor PostgreSQL's INTEGER) used to
    fail the whole group commit: every delivery beside it got 503. Now only that one does."""
    writer = ProcessCommitWriter(inbox_target)
    other = open_inbox(inbox_target)
    try:

        async def go() -> list:
            records = [rec(f"ok{i}") for i in range(3)] + [rec("bad", retried=2**70)]
            records += [rec("ok1"), rec("ok3")]  # a repeat inside the batch still counts as one
            # Submitted in one loop iteration, so they reach the writer as one batch.
            return await asyncio.gather(
                *(writer.submit(r) for r in records), return_exceptions=True
            )

        outcomes = asyncio.run(go())
    finally:
        writer.close()
    assert outcomes[:3] == [True, True, True] and outcomes[4:] == [False, True]
    assert isinstance(outcomes[3], InboxUnavailable)  # the receiver's 503: QStash retries it
    assert other.count() == 4 and other.get("bad") is None
    assert other.get("ok1").deliveries == 2


def test_unreachable_inbox_is_unavailable_then_heals(inbox_target, request):
    """Writes fail with InboxUnavailable (the receiver's 503) and work once the store is back."""
    if is_postgres_url(inbox_target):
        cluster = request.getfixturevalue("postgres_cluster")
        dbname = "later_" + Path(str(inbox_target)).name
        target: Path | str = cluster.url(dbname)
        heal = lambda: cluster.admin(f"CREATE DATABASE {dbname}")  # noqa: E731
    else:
        blocker = Path(inbox_target).parent / "blocked"
        blocker.write_text("a file where the inbox directory should be")
        target = blocker / "inbox.sqlite"

        def heal() -> None:
            blocker.unlink()
            blocker.mkdir()

    with pytest.raises(InboxUnavailable) as info:
        open_inbox(target)
    assert "secret" not in str(info.value)  # the URL's password never reaches a message
    writer = ProcessCommitWriter(target)
    try:
        with pytest.raises(InboxUnavailable):
            asyncio.run(writer.submit(rec("later")))
        heal()
        assert asyncio.run(writer.submit(rec("later"))) is True
    finally:
        writer.close()
    assert open_inbox(target).get("later") is not None


def test_writer_outlives_an_event_loop_that_closed_mid_commit(tmp_path):
    """A caller's loop closing while its batch commits must not stop the writer for everyone."""
    import sqlite3

    target = tmp_path / "inbox.sqlite"
    open_inbox(target)  # create the file and table
    writer = ProcessCommitWriter(target)
    blocker = sqlite3.connect(target, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer's next commit waits on this lock
    try:
        first = asyncio.new_event_loop()
        task = first.create_task(writer.submit(rec("while-locked")))
        first.run_until_complete(asyncio.sleep(0.2))  # handed over; now blocked on the lock
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            first.run_until_complete(task)
        first.close()
        blocker.execute("ROLLBACK")  # the commit goes through and answers a closed loop
        # A writer stuck on the dead loop would leave this waiting for ever: bound it.
        assert asyncio.run(asyncio.wait_for(writer.submit(rec("after")), 15)) is True
    finally:
        blocker.close()
        writer.close()
    assert open_inbox(target).get("while-locked") is not None  # accepted work was kept


def test_too_old_sqlite_is_a_clear_start_up_error(tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(InboxUnavailable, match=r"needs SQLite 3\.35\.0 or newer.*3\.31\.1"):
        open_inbox(tmp_path / "inbox.sqlite").append(rec("old"))
