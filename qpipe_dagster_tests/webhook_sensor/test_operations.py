"""Operator endpoints, limits and transient failures, on the real app under uvicorn."""

from __future__ import annotations

import asyncio
import re

import httpx

from qpipe_dagster_tests.webhook_sensor.conftest import CURRENT, make_token, start_receiver
from webhook_sensor.inbox import Inbox

BODY = b'{"concept": "ops check"}'


def test_health_ready_metrics(receiver):
    assert receiver.client.get(receiver.base + "/health").json() == {"status": "ok"}
    ready = receiver.client.get(receiver.base + "/ready", timeout=60)
    assert ready.status_code == 200, ready.text
    receiver.signed(BODY)
    receiver.signed(BODY, key="sig_Unknown0123456789abcdefghijklm")
    text = receiver.client.get(receiver.base + "/metrics").text
    assert re.search(r'qpipe_receiver_deliveries_total\{outcome="stored"\} [1-9]', text)
    assert re.search(r'qpipe_receiver_verify_failures_total\{reason="bad_signature"\} [1-9]', text)
    assert re.search(r"qpipe_receiver_inbox_depth [1-9]", text)
    assert 'qpipe_receiver_request_seconds_bucket{le="+Inf"}' in text


def test_not_ready_when_dagster_home_is_broken(tmp_path):
    server, rcv = start_receiver(tmp_path)
    (rcv.settings.dagster_home / "dagster.yaml").write_text("storage: [this is: not valid\n")
    with server:
        resp = rcv.client.get(rcv.base + "/ready", timeout=60)
        assert resp.status_code == 503
        assert any("dagster" in p for p in resp.json()["problems"])


def test_inbox_unavailable_is_503_then_heals(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the inbox directory should be")
    server, rcv = start_receiver(tmp_path, inbox_path=blocker / "inbox.sqlite")
    with server:
        resp = rcv.signed(BODY, message_id="msg_transient")
        assert resp.status_code == 503 and resp.headers["Retry-After"]
        assert "Upstash-NonRetryable-Error" not in resp.headers
        ready = rcv.client.get(rcv.base + "/ready", timeout=60)
        assert ready.status_code == 503 and "inbox" in ready.text
        blocker.unlink()
        blocker.mkdir()
        assert rcv.signed(BODY, message_id="msg_transient").status_code == 200
    assert Inbox(blocker / "inbox.sqlite").get("msg_transient") is not None


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    server, rcv = start_receiver(tmp_path, rate_limit_per_s=5)
    with server:
        codes = [rcv.signed(BODY).status_code for _ in range(12)]
        assert codes[:5] == [200] * 5 and 429 in codes
        limited = next(r for r in (rcv.signed(BODY) for _ in range(5)) if r.status_code == 429)
        assert int(limited.headers["Retry-After"]) >= 1


def test_body_cap_is_configurable(tmp_path):
    server, rcv = start_receiver(tmp_path, max_body_bytes=64)
    with server:
        assert rcv.signed(b'{"concept": "small"}').status_code == 200
        big = b'{"concept": "big", "pad": "' + b"x" * 100 + b'"}'
        assert rcv.signed(big).status_code == 413


def test_fifty_concurrent_duplicates_store_one_row(receiver):
    body = b'{"concept": "Duplicate Storm"}'

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        receiver.url,
                        content=body,
                        headers={
                            "Upstash-Signature": make_token(CURRENT, receiver.url, body),
                            "Upstash-Message-Id": "msg_storm",
                        },
                    )
                    for _ in range(50)
                )
            )

    responses = asyncio.run(storm())
    assert [r.status_code for r in responses] == [200] * 50
    statuses = [r.json()["status"] for r in responses]
    assert statuses.count("stored") == 1 and statuses.count("duplicate") == 49
    stored = Inbox(receiver.settings.inbox_path).get("msg_storm")
    assert stored.deliveries == 50
