"""The receiver with its inbox in a real PostgreSQL, and QPIPE_INBOX_URL validation."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from qpipe_dagster.settings import SettingError, inbox_url, redact
from qpipe_dagster_tests.webhook_sensor.conftest import CURRENT, make_token, start_receiver
from webhook_sensor.inbox import InboxRecord, InboxUnavailable, open_inbox
from webhook_sensor.inbox.postgres import TABLE
from webhook_sensor.settings import Settings, inbox_target_from_env

BODY = b'{"concept": "pg check", "urls": ["https://example.com/pg"]}'


def test_fifty_concurrent_duplicates_store_one_row(pg_receiver):
    body = b'{"concept": "Duplicate Storm PG"}'

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        pg_receiver.url,
                        content=body,
                        headers={
                            "Upstash-Signature": make_token(CURRENT, pg_receiver.url, body),
                            "Upstash-Message-Id": "msg_pg_storm",
                            "Upstash-Retried": "1",
                            "Upstash-Schedule-Id": "scd_pg",
                        },
                    )
                    for _ in range(50)
                )
            )

    responses = asyncio.run(storm())
    assert [r.status_code for r in responses] == [200] * 50
    statuses = [r.json()["status"] for r in responses]
    assert statuses.count("stored") == 1 and statuses.count("duplicate") == 49
    stored = open_inbox(pg_receiver.settings.inbox_url).get("msg_pg_storm")
    assert stored.deliveries == 50 and stored.slug == "duplicate-storm-pg"
    assert (stored.retried, stored.schedule_id, stored.caller_ip) == (1, "scd_pg", "127.0.0.1")
    assert not pg_receiver.settings.inbox_path.exists()  # nothing went to the SQLite file


def test_ready_and_metrics_read_postgres(pg_receiver):
    assert pg_receiver.signed(BODY).status_code == 200
    ready = pg_receiver.client.get(pg_receiver.base + "/ready", timeout=60)
    assert ready.status_code == 200, ready.text
    depth = open_inbox(pg_receiver.settings.inbox_url).depth()
    text = pg_receiver.client.get(pg_receiver.base + "/metrics").text
    assert re.search(rf"^qpipe_receiver_inbox_depth {depth}$", text, re.M), text


def test_missing_database_is_503_then_heals(tmp_path, postgres_cluster):
    """The database does not exist yet: 503 + Retry-After, /ready says inbox; then it heals."""
    url = postgres_cluster.url("created_later")
    server, rcv = start_receiver(tmp_path, inbox_url=url)
    with server:
        resp = rcv.signed(BODY, message_id="msg_pg_transient")
        assert resp.status_code == 503 and resp.headers["Retry-After"]
        assert "Upstash-NonRetryable-Error" not in resp.headers
        ready = rcv.client.get(rcv.base + "/ready", timeout=60)
        assert ready.status_code == 503 and "inbox" in ready.text
        assert "qpipe_receiver_inbox_depth NaN" in rcv.client.get(rcv.base + "/metrics").text
        postgres_cluster.admin("CREATE DATABASE created_later")
        assert rcv.signed(BODY, message_id="msg_pg_transient").status_code == 200
    assert open_inbox(url).get("msg_pg_transient") is not None


def test_dropped_table_is_503_not_a_lost_message(tmp_path, postgres_url):
    """Someone drops the table under a running receiver: 503 (retry), then the table returns."""
    server, rcv = start_receiver(tmp_path, inbox_url=postgres_url)
    with server:
        assert rcv.signed(BODY, message_id="msg_before").status_code == 200
        import psycopg2

        conn = psycopg2.connect(postgres_url)
        with conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE {TABLE}")
        conn.close()
        resp = rcv.signed(BODY, message_id="msg_after")
        assert resp.status_code == 503
        # The writer reopens (and recreates the table) on the next batch: QStash's retry lands.
        assert rcv.signed(BODY, message_id="msg_after").status_code == 200
    assert open_inbox(postgres_url).get("msg_after") is not None


def test_settings_accept_a_postgres_url():
    env = {"QPIPE_INBOX_URL": "postgresql://qpipe:pw@db.internal:5432/qpipe"}
    assert Settings.from_env(env).inbox_url == env["QPIPE_INBOX_URL"]
    assert Settings.from_env({}).inbox_url is None
    assert inbox_url({"QPIPE_INBOX_URL": "  "}) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QPIPE_INBOX_URL": "sqlite:///tmp/x.db"}, "'sqlite'.*must be a postgresql:// URL"),
        ({"QPIPE_INBOX_URL": "db.internal:5432"}, "must be a postgresql:// URL"),
        (
            {"QPIPE_INBOX_URL": "postgresql://u:pw@h/db", "QPIPE_INBOX_PATH": "/tmp/i.sqlite"},
            "QPIPE_INBOX_URL and QPIPE_INBOX_PATH are both set",
        ),
        ({"QPIPE_INBOX_URL": "postgresql://u:hunter2@h:notaport/db"}, "is not a valid URL"),
        # '²'.isdigit() is True and int('²') raises: a bare ValueError used to escape
        (
            {"QPIPE_INBOX_URL": "postgresql://u:hunter2@h:\u00b2/db"},
            "port '\u00b2' is not a number",
        ),
        ({"QPIPE_INBOX_URL": "postgresql://u:hunter2@h:5432"}, "names no database"),
    ],
)
def test_bad_inbox_url_is_refused_at_start_up(env, message):
    with pytest.raises(SettingError, match=message) as info:
        Settings.from_env(env)
    assert "hunter2" not in str(info.value)


def test_redact_drops_the_password_only():
    assert redact("postgresql://qpipe:s3cret@db:5433/inbox") == "postgresql://qpipe@db:5433/inbox"
    assert redact("postgres://db/inbox") == "postgres://db/inbox"
    assert redact("postgresql://u@db/inbox?password=s3cret") == "postgresql://u@db/inbox"


def test_inbox_target_from_env(tmp_path):
    url = "postgresql://qpipe:pw@db:5432/qpipe"
    assert inbox_target_from_env({"QPIPE_INBOX_URL": url}) == url
    assert inbox_target_from_env({"QPIPE_INBOX_PATH": str(tmp_path / "i.sqlite")}) == (
        tmp_path / "i.sqlite"
    )
    assert inbox_target_from_env({"DAGSTER_HOME": str(tmp_path)}) == (
        tmp_path / "qpipe" / "inbox.sqlite"
    )


def test_read_only_database_is_not_writable(postgres_cluster, postgres_url):
    """A failover to a read-only database: readiness and writes fail, reads still work."""
    inbox = open_inbox(postgres_url)
    inbox.append(_pg_record("ro1"))
    postgres_cluster.admin(
        f"ALTER DATABASE {postgres_url.rsplit('/', 1)[1]} SET default_transaction_read_only = on"
    )
    inbox.close()  # drop idle sessions: new ones start read-only
    with pytest.raises(InboxUnavailable, match="read-only"):
        inbox.check_writable()
    with pytest.raises(InboxUnavailable, match="read-only"):
        inbox.append(_pg_record("ro2"))
    assert inbox.get("ro1") is not None and inbox.depth() == 1


def _pg_record(mid: str) -> InboxRecord:
    return InboxRecord(mid, b"{}", "read-only", "Read Only", ("https://example.com/",), None)
