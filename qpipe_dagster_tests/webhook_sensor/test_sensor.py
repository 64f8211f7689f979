"""qstash_inbox_sensor against a real DagsterInstance, real inbox and real sensor evaluation.

Every test runs on both inbox backends: a SQLite file and a real PostgreSQL database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    asset,
    build_sensor_context,
    define_asset_job,
    instance_for_test,
)

from qpipe_dagster.concepts import default_registry
from qpipe_dagster.defs.partitions import concepts_partitions
from qpipe_dagster.defs.triggers import build_qstash_inbox_sensor
from webhook_sensor.inbox import InboxRecord, open_inbox


def record(mid: str, slug: str, urls=("https://example.com/a",), symbol=None) -> InboxRecord:
    return InboxRecord(
        message_id=mid,
        body=json.dumps({"concept": slug}).encode(),
        slug=slug,
        concept_name=slug.replace("-", " ").title(),
        seed_urls=tuple(urls),
        symbol=symbol,
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@asset(partitions_def=concepts_partitions)
def concept_probe() -> None:
    """Stands in for the lead's concept-partitioned assets so the job can resolve partitions."""


def tick(sensor, instance: DagsterInstance, cursor: str | None):
    """Evaluate like the daemon does, and apply the partition requests it would apply."""
    job = define_asset_job("concept_pipeline", selection=[concept_probe])
    repo = Definitions(assets=[concept_probe], sensors=[sensor], jobs=[job]).get_repository_def()
    with build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), cursor=cursor, repository_def=repo
    ) as ctx:
        data = sensor.evaluate_tick(ctx)
    for req in data.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return data


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def instance(tmp_path_factory, backend):
    """One instance per backend (its set-up costs seconds); every test uses its own slugs."""
    with instance_for_test(temp_dir=str(tmp_path_factory.mktemp("instance"))) as inst:
        yield inst


@pytest.fixture
def inbox_target(backend, tmp_path, request):
    """An empty inbox of this module's backend (overrides the conftest's own parametrisation)."""
    if backend == "sqlite":
        return tmp_path / "inbox.sqlite"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def backend_receiver(backend, request):
    return request.getfixturevalue("receiver" if backend == "sqlite" else "pg_receiver")


def test_runs_partitions_cursor_and_consumption(dagster_home, instance, inbox_target):
    inbox = open_inbox(inbox_target)
    inbox.append_many(
        [
            record("m1", "btc-halving", symbol="BTC-USD"),
            record("m2", "eth-merge"),
            record("m3", "btc-halving", urls=("https://example.com/b",)),
        ]
    )
    sensor = build_qstash_inbox_sensor(inbox_path=inbox_target, daily_cap=10)
    data = tick(sensor, instance, None)
    assert [r.run_key for r in data.run_requests] == ["m1", "m2", "m3"]
    assert [r.partition_key for r in data.run_requests] == [
        "btc-halving",
        "eth-merge",
        "btc-halving",
    ]
    tags = data.run_requests[0].tags
    assert tags["qpipe/message_id"] == "m1" and tags["qpipe/concept"] == "btc-halving"
    assert tags["qpipe/trigger"] == "qstash" and tags["dagster/partition"] == "btc-halving"
    assert [list(r.partition_keys) for r in data.dynamic_partitions_requests] == [
        ["btc-halving", "eth-merge"]
    ]
    assert set(instance.get_dynamic_partitions("concepts")) == {"btc-halving", "eth-merge"}
    concept = default_registry().get("btc-halving")
    assert concept.seed_urls == ("https://example.com/a", "https://example.com/b")
    assert concept.symbol == "BTC-USD"
    # Not consumed until a later tick proves the run requests were recorded (cursor committed).
    assert inbox.depth() == 3
    cursor = json.loads(data.cursor)
    assert cursor["emitted"] == ["m1", "m2", "m3"] and cursor["new_today"] == 2

    inbox.append(record("m4", "eth-merge"))
    data2 = tick(sensor, instance, data.cursor)
    assert inbox.depth() == 1 and inbox.get("m1").status == "consumed"
    assert [r.run_key for r in data2.run_requests] == ["m4"]
    assert not data2.dynamic_partitions_requests  # eth-merge already a partition
    data3 = tick(sensor, instance, data2.cursor)
    assert not data3.run_requests and inbox.depth() == 0
    assert "no new messages" in data3.skip_message


