"""The receiver's fast path: the hand-rolled JWT segment decoding, the raw ASGI delivery endpoint,
the per-loop-iteration JSON log writer and the ASGI body reader, all against real requests."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import re
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st

from qpipe_dagster_tests.webhook_sensor.conftest import (
    CURRENT,
    NEXT,
    free_port,
    make_token,
    start_receiver,
)
from webhook_sensor.app import create_app
from webhook_sensor.inbox import Inbox
from webhook_sensor.jsonlog import JsonLogger
from webhook_sensor.limits import BodyTooLarge, ClientDisconnected, read_body
from webhook_sensor.verify import SignatureVerifier, VerifyError, _b64url_decode, body_hash

URL = "https://qpipe.example.com/api/qstash"
BODY = b'{"concept": "Fast Path", "urls": ["https://example.com/f"]}'


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _reason(verifier: SignatureVerifier, token: str, body: bytes = BODY) -> str:
    with pytest.raises(VerifyError) as exc:
        verifier.verify(token, body)
    return exc.value.reason


# --- JWT segment decoding -------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ABCXYZabcxyz0189-_", max_size=40))
def test_segment_decoder_matches_the_stdlib(part):
    """Same bytes as base64.urlsafe_b64decode on every base64url string, same refusals."""
    try:
        expected: bytes | None = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (ValueError, binascii.Error):
        expected = None
    try:
        got: bytes | None = _b64url_decode(part)
    except (ValueError, binascii.Error):
        got = None
    assert got == expected


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_body_hash_is_unpadded_base64url_sha256(body):
    import hashlib

    assert body_hash(body) == _b64(hashlib.sha256(body).digest())


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda h, p, s: f"{h}.{p}x.{s}", "malformed_token"),  # 4n+1 chars: not base64
        (lambda h, p, s: f"{h}.{_b64(b'not json')}.{s}", "malformed_token"),
        (lambda h, p, s: f"{h}.{_b64(b'[1, 2]')}.{s}", "malformed_token"),
        (lambda h, p, s: f"{h}.{_b64(b'{bad')}.{s}", "malformed_token"),
        (lambda h, p, s: f"{_b64(b'[]')}.{p}.{s}", "malformed_token"),
        (lambda h, p, s: f"{_b64(b'{x')}.{p}.{s}", "malformed_token"),
        (lambda h, p, s: f"{h}x.{p}.{s}", "malformed_token"),
        (lambda h, p, s: f"{h}.{p}.{s}xx", "malformed_token"),  # 45 chars: not base64
        (lambda h, p, s: f"{h}.{p}.{s[:-4]}", "bad_signature"),
        (lambda h, p, s: f"{h}.{_b64(b'{}')}.{s}", "bad_signature"),
        (lambda h, p, s: f"{_b64(b'{}')}.{p}.{s}", "unsupported_algorithm"),
        (lambda h, p, s: f"{h}.{p}.{s}=", "malformed_token"),
        (lambda h, p, s: f"{h}.{p}", "malformed_token"),
    ],
)
def test_defective_segments_name_the_right_reason(mangle, reason):
    verifier = SignatureVerifier(CURRENT, NEXT, URL)
    h, p, s = make_token(CURRENT, URL, BODY).split(".")
    assert _reason(verifier, mangle(h, p, s)) == reason
    verifier.verify(make_token(CURRENT, URL, BODY), BODY)  # warm the header cache: same verdict
    assert _reason(verifier, mangle(h, p, s)) == reason


def test_header_cache_keeps_only_signed_hs256_headers():
    verifier = SignatureVerifier(CURRENT, NEXT, URL)
    cache = verifier._good_headers  # type: ignore[attr-defined]
    forged = make_token("sig_Forger0123456789abcdefghijklmn", URL, BODY)
    assert _reason(verifier, forged) == "bad_signature"
    assert cache == {}
    good = make_token(CURRENT, URL, BODY)
    verifier.verify(good, BODY)
    assert list(cache) == [good.split(".")[0]]
    # A cached header does not vouch for anything else: the signature is still checked.
    assert _reason(verifier, forged) == "bad_signature"
    h, p, _ = good.split(".")
    other = make_token(CURRENT, URL, b"{}").split(".")[2]
    assert _reason(verifier, f"{h}.{p}.{other}") == "bad_signature"


def test_header_cache_is_bounded():
    verifier = SignatureVerifier(CURRENT, NEXT, URL)
    now = int(time.time())
    for i in range(40):
        header = {"alg": "HS256", "typ": "JWT", "kid": f"k{i}"}
        claims = {"iss": "Upstash", "sub": URL, "exp": now + 300, "iat": now,
                  "body": body_hash(BODY)}  # fmt: skip
        h = _b64(json.dumps(header).encode())
        p = _b64(json.dumps(claims).encode())
        import hashlib
        import hmac

        s = _b64(hmac.new(CURRENT.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest())
        verifier.verify(f"{h}.{p}.{s}", BODY)
    assert len(verifier._good_headers) == 16  # type: ignore[attr-defined]


# --- the raw ASGI delivery endpoint, over real HTTP -----------------------------------------


def test_malformed_segments_over_http_are_401_with_reason(receiver):
    good = make_token(CURRENT, receiver.url, BODY).split(".")
    for token in (
        f"{good[0]}.{good[1]}x.{good[2]}",
        f"{good[0]}.{_b64(b'nope')}.{good[2]}",
        f"{good[0]}.{_b64(b'[1]')}.{good[2]}",
    ):
        resp = receiver.post(BODY, token)
        assert resp.status_code == 401 and resp.json() == {"error": "malformed_token"}
        assert resp.headers["content-type"] == "application/json"


def test_response_bodies_and_headers(receiver):
    mid = "msg_fast_\u00e9"  # non-ASCII ids arrive as latin-1 header bytes
    resp = receiver.client.post(
        receiver.url,
        content=BODY,
        headers=[
            ("Upstash-Signature", make_token(CURRENT, receiver.url, BODY)),
            ("Upstash-Message-Id", "msg_fast_first"),
            ("Upstash-Message-Id", "msg_fast_second"),  # first occurrence wins, as before
            ("Upstash-Retried", "3"),
            ("Upstash-Schedule-Id", "scd_fast"),
            ("User-Agent", "Upstash-QStash"),
            ("X-Forwarded-For", "203.0.113.7"),
        ],
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "status": "stored",
        "message_id": "msg_fast_first",
        "concept": "fast-path",
    }
    assert int(resp.headers["content-length"]) == len(resp.content)
    stored = Inbox(receiver.settings.inbox_path).get("msg_fast_first")
    assert stored is not None and stored.retried == 3 and stored.schedule_id == "scd_fast"
    assert stored.headers == {
        "upstash-retried": "3",
        "upstash-schedule-id": "scd_fast",
        "x-forwarded-for": "203.0.113.7",
        "user-agent": "Upstash-QStash",
    }
    assert Inbox(receiver.settings.inbox_path).get("msg_fast_second") is None
    resp = receiver.client.post(
        receiver.url,
        content=BODY,
        headers={
            "Upstash-Signature": make_token(CURRENT, receiver.url, BODY),
            "Upstash-Message-Id": mid.encode(),  # raw UTF-8 bytes on the wire
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["message_id"] == mid.encode().decode("latin-1")  # as Starlette read it
    assert Inbox(receiver.settings.inbox_path).get(mid.encode().decode("latin-1")) is not None


def test_unusual_retried_header_counts_as_zero(receiver):
    resp = receiver.post(
        BODY,
        make_token(CURRENT, receiver.url, BODY),
        "msg_fast_retried",
        **{"Upstash-Retried": "x"},
    )
    assert resp.status_code == 200
    assert Inbox(receiver.settings.inbox_path).get("msg_fast_retried").retried == 0


@pytest.mark.parametrize("value", ["99999999999999999999", "3000000000"])
def test_absurd_retried_header_is_stored_as_zero_not_a_failed_commit(receiver, value):
    """20 digits overflowed SQLite's INTEGER (10 overflow PostgreSQL's): the group commit failed
    and every delivery in it got 503. Now the count is 0 and the raw header is kept."""
    mid = f"msg_retried_{len(value)}"
    resp = receiver.post(
        BODY, make_token(CURRENT, receiver.url, BODY), mid, **{"Upstash-Retried": value}
    )
    assert resp.status_code == 200, resp.text
    stored = Inbox(receiver.settings.inbox_path).get(mid)
    assert stored.retried == 0 and stored.headers["upstash-retried"] == value


def test_other_methods_and_paths_still_go_to_starlette(receiver):
    assert receiver.client.get(receiver.url).status_code == 405
    assert receiver.client.put(receiver.url, content=BODY).status_code == 405
    assert receiver.client.post(receiver.base + "/api/qstash-nope", content=BODY).status_code == 404


def test_chunked_bodies_are_capped_on_the_running_total(tmp_path):
    server, rcv = start_receiver(tmp_path, max_body_bytes=200)
    body = b'{"concept": "chunked", "pad": "' + b"x" * 100 + b'"}'
    with server:
        token = make_token(CURRENT, rcv.url, body)
        ok = rcv.client.post(
            rcv.url,
            content=iter([body[:50], body[50:100], body[100:]]),  # chunked transfer encoding
            headers={"Upstash-Signature": token, "Upstash-Message-Id": "msg_chunked"},
        )
        assert ok.status_code == 200, ok.text
        big = body + b" " * 150
        too_big = rcv.client.post(
            rcv.url,
            content=iter([big[i : i + 60] for i in range(0, len(big), 60)]),
            headers={"Upstash-Signature": make_token(CURRENT, rcv.url, big)},
        )
        assert too_big.status_code == 413
        assert too_big.json() == {"error": "body_too_large", "limit_bytes": 200}
    assert Inbox(rcv.settings.inbox_path).count() == 1


def test_client_gone_mid_body_stores_nothing_and_is_counted(tmp_path):
    server, rcv = start_receiver(tmp_path)
    with server:
        host, port = rcv.base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /api/qstash HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                b"Upstash-Message-Id: msg_gone\r\nUpstash-Signature: a.b.c\r\n\r\n" + BODY
            )
            time.sleep(0.2)
        deadline = time.time() + 5
        while time.time() < deadline:
            text = rcv.client.get(rcv.base + "/metrics").text
            if 'outcome="disconnected"' in text:
                break
            time.sleep(0.05)
        assert re.search(r'qpipe_receiver_deliveries_total\{outcome="disconnected"\} 1', text)
        assert rcv.signed(BODY).status_code == 200  # the server carries on
    assert Inbox(rcv.settings.inbox_path).get("msg_gone") is None


def test_unexpected_failure_is_a_retryable_500_with_a_log_line(tmp_path, capfd):
    """Without its lifespan the receiver has no inbox writer: a bug-class failure, not a 4xx."""
    _server, rcv = start_receiver(tmp_path)
    port = int(rcv.base.rsplit(":", 1)[1])
    srv = uvicorn.Server(
        uvicorn.Config(create_app(rcv.settings), port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 10
        while not srv.started and time.time() < deadline:
            time.sleep(0.02)
        resp = rcv.signed(BODY, message_id="msg_no_lifespan")
        assert resp.status_code == 500 and resp.json() == {"error": "internal_error"}
        assert "Upstash-NonRetryable-Error" not in resp.headers
        text = rcv.client.get(rcv.base + "/metrics").text
        assert re.search(r'qpipe_receiver_deliveries_total\{outcome="error"\} 1', text)
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        rcv.client.close()
    events = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    err = next(e for e in events if e["event"] == "internal_error")
    assert err["correlation_id"] == "msg_no_lifespan" and err["level"] == "error"
    assert "AssertionError" in err["error"] and "lifespan" in err["error"]


def test_root_path_deployments_reach_the_receiver(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/rx/api/qstash"
    _, rcv = start_receiver(tmp_path, receiver_url=url)
    srv = uvicorn.Server(
        uvicorn.Config(create_app(rcv.settings), port=port, log_level="warning", root_path="/rx")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 10
        while not srv.started and time.time() < deadline:
            time.sleep(0.02)
        # The proxy in front strips /rx; uvicorn puts it back in scope["root_path"] and "path".
        headers = {"Upstash-Signature": make_token(CURRENT, url, BODY),
                   "Upstash-Message-Id": "msg_rooted"}  # fmt: skip
        resp = httpx.post(f"http://127.0.0.1:{port}/api/qstash", content=BODY, headers=headers)
        assert resp.status_code == 200, resp.text
        assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        rcv.client.close()


# --- the JSON log writer --------------------------------------------------------------------


def test_delivery_line_is_the_generic_line():
    stream = io.StringIO()
    log = JsonLogger(stream, logging.INFO)
    log.delivery("delivery_stored", 'msg_"q\u00e9\\', "fast-path")
    log.event(logging.INFO, "delivery_stored", message_id='msg_"q\u00e9\\', concept="fast-path")
    fast, generic = stream.getvalue().splitlines()
    strip_ts = re.compile(r'^\{"ts":[0-9.]+,')
    assert strip_ts.sub("", fast) == strip_ts.sub("", generic)
    record = json.loads(fast)
    assert list(record) == ["ts", "level", "logger", "event", "message_id", "concept",
                            "correlation_id"]  # fmt: skip
    assert record["correlation_id"] == record["message_id"] == 'msg_"q\u00e9\\'
    assert abs(record["ts"] - time.time()) < 5


def test_lines_are_gathered_per_loop_iteration_in_order():
    stream = io.StringIO()
    log = JsonLogger(stream, logging.INFO)

    async def scenario() -> tuple[str, str]:
        log.delivery("delivery_stored", "m1", "c")
        log.event(logging.WARNING, "verify_failed", message_id="m2", reason="bad_signature")
        log.delivery("delivery_duplicate", "m3", "c")
        before = stream.getvalue()
        await asyncio.sleep(0)
        return before, stream.getvalue()

    before, after = asyncio.run(scenario())
    assert before == ""
    assert [json.loads(x)["message_id"] for x in after.splitlines()] == ["m1", "m2", "m3"]


def test_lines_outside_a_loop_are_written_at_once_and_levels_filter():
    stream = io.StringIO()
    log = JsonLogger(stream, logging.WARNING)
    log.delivery("delivery_stored", "m1", "c")  # INFO: below the level
    log.event(logging.ERROR, "inbox_unavailable", message_id="m2", detail=object())
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["level"] == "error"


# --- the ASGI body reader -------------------------------------------------------------------


def _receiver_of(*messages: dict):
    queue = list(messages)

    async def receive() -> dict:
        return queue.pop(0)

    return receive


def test_read_body_single_message_multi_chunk_and_limits():
    one = b"x" * 10

    async def run() -> None:
        got = await read_body(_receiver_of({"type": "http.request", "body": one}), 10)
        assert got is one
        parts = [{"type": "http.request", "body": b"ab", "more_body": True},
                 {"type": "http.request", "body": b"", "more_body": True},
                 {"type": "http.request", "body": b"cd"}]  # fmt: skip
        assert await read_body(_receiver_of(*parts), 4) == b"abcd"
        with pytest.raises(BodyTooLarge):
            await read_body(_receiver_of(*parts), 3)
        with pytest.raises(BodyTooLarge):
            await read_body(_receiver_of({"type": "http.request", "body": one}), 9)
        with pytest.raises(ClientDisconnected):
            await read_body(_receiver_of({"type": "http.disconnect"}), 10)
        with pytest.raises(ClientDisconnected):
            await read_body(_receiver_of(parts[0], {"type": "http.disconnect"}), 10)

    asyncio.run(run())
