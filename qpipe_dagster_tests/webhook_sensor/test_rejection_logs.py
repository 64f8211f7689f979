"""Rejections name their reason and stay readable in the log: bad message ids, hostile ids in
log lines, and why /ready says not ready."""

from __future__ import annotations

import json

from qpipe_dagster_tests.webhook_sensor.conftest import CURRENT, make_token, start_receiver

BODY = b'{"concept": "Hostile Input"}'


def test_bad_message_id_is_named_and_logged(tmp_path, capfd):
    server, rcv = start_receiver(tmp_path)
    with server:
        too_long = rcv.signed(BODY, message_id="m" * 201)
        missing = rcv.client.post(
            rcv.url,
            content=BODY,
            headers={"Upstash-Signature": make_token(CURRENT, rcv.url, BODY)},
        )
    rcv.client.close()
    assert too_long.status_code == missing.status_code == 489
    assert too_long.headers["Upstash-NonRetryable-Error"] == "true"
    assert too_long.json() == {
        "error": "invalid_message_id",
        "detail": "Upstash-Message-Id is 201 characters; at most 200",
    }
    assert "missing" in missing.json()["detail"]
    events = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    assert [e["detail"] for e in events if e["event"] == "message_id_rejected"] == [
        too_long.json()["detail"],
        missing.json()["detail"],
    ]


def test_huge_message_id_in_a_rejection_log_is_clipped(tmp_path, capfd):
    server, rcv = start_receiver(tmp_path)
    with server:
        resp = rcv.post(BODY, "not-a-token", "m" * 50_000)
    rcv.client.close()
    assert resp.status_code == 401
    line = next(x for x in capfd.readouterr().err.splitlines() if '"verify_failed"' in x)
    event = json.loads(line)
    assert len(line) < 1000
    assert event["message_id"] == event["correlation_id"]
    assert event["message_id"].startswith("m" * 256 + "…(+49744)")


def test_not_ready_reasons_are_logged(tmp_path, capfd):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the inbox directory should be")
    server, rcv = start_receiver(tmp_path, inbox_path=blocker / "inbox.sqlite")
    with server:
        resp = rcv.client.get(rcv.base + "/ready", timeout=60)
    rcv.client.close()
    assert resp.status_code == 503
    line = next(x for x in capfd.readouterr().err.splitlines() if '"not_ready"' in x)
    (problem,) = json.loads(line)["problems"]
    assert str(blocker / "inbox.sqlite") in problem and "InboxUnavailable" in problem