def test_uncommitted_tick_is_reemitted_with_same_run_keys(dagster_home, instance, inbox_target):
    inbox = open_inbox(inbox_target)
    inbox.append(record("m1", "alpha"))
    sensor = build_qstash_inbox_sensor(inbox_path=inbox_target, daily_cap=10)
    first = tick(sensor, instance, None)
    again = tick(sensor, instance, None)  # the daemon died before committing the cursor
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in again.run_requests]
    assert inbox.get("m1").status == "pending"


def test_daily_cap_keeps_messages_and_reports(dagster_home, instance, inbox_target):
    inbox = open_inbox(inbox_target)
    inbox.append_many([record(f"m{i}", f"capped-{i}") for i in range(5)])
    clock = Clock()
    sensor = build_qstash_inbox_sensor(inbox_path=inbox_target, daily_cap=2, clock=clock)
    data = tick(sensor, instance, None)
    assert [r.run_key for r in data.run_requests] == ["m0", "m1"]
    assert inbox.depth() == 5  # nothing dropped
    # A known concept still runs while the cap is full; new ones wait.
    inbox.append(record("m5", "capped-0"))
    data2 = tick(sensor, instance, data.cursor)
    assert [r.run_key for r in data2.run_requests] == ["m5"]
    data3 = tick(sensor, instance, data2.cursor)
    assert not data3.run_requests
    assert data3.skip_message is None or "no new messages" in data3.skip_message
    assert {m.message_id for m in inbox.pending(100)} == {"m2", "m3", "m4"}
    clock.now = datetime(2026, 11, 24, 0, 5, tzinfo=UTC)
    data4 = tick(sensor, instance, data3.cursor)
    assert [r.run_key for r in data4.run_requests] == ["m2", "m3"]


def test_cap_reason_is_the_skip_message(dagster_home, instance, inbox_target):
    inbox = open_inbox(inbox_target)
    inbox.append(record("m1", "zero-cap"))
    sensor = build_qstash_inbox_sensor(inbox_path=inbox_target, daily_cap=0)
    data = tick(sensor, instance, None)
    assert not data.run_requests
    assert "daily cap of 0 new concepts" in data.skip_message and "m1" in data.skip_message
    assert inbox.get("m1").status == "pending"


def test_batches_are_bounded(dagster_home, instance, inbox_target):
    inbox = open_inbox(inbox_target)
    inbox.append_many([record(f"m{i:02d}", "same") for i in range(7)])
    sensor = build_qstash_inbox_sensor(inbox_path=inbox_target, batch_size=3, daily_cap=10)
    seen, cursor = [], None
    for _ in range(4):
        data = tick(sensor, instance, cursor)
        seen += [r.run_key for r in data.run_requests]
        cursor = data.cursor
    assert seen == [f"m{i:02d}" for i in range(7)]


def test_unreadable_cursor_is_a_clear_error(dagster_home, instance, inbox_target):
    sensor = build_qstash_inbox_sensor(inbox_path=inbox_target)
    with pytest.raises(Exception, match=r"cursor .* is not readable"):
        tick(sensor, instance, "garbage")


def test_bad_cap_setting_is_a_clear_error(dagster_home, instance, inbox_target, monkeypatch):
    monkeypatch.setenv("MAX_CONCEPTS_PER_DAY", "lots")
    sensor = build_qstash_inbox_sensor(inbox_path=inbox_target)
    with pytest.raises(Exception, match="MAX_CONCEPTS_PER_DAY='lots'"):
        tick(sensor, instance, None)


def test_fifty_duplicate_deliveries_make_one_run_request(dagster_home, instance, backend_receiver):
    """Through the real receiver: 50 concurrent redeliveries, one inbox row, one run request."""
    import asyncio

    import httpx

    from qpipe_dagster_tests.webhook_sensor.conftest import CURRENT, make_token

    receiver = backend_receiver
    body = b'{"concept": "Storm Sensor"}'

    async def storm() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        receiver.url,
                        content=body,
                        headers={
                            "Upstash-Signature": make_token(CURRENT, receiver.url, body),
                            "Upstash-Message-Id": "msg_storm_sensor",
                        },
                    )
                    for _ in range(50)
                )
            )
        return [r.status_code for r in responses]

    assert asyncio.run(storm()) == [200] * 50
    target = receiver.settings.inbox_url or receiver.settings.inbox_path
    sensor = build_qstash_inbox_sensor(inbox_path=target, daily_cap=10)
    data = tick(sensor, instance, None)
    assert [r.run_key for r in data.run_requests] == ["msg_storm_sensor"]
    assert [r.partition_key for r in data.run_requests] == ["storm-sensor"]
    assert not tick(sensor, instance, data.cursor).run_requests


def test_default_inbox_comes_from_the_environment(
    dagster_home, instance, inbox_target, monkeypatch
):
    """The deployed sensor (no inbox_path) reads QPIPE_INBOX_URL, or else QPIPE_INBOX_PATH."""
    from webhook_sensor.inbox import is_postgres_url

    monkeypatch.delenv("QPIPE_INBOX_URL", raising=False)
    monkeypatch.delenv("QPIPE_INBOX_PATH", raising=False)
    name = "QPIPE_INBOX_URL" if is_postgres_url(inbox_target) else "QPIPE_INBOX_PATH"
    monkeypatch.setenv(name, str(inbox_target))
    open_inbox(inbox_target).append(record("env1", "from-env"))
    data = tick(build_qstash_inbox_sensor(daily_cap=10), instance, None)
    assert [r.run_key for r in data.run_requests] == ["env1"]


def test_rows_todays_rules_refuse_are_rejected_alone(dagster_home, instance, inbox_target, capfd):
    """Rows an older receiver (or a hand edit) stored. Old code: the bad slug became a partition
    and a run no asset accepts, and the ftp:// seed was merged into the registry, where every
    later crawl of the concept refused it."""
    inbox = open_inbox(inbox_target)
    inbox.append_many(
        [
            record("r1", "reject-ok-1"),
            record("r2", "Reject Bad Slug"),
            record("r3", "reject-ok-1", urls=("ftp://example.com/x",)),
            record("r4", "reject-bad-symbol", symbol="BTC USD!"),
            record("r5", "reject-ok-2"),
        ]
    )
    sensor = build_qstash_inbox_sensor(inbox_path=inbox_target, daily_cap=10)
    capfd.readouterr()
    data = tick(sensor, instance, None)
    warnings = capfd.readouterr().err  # the tick's log, as the daemon would store it
    assert [r.run_key for r in data.run_requests] == ["r1", "r5"]
    assert [list(r.partition_keys) for r in data.dynamic_partitions_requests] == [
        ["reject-ok-1", "reject-ok-2"]
    ]
    registry = default_registry()
    assert registry.get("reject-ok-1").seed_urls == ("https://example.com/a",)
    assert registry.get("reject-bad-symbol") is None
    assert "Reject Bad Slug" not in instance.get_dynamic_partitions("concepts")
    for mid in ("r2", "r3", "r4"):  # not retried every tick, and kept for inspection
        assert inbox.get(mid).status == "consumed"
    assert (
        "message r2 rejected" in warnings and "'Reject Bad Slug' is not a valid concept" in warnings
    )
    assert "message r3 rejected" in warnings and "ftp://example.com/x" in warnings
    assert "message r4 rejected" in warnings and "market symbol 'BTC USD!'" in warnings

    data2 = tick(sensor, instance, data.cursor)
    assert not data2.run_requests and inbox.depth() == 0
    assert "no new messages" in data2.skip_message


def test_a_tick_of_only_rejected_rows_says_so(dagster_home, instance, inbox_target):
    inbox = open_inbox(inbox_target)
    inbox.append(record("only-bad", "Only Bad"))
    data = tick(build_qstash_inbox_sensor(inbox_path=inbox_target, daily_cap=10), instance, None)
    assert not data.run_requests
    assert "1 message(s) rejected" in data.skip_message and "only-bad" in data.skip_message


def test_long_name_collision_is_rejected_not_merged(dagster_home, instance, inbox_target):
    """Two long names cut to one slug: the second message is rejected, the first concept kept."""
    from qpipe_dagster.concepts import Concept

    stem = "ethereum staking yield versus treasury rates over the last cycle and "
    first, second = Concept.create(stem + "beyond"), Concept.create(stem + "before")
    assert first.slug == second.slug
    inbox = open_inbox(inbox_target)
    for mid, c in (("long-1", first), ("long-2", second)):
        inbox.append(InboxRecord(mid, b"{}", c.slug, c.name, ("https://example.com/" + mid,), None))
    data = tick(build_qstash_inbox_sensor(inbox_path=inbox_target, daily_cap=10), instance, None)
    assert [r.run_key for r in data.run_requests] == ["long-1"]
    assert default_registry().get(first.slug).name == first.name
    assert inbox.get("long-2").status == "consumed"


@pytest.mark.parametrize(
    ("cursor", "reason"),
    [
        # Old code read the string as one message id per character.
        ('{"day": "2026-11-23", "new_today": 1, "emitted": "m1"}', "not a list of message ids"),
        # Old code took it, and let 5 more new concepts past the daily cap.
        ('{"day": "2026-11-23", "new_today": -5, "emitted": []}', "new_today is -5"),
        ('{"day": "2026-11-23", "new_today": true, "emitted": []}', "new_today is True"),
        ("[]", "a JSON list, not an object"),
        ('{"day": "2026-11-23", "emitted": []}', "no 'new_today'"),
    ],
)
def test_cursor_of_another_shape_is_refused_with_the_way_out(
    dagster_home, instance, inbox_target, cursor, reason
):
    sensor = build_qstash_inbox_sensor(inbox_path=inbox_target, daily_cap=10)
    with pytest.raises(ValueError) as info:
        tick(sensor, instance, cursor)
    message = str(info.value)
    assert "is not readable" in message and reason in message
    assert "dagster sensor cursor qstash_inbox_sensor --delete" in message


def _damage(inbox_target, backend: str, message_id: str, column: str, value: str) -> None:
    """Overwrite one stored column by hand, as an operator's edit or a damaged file would."""
    if backend == "sqlite":
        import sqlite3

        with sqlite3.connect(inbox_target) as db:
            db.execute(
                f"UPDATE messages SET {column} = ? WHERE message_id = ?", (value, message_id)
            )
        return
    import psycopg2

    from webhook_sensor.inbox.postgres import TABLE

    conn = psycopg2.connect(inbox_target)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                f"UPDATE {TABLE} SET {column} = %s::jsonb WHERE message_id = %s",
                (value, message_id),
            )
    finally:
        conn.close()


# What a hand edit can leave: SQLite holds any text, PostgreSQL's JSONB any JSON value.
_DAMAGE = {
    "sqlite": [
        ("seed_urls", '["http', "seed_urls is not valid JSON (JSONDecodeError"),
        ("seed_urls", '"https://example.com/a"', "seed_urls is str, not a list of URLs"),
        ("headers", "[1, 2]", "headers is list, not an object of strings"),
    ],
    "postgres": [
        ("seed_urls", "42", "seed_urls is int, not a list of URLs"),
        ("seed_urls", '"https://example.com/a"', "seed_urls is str, not a list of URLs"),
        ("seed_urls", '["https://example.com/a", 7]', "seed_urls[1] is int, not a URL string"),
        ("headers", '"x"', "headers is str, not an object of strings"),
    ],
}


def test_damaged_inbox_rows_are_rejected_alone(
    dagster_home, instance, inbox_target, backend, capfd
):
    """Old code: one damaged row failed every tick (SQLite: a bare JSONDecodeError; PostgreSQL: a
    JSONB number raised TypeError, a JSONB string became one seed URL per character), so no
    message ran until someone repaired the row by hand."""
    cases = _DAMAGE[backend]
    inbox = open_inbox(inbox_target)
    ids = [f"damaged-{i}" for i in range(len(cases))]
    inbox.append_many(
        [record(mid, f"damaged-row-{i}") for i, mid in enumerate(ids)]
        + [record("fine", "fine-after-damage")]
    )
    for mid, (column, value, _why) in zip(ids, cases, strict=True):
        _damage(inbox_target, backend, mid, column, value)
    sensor = build_qstash_inbox_sensor(inbox_path=inbox_target, daily_cap=10)
    capfd.readouterr()
    data = tick(sensor, instance, None)
    log = capfd.readouterr().err
    assert [r.run_key for r in data.run_requests] == ["fine"]
    for mid, (_column, _value, why) in zip(ids, cases, strict=True):
        assert (
            f"message {mid} rejected (marked consumed, no run): stored row is damaged: {why}" in log
        )
        assert inbox.get(mid).status == "consumed"
        assert inbox.get(mid).fault is not None and inbox.get(mid).seed_urls == ()
    assert default_registry().get("damaged-row-0") is None
    assert inbox.get("fine").fault is None
